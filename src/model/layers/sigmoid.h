// sigmoid: the attention gates, g = sigmoid(x Wg^T + bg) (spec: the caller passes gates
// already in [0, 1]). The affine part is matmul.h.
#pragma once

#include "nsa/config.h"

namespace nsa::model {

// inp, out: (n) elements; out overwritten (may alias inp).
template <class T>
void sigmoid_forward(T* out, const T* inp, index_t n);

// dinp (n) += dout out (1 - out): needs only the forward's output.
template <class T>
void sigmoid_backward(T* dinp, const T* dout, const T* out, index_t n);

}  // namespace nsa::model
