// The fp32 CPU nsa_backward against the float64 reference backward (spec tolerance for
// fp32 gradients: 1e-4 relative), on the forward test's covering set of shapes: every
// T boundary of the small config (l=8, d=4, l'=16, n=4, w=32), G in {1,2,3,4,16},
// d_k/d_v in {64/64, 128/128, 192/128}, shared and independent K/V, B > 1, varlen with
// empty and shorter-than-l sequences, the three phi forms, and the paper's defaults at
// T = 1000 and 4097 (small heads and dims there: the float64 reference is slow).
// The fp32 backward runs on the fp32 forward's saved state, the reference on the
// reference forward's; the two selections must be equal (asserted).
// Also: determinism (bitwise at a fixed thread count, 1 vs 2 vs 3 threads), every compiled
// SIMD target, strided gradient views, and rejection of bad input with buffers untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "hwy/targets.h"
#include "nsa/nsa.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using testing::ProblemShape;
using testing::RandomNsaProblem;
using testing::relative_error;

constexpr double kTol = 1e-4;  // fp32 gradients (spec, "Tolerances")

ConfigOptions small_options(PhiKind phi = PhiKind::mlp) {
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

ProblemShape shape(index_t tokens, index_t heads, index_t kv_heads, index_t d_k, index_t d_v,
                   bool shared, std::uint64_t seed) {
  ProblemShape s;
  s.tokens = tokens;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.d_k = d_k;
  s.d_v = d_v;
  s.shared_kv = shared;
  s.seed = seed;
  return s;
}

// Gradient buffers for one problem, contiguous, aliased where the problem shares K/V (one
// dk / dv for the three branches, which must receive their sum). Filled with NaN first:
// the backward must overwrite every element.
template <class T>
struct GradBuffers {
  static constexpr int kPhiFields = 6;  // pe, w1, b1, w2, b2, w
  std::vector<T> dq, dk_cmp, dv_cmp, dk_slc, dv_slc, dk_win, dv_win, dgates;
  std::vector<T> pk[kPhiFields], pv[kPhiFields];
  NsaGradients<T> grads;

  explicit GradBuffers(RandomNsaProblem& prob) {
    const auto& s = prob.shape();
    const index_t bt = s.batch * s.tokens;
    const T nan = std::numeric_limits<T>::quiet_NaN();
    dq.assign(static_cast<size_t>(bt * s.heads * s.d_k), nan);
    dgates.assign(static_cast<size_t>(bt * s.heads * 3), nan);
    for (auto* v : {&dk_cmp, &dk_slc, &dk_win}) v->assign(static_cast<size_t>(bt * s.kv_heads * s.d_k), nan);
    for (auto* v : {&dv_cmp, &dv_slc, &dv_win}) v->assign(static_cast<size_t>(bt * s.kv_heads * s.d_v), nan);
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
    grads.phi_k = phi(b.phi_k, pk, nan);
    grads.phi_v = phi(b.phi_v, pv, nan);
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

std::vector<double> random_d_out(index_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<double> d(static_cast<size_t>(n));
  for (auto& x : d) x = static_cast<float>(normal(rng));  // exactly representable in fp32
  return d;
}

template <class T>
double norm(const std::vector<T>& x) {
  double sum = 0.0;
  for (T v : x) sum += static_cast<double>(v) * static_cast<double>(v);
  return std::sqrt(sum);
}

// ||x - ref|| / denominator (+inf when x holds a NaN or Inf).
template <class A, class B>
double error_over(const std::vector<A>& x, const std::vector<B>& ref, double denominator) {
  double diff = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(ref[i]);
    diff += d * d;
  }
  return std::isfinite(diff) ? std::sqrt(diff) / denominator : std::numeric_limits<double>::infinity();
}

// ||x - ref|| / ||ref||, except for a gradient that is zero by structure: phi_k.b2 (mlp)
// and phi_k.pe (linear) shift every compressed key of a row by the same vector, which the
// softmax ignores, so their exact gradient is 0 and the fp32 one is rounding noise of a
// sum that cancels. Those (||ref|| below 1e-6 of `scale`, the norm of the gradient of the
// raw keys k_cmp that the same dKc flows into) are measured against `scale` instead.
template <class A, class B>
double grad_error(const std::vector<A>& x, const std::vector<B>& ref, double scale) {
  const double r = norm(ref);
  return r >= 1e-6 * scale ? relative_error(x, ref) : error_over(x, ref, scale);
}

struct Case {
  std::string name;
  ConfigOptions options;
  ProblemShape shape;
  int threads = 1;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name << ": " << c.shape.describe(); }

// Runs the fp32 forward + backward of `prob` with `threads` threads into `g`.
void run_fp32(RandomNsaProblem& prob, const std::vector<double>& d_out64, int threads,
              GradBuffers<float>& g, NsaSaved<float>* saved_out = nullptr) {
  const auto& s = prob.shape();
  std::vector<float> out;
  NsaSaved<float> saved;
  ThreadPool pool(threads);
  nsa_forward(prob.config(), prob.inputs32(), prob.out_view(out), &saved, pool);
  const std::vector<float> d_out(d_out64.begin(), d_out64.end());
  nsa_backward(prob.config(), prob.inputs32(), saved,
               contiguous_view<const float>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v), g.grads, pool);
  if (saved_out) *saved_out = std::move(saved);
}

class CpuBackward : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBackward, MatchesReference) {
  const Case& c = GetParam();
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  const auto& s = prob.shape();
  SCOPED_TRACE(config.describe() + " " + s.describe());
  const std::vector<double> d_out = random_d_out(prob.out_size(), c.shape.seed + 100);

