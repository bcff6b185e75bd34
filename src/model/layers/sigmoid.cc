#include "model/layers/sigmoid.h"

#include <cmath>

namespace nsa::model {

template <class T>
void sigmoid_forward(T* out, const T* inp, index_t n) {
  for (index_t i = 0; i < n; ++i) out[i] = T(1) / (T(1) + std::exp(-inp[i]));
}

template <class T>
void sigmoid_backward(T* dinp, const T* dout, const T* out, index_t n) {
  for (index_t i = 0; i < n; ++i) dinp[i] += dout[i] * out[i] * (T(1) - out[i]);
}

template void sigmoid_forward<float>(float*, const float*, index_t);
template void sigmoid_forward<double>(double*, const double*, index_t);
template void sigmoid_backward<float>(float*, const float*, const float*, index_t);
template void sigmoid_backward<double>(double*, const double*, const double*, index_t);

}  // namespace nsa::model
