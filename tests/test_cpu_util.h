// Setup shared by the CPU kernel tests (forward, backward, bf16, dense, decode, errors,
// reference backward): the small config, problem shapes, the parameter grids, gradient
// buffers, the loop over every compiled SIMD target, and the comparison helpers that are
// not plain relative errors.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "hwy/targets.h"
#include "nsa/nsa.h"
#include "testing/random_problem.h"

namespace nsa::cpu_test {

// The small config whose boundaries the covering sets are built around:
// l=8, d=4, l'=16, n=4 (1 initial, 2 local blocks), w=32.
inline ConfigOptions small_options(PhiKind phi = PhiKind::mlp) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = 4;
  o.n_init = 1;
  o.n_local = 2;
  o.window = 32;
  o.phi = phi;
  return o;
}

// One NSA problem of batch 1: q [T, heads, d_k], k [T, kv_heads, d_k], v [T, kv_heads, d_v].
inline testing::ProblemShape shape(index_t tokens, index_t heads, index_t kv_heads, index_t d_k, index_t d_v,
                                   bool shared, std::uint64_t seed) {
  testing::ProblemShape s;
  s.tokens = tokens;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.d_k = d_k;
  s.d_v = d_v;
  s.shared_kv = shared;
  s.seed = seed;
  return s;
}

// One dense problem: q [B, T, heads, d_k], k [B, T, kv_heads, d_k], v [B, T, kv_heads, d_v].
inline testing::ProblemShape dense_shape(index_t batch, index_t tokens, index_t heads, index_t kv_heads,
                                         index_t d_k, index_t d_v, std::uint64_t seed) {
  testing::ProblemShape s = shape(tokens, heads, kv_heads, d_k, d_v, /*shared=*/false, seed);
  s.batch = batch;
  return s;
}

// One point of an NSA parameter grid.
struct Case {
  std::string name;
  ConfigOptions options;
  testing::ProblemShape shape;
  int threads = 1;
};

inline void PrintTo(const Case& c, std::ostream* os) { *os << c.name << ": " << c.shape.describe(); }

// The covering set of NSA problems (not the cross product) that the fp32 forward and
// backward tests share: every T boundary of the small config (before the first cmp block
// closes (T < l), at l'-1 / l' / l'+1 multiples, window crossings), G in {1,2,3,4,16},
// d_k/d_v in {64/64, 128/128, 192/128} and odd dims (scalar tails of every vector loop),
// shared and independent K/V, B > 1, varlen with empty and shorter-than-l sequences, the
// three phi forms; then `extra`; then the paper's defaults (l=32, d=16, l'=64, n=16, w=512).
inline std::vector<Case> covering_cases(const std::vector<Case>& extra = {}) {
  std::vector<Case> v;
  const auto S = small_options();
  v.push_back({"T1_G1_d64", S, shape(1, 1, 1, 64, 64, false, 1), 1});
  v.push_back({"T15_G2_d64_shared", S, shape(15, 2, 1, 64, 64, true, 2), 2});
  v.push_back({"T31_G3_d192x128", S, shape(31, 3, 1, 192, 128, false, 3), 1});
  v.push_back({"T32_G4_d128_shared", S, shape(32, 8, 2, 128, 128, true, 4), 2});
  v.push_back({"T33_G16_d64", S, shape(33, 16, 1, 64, 64, false, 5), 2});
  v.push_back({"T100_G3_d64_2kv", S, shape(100, 6, 2, 64, 64, false, 6), 2});
  v.push_back({"T100_G1_d192x128_shared", S, shape(100, 2, 2, 192, 128, true, 7), 1});
  v.push_back({"T100_linear_G2", small_options(PhiKind::linear), shape(100, 4, 2, 64, 64, false, 8), 2});
  v.push_back({"T100_mean_G4", small_options(PhiKind::mean), shape(100, 4, 1, 64, 64, true, 9), 1});
  v.push_back({"T70_G3_d20x12", S, shape(70, 3, 1, 20, 12, false, 10), 2});  // odd head dims
  {
    Case c{"batch3_T77_G2", S, shape(77, 4, 2, 64, 64, false, 11), 2};
    c.shape.batch = 3;
    v.push_back(c);
  }
  {
    Case c{"varlen_0_5_70_1_33_G3", S, shape(0, 3, 1, 64, 64, false, 12), 2};
    c.shape.seqlens = {0, 5, 70, 1, 33};
    v.push_back(c);
  }
  {  // top_n larger than the candidates early on, n_init = 2, n_local = 1, tiny window
    auto o = small_options(PhiKind::linear);
    o.top_n = 5;
    o.n_init = 2;
    o.n_local = 1;
    o.window = 7;
    v.push_back({"T150_n5_init2_local1_w7", o, shape(150, 4, 2, 64, 64, false, 13), 2});
  }
  v.insert(v.end(), extra.begin(), extra.end());
  v.push_back({"paper_T1000_G4_d192x128_shared", ConfigOptions{}, shape(1000, 4, 1, 192, 128, true, 14), 2});
  v.push_back({"paper_T4097_G2_d32", ConfigOptions{}, shape(4097, 2, 1, 32, 32, false, 15), 2});
  {
    ConfigOptions o;
    o.phi = PhiKind::mean;
    v.push_back({"paper_T700_G16_mean_d64", o, shape(700, 16, 1, 64, 64, false, 16), 1});
  }
  return v;
}

