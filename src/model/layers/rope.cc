#include "model/layers/rope.h"

#include <cmath>

#include "nsa/thread_pool.h"

namespace nsa::model {

template <class T>
RopeTable<T>::RopeTable(index_t positions_, index_t dim, double theta)
    : positions(positions_), half(dim / 2) {
  cos.resize(static_cast<std::size_t>(positions * half));
  sin.resize(cos.size());
  for (index_t j = 0; j < half; ++j) {
    const double freq = std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(dim));
    for (index_t p = 0; p < positions; ++p) {
      const double a = static_cast<double>(p) * freq;
      cos[p * half + j] = static_cast<T>(std::cos(a));
      sin[p * half + j] = static_cast<T>(std::sin(a));
    }
  }
}

namespace {

// Rotates every (j, j + h) pair by +angle (sign = 1) or -angle (sign = -1).
template <class T>
void rotate(T* out, const T* inp, const T* cos, const T* sin, index_t B, index_t Tn, index_t heads,
            index_t dim, T sign, ThreadPool& pool) {
  const index_t h = dim / 2;
  pool.parallel_for(B * Tn, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t row = begin; row < end; ++row) {
      const index_t t = row % Tn;
      const T* c = cos + t * h;
      const T* s = sin + t * h;
      for (index_t head = 0; head < heads; ++head) {
        const T* x = inp + (row * heads + head) * dim;
        T* y = out + (row * heads + head) * dim;
        for (index_t j = 0; j < h; ++j) {
          const T x0 = x[j], x1 = x[j + h], sj = sign * s[j];
          y[j] = x0 * c[j] - x1 * sj;
          y[j + h] = x1 * c[j] + x0 * sj;
        }
      }
    }
  });
}

}  // namespace

template <class T>
void rope_forward(T* out, const T* inp, const T* cos, const T* sin, index_t B, index_t Tn,
                  index_t heads, index_t dim, ThreadPool& pool) {
  rotate(out, inp, cos, sin, B, Tn, heads, dim, T(1), pool);
}

template <class T>
void rope_backward(T* dinp, const T* dout, const T* cos, const T* sin, index_t B, index_t Tn,
                   index_t heads, index_t dim, ThreadPool& pool) {
  rotate(dinp, dout, cos, sin, B, Tn, heads, dim, T(-1), pool);
}

template struct RopeTable<float>;
template struct RopeTable<double>;
template void rope_forward<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t, index_t, ThreadPool&);
template void rope_forward<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t, index_t, ThreadPool&);
template void rope_backward<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t, index_t, ThreadPool&);
template void rope_backward<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t, index_t, ThreadPool&);

}  // namespace nsa::model
