// The bf16 storage path (nsa::bf16 inputs, fp32 accumulation and outputs):
//   - the bf16 type: round to nearest even, Inf, NaN, overflow, every bit pattern;
//   - nsa_forward and dense_forward on bf16 inputs against the float64 reference run on
//     the very same (bf16-rounded) values, at the spec's bf16 tolerance (1e-2), over a
//     covering set of shapes, thread counts and every compiled SIMD target, with the
//     vdpbf16ps path (AVX512_BF16 CPUs) and the widening path both exercised;
//   - chosen blocks equal to the reference's except at near-ties of the importance
//     scores (checked against the reference's own scores), outputs compared on the rows
//     whose choice matches;
//   - bitwise reproducibility across thread counts, strided (odd-stride) views, bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "cpu/kernels.h"
#include "hwy/targets.h"
#include "nsa/nsa.h"
#include "reference/reference.h"
#include "test_bf16_util.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using bf16_test::Bf16Dense;
using bf16_test::Bf16NsaProblem;
using bf16_test::reference_scores;
using cpu_test::Case;
using cpu_test::DenseCase;
using cpu_test::shape;
using cpu_test::small_options;
using testing::ProblemShape;
using testing::RandomDenseProblem;
using testing::RandomNsaProblem;
using testing::relative_error;

// Spec, "Tolerances": bf16 storage, fp32 accumulation, 1e-2. Tighter here: the errors
// measured are at most 2e-3 (bf16 rounding of Kc/Vc, ~1.7e-3 on them, and on the
// vdpbf16ps path of the probabilities in P V, ~1e-3), and a lost term or a wrong block
// shows up far above 5e-3.
constexpr double kTol = 5e-3;

// ---- the bf16 type ----------------------------------------------------------------------

std::uint16_t bits_of(float f) { return bf16(f).bits; }

TEST(Bf16Conversion, RoundsToNearestEven) {
  EXPECT_EQ(bits_of(1.0f), 0x3f80);
  EXPECT_EQ(bits_of(-2.0f), 0xc000);
  const float ulp = std::ldexp(1.0f, -7);  // bf16 spacing in [1, 2)
  EXPECT_EQ(static_cast<float>(bf16(1.0f + ulp)), 1.0f + ulp);              // exact
  EXPECT_EQ(static_cast<float>(bf16(1.0f + ulp / 2)), 1.0f);                // tie -> even (down)
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3 * ulp / 2)), 1.0f + 2 * ulp);  // tie -> even (up)
  EXPECT_EQ(static_cast<float>(bf16(1.0f + ulp / 2 + std::ldexp(1.0f, -20))), 1.0f + ulp);
  EXPECT_EQ(static_cast<float>(bf16(1.0f + ulp / 2 - std::ldexp(1.0f, -20))), 1.0f);
  EXPECT_EQ(static_cast<float>(bf16(-(1.0f + 3 * ulp / 2))), -(1.0f + 2 * ulp));
  EXPECT_EQ(static_cast<float>(bf16(3.14159265f)), 3.140625f);
  EXPECT_EQ(bits_of(-0.0f), 0x8000);
  EXPECT_EQ(bits_of(0.0f), 0x0000);
  // Subnormals round like any other value.
  EXPECT_EQ(bits_of(std::bit_cast<float>(0x00018000u)), 0x0002);  // tie -> even
  EXPECT_EQ(bits_of(std::bit_cast<float>(0x00010001u)), 0x0001);
  static_assert(bf16_bits_from_float(1.0f) == 0x3f80, "constexpr conversion");
}

