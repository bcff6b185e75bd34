#include "model/layers/token_shift.h"

#include <algorithm>

namespace nsa::model {

template <class T>
void token_shift_forward(T* out, const T* x, index_t B, index_t Tn, index_t C, int S, const T* history) {
  const index_t width = (S + 1) * C;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (int j = 0; j <= S; ++j) {
        T* o = out + (b * Tn + t) * width + j * C;
        const T* src = nullptr;
        if (t - j >= 0) src = x + (b * Tn + t - j) * C;
        else if (history) src = history + (S + (t - j)) * C;
        if (src) std::copy(src, src + C, o);
        else std::fill(o, o + C, T(0));
      }
}

template <class T>
void token_shift_backward(T* dx, const T* dout, index_t B, index_t Tn, index_t C, int S) {
  const index_t width = (S + 1) * C;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (int j = 0; j <= S && t - j >= 0; ++j) {
        const T* d = dout + (b * Tn + t) * width + j * C;
        T* dst = dx + (b * Tn + t - j) * C;
        for (index_t c = 0; c < C; ++c) dst[c] += d[c];
      }
}

template void token_shift_forward<float>(float*, const float*, index_t, index_t, index_t, int, const float*);
template void token_shift_forward<double>(double*, const double*, index_t, index_t, index_t, int, const double*);
template void token_shift_backward<float>(float*, const float*, index_t, index_t, index_t, int);
template void token_shift_backward<double>(double*, const double*, index_t, index_t, index_t, int);

}  // namespace nsa::model
