// swiglu: the MLP's gated activation, out = silu(gate) * up, silu(x) = x sigmoid(x).
// (The MLP block is w_down(swiglu(w_gate x, w_up x)); the matmuls are matmul.h.)
#pragma once

#include "nsa/config.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// gate, up, out: (n) elements (N rows of mlp_hidden); out overwritten.
template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, index_t n, ThreadPool& pool);

// Accumulates dgate += dout up silu'(gate), dup += dout silu(gate);
//   silu'(x) = s (1 + x (1 - s)) with s = sigmoid(x).
template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, index_t n,
                     ThreadPool& pool);

}  // namespace nsa::model