TEST(Bf16Conversion, InfinityNaNAndOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bits_of(inf), 0x7f80);
  EXPECT_EQ(bits_of(-inf), 0xff80);
  EXPECT_EQ(static_cast<float>(bf16(inf)), inf);
  // The largest finite bf16 survives; beyond it (past the halfway point) rounds to Inf.
  const float max_bf16 = std::bit_cast<float>(0x7f7f0000u);
  EXPECT_EQ(static_cast<float>(bf16(max_bf16)), max_bf16);
  EXPECT_EQ(bits_of(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(bits_of(std::bit_cast<float>(0x7f7f7fffu)), 0x7f7f);  // below the tie: stays finite
  // NaN stays NaN, even one whose payload sits only in the low bits (plain rounding
  // would carry it into Inf), and keeps its sign.
  for (std::uint32_t nan_bits : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const bf16 x(std::bit_cast<float>(nan_bits));
    EXPECT_TRUE(std::isnan(static_cast<float>(x))) << std::hex << nan_bits;
    EXPECT_EQ(x.bits >> 15, nan_bits >> 31) << std::hex << nan_bits;
  }
}

TEST(Bf16Conversion, EveryBitPatternRoundTrips) {
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const bf16 x = bf16::from_bits(static_cast<std::uint16_t>(b));
    const float f = x;
    ASSERT_EQ(std::bit_cast<std::uint32_t>(f), b << 16);
    if (std::isnan(f))
      ASSERT_TRUE(std::isnan(static_cast<float>(bf16(f))));
    else
      ASSERT_EQ(bf16(f).bits, b) << std::hex << b;
  }
  const float src[3] = {1.5f, -0.1f, 1e30f};
  bf16 mid[3];
  float back[3];
  to_bf16(src, mid, 3);
  to_float(mid, back, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(back[i], static_cast<float>(bf16(src[i])));
  EXPECT_NE(back[1], src[1]);  // -0.1 is not a bf16
}

// ---- comparisons ---------------------------------------------------------------------------

struct Comparison {
  double out = 0, branch[kNumBranches] = {0, 0, 0}, lse = 0, kc = 0, vc = 0;
  index_t mismatched = 0, groups = 0;
  double worst_tie_gap = 0;  // largest (S[ref choice] - S[bf16 choice]) / S[ref choice]
};

// Relative error of x against ref over the (row, head) entries `keep` allows (dim values each).
double masked_error(const float* x, const double* ref, index_t rows, index_t heads, index_t dim,
                    const std::vector<char>& keep) {
  std::vector<float> xs;
  std::vector<double> rs;
  for (index_t i = 0; i < rows * heads; ++i)
    if (keep[static_cast<size_t>(i)])
      for (index_t c = 0; c < dim; ++c) {
        xs.push_back(x[i * dim + c]);
        rs.push_back(ref[i * dim + c]);
      }
  return rs.empty() ? 0.0 : relative_error(xs, rs);
}

Comparison compare(const Config& config, const Problem& p, const NsaInputs<double>& in64,
                   const std::vector<float>& out, const NsaSaved<float>& saved,
                   const std::vector<double>& ref, const NsaSaved<double>& ref_saved) {
  Comparison c;
  const index_t R = saved.rows, H = saved.heads, H_kv = saved.kv_heads, n = saved.top_n, G = H / H_kv;
  std::vector<char> all(static_cast<size_t>(R * H), 1), keep = all;
  for (index_t row = 0; row < R; ++row)
    for (index_t kvh = 0; kvh < H_kv; ++kvh) {
      ++c.groups;
      const std::int32_t* a = saved.sel_blocks.data() + (row * H_kv + kvh) * n;
      const std::int32_t* b = ref_saved.sel_blocks.data() + (row * H_kv + kvh) * n;
      if (std::equal(a, a + n, b)) continue;
      ++c.mismatched;
      for (index_t g = 0; g < G; ++g) keep[static_cast<size_t>(row * H + kvh * G + g)] = 0;
      const std::vector<double> S = reference_scores(config, in64, ref_saved, p, row, kvh);
      for (index_t i = 0; i < n; ++i) {
        if (b[i] < 0 || std::find(a, a + n, b[i]) != a + n) continue;  // ref-only block b[i]
        for (index_t k = 0; k < n; ++k) {
          if (a[k] < 0 || std::find(b, b + n, a[k]) != b + n) continue;  // bf16-only block a[k]
          const double gap = (S[static_cast<size_t>(b[i])] - S[static_cast<size_t>(a[k])]) /
                             std::max(S[static_cast<size_t>(b[i])], 1e-300);
          c.worst_tie_gap = std::max(c.worst_tie_gap, std::abs(gap));
        }
      }
    }
  c.out = masked_error(out.data(), ref.data(), R, H, saved.d_v, keep);
  for (int b = 0; b < kNumBranches; ++b)
    c.branch[b] = masked_error(saved.branch_out_of(static_cast<Branch>(b)),
                               ref_saved.branch_out_of(static_cast<Branch>(b)), R, H, saved.d_v,
                               b == kSlc ? keep : all);
  // lse: -inf entries must match exactly, the others relatively.
  std::vector<float> lx;
  std::vector<double> lr;
  for (size_t i = 0; i < ref_saved.lse.size(); ++i) {
    const size_t entry = i % static_cast<size_t>(R * H);
    if (i / static_cast<size_t>(R * H) == kSlc && !keep[entry]) continue;
    if (std::isinf(ref_saved.lse[i])) {
      if (!(std::isinf(saved.lse[i]) && saved.lse[i] < 0)) c.lse = std::numeric_limits<double>::infinity();
      continue;
    }
    lx.push_back(saved.lse[i]);
    lr.push_back(ref_saved.lse[i]);
  }
  if (!lr.empty()) c.lse = std::max(c.lse, relative_error(lx, lr));
  c.kc = saved.k_cmp_blocks.empty() ? 0.0 : relative_error(saved.k_cmp_blocks, ref_saved.k_cmp_blocks);
  c.vc = saved.v_cmp_blocks.empty() ? 0.0 : relative_error(saved.v_cmp_blocks, ref_saved.v_cmp_blocks);
  return c;
}

// Near-ties: a differing choice must be one the reference's own scores barely prefer, and
// rare. The bound is far above bf16's score error (~1e-3) and far below a wrong choice.
constexpr double kTieGap = 2e-2;
constexpr double kMaxMismatchFraction = 0.05;

void expect_close(const Comparison& c, const std::string& what) {
  EXPECT_LT(c.out, kTol) << what << " out";
  for (int b = 0; b < kNumBranches; ++b) EXPECT_LT(c.branch[b], kTol) << what << " branch " << b;
  EXPECT_LT(c.lse, kTol) << what << " lse";
  EXPECT_LT(c.kc, kTol) << what << " Kc";
  EXPECT_LT(c.vc, kTol) << what << " Vc";
  EXPECT_LE(c.worst_tie_gap, kTieGap) << what << ": a chosen block differs from the reference's "
                                      << "and the scores are not near-tied";
  EXPECT_LE(static_cast<double>(c.mismatched), kMaxMismatchFraction * static_cast<double>(c.groups))
      << what << ": " << c.mismatched << " of " << c.groups << " choices differ";
  std::printf("  %s rel err: out %.2e  cmp %.2e  slc %.2e  win %.2e  lse %.2e  Kc %.2e  Vc %.2e"
              "  sel differ %lld/%lld (gap %.1e)\n",
              what.c_str(), c.out, c.branch[kCmp], c.branch[kSlc], c.branch[kWin], c.lse, c.kc, c.vc,
              static_cast<long long>(c.mismatched), static_cast<long long>(c.groups), c.worst_tie_gap);
}

// Both bf16 paths where the CPU has them: vdpbf16ps (AVX512_BF16), then widening to fp32.
std::vector<bool> dot_modes() {
  cpu::set_bf16_dot_allowed(true);
  if (cpu::bf16_dot_enabled()) return {true, false};
  return {false};
}

const char* mode_name(bool dot) { return dot ? "vdpbf16ps" : "widen"; }

class CpuBf16Forward : public ::testing::TestWithParam<Case> {};

TEST_P(CpuBf16Forward, MatchesReferenceOnBf16Values) {
  const Case& c = GetParam();
  const Config config(c.options);
  Bf16NsaProblem prob(config, c.shape);
  SCOPED_TRACE(config.describe() + " " + c.shape.describe());
  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  const TensorView<double> ref_view = prob.out_view(ref);
  const Problem p = validate_nsa(config, prob.inputs64(), ref_view);
  reference::nsa_forward(config, prob.inputs64(), ref_view, &ref_saved);
  ThreadPool pool(c.threads);
  for (const bool dot : dot_modes()) {
    cpu::set_bf16_dot_allowed(dot);
    std::vector<float> out;
    NsaSaved<float> saved;
    nsa_forward(config, prob.inputs16(), prob.out_view(out), &saved, pool);
    EXPECT_EQ(saved.cmp_offsets, ref_saved.cmp_offsets);
    ASSERT_EQ(saved.sel_blocks.size(), ref_saved.sel_blocks.size());
    expect_close(compare(config, p, prob.inputs64(), out, saved, ref, ref_saved), mode_name(dot));
  }
  cpu::set_bf16_dot_allowed(true);
}

std::vector<Case> cases() {
  std::vector<Case> v;
  const auto S = small_options();
  v.push_back({"T1_G1_d64", S, shape(1, 1, 1, 64, 64, false, 101), 1});        // T < l
  v.push_back({"T7_G2_d20x12_shared", S, shape(7, 2, 1, 20, 12, true, 102), 2});  // T < l, odd pair
  v.push_back({"T37_G3_d24x8", S, shape(37, 3, 1, 24, 8, false, 103), 3});
  v.push_back({"T100_G1_d192x128_2kv_shared", S, shape(100, 2, 2, 192, 128, true, 104), 2});
  v.push_back({"T90_G3_d21x40", S, shape(90, 6, 2, 21, 40, false, 105), 2});    // odd d_k, d_v tail
  v.push_back({"T77_G2_d43x24", S, shape(77, 4, 2, 43, 24, false, 114), 2});  // 16 pairs + tail
  v.push_back({"T133_G16_d64", S, shape(133, 16, 1, 64, 64, false, 106), 3});
  v.push_back({"T70_G3_d192x128", S, shape(70, 3, 1, 192, 128, false, 107), 1});
  v.push_back({"T100_linear_G2", small_options(PhiKind::linear), shape(100, 4, 2, 64, 64, false, 108), 2});
  v.push_back({"T100_mean_G4_shared", small_options(PhiKind::mean), shape(100, 4, 1, 32, 48, true, 109), 1});
  {
    Case c{"batch3_T77_G2", S, shape(77, 4, 2, 64, 64, false, 110), 2};
    c.shape.batch = 3;
    v.push_back(c);
  }
  {
    Case c{"varlen_0_5_70_1_33_G3", S, shape(0, 3, 1, 64, 64, false, 111), 2};
    c.shape.seqlens = {0, 5, 70, 1, 33};
    v.push_back(c);
  }
  v.push_back({"paper_T1000_G4_d192x128_shared", ConfigOptions{}, shape(1000, 4, 1, 192, 128, true, 112), 2});
  v.push_back({"paper_T600_G16_d192x128", ConfigOptions{}, shape(600, 16, 1, 192, 128, false, 113), 2});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuBf16Forward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Every SIMD target compiled into the library, each with the bf16 paths it has.
TEST(CpuBf16ForwardTargets, EveryCompiledTargetMatchesReference) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(90, 6, 2, 21, 40, false, 124));
  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  const TensorView<double> ref_view = prob.out_view(ref);
  const Problem p = validate_nsa(config, prob.inputs64(), ref_view);
  reference::nsa_forward(config, prob.inputs64(), ref_view, &ref_saved);
  ThreadPool pool(2);
  cpu_test::for_each_target([&](const char* target) {
    for (const bool dot : dot_modes()) {
      cpu::set_bf16_dot_allowed(dot);
      std::vector<float> out;
      NsaSaved<float> saved;
      nsa_forward(config, prob.inputs16(), prob.out_view(out), &saved, pool);
      expect_close(compare(config, p, prob.inputs64(), out, saved, ref, ref_saved),
                   std::string(target) + " " + mode_name(dot));
    }
  });
  cpu::set_bf16_dot_allowed(true);
}