  std::vector<double> ref_out;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref_out), &ref_saved);
  GradBuffers<double> ref(prob);
  reference::nsa_backward(config, prob.inputs64(), ref_saved,
                          contiguous_view<const double>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v),
                          ref.grads);

  GradBuffers<float> got(prob);
  NsaSaved<float> saved;
  run_fp32(prob, d_out, c.threads, got, &saved);
  ASSERT_EQ(saved.sel_blocks, ref_saved.sel_blocks) << "the fp32 and reference selections differ";

  // One line per tensor (llm.c style), so the margin to the tolerance is visible.
  const auto refs = ref.all(s.shared_kv, config.phi());
  const auto gots = got.all(s.shared_kv, config.phi());
  std::string line;
  const double scale = norm(ref.dk_cmp);
  for (size_t i = 0; i < refs.size(); ++i) {
    const double e = grad_error(*gots[i].second, *refs[i].second, scale);
    EXPECT_LT(e, kTol) << gots[i].first;
    char buf[64];
    std::snprintf(buf, sizeof buf, " %s %.1e", gots[i].first.c_str(), e);
    line += buf;
  }
  std::printf("  rel err:%s\n", line.c_str());
}

std::vector<Case> cases() {
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
  v.push_back({"T70_G3_d20x12", S, shape(70, 3, 1, 20, 12, false, 10), 2});  // scalar tails
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
  {  // l' = 128 > kKeyTile: a selection block spans two key tiles; stride = l (no overlap)
    auto o = small_options();
    o.block_len = 16;
    o.stride = 16;
    o.sel_block = 128;
    o.top_n = 2;
    o.n_local = 1;
    o.window = 100;
    v.push_back({"T300_sel128_stride16", o, shape(300, 2, 1, 16, 24, false, 17), 3});
  }
  // The paper's defaults (l=32, d=16, l'=64, n=16, w=512).
  v.push_back({"paper_T1000_G4_d192x128_shared", ConfigOptions{}, shape(1000, 4, 1, 192, 128, true, 14), 2});
  v.push_back({"paper_T4097_G2_d32", ConfigOptions{}, shape(4097, 2, 1, 32, 32, false, 15), 2});
  {
    ConfigOptions o;
    o.phi = PhiKind::mean;
    v.push_back({"paper_T700_G16_mean_d64", o, shape(700, 16, 1, 64, 64, false, 16), 1});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuBackward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Bitwise equal bytes of every gradient buffer.
bool bitwise_equal(const GradBuffers<float>& a, const GradBuffers<float>& b, bool shared, PhiKind kind,
                   std::string* which) {
  const auto x = a.all(shared, kind), y = b.all(shared, kind);
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].second->size() != y[i].second->size() ||
        std::memcmp(x[i].second->data(), y[i].second->data(), x[i].second->size() * sizeof(float)) != 0) {
      *which = x[i].first;
      return false;
    }
  return true;
}

