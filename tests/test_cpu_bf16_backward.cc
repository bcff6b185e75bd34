// The bf16-storage backward (nsa_backward / dense_backward over bf16 inputs, backward.h):
//   - against the float64 reference backward on the very same (bf16-rounded) values, with
//     the bf16 forward's own selection (the reference backward recomputes everything from
//     the inputs and takes only the selection from the saved state), at the spec's bf16
//     tolerance (1e-2 relative), over odd shapes: T < l, G = 1, 3, 16, d_k != d_v, odd
//     dims, shared K/V, B > 1, varlen with empty sequences, the three phi forms;
//   - bitwise equal to the fp32 backward run on the same values widened (what it is
//     defined to be), so it inherits that backward's determinism across thread counts;
//   - invalid input (a NaN in a bf16 input, d_out of the wrong shape) throws, naming it,
//     before any gradient is written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "cpu/kernels.h"
#include "nsa/nsa.h"
#include "test_bf16_util.h"
#include "test_cpu_util.h"

namespace nsa {
namespace {

using bf16_test::Bf16Dense;
using bf16_test::Bf16NsaProblem;
using cpu_test::Case;
using cpu_test::GradBuffers;
using cpu_test::shape;
using cpu_test::small_options;
using testing::relative_error;

constexpr double kTol = 1e-2;  // bf16 (spec, "Tolerances")

std::vector<float> random_d_out(index_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> d(static_cast<size_t>(n));
  for (float& x : d) x = normal(rng);
  return d;
}

double norm(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// ||x - ref|| / ||ref||, or / (floor scale) for a gradient that is zero by structure, whose
// computed value is rounding noise: phi_k.b2 and the linear phi's pe (a shift of every
// compressed key, which the softmax ignores), dq and dk at T = 1 (a softmax over one key).
// scale: the largest gradient norm of the case. NaN or Inf in x gives +inf.
// floor: 1e-4, or 1e-2 where the bf16 forward ran on vdpbf16ps (AVX512_BF16): there P is
// rounded to bf16 in P V, so the saved branch outputs (and the backward's rowsum(dO o))
// differ from the fp32 ones by ~2^-9 relative, and a zero-by-structure gradient comes out
// as noise of that order (measured on an Intel Xeon: up to 4.2e-5 of scale, against the
// 1e-4 floor's 1e-6). Every other gradient keeps its own norm as the denominator.
double grad_error(const std::vector<float>& x, const std::vector<double>& ref, double scale) {
  const double floor = cpu::bf16_dot_for_forward() ? 1e-2 : 1e-4;
  double d = 0;
  for (size_t i = 0; i < ref.size(); ++i) d += (x[i] - ref[i]) * (x[i] - ref[i]);
  if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
  return std::sqrt(d) / std::max(norm(ref), floor * scale);
}

struct ForwardRun {
  std::vector<float> out, d_out;
  NsaSaved<float> saved;
};

// The bf16 forward of prob, and a d_out for it.
ForwardRun forward_bf16(const Config& config, Bf16NsaProblem& prob, ThreadPool& pool, std::uint64_t seed) {
  ForwardRun r;
  nsa_forward(config, prob.inputs16(), prob.out_view(r.out), &r.saved, pool);
  r.d_out = random_d_out(static_cast<index_t>(r.out.size()), seed);
  return r;
}

TensorView<const float> d_out_view(const Bf16NsaProblem& prob, const ForwardRun& r) {
  const auto& s = const_cast<Bf16NsaProblem&>(prob).base().shape();
  return contiguous_view<const float>(r.d_out.data(), s.batch, s.tokens, s.heads, s.d_v);
}

class CpuBf16Backward : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBf16Backward, MatchesReferenceOnBf16Values) {
  const Case& c = GetParam();
  const Config config(c.options);
  Bf16NsaProblem prob(config, c.shape);
  const auto& s = prob.base().shape();
  SCOPED_TRACE(config.describe() + " " + s.describe());
  ThreadPool pool(c.threads);
  const ForwardRun run = forward_bf16(config, prob, pool, c.shape.seed + 500);
  GradBuffers<float> got(prob.base());
  nsa_backward(config, prob.inputs16(), run.saved, d_out_view(prob, run), got.grads, pool);

  // The reference backward on the same values, with the bf16 forward's selection.
  std::vector<double> ref_out;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref_out), &ref_saved);
  ref_saved.sel_blocks = run.saved.sel_blocks;
  const std::vector<double> d64(run.d_out.begin(), run.d_out.end());
  GradBuffers<double> ref(prob.base());
  reference::nsa_backward(config, prob.inputs64(), ref_saved,
                          contiguous_view<const double>(d64.data(), s.batch, s.tokens, s.heads, s.d_v), ref.grads);

