#include "model/layers/rmsnorm.h"

#include <cmath>
#include <vector>

#include "nsa/thread_pool.h"

namespace nsa::model {

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, index_t N, index_t C,
                     double eps, ThreadPool& pool) {
  pool.parallel_for(N, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t n = begin; n < end; ++n) {
      const T* x = inp + n * C;
      double ss = 0;
      for (index_t c = 0; c < C; ++c) ss += static_cast<double>(x[c]) * x[c];
      const T r = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
      rstd[n] = r;
      T* o = out + n * C;
      for (index_t c = 0; c < C; ++c) o[c] = x[c] * r * weight[c];
    }
  });
}

template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, index_t N, index_t C, ThreadPool& pool) {
  std::vector<T> partial(static_cast<std::size_t>(pool.size() * C), T(0));
  pool.parallel_for(N, [&](std::int64_t begin, std::int64_t end, int worker) {
    T* dw = partial.data() + worker * C;
    for (index_t n = begin; n < end; ++n) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const T r = rstd[n];
      T dot = 0;  // sum of g * xhat
      for (index_t c = 0; c < C; ++c) {
        const T xhat = x[c] * r;
        dot += dy[c] * weight[c] * xhat;
        dw[c] += dy[c] * xhat;
      }
      const T mean = dot / static_cast<T>(C);
      T* dx = dinp + n * C;
      for (index_t c = 0; c < C; ++c) dx[c] += r * (dy[c] * weight[c] - x[c] * r * mean);
    }
  });
  for (int w = 0; w < pool.size(); ++w)
    for (index_t c = 0; c < C; ++c) dweight[c] += partial[w * C + c];
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, index_t, index_t, double, ThreadPool&);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, index_t, index_t, double, ThreadPool&);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, index_t, index_t, ThreadPool&);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*, const double*, const double*, index_t, index_t, ThreadPool&);

}  // namespace nsa::model
