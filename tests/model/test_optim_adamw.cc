// The optimizer: AdamW against the textbook formulas (two parameters over several steps,
// with and without decay), the warm-up + cosine schedule, gradient clipping, and AdamW
// minimizing a quadratic.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "model/optim/adamw.h"
#include "nsa/error.h"

namespace nsa::model {
namespace {

TEST(OptimAdamW, MatchesTheTextbookUpdate) {
  // Two parameters, f = 0.5 (3 p0^2 + p1^2) - p1 (gradient 3 p0, p1 - 1); p0 decays, p1 not.
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  const double lr = 0.05;
  float p[2] = {1.0f, -2.0f}, m[2] = {}, v[2] = {};
  const std::uint8_t decay[2] = {1, 0};
  double rp[2] = {1.0, -2.0}, rm[2] = {}, rv[2] = {};  // the reference, in double
  for (std::int64_t t = 1; t <= 5; ++t) {
    const float g[2] = {3.0f * p[0], p[1] - 1.0f};
    adamw_step(p, g, m, v, 2, t, lr, o, decay);
    for (int i = 0; i < 2; ++i) {
      const double gi = g[i];
      rm[i] = 0.9 * rm[i] + 0.1 * gi;
      rv[i] = 0.99 * rv[i] + 0.01 * gi * gi;
      const double mhat = rm[i] / (1 - std::pow(0.9, t)), vhat = rv[i] / (1 - std::pow(0.99, t));
      rp[i] -= lr * (mhat / (std::sqrt(vhat) + 1e-8) + (i == 0 ? 0.1 * rp[i] : 0.0));
      EXPECT_NEAR(m[i], rm[i], 1e-6 * std::abs(rm[i]) + 1e-7) << "t=" << t << " i=" << i;
      EXPECT_NEAR(v[i], rv[i], 1e-6 * std::abs(rv[i]) + 1e-9) << "t=" << t << " i=" << i;
      EXPECT_NEAR(p[i], rp[i], 1e-6) << "t=" << t << " i=" << i;
      rp[i] = p[i];  // follow the fp32 trajectory (its gradients come from p)
    }
  }
  // The first step moves each parameter by about lr against its gradient's sign (|mhat| =
  // sqrt(vhat) = |g| at t = 1), plus lr wd p where decayed.
  float q[2] = {1.0f, 1.0f}, m0[2] = {}, v0[2] = {};
  const float g0[2] = {5.0f, -0.001f};
  adamw_step(q, g0, m0, v0, 2, 1, 0.01, o, nullptr);  // null mask: both decay
  EXPECT_NEAR(q[0], 1.0 - 0.01 - 0.01 * 0.1, 1e-6);
  EXPECT_NEAR(q[1], 1.0 + 0.01 - 0.01 * 0.1, 1e-5);
}

TEST(OptimAdamW, ZeroGradientOnlyDecays) {
  AdamWOptions o;
  o.weight_decay = 0.5;
  float p[3] = {2.0f, -4.0f, 1.0f}, m[3] = {}, v[3] = {};
  const float g[3] = {};
  const std::uint8_t decay[3] = {1, 1, 0};
  adamw_step(p, g, m, v, 3, 1, 0.1, o, decay);
  EXPECT_FLOAT_EQ(p[0], 2.0f * (1 - 0.05f));
  EXPECT_FLOAT_EQ(p[1], -4.0f * (1 - 0.05f));
  EXPECT_FLOAT_EQ(p[2], 1.0f);
  EXPECT_THROW(adamw_step(p, g, m, v, 3, 0, 0.1, o, decay), Error);
}

TEST(OptimAdamW, MinimizesAQuadratic) {
  // f(p) = sum_i a_i (p_i - c_i)^2 / 2 with condition number 100; no decay.
  constexpr std::size_t n = 16;
  std::vector<float> p(n, 0.0f), m(n, 0.0f), v(n, 0.0f), g(n);
  std::vector<double> a(n), c(n);
  for (std::size_t i = 0; i < n; ++i) {
    a[i] = std::pow(100.0, static_cast<double>(i) / (n - 1));
    c[i] = std::sin(static_cast<double>(i) + 1.0) * 3.0;
  }
  AdamWOptions o;
  o.weight_decay = 0.0;
  const auto loss = [&] {
    double f = 0;
    for (std::size_t i = 0; i < n; ++i) f += 0.5 * a[i] * (p[i] - c[i]) * (p[i] - c[i]);
    return f;
  };
  const double f0 = loss();
  for (std::int64_t t = 1; t <= 3000; ++t) {
    for (std::size_t i = 0; i < n; ++i) g[i] = static_cast<float>(a[i] * (p[i] - c[i]));
    adamw_step(p.data(), g.data(), m.data(), v.data(), n, t, learning_rate(t - 1, 100, 3000, 0.05, 1e-4), o, nullptr);
  }
  EXPECT_LT(loss(), 1e-6 * f0) << "from " << f0;
  for (std::size_t i = 0; i < n; ++i) EXPECT_NEAR(p[i], c[i], 1e-3) << i;
}

TEST(OptimSchedule, WarmupThenCosine) {
  const double max_lr = 1e-3, min_lr = 1e-4;
  EXPECT_DOUBLE_EQ(learning_rate(0, 10, 100, max_lr, min_lr), max_lr / 10);
  EXPECT_DOUBLE_EQ(learning_rate(4, 10, 100, max_lr, min_lr), max_lr * 5 / 10);
  EXPECT_DOUBLE_EQ(learning_rate(9, 10, 100, max_lr, min_lr), max_lr);
  EXPECT_DOUBLE_EQ(learning_rate(10, 10, 100, max_lr, min_lr), max_lr);
  EXPECT_DOUBLE_EQ(learning_rate(55, 10, 100, max_lr, min_lr), (max_lr + min_lr) / 2);  // halfway
  EXPECT_NEAR(learning_rate(99, 10, 100, max_lr, min_lr), min_lr, 1e-6);
  EXPECT_DOUBLE_EQ(learning_rate(100, 10, 100, max_lr, min_lr), min_lr);
  EXPECT_DOUBLE_EQ(learning_rate(1000, 10, 100, max_lr, min_lr), min_lr);
  // Textbook value at a point of the cosine.
  EXPECT_DOUBLE_EQ(learning_rate(30, 10, 100, max_lr, min_lr),
                   min_lr + 0.5 * (max_lr - min_lr) * (1 + std::cos(3.141592653589793 * 20.0 / 90.0)));
  // Increasing during warm-up, non-increasing after, always within [min(lr), max_lr].
  for (std::int64_t s = 1; s < 120; ++s) {
    const double prev = learning_rate(s - 1, 10, 100, max_lr, min_lr), cur = learning_rate(s, 10, 100, max_lr, min_lr);
    if (s < 10) {
      EXPECT_GT(cur, prev) << s;
    } else {
      EXPECT_LE(cur, prev) << s;
    }
    EXPECT_LE(cur, max_lr);
    EXPECT_GE(cur, std::min(min_lr, max_lr / 10));
  }
  // No warm-up: the cosine starts at max_lr.
  EXPECT_DOUBLE_EQ(learning_rate(0, 0, 100, max_lr, min_lr), max_lr);
  EXPECT_DOUBLE_EQ(learning_rate(50, 0, 100, max_lr, min_lr), (max_lr + min_lr) / 2);
  // Warm-up longer than the run: linear until total, then min_lr.
  EXPECT_DOUBLE_EQ(learning_rate(4, 10, 5, max_lr, min_lr), max_lr / 2);
  EXPECT_DOUBLE_EQ(learning_rate(5, 10, 5, max_lr, min_lr), min_lr);
  EXPECT_THROW(learning_rate(-1, 10, 100, max_lr, min_lr), Error);
}

TEST(OptimClip, ScalesToMaxNormAndReturnsTheNormBefore) {
  std::vector<float> g = {3.0f, 4.0f, 0.0f, -12.0f};  // norm 13
  EXPECT_DOUBLE_EQ(clip_grad_norm(g.data(), g.size(), 1.0), 13.0);
  EXPECT_NEAR(g[0], 3.0 / 13, 1e-7);
  EXPECT_NEAR(g[1], 4.0 / 13, 1e-7);
  EXPECT_EQ(g[2], 0.0f);
  EXPECT_NEAR(g[3], -12.0 / 13, 1e-7);
  double norm = 0;
  for (const float x : g) norm += double(x) * x;
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-6);