// On a CPU with AVX512_BF16 the AVX-512 target takes the vdpbf16ps path, and it differs
// from the widening path (it rounds P to bf16): the switch is real.
TEST(CpuBf16ForwardTargets, DotPathFollowsTheCpu) {
  cpu::set_bf16_dot_allowed(true);
  const bool dot = cpu::bf16_dot_enabled();
  std::printf("  bf16 dot product (vdpbf16ps) in use: %s (best target %s)\n", dot ? "yes" : "no",
              hwy::TargetName(hwy::SupportedAndGeneratedTargets().front()));
  if (!dot) GTEST_SKIP() << "no AVX512_BF16 on this CPU/target: only the widening path runs";
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(64, 4, 1, 32, 32, false, 125));
  ThreadPool pool(1);
  std::vector<float> a, b;
  nsa_forward(config, prob.inputs16(), prob.out_view(a), nullptr, pool);
  cpu::set_bf16_dot_allowed(false);
  nsa_forward(config, prob.inputs16(), prob.out_view(b), nullptr, pool);
  cpu::set_bf16_dot_allowed(true);
  EXPECT_NE(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

// Without vdpbf16ps (the widening path; on Intel CPUs the default) the bf16 forward is the
// fp32 forward on the same values with Kc/Vc rounded to bf16: its saved Kc are the fp32
// forward's rounded, bit for bit, and its output within fp32 rounding of the fp32 one
// (it attends the rounded Kc, the fp32 forward the unrounded ones).
TEST(CpuBf16ForwardTargets, WideningPathIsTheFp32ForwardOnTheSameValues) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(200, 6, 2, 24, 16, false, 127));
  ThreadPool pool(2);
  cpu::set_bf16_dot_allowed(false);
  std::vector<float> o16, o32;
  NsaSaved<float> s16, s32;
  nsa_forward(config, prob.inputs16(), prob.out_view(o16), &s16, pool);
  cpu::set_bf16_dot_allowed(true);
  nsa_forward(config, prob.base().inputs32(), prob.out_view(o32), &s32, pool);
  ASSERT_EQ(s16.k_cmp_blocks.size(), s32.k_cmp_blocks.size());
  ASSERT_FALSE(s16.k_cmp_blocks.empty());
  size_t changed = 0;
  for (size_t i = 0; i < s32.k_cmp_blocks.size(); ++i) {
    const float want = static_cast<float>(bf16(s32.k_cmp_blocks[i]));
    ASSERT_EQ(std::bit_cast<std::uint32_t>(s16.k_cmp_blocks[i]), std::bit_cast<std::uint32_t>(want)) << i;
    changed += want != s32.k_cmp_blocks[i];
  }
  EXPECT_GT(changed, s32.k_cmp_blocks.size() / 2);  // the rounding is real
  EXPECT_LT(relative_error(o16, std::vector<double>(o32.begin(), o32.end())), 1e-2);
}

