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

#include "nsa/nsa.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using cpu_test::Case;
using cpu_test::GradBuffers;
using cpu_test::shape;
using cpu_test::small_options;
using testing::RandomNsaProblem;
using testing::relative_error;

constexpr double kTol = 1e-4;  // fp32 gradients (spec, "Tolerances")

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

// Runs the float64 reference forward + backward of `prob` into `ref` and `ref_saved`.
void run_reference(RandomNsaProblem& prob, const std::vector<double>& d_out, GradBuffers<double>& ref,
                   NsaSaved<double>& ref_saved) {
  const auto& s = prob.shape();
  std::vector<double> ref_out;
  reference::nsa_forward(prob.config(), prob.inputs64(), prob.out_view(ref_out), &ref_saved);
  reference::nsa_backward(prob.config(), prob.inputs64(), ref_saved,
                          contiguous_view<const double>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v),
                          ref.grads);
}

class CpuBackward : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBackward, MatchesReference) {
  const Case& c = GetParam();
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  const auto& s = prob.shape();
  SCOPED_TRACE(config.describe() + " " + s.describe());
  const std::vector<double> d_out = random_d_out(prob.out_size(), c.shape.seed + 100);

  NsaSaved<double> ref_saved;
  GradBuffers<double> ref(prob);
  run_reference(prob, d_out, ref, ref_saved);

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

// The forward test's covering set, plus l' = 128 > kKeyTile: a selection block spans two
// key tiles; stride = l (no overlap).
std::vector<Case> cases() {
  auto o = small_options();
  o.block_len = 16;
  o.stride = 16;
  o.sel_block = 128;
  o.top_n = 2;
  o.n_local = 1;
  o.window = 100;
  return cpu_test::covering_cases({{"T300_sel128_stride16", o, shape(300, 2, 1, 16, 24, false, 17), 3}});
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
  const auto d_out = random_d_out(prob.out_size(), 25);
  NsaSaved<double> ref_saved;
  GradBuffers<double> ref(prob);
  run_reference(prob, d_out, ref, ref_saved);
  const auto refs = ref.all(false, config.phi());
  const double scale = norm(ref.dk_cmp);
  const int targets = cpu_test::for_each_target([&](const char* target) {
    GradBuffers<float> got(prob);
    NsaSaved<float> saved;
    run_fp32(prob, d_out, 2, got, &saved);
    EXPECT_EQ(saved.sel_blocks, ref_saved.sel_blocks) << target;
    const auto gots = got.all(false, config.phi());
    for (size_t i = 0; i < refs.size(); ++i)
      EXPECT_LT(grad_error(*gots[i].second, *refs[i].second, scale), kTol) << target << " " << gots[i].first;
  });
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
    cpu_test::expect_error_mentioning(what, needle, [&] { call(g.grads); });
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
