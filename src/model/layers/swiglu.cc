#include "model/layers/swiglu.h"

#include <cmath>

#include "nsa/thread_pool.h"

namespace nsa::model {

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, index_t n, ThreadPool& pool) {
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t i = begin; i < end; ++i) {
      const T s = T(1) / (T(1) + std::exp(-gate[i]));
      out[i] = gate[i] * s * up[i];
    }
  });
}

template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, index_t n,
                     ThreadPool& pool) {
  pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t i = begin; i < end; ++i) {
      const T x = gate[i];
      const T s = T(1) / (T(1) + std::exp(-x));
      dgate[i] += dout[i] * up[i] * s * (T(1) + x * (T(1) - s));
      dup[i] += dout[i] * x * s;
    }
  });
}

template void swiglu_forward<float>(float*, const float*, const float*, index_t, ThreadPool&);
template void swiglu_forward<double>(double*, const double*, const double*, index_t, ThreadPool&);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, index_t, ThreadPool&);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, index_t, ThreadPool&);

}  // namespace nsa::model