// dense_forward without vdpbf16ps: the fp32 dense forward on the widened values, bitwise.
TEST(CpuBf16DenseTargets, WideningPathIsTheFp32ForwardBitwise) {
  Bf16Dense p(cpu_test::shape(150, 6, 2, 20, 12, false, 128));
  std::vector<float> q(p.q.size()), k(p.k.size()), v(p.v.size());
  to_float(p.q.data(), q.data(), q.size());
  to_float(p.k.data(), k.data(), k.size());
  to_float(p.v.data(), v.data(), v.size());
  const DenseInputs<float> f{{q.data(), p.in16.q.shape, p.in16.q.stride},
                             {k.data(), p.in16.k.shape, p.in16.k.stride},
                             {v.data(), p.in16.v.shape, p.in16.v.stride}, p.in16.seqs, 0.0};
  ThreadPool pool(2);
  std::vector<float> o16, o32, lse16(150 * 6), lse32(150 * 6);
  cpu::set_bf16_dot_allowed(false);
  dense_forward(p.in16, p.prob.out_view(o16), lse16.data(), pool);
  cpu::set_bf16_dot_allowed(true);
  dense_forward(f, p.prob.out_view(o32), lse32.data(), pool);
  EXPECT_EQ(0, std::memcmp(o16.data(), o32.data(), o16.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(lse16.data(), lse32.data(), lse16.size() * sizeof(float)));
}

TEST(CpuBf16ForwardDeterminism, IndependentOfThreads) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(300, 6, 2, 64, 32, false, 126));
  for (const bool dot : dot_modes()) {
    cpu::set_bf16_dot_allowed(dot);
    std::vector<float> first;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<float> out;
      nsa_forward(config, prob.inputs16(), prob.out_view(out), nullptr, pool);
      if (first.empty())
        first = out;
      else
        EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
            << threads << " threads, " << mode_name(dot);
    }
  }
  cpu::set_bf16_dot_allowed(true);
}

