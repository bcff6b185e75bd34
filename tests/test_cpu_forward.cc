// The fp32 CPU nsa_forward against the float64 reference (spec tolerance 1e-5 relative):
// output, each branch's output and lse, the chosen blocks (exactly), and Kc/Vc.
// A covering set of shapes, not the cross product: every T boundary of the small config
// (l=8, d=4, l'=16, n=4, w=32), G in {1,2,3,4,16}, d_k/d_v in {64/64,128/128,192/128},
// shared and independent K/V, B > 1, varlen (with empty and shorter-than-l sequences),
// the three phi forms, 1 and 2 threads, and the paper's defaults at T = 1000 and 4097.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "nsa/nsa.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using cpu_test::Case;
using cpu_test::lse_error;
using cpu_test::shape;
using cpu_test::small_options;
using testing::RandomNsaProblem;
using testing::relative_error;

constexpr double kTol = 1e-5;  // fp32 forward (spec, "Tolerances")

class CpuForward : public ::testing::TestWithParam<Case> {};

TEST_P(CpuForward, MatchesReference) {
  const Case& c = GetParam();
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  SCOPED_TRACE(config.describe() + " " + prob.shape().describe());

  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), &ref_saved);

  std::vector<float> out;
  NsaSaved<float> saved;
  ThreadPool pool(c.threads);
  nsa_forward(config, prob.inputs32(), prob.out_view(out), &saved, pool);

  // One line per tensor (llm.c style), so the margin to the tolerance is visible.
  double worst_lse = 0.0;
  for (int b = 0; b < kNumBranches; ++b) {
    const size_t n = static_cast<size_t>(saved.rows * saved.heads);
    const std::vector<float> x(saved.lse.begin() + b * n, saved.lse.begin() + (b + 1) * n);
    const std::vector<double> r(ref_saved.lse.begin() + b * n, ref_saved.lse.begin() + (b + 1) * n);
    const double e = lse_error(x, r);
    EXPECT_LT(e, kTol) << "lse of branch " << b;
    worst_lse = std::max(worst_lse, e);
  }
  const double e_out = relative_error(out, ref);
  const double e_branch = relative_error(saved.branch_out, ref_saved.branch_out);
  EXPECT_LT(e_out, kTol) << "out";
  EXPECT_LT(e_branch, kTol) << "branch_out";
  std::printf("  rel err: out %.2e  branch_out %.2e  lse %.2e\n", e_out, e_branch, worst_lse);
  EXPECT_EQ(saved.sel_blocks, ref_saved.sel_blocks) << "sel_blocks";
  EXPECT_EQ(saved.cmp_offsets, ref_saved.cmp_offsets);
  ASSERT_EQ(saved.k_cmp_blocks.size(), ref_saved.k_cmp_blocks.size());
  ASSERT_EQ(saved.v_cmp_blocks.size(), ref_saved.v_cmp_blocks.size());
  EXPECT_LT(relative_error(saved.k_cmp_blocks, ref_saved.k_cmp_blocks), kTol) << "Kc";
  EXPECT_LT(relative_error(saved.v_cmp_blocks, ref_saved.v_cmp_blocks), kTol) << "Vc";
  EXPECT_EQ(saved.rows, ref_saved.rows);
  EXPECT_EQ(saved.top_n, ref_saved.top_n);
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuForward, ::testing::ValuesIn(cpu_test::covering_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Every SIMD target compiled into the library (Highway dynamic dispatch) against the
// reference, not only the best one this CPU has: covers the narrow-vector and scalar paths.
TEST(CpuForwardTargets, EveryCompiledTargetMatchesReference) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(90, 6, 2, 64, 40, false, 24));
  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), &ref_saved);
  ThreadPool pool(2);
  cpu_test::for_each_target([&](const char* target) {
    std::vector<float> out;
    NsaSaved<float> saved;
    nsa_forward(config, prob.inputs32(), prob.out_view(out), &saved, pool);
    EXPECT_LT(relative_error(out, ref), kTol) << target;
    EXPECT_EQ(saved.sel_blocks, ref_saved.sel_blocks) << target;
  });
}

