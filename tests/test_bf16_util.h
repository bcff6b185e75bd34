// bf16 test problems shared by the bf16 forward and bf16 decode tests: random problems
// whose values are all bf16 values (so the float64 reference sees exactly what the bf16
// kernels see), their bf16 copies, and the reference's selection-block scores that judge
// whether a chosen block differing from the reference's is a near-tie.
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "common/problem.h"
#include "nsa/nsa.h"
#include "reference/reference.h"
#include "testing/random_problem.h"

namespace nsa::bf16_test {

using testing::ProblemShape;
using testing::RandomNsaProblem;

inline void round_to_bf16(std::vector<double>& v) {
  for (double& x : v) x = static_cast<float>(bf16(static_cast<float>(x)));
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  nsa::to_bf16(v.data(), out.data(), v.size());
  return out;
}

// A RandomNsaProblem whose values are all bf16 values (so its float64 inputs are exactly
// what the bf16 kernels see), plus bf16 copies of them.
class Bf16NsaProblem {
 public:
  Bf16NsaProblem(const Config& config, const ProblemShape& shape) : prob_(config, shape) {
    auto& d = prob_.buffers64();
    for (auto* v : {&d.q, &d.k_cmp, &d.v_cmp, &d.k_slc, &d.v_slc, &d.k_win, &d.v_win, &d.gates})
      round_to_bf16(*v);
    for (auto* p : {&d.phi_k, &d.phi_v})
      for (auto* v : {&p->pe, &p->w1, &p->b1, &p->w2, &p->b2, &p->w}) round_to_bf16(*v);
    prob_.sync32();
    const auto& f = prob_.buffers32();
    for (const std::vector<float>* v : {&f.q, &f.k_cmp, &f.v_cmp, &f.k_slc, &f.v_slc, &f.k_win,
                                        &f.v_win, &f.gates})
      copies_.push_back({v->data(), to_bf16(*v)});
    for (const auto* p : {&f.phi_k, &f.phi_v}) {
      PhiBuf b{to_bf16(p->pe), to_bf16(p->w1), to_bf16(p->b1), to_bf16(p->w2), to_bf16(p->b2), to_bf16(p->w)};
      phi_.push_back(std::move(b));
    }
  }

  RandomNsaProblem& base() { return prob_; }
  NsaInputs<double> inputs64() const { return prob_.inputs64(); }
  // The fp32 problem's views, pointing at the bf16 copies instead.
  NsaInputs<bf16> inputs16() const {
    const NsaInputs<float> f = prob_.inputs32();
    NsaInputs<bf16> in;
    in.q = map(f.q);
    in.k_cmp = map(f.k_cmp);
    in.v_cmp = map(f.v_cmp);
    in.k_slc = map(f.k_slc);
    in.v_slc = map(f.v_slc);
    in.k_win = map(f.k_win);
    in.v_win = map(f.v_win);
    in.gates = map(f.gates);
    in.phi_k = phi_[0].weights();
    in.phi_v = phi_[1].weights();
    in.seqs = f.seqs;
    return in;
  }
  std::vector<bf16>& buffer_of(const float* data) {
    for (auto& c : copies_)
      if (c.f32 == data) return c.b16;
    throw std::logic_error("no bf16 copy");
  }
  template <class T>
  TensorView<T> out_view(std::vector<T>& out) const {
    return prob_.out_view(out);
  }

 private:
  struct Copy {
    const float* f32;
    std::vector<bf16> b16;
  };
  struct PhiBuf {
    std::vector<bf16> pe, w1, b1, w2, b2, w;
    PhiWeights<bf16> weights() const {
      return {pe.data(), w1.data(), b1.data(), w2.data(), b2.data(), w.data()};
    }
  };
  TensorView<const bf16> map(const TensorView<const float>& v) const {
    for (const auto& c : copies_)
      if (c.f32 == v.data) return {c.b16.data(), v.shape, v.stride};
    throw std::logic_error("view without a bf16 copy");
  }

  RandomNsaProblem prob_;
  std::vector<Copy> copies_;
  std::vector<PhiBuf> phi_;
};

// The reference's selection-block scores S(t, g) of flattened row `row` (token t of its
// sequence), recomputed from its saved Kc and compression lse: the near-tie judge.
inline std::vector<double> reference_scores(const Config& config, const NsaInputs<double>& in,
                                     const NsaSaved<double>& ref, const Problem& p, index_t row,
                                     index_t kvh) {
  index_t s = 0;
  while (!(row >= p.seqs[s].row0 && row < p.seqs[s].row0 + p.seqs[s].len)) ++s;
  const SeqSpan& seq = p.seqs[static_cast<size_t>(s)];
  const index_t t = row - seq.row0, d_k = p.d_k, H_kv = p.kv_heads, G = p.group;
  const index_t cmp0 = ref.cmp_offsets[static_cast<size_t>(s)];
  const index_t visible = std::min(config.visible_cmp_blocks(t),
                                   ref.cmp_offsets[static_cast<size_t>(s) + 1] - cmp0);
  std::vector<double> group_p(static_cast<size_t>(visible), 0.0);
  for (index_t g = 0; g < G; ++g) {
    const index_t h = kvh * G + g;
    const double* q = in.q.ptr(seq.batch, seq.start + t, h);
    const double lse = ref.lse_of(kCmp)[row * p.heads + h];
    for (index_t i = 0; i < visible; ++i) {
      const double* kc = ref.k_cmp_blocks.data() + ((cmp0 + i) * H_kv + kvh) * d_k;
      double dot = 0.0;
      for (index_t c = 0; c < d_k; ++c) dot += q[c] * kc[c];
      group_p[static_cast<size_t>(i)] += std::exp(p.scale * dot - lse);
    }
  }
  return reference::selection_scores(config, group_p, t);
}

// A RandomDenseProblem whose q, k, v are rounded to bf16: in16 over the bf16 copies, in64
// over the same values in float64.
struct Bf16Dense {
  explicit Bf16Dense(const ProblemShape& s) : prob(s) {
    const auto f = prob.inputs32();
    const auto d = prob.inputs64();
    auto copy = [](const TensorView<const float>& v, std::vector<bf16>& b, std::vector<double>& x) {
      const size_t n = static_cast<size_t>(v.batch() * v.tokens() * v.heads() * v.dim());
      b.resize(n);
      x.resize(n);
      for (size_t i = 0; i < n; ++i) {
        b[i] = bf16(v.data[i]);
        x[i] = static_cast<float>(b[i]);
      }
      return TensorView<const bf16>{b.data(), v.shape, v.stride};
    };
    in16 = {copy(f.q, q, q64), copy(f.k, k, k64), copy(f.v, v, v64), f.seqs, 0.0};
    in64 = {{q64.data(), d.q.shape, d.q.stride}, {k64.data(), d.k.shape, d.k.stride},
            {v64.data(), d.v.shape, d.v.stride}, d.seqs, 0.0};
  }
  testing::RandomDenseProblem prob;
  std::vector<bf16> q, k, v;
  std::vector<double> q64, k64, v64;
  DenseInputs<bf16> in16;
  DenseInputs<double> in64;
};

}  // namespace nsa::bf16_test
