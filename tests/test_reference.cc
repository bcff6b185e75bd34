// Self-checks of the float64 reference: each test pins one rule of the spec with an
// independent computation, so that a wrong transcription of the spec fails here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "reference/reference.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using testing::ProblemShape;
using testing::RandomNsaProblem;
using testing::relative_error;

struct RefRun {
  std::vector<double> out;
  NsaSaved<double> saved;
};

RefRun run_reference(const RandomNsaProblem& prob) {
  RefRun r;
  reference::nsa_forward(prob.config(), prob.inputs64(), prob.out_view(r.out), &r.saved);
  return r;
}

std::vector<double> branch_out(const NsaSaved<double>& s, Branch b) {
  const double* p = s.branch_out_of(b);
  return std::vector<double>(p, p + s.rows * s.heads * s.d_v);
}

Config small_config(PhiKind phi = PhiKind::mlp, int top_n = 4, int window = 32) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = top_n;
  o.window = window;
  o.phi = phi;
  return Config(o);
}

std::vector<double> dense_reference(const TensorView<const double>& q,
                                    const TensorView<const double>& k,
                                    const TensorView<const double>& v) {
  std::vector<double> out(static_cast<size_t>(q.batch() * q.tokens() * q.heads() * v.dim()));
  reference::dense_forward({q, k, v},
                           contiguous_view(out.data(), q.batch(), q.tokens(), q.heads(), v.dim()),
                           nullptr);
  return out;
}

TEST(Reference, SelectionAndWindowEqualDenseWhenTheyCoverEverything) {
  // top_n * l' >= T and w >= T: both branches see exactly the causal prefix.
  const Config config = small_config(PhiKind::mlp, /*top_n=*/8, /*window=*/128);
  ProblemShape shape{.batch = 2, .tokens = 100, .heads = 3, .kv_heads = 1, .d_k = 8, .d_v = 6};
  RandomNsaProblem prob(config, shape);
  const RefRun r = run_reference(prob);
  const auto in = prob.inputs64();
  EXPECT_LT(relative_error(branch_out(r.saved, kSlc), dense_reference(in.q, in.k_slc, in.v_slc)), 1e-13);
  EXPECT_LT(relative_error(branch_out(r.saved, kWin), dense_reference(in.q, in.k_win, in.v_win)), 1e-13);
}

TEST(Reference, WindowIsExactlyWTokens) {
  // With w = 1 the window branch returns the current token's value.
  const Config config = small_config(PhiKind::mean, 4, /*window=*/1);
  RandomNsaProblem prob(config, {.tokens = 40, .heads = 2, .kv_heads = 2, .d_k = 4, .d_v = 5});
  const RefRun r = run_reference(prob);
  const auto in = prob.inputs64();
  const double* win = r.saved.branch_out_of(kWin);
  for (index_t t = 0; t < 40; ++t)
    for (index_t h = 0; h < 2; ++h)
      for (index_t c = 0; c < 5; ++c)
        EXPECT_NEAR(win[(t * 2 + h) * 5 + c], in.v_win.at(0, t, h, c), 1e-14);
}

TEST(Reference, MeanPhiCompressionEqualsAttentionOverHandPooledBlocks) {
  const Config config = small_config(PhiKind::mean);
  const index_t T = 50, d_k = 4, d_v = 3;
  RandomNsaProblem prob(config, {.tokens = T, .heads = 1, .kv_heads = 1, .d_k = d_k, .d_v = d_v});
  const RefRun r = run_reference(prob);
  const auto in = prob.inputs64();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d_k));
  const double* cmp = r.saved.branch_out_of(kCmp);
  for (index_t t = 0; t < T; ++t) {
    // Blocks [4i, 4i+8) that end at or before t, pooled by hand.
    std::vector<double> scores, pooled_v;
    for (index_t i = 0; i * 4 + 7 <= t; ++i) {
      double dot = 0.0;
      for (index_t c = 0; c < d_k; ++c) {
        double kc = 0.0;
        for (index_t s = 4 * i; s < 4 * i + 8; ++s) kc += in.k_cmp.at(0, s, 0, c) / 8.0;
        dot += in.q.at(0, t, 0, c) * kc;
      }
      scores.push_back(scale * dot);
      for (index_t c = 0; c < d_v; ++c) {
        double vc = 0.0;
        for (index_t s = 4 * i; s < 4 * i + 8; ++s) vc += in.v_cmp.at(0, s, 0, c) / 8.0;
        pooled_v.push_back(vc);
      }
    }
    std::vector<double> expect(d_v, 0.0);
    if (!scores.empty()) {
      const double m = *std::max_element(scores.begin(), scores.end());
      double sum = 0.0;
      for (double s : scores) sum += std::exp(s - m);
      for (size_t i = 0; i < scores.size(); ++i)
        for (index_t c = 0; c < d_v; ++c) expect[c] += std::exp(scores[i] - m) / sum * pooled_v[i * d_v + c];
    }
    for (index_t c = 0; c < d_v; ++c) EXPECT_NEAR(cmp[t * d_v + c], expect[c], 1e-12) << "t=" << t;
  }
}

