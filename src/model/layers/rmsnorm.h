// rmsnorm: out = inp / sqrt(mean(inp^2) + eps) * weight, per row.
#pragma once

#include "nsa/config.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// inp (N, C), weight (C); out (N, C) and rstd (N, the saved 1/rms) overwritten.
template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* inp, const T* weight, index_t N, index_t C,
                     double eps, ThreadPool& pool);

// Accumulates: dinp (N, C) += d/dinp, dweight (C) += d/dweight.
//   with xhat = inp * rstd, g = dout * weight:  dinp = rstd (g - xhat mean(g * xhat)).
// dweight is summed per worker and then reduced in worker order (reproducible).
template <class T>
void rmsnorm_backward(T* dinp, T* dweight, const T* dout, const T* inp, const T* weight,
                      const T* rstd, index_t N, index_t C, ThreadPool& pool);

}  // namespace nsa::model
