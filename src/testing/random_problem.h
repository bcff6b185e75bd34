// RandomNsaProblem: random inputs of one NSA call, owned in float64 and float32 copies
// (the float32 copy is the float64 values rounded, and the float64 reference is run on the
// rounded values, so the comparison measures the kernels' error only).
//
// Values are drawn from N(0, 1) (gates from U(0.05, 0.95)), never zeros; phi weights are
// scaled by 1/sqrt(fan_in) so that compressed keys stay O(1).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nsa/attention.h"

namespace nsa::testing {

struct ProblemShape {
  index_t batch = 1, tokens = 64, heads = 2, kv_heads = 1, d_k = 16, d_v = 16;
  bool shared_kv = false;            // one K/V for all three branches
  std::vector<std::int64_t> seqlens;  // non-empty: a packed varlen batch of these lengths (batch must be 1)
  std::uint64_t seed = 1;

  std::string describe() const;
};

// The standard deviation of phi field f's random values (block length l, head dim `dim`,
// mlp width `hidden`): the matrices by 1/sqrt(fan_in) so that compressed keys stay O(1),
// pe 0.5 and the biases 0.1. The test problems, the micro-benchmarks and `nsa bench` use it.
double phi_field_scale(PhiField f, index_t l, index_t dim, index_t hidden);

// Every PhiField (nsa/phi_fields.h), whatever the kind uses.
template <class T>
struct PhiBuffers {
  std::vector<T> pe, w1, b1, w2, b2, w;
  PhiWeights<T> weights() const {
    PhiWeights<T> out;
    for (PhiField f : kPhiFields) phi_field(out, f) = phi_field(*this, f).data();
    return out;
  }
};

template <class T>
struct NsaBuffers {
  std::vector<T> q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates;
  PhiBuffers<T> phi_k, phi_v;
};

class RandomNsaProblem {
 public:
  RandomNsaProblem(const Config& config, const ProblemShape& shape);

  const Config& config() const { return config_; }
  const ProblemShape& shape() const { return shape_; }
  NsaInputs<double> inputs64() const { return make_inputs(f64_); }
  NsaInputs<float> inputs32() const { return make_inputs(f32_); }
  // Mutable access to the buffers (e.g. to plant a NaN); call sync32() after editing f64.
  NsaBuffers<double>& buffers64() { return f64_; }
  NsaBuffers<float>& buffers32() { return f32_; }
  void sync32();

  index_t out_size() const { return shape_.batch * shape_.tokens * shape_.heads * shape_.d_v; }
  TensorView<double> out_view(std::vector<double>& out) const;
  TensorView<float> out_view(std::vector<float>& out) const;

 private:
  template <class T>
  NsaInputs<T> make_inputs(const NsaBuffers<T>& b) const;

  Config config_;
  ProblemShape shape_;
  std::vector<std::int64_t> cu_seqlens_;
  NsaBuffers<double> f64_;
  NsaBuffers<float> f32_;
};

// Dense causal attention inputs (q, k, v) in float64 and rounded float32 copies.
class RandomDenseProblem {
 public:
  explicit RandomDenseProblem(const ProblemShape& shape);
  DenseInputs<double> inputs64() const;
  DenseInputs<float> inputs32() const;
  TensorView<double> out_view(std::vector<double>& out) const;
  TensorView<float> out_view(std::vector<float>& out) const;
  index_t out_size() const { return shape_.batch * shape_.tokens * shape_.heads * shape_.d_v; }

 private:
  ProblemShape shape_;
  std::vector<std::int64_t> cu_seqlens_;
  std::vector<double> q64_, k64_, v64_;
  std::vector<float> q32_, k32_, v32_;
};

// ||x - ref|| / ||ref|| over n values (Frobenius norms); returns +inf if x holds a NaN/Inf.
double relative_error(const float* x, const double* ref, index_t n);
double relative_error(const double* x, const double* ref, index_t n);
template <class A, class B>
double relative_error(const std::vector<A>& x, const std::vector<B>& ref) {
  return relative_error(x.data(), ref.data(), static_cast<index_t>(ref.size()));
}

}  // namespace nsa::testing