// Same thread count: bitwise equal. 1 vs 2 vs 3 threads: every gradient but phi's
// parameters has one task computing it (bitwise equal too); phi's parameters are summed
// from per-worker partials, so the grouping changes: equal within 1e-6.
TEST(CpuBackwardDeterminism, BitwiseAtFixedThreadsCloseAcrossThreadCounts) {
  const Config config(small_options());
  for (const bool shared : {false, true}) {
    RandomNsaProblem prob(config, shape(300, 6, 2, 64, 32, shared, 31));
    const auto d_out = random_d_out(prob.out_size(), 32);
    GradBuffers<float> one(prob);
    run_fp32(prob, d_out, 1, one);
    for (int threads : {2, 3}) {
      GradBuffers<float> a(prob), b(prob);
      run_fp32(prob, d_out, threads, a);
      run_fp32(prob, d_out, threads, b);
      std::string which;
      EXPECT_TRUE(bitwise_equal(a, b, shared, config.phi(), &which))
          << threads << " threads, two runs differ in " << which;
      const auto x = a.all(shared, config.phi()), y = one.all(shared, config.phi());
      for (size_t i = 0; i < x.size(); ++i) {
        const std::vector<double> ref(y[i].second->begin(), y[i].second->end());
        // phi_k.b2 is zero by structure (see grad_error): its 1-thread value is noise, so
        // it is measured against the scale of the raw-key gradient.
        const double e = x[i].first == "phi_k.b2" ? error_over(*x[i].second, ref, norm(one.dk_cmp))
                                                  : relative_error(*x[i].second, ref);
        if (x[i].first.rfind("phi_", 0) == 0)
          EXPECT_LT(e, 1e-6) << x[i].first << ": 1 vs " << threads << " threads";
        else
          EXPECT_EQ(e, 0.0) << x[i].first << ": 1 vs " << threads << " threads";
      }
    }
  }
}

// Every SIMD target compiled into the library (Highway dynamic dispatch), not only the best
// one this CPU has: the narrow-vector and scalar paths against the reference.
TEST(CpuBackwardTargets, EveryCompiledTargetMatchesReference) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(90, 6, 2, 36, 20, false, 24));
  const auto& s = prob.shape();
  const auto d_out = random_d_out(prob.out_size(), 25);
  std::vector<double> ref_out;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref_out), &ref_saved);
  GradBuffers<double> ref(prob);
  reference::nsa_backward(config, prob.inputs64(), ref_saved,
                          contiguous_view<const double>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v),
                          ref.grads);
  const auto refs = ref.all(false, config.phi());
  const double scale = norm(ref.dk_cmp);
  int targets = 0;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    GradBuffers<float> got(prob);
    NsaSaved<float> saved;
    run_fp32(prob, d_out, 2, got, &saved);
    EXPECT_EQ(saved.sel_blocks, ref_saved.sel_blocks) << hwy::TargetName(target);
    const auto gots = got.all(false, config.phi());
    for (size_t i = 0; i < refs.size(); ++i)
      EXPECT_LT(grad_error(*gots[i].second, *refs[i].second, scale), kTol)
          << hwy::TargetName(target) << " " << gots[i].first;
    ++targets;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(targets, 1);
}

