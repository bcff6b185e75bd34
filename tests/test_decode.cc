// The decode cache against the float64 reference (spec, "Decoding with a cache"): the
// output of step at position t equals row t of nsa::reference::nsa_forward over the same
// tokens (relative error < 1e-5 for every row), the chosen blocks equal the reference's,
// and the tokens read equal the spec's count. Sequences of a batch sit at different
// positions (prompts of length 0, < l, and longer; prefill, append or none) and cross many
// compression boundaries, the window and several selection blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "decode/kernels.h"
#include "nsa/decode.h"
#include "nsa/nsa.h"
#include "reference/reference.h"
#include "test_decode_util.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using decode_test::StepBatch;
using decode_test::dense_last_row;
using cpu_test::small_options;
using testing::ProblemShape;
using testing::RandomNsaProblem;
using testing::relative_error;

constexpr double kTol = 1e-5;

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
  index_t check_every = 1;  // compare every k-th step (and the last one) with the reference
  decode::AttendPath path = decode::AttendPath::automatic;  // the attention kernel
};

// Forces attend_partial's kernel for one scope.
struct ForcePath {
  explicit ForcePath(decode::AttendPath p) { decode::set_attend_path(p); }
  ~ForcePath() { decode::set_attend_path(decode::AttendPath::automatic); }
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Runs case c: prompts, then steps, every checked row against the reference.
void run_case(const Case& c) {
  const ForcePath force(c.path);
  const Config config(c.options);
  ProblemShape shape;
  shape.heads = c.heads;
  shape.kv_heads = c.kv_heads;
  shape.d_k = c.d_k;
  shape.d_v = c.d_v;
  shape.shared_kv = c.shared;
  shape.seqlens = c.seqlens;
  shape.seed = 7;
  RandomNsaProblem prob(config, shape);
  SCOPED_TRACE(config.describe() + " " + prob.shape().describe());

  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), &ref_saved);

  const index_t nseq = static_cast<index_t>(c.seqlens.size()), H = c.heads, H_kv = c.kv_heads;
  const index_t row_size = H * c.d_v;
  std::vector<index_t> start(1, 0);
  for (auto n : c.seqlens) start.push_back(start.back() + n);

  DecodeShape ds;
  ds.heads = H;
  ds.kv_heads = H_kv;
  ds.d_k = c.d_k;
  ds.d_v = c.d_v;
  ds.shared_kv = c.shared;
  ds.max_seqs = nseq;
  ds.chunk_tokens = c.chunk_tokens;
  const auto& f32 = prob.buffers32();
  DecodeCache cache(config, ds, f32.phi_k.weights(), f32.phi_v.weights());
  ThreadPool pool(c.threads);

  double worst = 0.0;
  index_t rows_checked = 0, sel_checked = 0, bad_sel = 0, bad_reads = 0;
  auto check_row = [&](const float* out, index_t s, index_t t) {
    const index_t row = start[s] + t;
    const double err = relative_error(out, ref.data() + row * row_size, row_size);
    if (!(err < kTol)) ADD_FAILURE() << "sequence " << s << " t=" << t << ": relative error " << err;
    worst = std::max(worst, err);
    ++rows_checked;
  };
  auto check_selection = [&](index_t s, index_t t) {
    for (index_t h = 0; h < H_kv; ++h) {
      const auto want = reference::saved_selection(ref_saved.sel_blocks.data(), config, start[s] + t, H_kv, h);
      const auto got = cache.selected_blocks(s, h);
      if (std::vector<index_t>(got.begin(), got.end()) != want) ++bad_sel;
      ++sel_checked;
      const TokensRead r = cache.tokens_read(s, h);
      const index_t bound = config.visible_cmp_blocks(t) + index_t{config.top_n()} * config.sel_block() +
                            config.window();
      if (r.total() != decode_test::expected_reads(config, t, got) || r.total() > bound ||
          r.cmp != config.visible_cmp_blocks(t))
        ++bad_reads;
    }
  };

  // Prompts.
  for (index_t s = 0; s < nseq; ++s) {
    const index_t p = c.prompts[s];
    if (p == 0) continue;
    const DecodeTokens x = decode_test::prompt_tokens(prob, start[s], p);
    if (c.fill == Fill::append) {
      cache.append(s, x, pool);
      continue;
    }
    std::vector<float> out(static_cast<size_t>(p * row_size));
    cache.prefill(s, x, contiguous_view(out.data(), 1, p, H, c.d_v), pool);
    for (index_t t = 0; t < p; ++t) check_row(out.data() + t * row_size, s, t);
    check_selection(s, p - 1);
    ASSERT_EQ(cache.position(s), p);
    ASSERT_EQ(cache.num_cmp_blocks(s), config.num_cmp_blocks(p));
  }

  // Steps: every unfinished sequence advances by one token per step.
  StepBatch batch(H, H_kv, c.d_k, c.d_v, c.shared);
  for (index_t step = 0;; ++step) {
    batch.clear();
    for (index_t s = 0; s < nseq; ++s)
      if (cache.position(s) < c.seqlens[s]) batch.add(prob, s, start[s] + cache.position(s));
    if (batch.size() == 0) break;
    batch.step(cache, pool);
    for (index_t b = 0; b < batch.size(); ++b) {
      const index_t s = batch.ids[b], t = cache.position(s) - 1;
      if (t % c.check_every == 0 || t + 1 == c.seqlens[s]) {
        check_row(batch.out.data() + b * row_size, s, t);
        check_selection(s, t);
      }
    }
  }
  for (index_t s = 0; s < nseq; ++s) {
    EXPECT_EQ(cache.position(s), c.seqlens[s]);
    EXPECT_EQ(cache.num_cmp_blocks(s), config.num_cmp_blocks(c.seqlens[s]));
  }
  EXPECT_EQ(bad_sel, 0) << "of " << sel_checked << " selections differ from the reference";
  EXPECT_EQ(bad_reads, 0) << "of " << sel_checked << " token-read counts are wrong";
  EXPECT_GT(rows_checked, 0);
  std::printf("  DECODE OK %s: %lld rows, max relative error %.2e\n", c.name.c_str(),
              static_cast<long long>(rows_checked), worst);
}

class DecodeVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeVsReference, StepEqualsPrefillRow) { run_case(GetParam()); }

// The kernels differ per SIMD target (the lanes kernel's block of heads is 16, 8 or 4
// lanes wide): both kernels on every compiled target, a group of 6 heads.
TEST(Decode, BothKernelsOnEveryTarget) {
  for (const auto path : {decode::AttendPath::rows, decode::AttendPath::lanes}) {
    const Case c{"every_target_G6_independent_mlp", small_options(), 6, 1, 16, 24, false, {160, 90}, {30, 0},
                 Fill::prefill, 1, 0, 1, path};
    const int targets = cpu_test::for_each_target([&](const char* target) {
      SCOPED_TRACE(target);
      run_case(c);
    });
    EXPECT_GE(targets, 1);
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  // Small config: boundaries every 4 tokens, windows of 32, selection blocks of 16.
  v.push_back({"small_G1_independent_mlp", small_options(), 1, 1, 16, 16, false,
               {300, 260, 290}, {0, 5, 100}});
  v.push_back({"small_G4_shared_mlp_two_groups", small_options(), 8, 2, 16, 24, true,
               {300, 280, 250, 3}, {0, 7, 37, 0}});
  v.push_back({"small_G4_independent_mlp", small_options(), 4, 1, 32, 16, false, {300, 297}, {1, 64}});
  v.push_back({"small_G1_shared_linear", small_options(PhiKind::linear), 2, 2, 16, 16, true,
               {300, 170}, {0, 8}});
  v.push_back({"small_G2_independent_linear_threads2", small_options(PhiKind::linear), 4, 2, 16, 16,
               false, {290, 300, 200}, {13, 0, 120}, Fill::prefill, 2});
  v.push_back({"small_G4_shared_mean", small_options(PhiKind::mean), 4, 1, 16, 16, true, {300, 211},
               {0, 31}});
  v.push_back({"small_G1_independent_mean_threads2", small_options(PhiKind::mean), 3, 3, 16, 8, false,
               {300, 250}, {2, 0}, Fill::prefill, 2});
  // More workers than (sequence, kv head) pairs: each branch's keys split into parts that
  // are attended in parallel and merged (3 parts of one group; 2 parts for each of 2).
  v.push_back({"small_G3_independent_mlp_split3", small_options(), 3, 1, 16, 8, false, {300}, {0},
               Fill::prefill, 3});
  v.push_back({"small_G2_shared_linear_split2x2", small_options(PhiKind::linear), 4, 2, 16, 24, true,
               {290}, {10}, Fill::append, 4});
  // Prompts stored with append (no outputs), chunks of one selection block.
  v.push_back({"small_G4_shared_append_chunk16", small_options(), 4, 1, 16, 16, true, {300, 260},
               {77, 9}, Fill::append, 1, 16});
  // Larger strides and top-n.
  ConfigOptions wide = small_options();
  wide.block_len = 16;
  wide.stride = 8;
  wide.sel_block = 32;
  wide.top_n = 6;
  wide.n_init = 2;
  wide.n_local = 1;
  wide.window = 48;
  v.push_back({"wide_G2_independent_mlp", wide, 4, 2, 16, 16, false, {400, 333}, {0, 50}});
  // The paper's config (l=32, d=16, l'=64, n=16, w=512) over T = 1500, small heads.
  v.push_back({"paper_T1500_G4_shared_mlp", ConfigOptions{}, 4, 1, 16, 16, true, {1500, 1100},
               {0, 600}, Fill::prefill, 2});
  v.push_back({"paper_T1500_G1_independent_mlp", ConfigOptions{}, 1, 1, 16, 16, false, {1500},
               {300}, Fill::prefill, 2});
  // The lanes kernel (heads as vector lanes; automatic from G = 8): forced on small groups,
  // and on groups of one and more than one block of lanes (16 on AVX-512, 8 on AVX2).
  const auto lanes = decode::AttendPath::lanes;
  v.push_back({"lanes_small_G1_independent_mlp", small_options(), 1, 1, 16, 16, false, {300, 140}, {0, 5},
               Fill::prefill, 1, 0, 1, lanes});
  v.push_back({"lanes_small_G3_shared_linear_dk_ne_dv_split3", small_options(PhiKind::linear), 3, 1, 20, 12, true,
               {300}, {9}, Fill::prefill, 3, 0, 1, lanes});
  v.push_back({"lanes_small_G4_two_groups_mean_threads2", small_options(PhiKind::mean), 8, 2, 16, 24, false,
               {280, 250}, {0, 40}, Fill::append, 2, 0, 1, lanes});
  v.push_back({"auto_small_G8_independent_mlp", small_options(), 8, 1, 24, 16, false, {260, 200}, {3, 0}});
  v.push_back({"auto_small_G16_shared_mlp_threads2", small_options(), 16, 1, 16, 8, true, {250}, {20},
               Fill::prefill, 2});
  v.push_back({"auto_small_G20_two_groups_independent", small_options(), 40, 2, 8, 16, false, {220, 150}, {0, 33}});
  v.push_back({"auto_paper_T1500_G16_shared_mlp", ConfigOptions{}, 16, 1, 16, 16, true, {1500}, {700},
               Fill::prefill, 2, 0, 3});
  // The shapes real models use (issue 21): Llama-3-8B's 32 heads on 8 kv heads, Qwen2.5-7B's
  // 28 on 4 (G = 7), multi-head attention (G = 1) over 16 kv heads at d = 64.
  v.push_back({"real_llama3_8b_G4_Hkv8_d128", small_options(), 32, 8, 128, 128, true, {330, 300}, {0, 200},
               Fill::prefill, 2});
  v.push_back({"real_qwen2_7b_G7_Hkv4_d128", small_options(), 28, 4, 128, 128, true, {300}, {150}, Fill::prefill, 2});
  v.push_back({"real_mha_G1_Hkv16_d64", small_options(), 16, 16, 64, 64, true, {300}, {100}, Fill::prefill, 2});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Decode, DecodeVsReference, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

// Prefill on a non-empty sequence continues it token by token: same outputs as the reference.
TEST(Decode, PrefillContinuesASequence) {
  const Config config(small_options());
  ProblemShape shape;
  shape.heads = 4;
  shape.kv_heads = 2;
  shape.seqlens = {120};
  RandomNsaProblem prob(config, shape);
  std::vector<double> ref;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), nullptr);
  DecodeShape ds{4, 2, 16, 16, false, 1};
  const auto& f = prob.buffers32();
  DecodeCache cache(config, ds, f.phi_k.weights(), f.phi_v.weights());
  ThreadPool pool(1);
  const index_t row = 4 * 16;
  std::vector<float> out(static_cast<size_t>(120 * row));
  index_t done = 0;
  for (index_t len : {25, 1, 0, 50, 44}) {
    cache.prefill(0, decode_test::prompt_tokens(prob, done, len),
                  contiguous_view(out.data() + done * row, 1, len, 4, 16), pool);
    done += len;
    ASSERT_EQ(cache.position(0), done);
  }
  ASSERT_EQ(done, 120);
  for (index_t t = 0; t < 120; ++t)
    EXPECT_LT(relative_error(out.data() + t * row, ref.data() + t * row, row), kTol) << "t=" << t;
}

