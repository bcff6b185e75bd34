// The bf16 decode cache (DecodeShape::storage = bf16) against the float64 reference run on
// bf16-rounded values: the cache is fed the plain fp32 problem (q, K, V, gates and phi's
// weights that are not bf16 values) and must compute NSA on their bf16 roundings, the
// function nsa_forward computes on bf16 inputs. Every step's output (and every prefill
// row) is compared with the reference's row at the bf16 tolerance; a chosen block that
// differs from the reference's must be a near-tie of the reference's own scores, and rare.
// Also: the bf16 dense decode step, memory halved, every compiled SIMD target.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common/problem.h"
#include "cpu/kernels.h"
#include "decode/kernels.h"
#include "nsa/decode.h"
#include "nsa/nsa.h"
#include "reference/reference.h"
#include "test_decode_util.h"
#include "test_bf16_util.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using bf16_test::Bf16NsaProblem;
using cpu_test::small_options;
using decode_test::StepBatch;
using testing::ProblemShape;
using testing::RandomNsaProblem;
using testing::relative_error;

// Spec, "Tolerances": bf16 storage, fp32 accumulation, 1e-2, here for every row of every
// kv group (16 to 72 values: noisier than the whole-tensor errors of the forward's test).
// Measured: at most ~4e-3 (Kc/Vc rounded to bf16); a lost key or a wrong block is far above.
constexpr double kTol = 1e-2;
// A differing choice must be one the reference's scores barely prefer (relative gap), and
// rare: the forward bf16 test's bounds.
constexpr double kTieGap = 2e-2;
constexpr double kMaxMismatchFraction = 0.05;

enum class Fill { prefill, append };

struct Case {
  std::string name;
  ConfigOptions options;
  index_t heads = 2, kv_heads = 1, d_k = 16, d_v = 16;
  bool shared = false;
  std::vector<std::int64_t> seqlens, prompts;
  Fill fill = Fill::prefill;
  int threads = 1;
  index_t chunk_tokens = 0;
  decode::AttendPath path = decode::AttendPath::automatic;  // the attention kernel
};

