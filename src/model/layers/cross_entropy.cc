#include "model/layers/cross_entropy.h"

#include <algorithm>
#include <cmath>

#include "nsa/thread_pool.h"

namespace nsa::model {

template <class T>
double crossentropy_forward(T* losses, T* probs, const T* logits, const std::int32_t* targets,
                            index_t N, index_t V, ThreadPool& pool) {
  pool.parallel_for(N, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t n = begin; n < end; ++n) {
      const T* x = logits + n * V;
      T* p = probs + n * V;
      const T mx = *std::max_element(x, x + V);
      double sum = 0;
      for (index_t v = 0; v < V; ++v) {
        p[v] = std::exp(x[v] - mx);
        sum += p[v];
      }
      const T inv = static_cast<T>(1.0 / sum);
      for (index_t v = 0; v < V; ++v) p[v] *= inv;
      const std::int32_t t = targets[n];
      // -log p[t] from the logits, not from p: no log(0) when p[t] underflows.
      losses[n] = t < 0 ? T(0) : static_cast<T>(std::log(sum) + mx - x[t]);
    }
  });
  double total = 0;
  index_t count = 0;
  for (index_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    total += losses[n];
    ++count;
  }
  return count ? total / static_cast<double>(count) : 0.0;
}

template <class T>
void crossentropy_backward(T* dlogits, const T* probs, const std::int32_t* targets, T dloss,
                           index_t N, index_t V, ThreadPool& pool) {
  pool.parallel_for(N, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t n = begin; n < end; ++n) {
      const std::int32_t t = targets[n];
      if (t < 0) continue;
      const T* p = probs + n * V;
      T* d = dlogits + n * V;
      for (index_t v = 0; v < V; ++v) d[v] += dloss * p[v];
      d[t] -= dloss;
    }
  });
}

template double crossentropy_forward<float>(float*, float*, const float*, const std::int32_t*, index_t, index_t, ThreadPool&);
template double crossentropy_forward<double>(double*, double*, const double*, const std::int32_t*, index_t, index_t, ThreadPool&);
template void crossentropy_backward<float>(float*, const float*, const std::int32_t*, float, index_t, index_t, ThreadPool&);
template void crossentropy_backward<double>(double*, const double*, const std::int32_t*, double, index_t, index_t, ThreadPool&);

}  // namespace nsa::model