// One point of a dense parameter grid (scale 0: 1/sqrt(d_k)).
struct DenseCase {
  std::string name;
  testing::ProblemShape shape;
  int threads = 1;
  double scale = 0.0;
};

inline void PrintTo(const DenseCase& c, std::ostream* os) { *os << c.name << ": " << c.shape.describe(); }

// The dense problems that the fp32 dense forward and backward tests share: G 1..16, the
// head-dim pairs and odd dims, two kv heads, B > 1; then `extra`; then varlen with an empty
// sequence.
inline std::vector<DenseCase> dense_covering_cases(const std::vector<DenseCase>& extra) {
  std::vector<DenseCase> v;
  v.push_back({"T1_G1_d64", dense_shape(1, 1, 1, 1, 64, 64, 1), 1});
  v.push_back({"T33_G3_d192x128", dense_shape(1, 33, 3, 1, 192, 128, 2), 2});
  v.push_back({"T100_G16_d128", dense_shape(1, 100, 16, 1, 128, 128, 3), 2});
  v.push_back({"T130_G2_d64_2kv", dense_shape(1, 130, 4, 2, 64, 64, 4), 1});
  v.push_back({"T65_G4_d20x12", dense_shape(1, 65, 4, 1, 20, 12, 5), 2});
  v.push_back({"batch3_T50_G2", dense_shape(3, 50, 4, 2, 64, 64, 6), 2});
  v.insert(v.end(), extra.begin(), extra.end());
  DenseCase varlen{"varlen_0_1_64_65_7_G3", dense_shape(1, 0, 3, 1, 64, 64, 10), 2};
  varlen.shape.seqlens = {0, 1, 64, 65, 7};
  v.push_back(varlen);
  return v;
}

// Gradient buffers for one problem, contiguous, aliased where the problem shares K/V (one
// dk / dv for the three branches, which must receive their sum). Filled with `fill`, NaN by
// default: the backward must overwrite every element.
template <class T>
struct GradBuffers {
  static constexpr int kPhiFields = 6;  // pe, w1, b1, w2, b2, w
  std::vector<T> dq, dk_cmp, dv_cmp, dk_slc, dv_slc, dk_win, dv_win, dgates;
  std::vector<T> pk[kPhiFields], pv[kPhiFields];
  NsaGradients<T> grads;