// A long conversation: 20,000 steps, small heads. Tokens read per step equal the spec's count
// and never exceed visible cmp blocks + n l' + w; memory grows by whole chunks, linearly.
TEST(Decode, LongConversation20kSteps) {
  const Config config;  // the paper's defaults
  const index_t H = 2, H_kv = 1, d = 16, steps = 20000;
  DecodeShape ds{H, H_kv, d, d, false, 1};
  ProblemShape ps;
  ps.heads = H;
  ps.kv_heads = H_kv;
  ps.d_k = ps.d_v = d;
  ps.tokens = 1;
  RandomNsaProblem weights(config, ps);  // only its phi weights are used
  const auto& f = weights.buffers32();
  DecodeCache cache(config, ds, f.phi_k.weights(), f.phi_v.weights());
  ThreadPool pool(1);
  const DecodeMemory m0 = cache.memory();
  const index_t C = m0.chunk_tokens;
  // Raw K/V of 3 branches + Kc/Vc, per token once chunks are full.
  const double per_token = 4.0 * H_kv * (3 * (d + d) + (d + d) / double(config.stride()));
  EXPECT_DOUBLE_EQ(m0.bytes_per_token(), per_token);

  std::mt19937_64 rng(3);
  StepBatch batch(H, H_kv, d, d, false);
  index_t bad_reads = 0, over_bound = 0, bad_memory = 0, non_finite = 0;
  std::int64_t sum_reads = 0;
  for (index_t t = 0; t < steps; ++t) {
    batch.clear();
    batch.add_random(rng, 0);
    batch.step(cache, pool);
    for (float x : batch.out) non_finite += !std::isfinite(x);
    const TokensRead r = cache.tokens_read(0, 0);
    const auto sel = cache.selected_blocks(0, 0);
    sum_reads += r.total();
    if (r.total() != decode_test::expected_reads(config, t, sel) ||
        sel.size() != static_cast<size_t>(std::min<index_t>(config.top_n(), t / config.sel_block() + 1)))
      ++bad_reads;
    if (r.total() > config.visible_cmp_blocks(t) + index_t{config.top_n()} * config.sel_block() + config.window())
      ++over_bound;
    const DecodeMemory m = cache.memory();
    const index_t chunks = (t + 1 + C - 1) / C;
    // Linear: whole chunks plus a fixed part (and one pointer per chunk).
    if (m.chunks != chunks || m.tokens != t + 1 ||
        m.bytes < m0.bytes + chunks * m.chunk_bytes || m.bytes > m0.bytes + chunks * (m.chunk_bytes + 16))
      ++bad_memory;
  }
  EXPECT_EQ(non_finite, 0);
  EXPECT_EQ(bad_reads, 0);
  EXPECT_EQ(over_bound, 0);
  EXPECT_EQ(bad_memory, 0);
  EXPECT_EQ(cache.total_tokens_read(), sum_reads);
  // At t = 19999 with the defaults: 1249 cmp blocks + 15 full blocks of 64 and the current
  // one's 32 tokens + 512 window tokens.
  EXPECT_EQ(cache.tokens_read(0, 0).total(), 1249 + 15 * 64 + 32 + 512);
  const DecodeMemory m = cache.memory();
  const double measured = static_cast<double>(m.bytes - m0.bytes) / static_cast<double>(steps);
  EXPECT_NEAR(measured, per_token, per_token * (double(C) / steps + 0.01));
  std::printf("  20000 steps: %.1f bytes/token (%zu bytes in %lld chunks of %lld tokens)\n", measured,
              m.bytes, static_cast<long long>(m.chunks), static_cast<long long>(C));
}