TEST(Reference, CompressionBranchIsEmptyBeforeTheFirstBlockCloses) {
  const Config config;  // l = 32
  RandomNsaProblem prob(config, {.tokens = 40, .heads = 2, .kv_heads = 1, .d_k = 8, .d_v = 8});
  const RefRun r = run_reference(prob);
  for (double x : r.out) EXPECT_TRUE(std::isfinite(x));
  const double* cmp = r.saved.branch_out_of(kCmp);
  const double* lse = r.saved.lse_of(kCmp);
  for (index_t t = 0; t < 40; ++t)
    for (index_t h = 0; h < 2; ++h) {
      if (t < 31) {
        EXPECT_TRUE(std::isinf(lse[t * 2 + h]) && lse[t * 2 + h] < 0) << "t=" << t;
        for (index_t c = 0; c < 8; ++c) EXPECT_EQ(cmp[(t * 2 + h) * 8 + c], 0.0);
      } else {
        EXPECT_TRUE(std::isfinite(lse[t * 2 + h])) << "t=" << t;  // t = 31 closes block 0
      }
    }
}

TEST(Reference, OverlapWeightsArePaperDefaults12221) {
  const Config config;  // l=32, d=16, l'=64
  // Selection block j = 3 covers [192, 256); compressed blocks 4j-1 .. 4j+3 = 11..15.
  const index_t j = 3;
  const double expected[] = {1, 2, 2, 2, 1};
  for (index_t i = 0; i < 20; ++i) {
    const double w = static_cast<double>(reference::overlap(config, i, j)) / config.stride();
    const double want = (i >= 4 * j - 1 && i <= 4 * j + 3) ? expected[i - (4 * j - 1)] : 0.0;
    EXPECT_EQ(w, want) << "i=" << i;
  }
  // selection_scores applies exactly those weights.
  std::vector<double> p(20, 0.0);
  p[11] = 1.0;  // weight 1 on block 3, weight 1 on block 2 (11*16=176..208 overlaps both)
  p[13] = 10.0;  // fully inside block 3: weight 2
  const auto s = reference::selection_scores(config, p, 255);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_DOUBLE_EQ(s[2], 1.0);
  EXPECT_DOUBLE_EQ(s[3], 1.0 + 20.0);
}

TEST(Reference, SelectBlocksForcedTopNTiesAndSorting) {
  ConfigOptions o;
  o.top_n = 4;
  o.n_init = 1;
  o.n_local = 2;
  const Config config(o);  // l' = 64
  // t = 64*9: candidates 0..9; forced 0, 9, 8; then the best of the rest.
  std::vector<double> scores = {0, 5, 7, 7, 1, 7, 0, 0, 100, 100};
  auto chosen = reference::select_blocks(config, scores, 64 * 9);
  EXPECT_EQ(chosen, (std::vector<index_t>{0, 2, 8, 9}));  // 2 wins the tie with 3 and 5
  // With n or fewer candidates: all of them.
  chosen = reference::select_blocks(config, {1, 2, 3}, 64 * 2 + 5);
  EXPECT_EQ(chosen, (std::vector<index_t>{0, 1, 2}));
  // Forced initial and local blocks can coincide: still min(top_n, candidates) entries.
  o.n_init = 2;
  o.n_local = 2;
  const Config config2(o);
  chosen = reference::select_blocks(config2, {0, 0, 0, 0, 0, 9}, 64 * 5);
  EXPECT_EQ(chosen, (std::vector<index_t>{0, 1, 4, 5}));
}

TEST(Reference, SelectedSetsObeyTheRules) {
  const Config config = small_config(PhiKind::mlp, /*top_n=*/4);
  const index_t T = 200, H_kv = 2;
  RandomNsaProblem prob(config, {.tokens = T, .heads = 6, .kv_heads = H_kv, .d_k = 8, .d_v = 8});
  const RefRun r = run_reference(prob);
  for (index_t t = 0; t < T; ++t)
    for (index_t kvh = 0; kvh < H_kv; ++kvh) {
      const std::int32_t* sel = &r.saved.sel_blocks[(t * H_kv + kvh) * 4];
      const index_t candidates = t / 16 + 1, expect_n = std::min<index_t>(4, candidates);
      index_t n = 0;
      while (n < 4 && sel[n] >= 0) ++n;
      EXPECT_EQ(n, expect_n) << "t=" << t;
      for (index_t k = n; k < 4; ++k) EXPECT_EQ(sel[k], -1);
      for (index_t k = 1; k < n; ++k) EXPECT_LT(sel[k - 1], sel[k]);
      EXPECT_EQ(sel[0], 0);  // n_init = 1
      EXPECT_EQ(sel[n - 1], t / 16);  // the current block
      if (candidates >= 2) EXPECT_EQ(sel[n - 2], t / 16 - 1);  // and the one before it
      for (index_t k = 0; k < n; ++k) EXPECT_LT(sel[k], candidates);
    }
}