// Forces attend_partial's kernel for one scope.
struct ForcePath {
  explicit ForcePath(decode::AttendPath p) { decode::set_attend_path(p); }
  ~ForcePath() { decode::set_attend_path(decode::AttendPath::automatic); }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

ProblemShape problem_shape(const Case& c) {
  ProblemShape shape;
  shape.heads = c.heads;
  shape.kv_heads = c.kv_heads;
  shape.d_k = c.d_k;
  shape.d_v = c.d_v;
  shape.shared_kv = c.shared;
  shape.seqlens = c.seqlens;
  shape.seed = 11;
  return shape;
}

// Runs case c through a bf16 cache and checks it; returns the worst relative error.
double run_case(const Case& c) {
  const ForcePath force(c.path);
  const Config config(c.options);
  RandomNsaProblem raw(config, problem_shape(c));        // what the cache is given
  Bf16NsaProblem rounded(config, problem_shape(c));       // the same values rounded
  SCOPED_TRACE(config.describe() + " " + raw.shape().describe());
  // The problem must not already be made of bf16 values, or rounding would go untested.
  EXPECT_NE(raw.buffers32().q, rounded.base().buffers32().q);

  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  const TensorView<double> ref_view = rounded.out_view(ref);
  const NsaInputs<double> in64 = rounded.inputs64();
  const Problem p = validate_nsa(config, in64, ref_view);
  reference::nsa_forward(config, in64, ref_view, &ref_saved);

  const index_t nseq = static_cast<index_t>(c.seqlens.size()), H = c.heads, H_kv = c.kv_heads, G = H / H_kv;
  const index_t row_size = H * c.d_v, n = config.top_n();
  std::vector<index_t> start(1, 0);
  for (auto len : c.seqlens) start.push_back(start.back() + len);

  DecodeShape ds;
  ds.heads = H;
  ds.kv_heads = H_kv;
  ds.d_k = c.d_k;
  ds.d_v = c.d_v;
  ds.shared_kv = c.shared;
  ds.max_seqs = nseq;
  ds.chunk_tokens = c.chunk_tokens;
  ds.storage = CacheStorage::bf16;
  const auto& f32 = raw.buffers32();
  DecodeCache cache(config, ds, f32.phi_k.weights(), f32.phi_v.weights());
  ThreadPool pool(c.threads);

  double worst = 0.0, worst_gap = 0.0;
  index_t rows_checked = 0, groups = 0, mismatched = 0;
  // Whether kv group h of token t chose the reference's blocks; else the near-tie check.
  auto same_choice = [&](const std::vector<std::int32_t>& got, index_t s, index_t t, index_t h) {
    const index_t row = start[s] + t;
    const auto want = reference::saved_selection(ref_saved.sel_blocks.data(), config, row, H_kv, h);
    ++groups;
    if (std::vector<index_t>(got.begin(), got.end()) == want) return true;
    ++mismatched;
    const std::vector<double> S = bf16_test::reference_scores(config, in64, ref_saved, p, row, h);
    for (index_t b : want) {
      if (std::find(got.begin(), got.end(), b) != got.end()) continue;  // reference-only block b
      for (index_t a : got) {
        if (std::find(want.begin(), want.end(), a) != want.end()) continue;  // cache-only block a
        const double gap = (S[static_cast<size_t>(b)] - S[static_cast<size_t>(a)]) /
                           std::max(S[static_cast<size_t>(b)], 1e-300);
        worst_gap = std::max(worst_gap, std::abs(gap));
      }
    }
    return false;
  };
  // Compares the heads of the groups that chose like the reference.
  auto check_row = [&](const float* out, index_t s, index_t t, const std::vector<char>& group_ok) {
    const index_t row = start[s] + t;
    for (index_t h = 0; h < H_kv; ++h) {
      if (!group_ok[static_cast<size_t>(h)]) continue;
      const index_t off = h * G * c.d_v;
      const double err = relative_error(out + off, ref.data() + row * row_size + off, G * c.d_v);
      if (!(err < kTol)) ADD_FAILURE() << "sequence " << s << " t=" << t << " kv head " << h << ": relative error " << err;
      worst = std::max(worst, err);
      ++rows_checked;
    }
  };
  auto step_choices = [&](index_t s, index_t t) {
    std::vector<char> ok(static_cast<size_t>(H_kv));
    for (index_t h = 0; h < H_kv; ++h) ok[static_cast<size_t>(h)] = same_choice(cache.selected_blocks(s, h), s, t, h);
    return ok;
  };

  // Prompts: prefill runs nsa_forward on bf16 copies; its rows are checked with the
  // choices it saved (read back through a bf16 forward of the same prompt is not needed:
  // the last row's choice is the cache's, the others are judged by the reference row).
  for (index_t s = 0; s < nseq; ++s) {
    const index_t pr = c.prompts[s];
    if (pr == 0) continue;
    const DecodeTokens x = decode_test::prompt_tokens(raw, start[s], pr);
    if (c.fill == Fill::append) {
      cache.append(s, x, pool);
      continue;
    }
    std::vector<float> out(static_cast<size_t>(pr * row_size));
    cache.prefill(s, x, contiguous_view(out.data(), 1, pr, H, c.d_v), pool);
    // Rows before the last: their choices are not kept, so only those whose choice is
    // forced (t < n l': every candidate block is chosen) are compared; nsa_forward on bf16
    // inputs has its own tests (test_cpu_bf16.cc). The last row with the cache's choice.
    const std::vector<char> all(static_cast<size_t>(H_kv), 1);
    for (index_t t = 0; t < std::min(pr - 1, n * config.sel_block()); ++t)
      check_row(out.data() + t * row_size, s, t, all);
    check_row(out.data() + (pr - 1) * row_size, s, pr - 1, step_choices(s, pr - 1));
    EXPECT_EQ(cache.position(s), pr);
  }

  // Steps: every unfinished sequence advances by one token per step.
  StepBatch batch(H, H_kv, c.d_k, c.d_v, c.shared);
  for (;;) {
    batch.clear();
    for (index_t s = 0; s < nseq; ++s)
      if (cache.position(s) < c.seqlens[s]) batch.add(raw, s, start[s] + cache.position(s));
    if (batch.size() == 0) break;
    batch.step(cache, pool);
    for (index_t b = 0; b < batch.size(); ++b) {
      const index_t s = batch.ids[b], t = cache.position(s) - 1;
      check_row(batch.out.data() + b * row_size, s, t, step_choices(s, t));
    }
  }
  EXPECT_LE(worst_gap, kTieGap) << "a chosen block differs from the reference's and the scores are not near-tied";
  EXPECT_LE(static_cast<double>(mismatched), kMaxMismatchFraction * static_cast<double>(groups))
      << mismatched << " of " << groups << " choices differ";
  EXPECT_GT(rows_checked, 0);
  std::printf("  DECODE BF16 %s: %lld group rows, max relative error %.2e, choices differ %lld/%lld (gap %.1e)\n",
              c.name.c_str(), static_cast<long long>(rows_checked), worst, static_cast<long long>(mismatched),
              static_cast<long long>(groups), worst_gap);
  return worst;
}

class DecodeBf16VsReference : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeBf16VsReference, StepsMatchTheReferenceOnRoundedValues) { run_case(GetParam()); }