// The dense decode baseline equals the reference's dense attention row over T tokens, with
// either kernel, for small and large groups.
TEST(Decode, DenseDecodeStepMatchesReference) {
  struct Shape { index_t H, T; };
  // T = 5000 splits the keys across the 3 workers' tasks; H = 20 is one and a bit blocks of
  // lanes (the reference is O(T^2): the larger group gets the shorter cache).
  for (const Shape sh : {Shape{4, 1}, Shape{4, 100}, Shape{4, 5000}, Shape{20, 1}, Shape{20, 100}, Shape{20, 2500}}) {
    for (index_t H_kv : {1, 2}) {
      const index_t H = sh.H, T = sh.T;
      testing::ProblemShape ps;
      ps.tokens = T;
      ps.heads = H;
      ps.kv_heads = H_kv;
      ps.d_k = 24;
      ps.d_v = 16;
      testing::RandomDenseProblem prob(ps);
      std::vector<double> ref;
      reference::dense_forward(prob.inputs64(), prob.out_view(ref), nullptr);
      const DenseInputs<float> in = prob.inputs32();
      for (const auto path : {decode::AttendPath::rows, decode::AttendPath::lanes}) {
        const ForcePath force(path);
        std::vector<float> out(static_cast<size_t>(H * 16));
        ThreadPool pool(3);
        dense_decode_step(in.q.ptr(0, T - 1, 0), in.k.data, in.v.data, T, H, H_kv, 24, 16, 0.0, out.data(), pool);
        EXPECT_LT(relative_error(out.data(), ref.data() + (T - 1) * H * 16, H * 16), kTol)
            << "T=" << T << " H=" << H << " H_kv=" << H_kv << (path == decode::AttendPath::lanes ? " lanes" : " rows");
      }
    }
  }
}