// Odd strides everywhere (q, k, v padded by an odd number of bf16 per token and head): the
// pair loads are unaligned; must equal the contiguous result bitwise.
TEST(CpuBf16ForwardStrided, OddStridedViews) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(90, 4, 2, 20, 24, false, 127));
  ThreadPool pool(2);
  const NsaInputs<bf16> in = prob.inputs16();
  auto pad = [](const TensorView<const bf16>& v, std::vector<bf16>& buf) {
    const index_t T = v.tokens(), H = v.heads(), D = v.dim(), hs = D + 3, ts = H * hs + 1;
    buf.assign(static_cast<size_t>(T * ts + 1), bf16(1e30f));
    TensorView<bf16> w{buf.data() + 1, {1, T, H, D}, {T * ts, ts, hs}};  // odd offset too
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < D; ++c) w.at(0, t, h, c) = v.at(0, t, h, c);
    return w.as_const();
  };
  for (const bool dot : dot_modes()) {
    cpu::set_bf16_dot_allowed(dot);
    std::vector<float> expected, got;
    nsa_forward(config, in, prob.out_view(expected), nullptr, pool);
    std::vector<bf16> bufs[7];
    NsaInputs<bf16> strided = in;
    strided.q = pad(in.q, bufs[0]);
    strided.k_cmp = pad(in.k_cmp, bufs[1]);
    strided.v_cmp = pad(in.v_cmp, bufs[2]);
    strided.k_slc = pad(in.k_slc, bufs[3]);
    strided.v_slc = pad(in.v_slc, bufs[4]);
    strided.k_win = pad(in.k_win, bufs[5]);
    strided.v_win = pad(in.v_win, bufs[6]);
    nsa_forward(config, strided, prob.out_view(got), nullptr, pool);
    EXPECT_EQ(0, std::memcmp(expected.data(), got.data(), got.size() * sizeof(float))) << mode_name(dot);
  }
  cpu::set_bf16_dot_allowed(true);
}