// Gradient views with padding between heads and tokens, d_out strided too: the result must
// equal the contiguous one bitwise, and the padding must stay untouched.
TEST(CpuBackwardStrided, StridedGradientAndDoutViews) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(90, 4, 2, 24, 16, false, 26));
  const auto& s = prob.shape();
  const auto d_out64 = random_d_out(prob.out_size(), 27);
  GradBuffers<float> expected(prob);
  run_fp32(prob, d_out64, 2, expected);

  ThreadPool pool(2);
  std::vector<float> out;
  NsaSaved<float> saved;
  nsa_forward(config, prob.inputs32(), prob.out_view(out), &saved, pool);
  const index_t T = s.tokens, H = s.heads, Hkv = s.kv_heads;
  constexpr float kPad = -7.0f;
  // A padded [1, T, heads, dim] view over a fresh buffer (head stride dim + 3, token +5).
  std::vector<std::vector<float>> store;
  store.reserve(16);
  auto padded = [&](index_t heads, index_t dim) {
    const index_t hs = dim + 3, ts = heads * hs + 5;
    store.emplace_back(static_cast<size_t>(T * ts), kPad);
    return TensorView<float>{store.back().data(), {1, T, heads, dim}, {T * ts, ts, hs}};
  };
  TensorView<float> d_out = padded(H, s.d_v);
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H; ++h)
      for (index_t c = 0; c < s.d_v; ++c)
        d_out.at(0, t, h, c) = static_cast<float>(d_out64[static_cast<size_t>((t * H + h) * s.d_v + c)]);
  NsaGradients<float> g = expected.grads;  // phi gradients: contiguous, fresh below
  g.dq = padded(H, s.d_k);
  g.dgates = padded(H, 3);
  g.dk_cmp = padded(Hkv, s.d_k), g.dv_cmp = padded(Hkv, s.d_v);
  g.dk_slc = padded(Hkv, s.d_k), g.dv_slc = padded(Hkv, s.d_v);
  g.dk_win = padded(Hkv, s.d_k), g.dv_win = padded(Hkv, s.d_v);
  GradBuffers<float> phi_only(prob);
  g.phi_k = phi_only.grads.phi_k;
  g.phi_v = phi_only.grads.phi_v;
  nsa_backward(config, prob.inputs32(), saved, d_out.as_const(), g, pool);

  const struct {
    const TensorView<float>& view;
    const std::vector<float>& want;
    const char* name;
  } checks[] = {{g.dq, expected.dq, "dq"},         {g.dgates, expected.dgates, "dgates"},
                {g.dk_cmp, expected.dk_cmp, "dk_cmp"}, {g.dv_cmp, expected.dv_cmp, "dv_cmp"},
                {g.dk_slc, expected.dk_slc, "dk_slc"}, {g.dv_slc, expected.dv_slc, "dv_slc"},
                {g.dk_win, expected.dk_win, "dk_win"}, {g.dv_win, expected.dv_win, "dv_win"}};
  for (const auto& c : checks) {
    const TensorView<float>& v = c.view;
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < v.heads(); ++h) {
        for (index_t x = 0; x < v.dim(); ++x)
          ASSERT_EQ(v.at(0, t, h, x), c.want[static_cast<size_t>((t * v.heads() + h) * v.dim() + x)])
              << c.name << " t=" << t << " h=" << h << " c=" << x;
        for (index_t x = v.dim(); x < v.stride[2]; ++x)
          ASSERT_EQ(v.data[v.offset(0, t, h) + x], kPad) << c.name << ": padding written";
      }
  }
  for (int i = 0; i < 5; ++i) {  // mlp: pe, w1, b1, w2, b2
    EXPECT_EQ(0, std::memcmp(phi_only.pk[i].data(), expected.pk[i].data(), expected.pk[i].size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(phi_only.pv[i].data(), expected.pv[i].data(), expected.pv[i].size() * sizeof(float)));
  }
}

// T < l everywhere: the compression branch is empty, its gradients are zero, nothing NaN.
TEST(CpuBackwardShort, ShorterThanBlockLengthGivesZeroCompressionGradients) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(6, 3, 1, 16, 8, false, 28));
  GradBuffers<float> g(prob);
  run_fp32(prob, random_d_out(prob.out_size(), 29), 1, g);
  for (float x : g.dk_cmp) ASSERT_EQ(x, 0.0f);
  for (float x : g.dv_cmp) ASSERT_EQ(x, 0.0f);
  for (int i = 0; i < 5; ++i) {  // mlp: pe, w1, b1, w2, b2
    for (float x : g.pk[i]) ASSERT_EQ(x, 0.0f);
    for (float x : g.pv[i]) ASSERT_EQ(x, 0.0f);
  }
  for (size_t i = 0; i < g.dgates.size(); i += 3) ASSERT_EQ(g.dgates[i], 0.0f) << "dgate_cmp";
  for (float x : g.dq) ASSERT_TRUE(std::isfinite(x));
  for (float x : g.dk_slc) ASSERT_TRUE(std::isfinite(x));
}