struct RandomCache {
  std::vector<float> q, k, v;
  RandomCache(index_t T, index_t H, index_t H_kv, index_t d_k, index_t d_v, unsigned seed)
      : q(static_cast<size_t>(H * d_k)), k(static_cast<size_t>(T * H_kv * d_k)), v(static_cast<size_t>(T * H_kv * d_v)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : q) x = nd(rng);
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
  }
};

// dense_decode_step at the shapes real models use, where the [T, H_kv, d] cache puts H_kv
// rows between two keys of one kv head: the last row against float64 softmax attention,
// both kernels of the H_kv = 1 schedule, T split across workers.
TEST(Decode, DenseDecodeStepRealShapes) {
  struct Shape { index_t H, H_kv, d_k, d_v, T; };
  for (const Shape sh : {Shape{8, 8, 128, 128, 4500}, Shape{32, 8, 128, 128, 4200}, Shape{28, 4, 128, 128, 2100},
                         Shape{64, 8, 128, 128, 1500}, Shape{16, 16, 64, 64, 4100}, Shape{16, 1, 192, 128, 2100}}) {
    const RandomCache c(sh.T, sh.H, sh.H_kv, sh.d_k, sh.d_v, static_cast<unsigned>(sh.H * 131 + sh.T));
    const std::vector<double> want = dense_last_row(c.q, c.k, c.v, sh.T, sh.H, sh.H_kv, sh.d_k, sh.d_v);
    for (const auto path : {decode::AttendPath::rows, decode::AttendPath::lanes}) {
      const ForcePath force(path);
      std::vector<float> out(static_cast<size_t>(sh.H * sh.d_v));
      ThreadPool pool(2);
      dense_decode_step(c.q.data(), c.k.data(), c.v.data(), sh.T, sh.H, sh.H_kv, sh.d_k, sh.d_v, 0.0, out.data(),
                        pool);
      EXPECT_LT(relative_error(out.data(), want.data(), sh.H * sh.d_v), kTol)
          << "H=" << sh.H << " H_kv=" << sh.H_kv << " d=" << sh.d_k << " T=" << sh.T
          << (path == decode::AttendPath::lanes ? " lanes" : " rows");
    }
  }
}

