// GELU as the CPU kernels compute it (fp32): the exact form x Phi(x) of the spec, and its
// derivative Phi(x) + x phi(x) for the backward. One definition for the forward's phi, the
// backward's and the decode cache's (the float64 reference keeps its own: it is the spec).
#pragma once

#include <cmath>

namespace nsa {

inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

inline float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + std::erf(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * std::exp(-0.5f * x * x);
  return cdf + x * pdf;
}

}  // namespace nsa