std::vector<Case> cases() {
  std::vector<Case> v;
  v.push_back({"small_G1_independent_mlp", small_options(), 1, 1, 16, 16, false, {260, 200}, {0, 100}});
  v.push_back({"small_G3_shared_linear_dk_ne_dv", small_options(PhiKind::linear), 3, 1, 32, 16, true,
               {250, 90}, {7, 0}});
  v.push_back({"small_G4_independent_mean_two_groups_threads2", small_options(PhiKind::mean), 8, 2, 16, 24,
               false, {240, 230}, {31, 2}, Fill::prefill, 2});
  v.push_back({"small_G2_shared_mlp_append_chunk16_split3", small_options(), 2, 1, 16, 8, true, {270}, {77},
               Fill::append, 3, 16});
  v.push_back({"paper_T1200_G4_shared_mlp", ConfigOptions{}, 4, 1, 16, 16, true, {1200}, {500}, Fill::prefill, 2});
  // The lanes kernel: forced on small groups (odd d_k: the last key element has no pair),
  // automatic from G = 8 (one and two blocks of lanes).
  const auto lanes = decode::AttendPath::lanes;
  v.push_back({"lanes_small_G3_independent_mlp_odd_dk", small_options(), 3, 1, 17, 24, false, {250, 100}, {0, 12},
               Fill::prefill, 1, 0, lanes});
  v.push_back({"lanes_small_G2_shared_linear_split2", small_options(PhiKind::linear), 2, 1, 16, 8, true, {240},
               {50}, Fill::append, 2, 0, lanes});
  v.push_back({"auto_small_G16_independent_mean", small_options(PhiKind::mean), 16, 1, 24, 16, false, {230, 120},
               {10, 0}});
  v.push_back({"auto_small_G20_two_groups_shared_mlp", small_options(), 40, 2, 16, 8, true, {200}, {60},
               Fill::prefill, 2});
  return v;
}