// Bitwise reproducibility: same output for 1, 2 and 3 threads, with or without `saved`.
// The phase-2 super-tiles depend on the thread count (G = 3: 63, 21 and 21 tokens;
// G = 16 at T = 2100: 256, 256 and 172 tokens), so this also checks that their
// size does not change the result.
TEST(CpuForwardDeterminism, IndependentOfThreadsAndSaved) {
  const Config config(small_options());
  for (const auto& sh : {shape(300, 6, 2, 64, 32, false, 21), shape(2100, 16, 1, 32, 16, true, 5)}) {
  RandomNsaProblem prob(config, sh);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (bool with_saved : {false, true}) {
      std::vector<float> out;
      NsaSaved<float> saved;
      nsa_forward(config, prob.inputs32(), prob.out_view(out), with_saved ? &saved : nullptr, pool);
      if (first.empty())
        first = out;
      else
        EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float)))
            << threads << " threads, saved " << with_saved << ", " << sh.describe();
    }
  }
  }
}

// Non-contiguous q and out: every head padded, every token padded. Must equal the
// contiguous result bitwise (the kernels only see strides).
TEST(CpuForwardStrided, StridedQueryAndOutputViews) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(90, 4, 2, 64, 64, false, 22));
  ThreadPool pool(2);
  const auto in = prob.inputs32();
  std::vector<float> expected;
  nsa_forward(config, in, prob.out_view(expected), nullptr, pool);

  const index_t T = in.q.tokens(), H = in.q.heads(), dk = in.q.dim(), dv = in.v_cmp.dim();
  const index_t q_head = dk + 5, q_tok = H * q_head + 3, o_head = dv + 7, o_tok = H * o_head + 1;
  // Padding holds huge values that validation does not scan: a kernel reading it would
  // visibly break the result.
  std::vector<float> qbuf(static_cast<size_t>(T * q_tok), 1e30f);
  std::vector<float> obuf(static_cast<size_t>(T * o_tok), -7.0f);
  TensorView<float> q{qbuf.data(), {1, T, H, dk}, {T * q_tok, q_tok, q_head}};
  TensorView<float> o{obuf.data(), {1, T, H, dv}, {T * o_tok, o_tok, o_head}};
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H; ++h)
      for (index_t c = 0; c < dk; ++c) q.at(0, t, h, c) = in.q.at(0, t, h, c);
  auto strided = in;
  strided.q = q.as_const();
  nsa_forward(config, strided, o, nullptr, pool);
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H; ++h) {
      for (index_t c = 0; c < dv; ++c)
        ASSERT_EQ(o.at(0, t, h, c), expected[static_cast<size_t>((t * H + h) * dv + c)])
            << "t=" << t << " h=" << h << " c=" << c;
      ASSERT_EQ(o.at(0, t, h, dv), -7.0f) << "padding of out was written";
    }
}

TEST(CpuForwardValidation, InvalidInputThrowsAndWritesNothing) {
  const Config config(small_options());
  RandomNsaProblem prob(config, shape(40, 4, 2, 16, 16, false, 23));
  ThreadPool pool(2);
  auto in = prob.inputs32();
  in.gates.shape[3] = 2;  // wrong gate count
  std::vector<float> out;
  NsaSaved<float> saved;
  EXPECT_THROW(nsa_forward(config, in, prob.out_view(out), &saved, pool), Error);
  for (float x : out) ASSERT_TRUE(std::isnan(x));
  EXPECT_TRUE(saved.lse.empty());

  prob.buffers32().q[17] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(nsa_forward(config, prob.inputs32(), prob.out_view(out), nullptr, pool), Error);
  for (float x : out) ASSERT_TRUE(std::isnan(x));
}

}  // namespace
}  // namespace nsa