// The H_kv > 1 schedule (decode::attend_heads: every kv head per chunk of 16 tokens, keys
// scored in place) at odd shapes: G = 1, 3, 5, 9, H_kv = 2 and 3, d_k with a tail after
// the last full vector (13, 20) and d_k != d_v, T below, at and past one chunk, split
// across 3 workers.
TEST(Decode, DenseDecodeStepAllHeadsOddShapes) {
  for (const index_t G : {1, 3, 5, 9})
    for (const index_t H_kv : {2, 3})
      for (const index_t d_k : {13, 20, 64})
        for (const index_t T : {1, 15, 16, 17, 4099}) {
          const index_t H = G * H_kv, d_v = d_k == 64 ? 64 : d_k == 13 ? 7 : 24;
          const RandomCache c(T, H, H_kv, d_k, d_v, static_cast<unsigned>(G * 1000 + H_kv * 100 + d_k + T));
          const std::vector<double> want = dense_last_row(c.q, c.k, c.v, T, H, H_kv, d_k, d_v);
          std::vector<float> out(static_cast<size_t>(H * d_v));
          ThreadPool pool(3);
          dense_decode_step(c.q.data(), c.k.data(), c.v.data(), T, H, H_kv, d_k, d_v, 0.0, out.data(), pool);
          EXPECT_LT(relative_error(out.data(), want.data(), H * d_v), kTol)
              << "G=" << G << " H_kv=" << H_kv << " d_k=" << d_k << " d_v=" << d_v << " T=" << T;
        }
}

}  // namespace
}  // namespace nsa

namespace nsa {
namespace {

// nsa::tokens_read, the one count of what a query reads: compressed blocks visible at t,
// the chosen blocks' tokens up to t (the last one partial), the window; -1 ends the list.
TEST(Decode, TokensReadCountsEachBranch) {
  const Config c;  // l=32 d=16 l'=64 n=16 w=512
  const std::int32_t sel[16] = {0, 3, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  const index_t t = 700;  // block 10 covers 640..703: 61 of its tokens are <= t
  const TokensRead r = tokens_read(c, t, sel);
  EXPECT_EQ(r.cmp, c.visible_cmp_blocks(t));
  EXPECT_EQ(r.cmp, (t + 1 - 32) / 16 + 1);
  EXPECT_EQ(r.slc, 3 * 64 + 61);
  EXPECT_EQ(r.win, 512);
  EXPECT_EQ(r.total(), r.cmp + r.slc + r.win);
  const std::int32_t first[16] = {0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  EXPECT_EQ(tokens_read(c, 5, first).slc, 6);  // t < l': the first block up to t
  EXPECT_EQ(tokens_read(c, 5, first).cmp, 0);  // no complete compression block yet
  EXPECT_EQ(tokens_read(c, 5, first).win, 6);
}

}  // namespace
}  // namespace nsa