INSTANTIATE_TEST_SUITE_P(DecodeBf16, DecodeBf16VsReference, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Both bf16 paths where the CPU has them: vdpbf16ps (AVX512_BF16), then widening to fp32.
std::vector<bool> dot_modes() {
  cpu::set_bf16_dot_allowed(true);
  if (cpu::bf16_dot_enabled()) return {true, false};
  return {false};
}

// The widening loads differ per SIMD target (AVX-512, AVX2, SSE4, scalar), and AVX-512
// with AVX512_BF16 has the vdpbf16ps path as well: one case on each.
TEST(DecodeBf16, EveryCompiledTargetAndPath) {
  for (const auto path : {decode::AttendPath::rows, decode::AttendPath::lanes})
  for (const bool dot : dot_modes()) {
    const Case c{"every_target_G3_independent", small_options(), 3, 1, 16, 24, false, {150, 120}, {20, 0},
                 Fill::prefill, 1, 0, path};
    cpu::set_bf16_dot_allowed(dot);
    const int targets = cpu_test::for_each_target([&](const char* target) {
      SCOPED_TRACE(std::string(target) + (dot ? " vdpbf16ps allowed" : " widening") +
                   (path == decode::AttendPath::lanes ? " lanes" : " rows"));
      run_case(c);
    });
    EXPECT_GE(targets, 1);
  }
  cpu::set_bf16_dot_allowed(true);
}

// A bf16 cache holds half the bytes of an fp32 one, chunk for chunk.
TEST(DecodeBf16, HalvesTheMemory) {
  const Config config(small_options());
  DecodeShape s{4, 2, 16, 8, false, 1};
  RandomNsaProblem weights(config, cpu_test::shape(1, 4, 2, 16, 8, false, 3));
  const auto& f = weights.buffers32();
  DecodeCache a(config, s, f.phi_k.weights(), f.phi_v.weights());
  s.storage = CacheStorage::bf16;
  DecodeCache b(config, s, f.phi_k.weights(), f.phi_v.weights());
  EXPECT_EQ(b.memory().chunk_bytes * 2, a.memory().chunk_bytes);
  EXPECT_EQ(b.shape().storage, CacheStorage::bf16);
  DecodeShape bad = s;
  bad.storage = static_cast<CacheStorage>(7);
  try {
    DecodeCache c(config, bad, f.phi_k.weights(), f.phi_v.weights());
    ADD_FAILURE() << "an unknown storage type must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("storage"), std::string::npos) << e.what();
  }
}

// dense_decode_step over a bf16 cache equals the float64 softmax over the bf16 values,
// q rounded to bf16 too: to fp32 accuracy when widening, within the bf16 tolerance on the
// vdpbf16ps path (the probabilities are rounded to bf16 for P V).
TEST(DecodeBf16, DenseDecodeStep) {
  for (const auto path : {decode::AttendPath::rows, decode::AttendPath::lanes})
  for (const bool dot : dot_modes()) {
    const ForcePath force(path);
    cpu::set_bf16_dot_allowed(dot);
    // The lanes kernel keeps P in fp32 (only q is rounded): fp32 accuracy on both paths.
    const double tol = dot && path == decode::AttendPath::rows ? 5e-3 : 1e-5;
    for (const index_t T : {1, 37, 700, 5000}) {
      for (const index_t kv : {1, 2}) {
        const index_t H = path == decode::AttendPath::lanes ? 20 : 6, d_k = 24, d_v = 20;
        std::mt19937_64 rng(static_cast<std::uint64_t>(T * 10 + kv));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> q(static_cast<size_t>(H * d_k));
        std::vector<bf16> k(static_cast<size_t>(T * kv * d_k)), v(static_cast<size_t>(T * kv * d_v));
        for (float& x : q) x = static_cast<float>(bf16(nd(rng)));
        for (bf16& x : k) x = bf16(nd(rng));
        for (bf16& x : v) x = bf16(nd(rng));
        std::vector<float> out(static_cast<size_t>(H * d_v));
        ThreadPool pool(2);
        dense_decode_step(q.data(), k.data(), v.data(), T, H, kv, d_k, d_v, 0.0, out.data(), pool);
        const std::vector<double> want = decode_test::dense_last_row(q, k, v, T, H, kv, d_k, d_v);
        const double err = relative_error(out, want);
        EXPECT_LT(err, tol) << "T=" << T << " H_kv=" << kv << (dot ? " vdpbf16ps" : " widening");
        // A lost or doubled key would be far above the tolerance: the error is not trivially 0
        // on the vdpbf16ps path (P is rounded), and it is measured, not assumed.
        if (dot && T > 1 && path == decode::AttendPath::rows) EXPECT_GT(err, 0.0);
      }
    }
  }
  cpu::set_bf16_dot_allowed(true);
}

}  // namespace
}  // namespace nsa