  std::vector<float> small = {0.3f, 0.4f};
  EXPECT_NEAR(clip_grad_norm(small.data(), 2, 1.0), 0.5, 1e-7);
  EXPECT_EQ(small, (std::vector<float>{0.3f, 0.4f}));  // under the limit: untouched
  std::vector<float> big = {30.0f, 40.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm(big.data(), 2, 0.0), 50.0);  // max_norm 0: no clipping
  EXPECT_DOUBLE_EQ(clip_grad_norm(big.data(), 2, -1.0), 50.0);
  EXPECT_EQ(big, (std::vector<float>{30.0f, 40.0f}));
  EXPECT_EQ(clip_grad_norm(nullptr, 0, 1.0), 0.0);
}

TEST(OptimClip, AccumulatesInDouble) {
  // 2^24 + 1 ones: a float sum of squares would stop at 2^24; double gets it exactly.
  std::vector<float> g((1u << 24) + 1, 1.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(g.data(), g.size(), 0.0), std::sqrt(16777217.0));
  // Values whose squares overflow float but not double.
  std::vector<float> huge = {3e30f, 4e30f};
  EXPECT_NEAR(clip_grad_norm(huge.data(), 2, 1.0), 5e30, 1e24);
  EXPECT_NEAR(huge[0], 0.6f, 1e-6);
  EXPECT_NEAR(huge[1], 0.8f, 1e-6);
}

TEST(OptimClip, NonFiniteNormLeavesGradientsUntouched) {
  for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    std::vector<float> g = {1.0f, bad, 2.0f};
    const double norm = clip_grad_norm(g.data(), g.size(), 1.0);
    EXPECT_FALSE(std::isfinite(norm));
    EXPECT_EQ(g[0], 1.0f);
    EXPECT_EQ(g[2], 2.0f);
    EXPECT_EQ(std::isnan(g[1]), std::isnan(bad));
  }
}

}  // namespace
}  // namespace nsa::model
