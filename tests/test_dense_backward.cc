// The fp32 CPU dense_backward (the baseline of the backward speed-up) against
// reference::dense_backward: dq, dk, dv within the fp32 gradient tolerance (1e-4 relative)
// for GQA group sizes 1..16, the three head-dim pairs, odd dims, B > 1, varlen with empty
// sequences, an explicit scale; bitwise reproducibility for 1, 2 and 3 threads (every
// gradient row has one task); every compiled SIMD target; bad input rejected.
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

using cpu_test::DenseCase;
using cpu_test::dense_shape;
using testing::ProblemShape;
using testing::RandomDenseProblem;
using testing::relative_error;

constexpr double kTol = 1e-4;  // fp32 gradients (spec, "Tolerances")

template <class T>
struct DenseGrads {
  std::vector<T> dq, dk, dv;
  DenseGradients<T> grads;
  DenseGrads(index_t B, index_t T_, index_t H, index_t H_kv, index_t d_k, index_t d_v) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    dq.assign(static_cast<size_t>(B * T_ * H * d_k), nan);
    dk.assign(static_cast<size_t>(B * T_ * H_kv * d_k), nan);
    dv.assign(static_cast<size_t>(B * T_ * H_kv * d_v), nan);
    grads = {contiguous_view(dq.data(), B, T_, H, d_k), contiguous_view(dk.data(), B, T_, H_kv, d_k),
             contiguous_view(dv.data(), B, T_, H_kv, d_v)};
  }
};

// Everything of one problem: the fp32 forward's out and lse, d_out, the reference grads.
struct DenseRun {
  RandomDenseProblem prob;
  DenseInputs<float> in32;
  index_t B, T, H, H_kv, d_k, d_v;
  std::vector<float> out, lse, d_out;

  DenseRun(const ProblemShape& s, double scale) : prob(s) {
    in32 = prob.inputs32();
    in32.scale = scale;
    B = in32.q.batch(), T = in32.q.tokens(), H = in32.q.heads();
    H_kv = in32.k.heads(), d_k = in32.q.dim(), d_v = in32.v.dim();
    lse.assign(static_cast<size_t>(B * T * H), 0.0f);
    ThreadPool pool(2);
    dense_forward(in32, prob.out_view(out), lse.data(), pool);
    std::mt19937_64 rng(s.seed + 50);
    std::normal_distribution<float> normal;
    d_out.resize(out.size());
    for (auto& x : d_out) x = normal(rng);
  }
  TensorView<const float> d_out_view() const {
    return contiguous_view<const float>(d_out.data(), B, T, H, d_v);
  }
  TensorView<const float> out_view() const { return contiguous_view<const float>(out.data(), B, T, H, d_v); }

  DenseGrads<float> run(int threads) const {
    DenseGrads<float> g(B, T, H, H_kv, d_k, d_v);
    ThreadPool pool(threads);
    dense_backward(in32, out_view(), lse.data(), d_out_view(), g.grads, pool);
    return g;
  }
  DenseGrads<double> reference() const {
    auto in64 = prob.inputs64();
    in64.scale = in32.scale;
    const std::vector<double> d64(d_out.begin(), d_out.end());
    DenseGrads<double> g(B, T, H, H_kv, d_k, d_v);
    reference::dense_backward(in64, contiguous_view<const double>(d64.data(), B, T, H, d_v), g.grads);
    return g;
  }
};

// Relative error; where the exact gradient is 0 (T = 1: one key, P = 1, dS = 0), the
// largest absolute value instead, which must be rounding noise.
double error(const std::vector<float>& x, const std::vector<double>& ref) {
  double ref_max = 0.0, x_max = 0.0;
  for (double r : ref) ref_max = std::max(ref_max, std::abs(r));
  if (ref_max > 0.0) return relative_error(x, ref);
  for (float v : x) x_max = std::max(x_max, std::isfinite(v) ? std::abs(static_cast<double>(v)) : 1e300);
  return x_max;
}

class CpuDenseBackward : public ::testing::TestWithParam<DenseCase> {};

TEST_P(CpuDenseBackward, MatchesReference) {
  const DenseCase& c = GetParam();
  const DenseRun run(c.shape, c.scale);
  const auto ref = run.reference();
  const auto got = run.run(c.threads);
  const double e_q = error(got.dq, ref.dq), e_k = error(got.dk, ref.dk);
  const double e_v = error(got.dv, ref.dv);
  EXPECT_LT(e_q, kTol) << "dq";
  EXPECT_LT(e_k, kTol) << "dk";
  EXPECT_LT(e_v, kTol) << "dv";
  std::printf("  rel err: dq %.1e  dk %.1e  dv %.1e\n", e_q, e_k, e_v);
}