  explicit GradBuffers(testing::RandomNsaProblem& prob, T fill = std::numeric_limits<T>::quiet_NaN()) {
    const auto& s = prob.shape();
    const index_t bt = s.batch * s.tokens;
    dq.assign(static_cast<size_t>(bt * s.heads * s.d_k), fill);
    dgates.assign(static_cast<size_t>(bt * s.heads * 3), fill);
    for (auto* v : {&dk_cmp, &dk_slc, &dk_win}) v->assign(static_cast<size_t>(bt * s.kv_heads * s.d_k), fill);
    for (auto* v : {&dv_cmp, &dv_slc, &dv_win}) v->assign(static_cast<size_t>(bt * s.kv_heads * s.d_v), fill);
    auto view = [&](std::vector<T>& v, index_t heads, index_t dim) {
      return contiguous_view(v.data(), s.batch, s.tokens, heads, dim);
    };
    grads.dq = view(dq, s.heads, s.d_k);
    grads.dgates = view(dgates, s.heads, 3);
    grads.dk_cmp = view(dk_cmp, s.kv_heads, s.d_k);
    grads.dv_cmp = view(dv_cmp, s.kv_heads, s.d_v);
    grads.dk_slc = s.shared_kv ? grads.dk_cmp : view(dk_slc, s.kv_heads, s.d_k);
    grads.dv_slc = s.shared_kv ? grads.dv_cmp : view(dv_slc, s.kv_heads, s.d_v);
    grads.dk_win = s.shared_kv ? grads.dk_cmp : view(dk_win, s.kv_heads, s.d_k);
    grads.dv_win = s.shared_kv ? grads.dv_cmp : view(dv_win, s.kv_heads, s.d_v);
    const auto& b = prob.buffers64();
    grads.phi_k = phi(b.phi_k, pk, fill);
    grads.phi_v = phi(b.phi_v, pv, fill);
  }

  static PhiGradients<T> phi(const testing::PhiBuffers<double>& w, std::vector<T>* g, T fill) {
    const std::vector<double>* src[kPhiFields] = {&w.pe, &w.w1, &w.b1, &w.w2, &w.b2, &w.w};
    for (int i = 0; i < kPhiFields; ++i) g[i].assign(src[i]->size(), fill);
    auto ptr = [](std::vector<T>& v) { return v.empty() ? nullptr : v.data(); };
    return {ptr(g[0]), ptr(g[1]), ptr(g[2]), ptr(g[3]), ptr(g[4]), ptr(g[5])};
  }

  // Every buffer, in a fixed order (for bitwise comparisons), with its name.
  std::vector<std::pair<std::string, const std::vector<T>*>> all(bool shared, PhiKind kind) const {
    std::vector<std::pair<std::string, const std::vector<T>*>> v = {
        {"dq", &dq}, {"dgates", &dgates}, {shared ? "dk (shared)" : "dk_cmp", &dk_cmp},
        {shared ? "dv (shared)" : "dv_cmp", &dv_cmp}};
    if (!shared) {
      v.push_back({"dk_slc", &dk_slc});
      v.push_back({"dv_slc", &dv_slc});
      v.push_back({"dk_win", &dk_win});
      v.push_back({"dv_win", &dv_win});
    }
    const char* names[kPhiFields] = {"pe", "w1", "b1", "w2", "b2", "w"};
    const bool used[3][kPhiFields] = {{true, true, true, true, true, false},
                                      {true, false, false, false, false, true},
                                      {false, false, false, false, false, false}};
    for (int i = 0; i < kPhiFields; ++i)
      if (used[static_cast<int>(kind)][i]) {
        v.push_back({std::string("phi_k.") + names[i], &pk[i]});
        v.push_back({std::string("phi_v.") + names[i], &pv[i]});
      }
    return v;
  }
};


// Runs `body(target_name)` once under every SIMD target compiled into the library (Highway
// dynamic dispatch), not only the best one this CPU has, then restores the best one.
// Returns how many targets ran.
template <class Body>
int for_each_target(Body&& body) {
  int targets = 0;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    body(hwy::TargetName(target));
    ++targets;
  }
  hwy::SetSupportedTargetsForTest(0);
  return targets;
}

// Relative error of lse over the entries where the reference is finite; the -inf entries
// (empty branch) must match exactly (+inf otherwise).
inline double lse_error(const std::vector<float>& x, const std::vector<double>& ref) {
  std::vector<float> xf;
  std::vector<double> rf;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i])) {
      if (!(std::isinf(x[i]) && x[i] < 0)) return std::numeric_limits<double>::infinity();
      continue;
    }
    xf.push_back(x[i]);
    rf.push_back(ref[i]);
  }
  return rf.empty() ? 0.0 : testing::relative_error(xf, rf);
}

// Expects `call()` to throw an nsa::Error whose message mentions `needle`.
template <class Call>
void expect_error_mentioning(const char* what, const std::string& needle, Call&& call) {
  bool thrown = false;
  try {
    call();
  } catch (const Error& e) {
    thrown = true;
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << what << ": message \"" << e.what() << "\" does not mention \"" << needle << "\"";
  }
  EXPECT_TRUE(thrown) << what << ": no nsa::Error";
}

}  // namespace nsa::cpu_test
