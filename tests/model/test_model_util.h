// Helpers shared by the model's tests: random fills, finite differences, error norms.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "model/data/rng.h"
#include "model/model_config.h"

namespace nsa::model::testing {

inline std::vector<double> random_vector(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (double& x : v) x = scale * rng.normal();
  return v;
}

template <class To, class From>
std::vector<To> convert(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

// Central difference of f with respect to *p.
inline double central_difference(const std::function<double()>& f, double* p, double eps) {
  const double old = *p;
  *p = old + eps;
  const double plus = f();
  *p = old - eps;
  const double minus = f();
  *p = old;
  return (plus - minus) / (2 * eps);
}

// ||a - b|| / ||b|| (||a|| when b is all zeros).
template <class A, class B>
double rel_error(const A* a, const B* b, std::size_t n) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Whether |fd - an| is within atol + rtol * max(|fd|, |an|).
inline bool close(double fd, double an, double rtol, double atol) {
  return std::abs(fd - an) <= atol + rtol * std::max(std::abs(fd), std::abs(an));
}

// The small NSA shape of the gradient tests: one block chosen by score beyond the forced
// ones (n = 3 = 1 initial + 1 local + 1 chosen), a window shorter than the sequence.
inline ConfigOptions tiny_nsa_options(PhiKind phi = PhiKind::mlp) {
  ConfigOptions o;
  o.block_len = 4;
  o.stride = 2;
  o.sel_block = 8;
  o.top_n = 3;
  o.n_init = 1;
  o.n_local = 1;
  o.window = 8;
  o.phi = phi;
  return o;
}

inline ModelConfig tiny_config(AttentionKind kind, bool independent_kv = false,
                               PhiKind phi = PhiKind::mlp) {
  ModelConfig c;
  c.vocab = 24;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 8;
  c.d_v = 6;
  c.mlp_hidden = 20;
  c.init_std = 0.3;
  c.attention = kind;
  c.independent_kv = independent_kv;
  c.nsa = tiny_nsa_options(phi);
  return c;
}

}  // namespace nsa::model::testing