TEST(CpuBf16ForwardValidation, InvalidInputThrowsAndWritesNothing) {
  const Config config(small_options());
  Bf16NsaProblem prob(config, shape(40, 4, 2, 16, 16, false, 128));
  ThreadPool pool(2);
  std::vector<float> out;
  NsaSaved<float> saved;
  auto in = prob.inputs16();
  in.gates.shape[3] = 2;
  EXPECT_THROW(nsa_forward(config, in, prob.out_view(out), &saved, pool), Error);
  for (float x : out) ASSERT_TRUE(std::isnan(x));
  EXPECT_TRUE(saved.lse.empty());

  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const NsaInputs<float> f = prob.base().inputs32();
  struct Bad {
    const char* name;
    const float* buffer;
    size_t index;
    float value;
  } bad[] = {{"q", f.q.data, 17, nan}, {"k_slc", f.k_slc.data, 3, inf},
             {"v_win", f.v_win.data, 40, -inf}, {"gates", f.gates.data, 5, nan}};
  for (const Bad& b : bad) {
    std::vector<bf16>& buf = prob.buffer_of(b.buffer);
    const bf16 keep = buf[b.index];
    buf[b.index] = bf16(b.value);
    try {
      nsa_forward(config, prob.inputs16(), prob.out_view(out), nullptr, pool);
      ADD_FAILURE() << b.name << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(b.name), std::string::npos) << e.what();
    }
    for (float x : out) ASSERT_TRUE(std::isnan(x)) << b.name;
    buf[b.index] = keep;
  }
  // phi weights are checked too.
  in = prob.inputs16();
  const index_t w1_size = config.phi_hidden_for(16) * config.block_len() * 16;
  std::vector<bf16> w1(in.phi_k.w1, in.phi_k.w1 + w1_size);
  w1[9] = bf16(nan);
  in.phi_k.w1 = w1.data();
  EXPECT_THROW(nsa_forward(config, in, prob.out_view(out), nullptr, pool), Error);
  EXPECT_NO_THROW(nsa_forward(config, prob.inputs16(), prob.out_view(out), nullptr, pool));
}