TEST(Reference, GroupScoresAreTheSumOverTheGroupsHeads) {
  // Recompute each head's compression probabilities from the saved Kc and lse, sum them over
  // the group, and check that the saved selection is what these scores choose.
  const Config config = small_config(PhiKind::linear, /*top_n=*/3);
  const index_t T = 150, H = 6, H_kv = 2, G = 3, d_k = 8;
  RandomNsaProblem prob(config, {.tokens = T, .heads = H, .kv_heads = H_kv, .d_k = d_k, .d_v = 4});
  const RefRun r = run_reference(prob);
  const auto in = prob.inputs64();
  const double scale = 1.0 / std::sqrt(8.0);
  const double* lse = r.saved.lse_of(kCmp);
  for (index_t t = 0; t < T; ++t)
    for (index_t kvh = 0; kvh < H_kv; ++kvh) {
      const index_t visible = config.visible_cmp_blocks(t);
      std::vector<double> group_p(visible, 0.0);
      for (index_t g = 0; g < G; ++g) {
        const index_t h = kvh * G + g;
        for (index_t i = 0; i < visible; ++i) {
          double dot = 0.0;
          for (index_t c = 0; c < d_k; ++c)
            dot += in.q.at(0, t, h, c) * r.saved.k_cmp_blocks[(i * H_kv + kvh) * d_k + c];
          group_p[i] += std::exp(scale * dot - lse[t * H + h]);
        }
      }
      const auto want = reference::select_blocks(config, reference::selection_scores(config, group_p, t), t);
      for (size_t k = 0; k < want.size(); ++k)
        EXPECT_EQ(r.saved.sel_blocks[(t * H_kv + kvh) * 3 + k], want[k]) << "t=" << t;
    }
}

TEST(Reference, PackedVarlenEqualsEachSequenceAlone) {
  const Config config = small_config(PhiKind::mlp);
  ProblemShape packed{.heads = 4, .kv_heads = 2, .d_k = 8, .d_v = 4};
  packed.seqlens = {37, 0, 5, 70};
  RandomNsaProblem prob(config, packed);
  const RefRun whole = run_reference(prob);
  const auto in = prob.inputs64();
  index_t start = 0;
  for (index_t len : packed.seqlens) {
    if (len == 0) continue;
    // The same tokens as a batch of one sequence: views offset into the packed buffers.
    auto slice = [&](TensorView<const double> v) {
      v.data += start * v.stride[1];
      v.shape[1] = len;
      return v;
    };
    NsaInputs<double> one = in;
    one.seqs = {};
    for (auto* v : {&one.q, &one.k_cmp, &one.v_cmp, &one.k_slc, &one.v_slc, &one.k_win, &one.v_win, &one.gates})
      *v = slice(*v);
    std::vector<double> out(len * 4 * 4);
    reference::nsa_forward(config, one, contiguous_view(out.data(), 1, len, 4, 4), nullptr);
    const std::vector<double> expect(whole.out.begin() + start * 16, whole.out.begin() + (start + len) * 16);
    EXPECT_LT(relative_error(out, expect), 1e-15) << "sequence at " << start;
    start += len;
  }
}

TEST(Reference, GatesMixTheBranchesLinearly) {
  const Config config = small_config();
  RandomNsaProblem prob(config, {.tokens = 60, .heads = 2, .kv_heads = 1, .d_k = 8, .d_v = 8});
  const RefRun r = run_reference(prob);
  const auto in = prob.inputs64();
  for (index_t t = 0; t < 60; ++t)
    for (index_t h = 0; h < 2; ++h)
      for (index_t c = 0; c < 8; ++c) {
        double want = 0.0;
        for (int b = 0; b < 3; ++b)
          want += in.gates.at(0, t, h, b) * r.saved.branch_out_of(Branch(b))[(t * 2 + h) * 8 + c];
        EXPECT_NEAR(r.out[(t * 2 + h) * 8 + c], want, 1e-14);
      }
}

}  // namespace
}  // namespace nsa