  const auto refs = ref.all(s.shared_kv, config.phi());
  const auto gots = got.all(s.shared_kv, config.phi());
  double scale = 0;
  for (const auto& r : refs) scale = std::max(scale, norm(*r.second));
  std::string line;
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
  v.push_back({"T1_G1_d64", S, shape(1, 1, 1, 64, 64, false, 301), 1});             // T < l
  v.push_back({"T7_G2_d20x12_shared", S, shape(7, 2, 1, 20, 12, true, 302), 2});    // T < l, shared
  v.push_back({"T37_G3_d24x8", S, shape(37, 3, 1, 24, 8, false, 303), 3});
  v.push_back({"T90_G3_d21x40_2kv", S, shape(90, 6, 2, 21, 40, false, 305), 2});     // odd d_k
  v.push_back({"T133_G16_d64", S, shape(133, 16, 1, 64, 64, false, 306), 3});
  v.push_back({"T70_G1_d192x128_shared", S, shape(70, 2, 2, 192, 128, true, 307), 2});
  v.push_back({"T100_linear_G2", small_options(PhiKind::linear), shape(100, 4, 2, 32, 32, false, 308), 2});
  v.push_back({"T100_mean_G4_shared", small_options(PhiKind::mean), shape(100, 4, 1, 32, 48, true, 309), 1});
  {
    Case c{"batch2_T77_G2", S, shape(77, 4, 2, 32, 32, false, 310), 2};
    c.shape.batch = 2;
    v.push_back(c);
  }
  {
    Case c{"varlen_0_5_70_1_33_G3", S, shape(0, 3, 1, 32, 32, false, 311), 2};
    c.shape.seqlens = {0, 5, 70, 1, 33};
    v.push_back(c);
  }
  v.push_back({"paper_T700_G4_d64_shared", ConfigOptions{}, shape(700, 4, 1, 64, 64, true, 312), 2});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuBf16Backward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// The bf16 backward is the fp32 one on the widened values: bitwise equal, at 1 and 3
// threads (and the fp32 backward's own determinism tests cover the thread counts).
TEST(CpuBf16BackwardDefinition, BitwiseEqualToFp32BackwardOnTheWidenedValues) {
  const Config config(small_options());
  for (const bool shared : {false, true}) {
    Bf16NsaProblem prob(config, shape(150, 6, 2, 24, 40, shared, 320 + shared));
    const auto& s = prob.base().shape();
    for (const int threads : {1, 3}) {
      ThreadPool pool(threads);
      const ForwardRun run = forward_bf16(config, prob, pool, 77);
      GradBuffers<float> a(prob.base()), b(prob.base());
      nsa_backward(config, prob.inputs16(), run.saved, d_out_view(prob, run), a.grads, pool);
      nsa_backward(config, prob.base().inputs32(), run.saved, d_out_view(prob, run), b.grads, pool);
      const auto x = a.all(s.shared_kv, config.phi()), y = b.all(s.shared_kv, config.phi());
      for (size_t i = 0; i < x.size(); ++i)
        EXPECT_EQ(0, std::memcmp(x[i].second->data(), y[i].second->data(), x[i].second->size() * sizeof(float)))
            << x[i].first << " shared=" << shared << " threads=" << threads;
    }
  }
}

TEST(CpuBf16BackwardValidation, BadInputThrowsNamingItAndWritesNothing) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(40, 2, 1, 16, 16, false, 330));
  const auto& s = prob.base().shape();
  ThreadPool pool(2);
  const ForwardRun run = forward_bf16(config, prob, pool, 5);
  auto expect_untouched = [&](const GradBuffers<float>& g) {
    for (const auto& [name, buf] : g.all(s.shared_kv, config.phi()))
      for (float x : *buf) ASSERT_TRUE(std::isnan(x)) << name << " was written";
  };
  {
    std::vector<bf16>& q = prob.buffer_of(prob.base().buffers32().q.data());
    const bf16 keep = q[9];
    q[9] = bf16(std::numeric_limits<float>::quiet_NaN());
    GradBuffers<float> g(prob.base());
    try {
      nsa_backward(config, prob.inputs16(), run.saved, d_out_view(prob, run), g.grads, pool);
      ADD_FAILURE() << "a NaN in q was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("q"), std::string::npos) << e.what();
    }
    expect_untouched(g);
    q[9] = keep;
  }
  {
    GradBuffers<float> g(prob.base());
    const auto bad = contiguous_view<const float>(run.d_out.data(), s.batch, s.tokens - 1, s.heads, s.d_v);
    try {
      nsa_backward(config, prob.inputs16(), run.saved, bad, g.grads, pool);
      ADD_FAILURE() << "d_out of the wrong shape was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("out"), std::string::npos) << e.what();
    }
    expect_untouched(g);
  }
}

