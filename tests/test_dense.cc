// The fp32 CPU dense causal attention (the baseline) against reference::dense_forward:
// output and lse within the fp32 tolerance, for GQA group sizes 1..16, the three head-dim
// pairs, B > 1, varlen with an empty sequence, explicit scale, strided views, 1 and 2
// threads, and bitwise reproducibility across thread counts.
#include <gtest/gtest.h>

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

using cpu_test::DenseCase;
using cpu_test::dense_shape;
using testing::RandomDenseProblem;
using testing::relative_error;

constexpr double kTol = 1e-5;

class CpuDense : public ::testing::TestWithParam<DenseCase> {};

TEST_P(CpuDense, MatchesReference) {
  const DenseCase& c = GetParam();
  RandomDenseProblem prob(c.shape);
  auto in64 = prob.inputs64();
  auto in32 = prob.inputs32();
  in64.scale = in32.scale = c.scale;
  const index_t rows = in32.q.batch() * in32.q.tokens(), H = in32.q.heads();

  std::vector<double> ref, ref_lse(static_cast<size_t>(rows * H));
  reference::dense_forward(in64, prob.out_view(ref), ref_lse.data());
  std::vector<float> out, lse(static_cast<size_t>(rows * H), std::numeric_limits<float>::quiet_NaN());
  ThreadPool pool(c.threads);
  dense_forward(in32, prob.out_view(out), lse.data(), pool);
  const double e_out = relative_error(out, ref), e_lse = relative_error(lse, ref_lse);
  EXPECT_LT(e_out, kTol) << "out";
  EXPECT_LT(e_lse, kTol) << "lse";
  std::printf("  rel err: out %.2e  lse %.2e\n", e_out, e_lse);
}

std::vector<DenseCase> cases() {
  return cpu_test::dense_covering_cases({{"T1000_G16_d192x128", dense_shape(1, 1000, 16, 1, 192, 128, 7), 2},
                                 {"T4097_G2_d32", dense_shape(1, 4097, 2, 1, 32, 32, 8), 2},
                                 {"scale_0.3_T70_G3", dense_shape(1, 70, 3, 1, 64, 64, 9), 1, 0.3}});
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuDense, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<DenseCase>& info) {
                           std::string n = info.param.name;
                           for (char& ch : n)
                             if (ch == '.') ch = '_';
                           return n;
                         });

// Every SIMD target compiled into the library against the reference.
TEST(CpuDenseTargets, EveryCompiledTargetMatchesReference) {
  RandomDenseProblem prob(dense_shape(1, 150, 6, 2, 64, 40, 14));
  std::vector<double> ref;
  reference::dense_forward(prob.inputs64(), prob.out_view(ref), nullptr);
  ThreadPool pool(2);
  cpu_test::for_each_target([&](const char* target) {
    std::vector<float> out;
    dense_forward(prob.inputs32(), prob.out_view(out), nullptr, pool);
    EXPECT_LT(relative_error(out, ref), kTol) << target;
  });
}

TEST(CpuDenseDeterminism, IndependentOfThreadCount) {
  RandomDenseProblem prob(dense_shape(2, 200, 6, 2, 64, 32, 11));
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    std::vector<float> out;
    dense_forward(prob.inputs32(), prob.out_view(out), nullptr, pool);
    if (first.empty())
      first = out;
    else
      EXPECT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * sizeof(float))) << threads;
  }
}

// Strided q, k, v and out (padded heads and tokens): same result as contiguous, bitwise.
TEST(CpuDenseStrided, StridedViews) {
  RandomDenseProblem prob(dense_shape(1, 80, 4, 2, 64, 48, 12));
  ThreadPool pool(2);
  const auto in = prob.inputs32();
  std::vector<float> expected;
  dense_forward(in, prob.out_view(expected), nullptr, pool);

  const index_t T = in.q.tokens();
  std::vector<std::vector<float>> bufs;
  auto pad = [&](const TensorView<const float>& x) {
    const index_t head = x.dim() + 3, tok = x.heads() * head + 5;
    bufs.emplace_back(static_cast<size_t>(T * tok), 1e30f);  // huge padding: reads would show
    TensorView<float> y{bufs.back().data(), x.shape, {T * tok, tok, head}};
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < x.heads(); ++h)
        for (index_t c = 0; c < x.dim(); ++c) y.at(0, t, h, c) = x.at(0, t, h, c);
    return y;
  };
  bufs.reserve(4);
  auto strided = in;
  strided.q = pad(in.q).as_const();
  strided.k = pad(in.k).as_const();
  strided.v = pad(in.v).as_const();
  std::vector<float> zeros(expected.size(), 0.0f);
  TensorView<float> o = pad(prob.out_view(zeros).as_const());
  dense_forward(strided, o, nullptr, pool);
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < o.heads(); ++h) {
      for (index_t c = 0; c < o.dim(); ++c)
        ASSERT_EQ(o.at(0, t, h, c), expected[static_cast<size_t>((t * o.heads() + h) * o.dim() + c)]);
      ASSERT_EQ(o.at(0, t, h, o.dim()), 1e30f) << "padding of out was written";
    }
}

TEST(CpuDenseValidation, InvalidInputThrowsAndWritesNothing) {
  RandomDenseProblem prob(dense_shape(1, 20, 4, 3, 16, 16, 13));  // H % H_kv != 0
  ThreadPool pool(1);
  std::vector<float> out;
  EXPECT_THROW(dense_forward(prob.inputs32(), prob.out_view(out), nullptr, pool), Error);
  for (float x : out) ASSERT_TRUE(std::isnan(x));
}

}  // namespace
}  // namespace nsa