// ---- dense_forward ------------------------------------------------------------------------

class CpuBf16Dense : public ::testing::TestWithParam<DenseCase> {};

void check_dense(Bf16Dense& p, int threads, const std::string& what) {
  std::vector<double> ref;
  const index_t rows = p.in64.q.batch() * p.in64.q.tokens(), H = p.in64.q.heads();
  std::vector<double> ref_lse(static_cast<size_t>(rows * H));
  reference::dense_forward(p.in64, p.prob.out_view(ref), ref_lse.data());
  ThreadPool pool(threads);
  for (const bool dot : dot_modes()) {
    cpu::set_bf16_dot_allowed(dot);
    std::vector<float> out, lse(static_cast<size_t>(rows * H));
    dense_forward(p.in16, p.prob.out_view(out), lse.data(), pool);
    const double e = relative_error(out, ref), el = relative_error(lse, ref_lse);
    EXPECT_LT(e, kTol) << what << " " << mode_name(dot);
    EXPECT_LT(el, kTol) << what << " lse " << mode_name(dot);
    std::printf("  %s %s rel err: out %.2e  lse %.2e\n", what.c_str(), mode_name(dot), e, el);
  }
  cpu::set_bf16_dot_allowed(true);
}

TEST_P(CpuBf16Dense, MatchesReferenceOnBf16Values) {
  Bf16Dense p(GetParam().shape);
  check_dense(p, GetParam().threads, GetParam().name);
}

std::vector<DenseCase> dense_cases() {
  std::vector<DenseCase> v;
  v.push_back({"T1_G1_d64", shape(1, 1, 1, 64, 64, false, 201), 1});
  v.push_back({"T100_G3_d20x12", shape(100, 3, 1, 20, 12, false, 202), 2});
  v.push_back({"T150_G16_d192x128", shape(150, 16, 1, 192, 128, false, 203), 3});
  v.push_back({"T333_G1_d24x8_2kv", shape(333, 2, 2, 24, 8, false, 204), 2});
  v.push_back({"T200_G4_d21x40", shape(200, 8, 2, 21, 40, false, 205), 2});
  v.push_back({"T99_G2_d42x72", shape(99, 2, 1, 42, 72, false, 208), 2});
  {
    DenseCase c{"batch2_T65_G2", shape(65, 4, 2, 64, 64, false, 206), 2};
    c.shape.batch = 2;
    v.push_back(c);
  }
  {
    DenseCase c{"varlen_3_0_130_64_G3", shape(0, 3, 1, 32, 32, false, 207), 2};
    c.shape.seqlens = {3, 0, 130, 64};
    v.push_back(c);
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuBf16Dense, ::testing::ValuesIn(dense_cases()),
                         [](const ::testing::TestParamInfo<DenseCase>& info) { return info.param.name; });

TEST(CpuBf16DenseTargets, EveryCompiledTargetMatchesReference) {
  Bf16Dense p(shape(140, 6, 2, 21, 40, false, 210));
  cpu_test::for_each_target([&](const char* target) { check_dense(p, 2, target); });
}

TEST(CpuBf16DenseValidation, NonFiniteInputThrows) {
  Bf16Dense p(shape(40, 2, 1, 16, 16, false, 211));
  ThreadPool pool(2);
  std::vector<float> out;
  p.k[5] = bf16(std::numeric_limits<float>::infinity());
  EXPECT_THROW(dense_forward(p.in16, p.prob.out_view(out), nullptr, pool), Error);
  for (float x : out) ASSERT_TRUE(std::isnan(x));
  p.k[5] = bf16(0.5f);
  p.q[7] = bf16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_THROW(dense_forward(p.in16, p.prob.out_view(out), nullptr, pool), Error);
  p.q[7] = bf16(0.5f);
  EXPECT_NO_THROW(dense_forward(p.in16, p.prob.out_view(out), nullptr, pool));
}

}  // namespace
}  // namespace nsa