// Dense: the bf16 backward against the reference on the same values, and bitwise equal to
// the fp32 backward on them widened.
TEST(CpuBf16DenseBackward, MatchesReferenceAndFp32OnTheSameValues) {
  struct Shape { index_t T, H, H_kv, d_k, d_v; };
  for (const Shape sh : {Shape{1, 1, 1, 16, 16}, Shape{100, 3, 1, 20, 12}, Shape{150, 8, 2, 24, 40},
                         Shape{90, 16, 1, 64, 64}}) {
    Bf16Dense p(shape(sh.T, sh.H, sh.H_kv, sh.d_k, sh.d_v, false, static_cast<std::uint64_t>(400 + sh.T)));
    const index_t B = p.in64.q.batch(), T = p.in64.q.tokens(), H = sh.H, rows = B * T;
    ThreadPool pool(2);
    std::vector<float> out, lse(static_cast<size_t>(rows * H));
    dense_forward(p.in16, p.prob.out_view(out), lse.data(), pool);
    const std::vector<float> d_out = random_d_out(static_cast<index_t>(out.size()), sh.T);
    const auto d_view = contiguous_view<const float>(d_out.data(), B, T, H, sh.d_v);
    const auto out_view = contiguous_view<const float>(out.data(), B, T, H, sh.d_v);
    auto grads = [&](std::vector<float>& dq, std::vector<float>& dk, std::vector<float>& dv) {
      dq.assign(static_cast<size_t>(rows * H * sh.d_k), NAN);
      dk.assign(static_cast<size_t>(rows * sh.H_kv * sh.d_k), NAN);
      dv.assign(static_cast<size_t>(rows * sh.H_kv * sh.d_v), NAN);
      return DenseGradients<float>{contiguous_view(dq.data(), B, T, H, sh.d_k),
                                   contiguous_view(dk.data(), B, T, sh.H_kv, sh.d_k),
                                   contiguous_view(dv.data(), B, T, sh.H_kv, sh.d_v)};
    };
    std::vector<float> dq, dk, dv, dq32, dk32, dv32;
    dense_backward(p.in16, out_view, lse.data(), d_view, grads(dq, dk, dv), pool);
    DenseInputs<float> in32;
    std::vector<float> q32(p.q64.begin(), p.q64.end()), k32(p.k64.begin(), p.k64.end()),
        v32(p.v64.begin(), p.v64.end());
    in32.q = {q32.data(), p.in64.q.shape, p.in64.q.stride};
    in32.k = {k32.data(), p.in64.k.shape, p.in64.k.stride};
    in32.v = {v32.data(), p.in64.v.shape, p.in64.v.stride};
    in32.seqs = p.in64.seqs;
    dense_backward(in32, out_view, lse.data(), d_view, grads(dq32, dk32, dv32), pool);
    EXPECT_EQ(dq, dq32) << "T=" << sh.T;
    EXPECT_EQ(dk, dk32) << "T=" << sh.T;
    EXPECT_EQ(dv, dv32) << "T=" << sh.T;

    std::vector<double> rq(dq.size()), rk(dk.size()), rv(dv.size());
    const std::vector<double> d64(d_out.begin(), d_out.end());
    reference::dense_backward(p.in64, contiguous_view<const double>(d64.data(), B, T, H, sh.d_v),
                              {contiguous_view(rq.data(), B, T, H, sh.d_k),
                               contiguous_view(rk.data(), B, T, sh.H_kv, sh.d_k),
                               contiguous_view(rv.data(), B, T, sh.H_kv, sh.d_v)});
    const double scale = std::max({norm(rq), norm(rk), norm(rv)});
    EXPECT_LT(grad_error(dq, rq, scale), kTol) << "dq T=" << sh.T;
    EXPECT_LT(grad_error(dk, rk, scale), kTol) << "dk T=" << sh.T;
    EXPECT_LT(grad_error(dv, rv, scale), kTol) << "dv T=" << sh.T;
  }
}

}  // namespace
}  // namespace nsa