std::vector<DenseCase> cases() {
  return cpu_test::dense_covering_cases({{"T700_G4_d64", dense_shape(1, 700, 4, 1, 64, 64, 7), 2},
                                 {"T2049_G2_d32", dense_shape(1, 2049, 2, 1, 32, 32, 8), 2},
                                 {"scale0p3_T70_G3", dense_shape(1, 70, 3, 1, 64, 64, 9), 1, 0.3}});
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuDenseBackward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<DenseCase>& info) { return info.param.name; });

// Every gradient row is computed by one task: bitwise equal for any thread count.
TEST(CpuDenseBackwardDeterminism, BitwiseForAnyThreadCount) {
  const DenseRun run(dense_shape(2, 150, 6, 2, 48, 40, 11), 0.0);
  const auto one = run.run(1);
  for (int threads : {1, 2, 3}) {
    const auto g = run.run(threads);
    EXPECT_EQ(0, std::memcmp(g.dq.data(), one.dq.data(), g.dq.size() * sizeof(float))) << threads;
    EXPECT_EQ(0, std::memcmp(g.dk.data(), one.dk.data(), g.dk.size() * sizeof(float))) << threads;
    EXPECT_EQ(0, std::memcmp(g.dv.data(), one.dv.data(), g.dv.size() * sizeof(float))) << threads;
  }
}

TEST(CpuDenseBackwardTargets, EveryCompiledTargetMatchesReference) {
  const DenseRun run(dense_shape(1, 90, 6, 2, 36, 20, 12), 0.0);
  const auto ref = run.reference();
  cpu_test::for_each_target([&](const char* target) {
    const auto g = run.run(2);
    EXPECT_LT(relative_error(g.dq, ref.dq), kTol) << target;
    EXPECT_LT(relative_error(g.dk, ref.dk), kTol) << target;
    EXPECT_LT(relative_error(g.dv, ref.dv), kTol) << target;
  });
}

TEST(CpuDenseBackwardValidation, BadInputThrowsAndWritesNothing) {
  const DenseRun run(dense_shape(1, 40, 4, 2, 16, 8, 13), 0.0);
  ThreadPool pool(2);
  auto expect_error = [&](const char* what, const std::string& needle, auto&& call) {
    DenseGrads<float> g(run.B, run.T, run.H, run.H_kv, run.d_k, run.d_v);
    cpu_test::expect_error_mentioning(what, needle, [&] { call(g.grads); });
    for (const auto* buf : {&g.dq, &g.dk, &g.dv})
      for (float x : *buf) ASSERT_TRUE(std::isnan(x)) << what << ": a gradient was written";
  };
  expect_error("d_out of the wrong shape", "d_out", [&](const DenseGradients<float>& g) {
    auto bad = run.d_out_view();
    bad.shape[1] = run.T - 1;
    dense_backward(run.in32, run.out_view(), run.lse.data(), bad, g, pool);
  });
  expect_error("out of the wrong shape", "out", [&](const DenseGradients<float>& g) {
    auto bad = run.out_view();
    bad.shape[2] = 2;
    dense_backward(run.in32, bad, run.lse.data(), run.d_out_view(), g, pool);
  });
  expect_error("null lse", "lse", [&](const DenseGradients<float>& g) {
    dense_backward(run.in32, run.out_view(), nullptr, run.d_out_view(), g, pool);
  });
  expect_error("dk of the wrong shape", "dk", [&](const DenseGradients<float>& g) {
    auto bad = g;
    bad.dk.shape[3] = run.d_k + 1;
    dense_backward(run.in32, run.out_view(), run.lse.data(), run.d_out_view(), bad, pool);
  });
  expect_error("null dv", "dv", [&](const DenseGradients<float>& g) {
    auto bad = g;
    bad.dv.data = nullptr;
    dense_backward(run.in32, run.out_view(), run.lse.data(), run.d_out_view(), bad, pool);
  });
  expect_error("NaN in d_out", "d_out", [&](const DenseGradients<float>& g) {
    std::vector<float> d = run.d_out;
    d[77] = std::numeric_limits<float>::infinity();
    dense_backward(run.in32, run.out_view(), run.lse.data(),
                   contiguous_view<const float>(d.data(), run.B, run.T, run.H, run.d_v), g, pool);
  });
}

}  // namespace
}  // namespace nsa