// Bad input: nsa::Error with a message naming the problem, and no gradient written.
TEST(CpuBackwardValidation, BadInputThrowsAndWritesNothing) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(40, 4, 2, 16, 16, false, 23));
  const auto& s = prob.shape();
  ThreadPool pool(2);
  std::vector<float> out;
  NsaSaved<float> saved;
  nsa_forward(config, prob.inputs32(), prob.out_view(out), &saved, pool);
  const auto d_out64 = random_d_out(prob.out_size(), 30);
  std::vector<float> d_out(d_out64.begin(), d_out64.end());
  const auto d_out_view = contiguous_view<const float>(d_out.data(), 1, s.tokens, s.heads, s.d_v);

  // Saved state of another shape (a shorter sequence).
  RandomNsaProblem other(config, shape(33, 4, 2, 16, 16, false, 23));
  std::vector<float> other_out;
  NsaSaved<float> other_saved;
  nsa_forward(config, other.inputs32(), other.out_view(other_out), &other_saved, pool);

  auto expect_error = [&](const char* what, const std::string& needle, auto&& call) {
    GradBuffers<float> g(prob);
    bool thrown = false;
    try {
      call(g.grads);
    } catch (const Error& e) {
      thrown = true;
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << what << ": message \"" << e.what() << "\" does not mention \"" << needle << "\"";
    }
    EXPECT_TRUE(thrown) << what << ": no nsa::Error";
    for (const auto& [name, buf] : g.all(false, config.phi()))
      for (float x : *buf) ASSERT_TRUE(std::isnan(x)) << what << ": " << name << " was written";
  };
  expect_error("saved from another shape", "saved state does not match", [&](const NsaGradients<float>& g) {
    nsa_backward(config, prob.inputs32(), other_saved, d_out_view, g, pool);
  });
  expect_error("d_out of the wrong shape", "d_out", [&](const NsaGradients<float>& g) {
    auto bad = d_out_view;
    bad.shape[3] = s.d_v - 1;
    nsa_backward(config, prob.inputs32(), saved, bad, g, pool);
  });
  expect_error("dk_slc of the wrong shape", "dk_slc", [&](const NsaGradients<float>& g) {
    auto bad = g;
    bad.dk_slc.shape[2] = 1;
    nsa_backward(config, prob.inputs32(), saved, d_out_view, bad, pool);
  });
  expect_error("null dq", "dq", [&](const NsaGradients<float>& g) {
    auto bad = g;
    bad.dq.data = nullptr;
    nsa_backward(config, prob.inputs32(), saved, d_out_view, bad, pool);
  });
  expect_error("null phi gradient", "phi_v gradient.w1", [&](const NsaGradients<float>& g) {
    auto bad = g;
    bad.phi_v.w1 = nullptr;
    nsa_backward(config, prob.inputs32(), saved, d_out_view, bad, pool);
  });
  expect_error("NaN in d_out", "d_out", [&](const NsaGradients<float>& g) {
    std::vector<float> nan_d_out = d_out;
    nan_d_out[123] = std::numeric_limits<float>::quiet_NaN();
    nsa_backward(config, prob.inputs32(), saved,
                 contiguous_view<const float>(nan_d_out.data(), 1, s.tokens, s.heads, s.d_v), g, pool);
  });
  expect_error("saved selection out of range", "sel_blocks", [&](const NsaGradients<float>& g) {
    NsaSaved<float> bad = saved;
    bad.sel_blocks[5] = 1000;
    nsa_backward(config, prob.inputs32(), bad, d_out_view, g, pool);
  });
}

}  // namespace
}  // namespace nsa
