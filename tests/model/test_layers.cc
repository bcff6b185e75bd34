// Every layer of src/model/layers: backward against central finite differences in
// float64, and the float forward against the double forward.
// Each check takes L = sum(out * r) for a fixed random r, so d out = r.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "model/layers/token_shift.h"
#include "model/layers/cross_entropy.h"
#include "model/layers/embedding.h"
#include "model/layers/matmul.h"
#include "model/layers/rmsnorm.h"
#include "model/layers/rope.h"
#include "model/layers/sigmoid.h"
#include "model/layers/swiglu.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

using testing::central_difference;
using testing::convert;
using testing::random_vector;
using testing::rel_error;

constexpr double kEps = 1e-6;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Every entry of `x` (the analytic gradient `grad`) against finite differences of loss().
void expect_gradient(const char* name, std::vector<double>& x, const std::vector<double>& grad,
                     const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), grad.size());
  double max_diff = 0, max_grad = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double fd = central_difference(loss, &x[i], kEps);
    EXPECT_NEAR(grad[i], fd, 1e-7 + 1e-6 * std::abs(fd)) << name << "[" << i << "]";
    max_diff = std::max(max_diff, std::abs(grad[i] - fd));
    max_grad = std::max(max_grad, std::abs(grad[i]));
  }
  // A check that compares zeros to zeros proves nothing.
  EXPECT_GT(max_grad, 1e-3) << name << ": gradient is (nearly) zero";
  std::printf("  %-16s OK, maxdiff = %.3g (max |grad| %.3g)\n", name, max_diff, max_grad);
}

class Layers : public ::testing::Test {
 protected:
  ThreadPool pool{2};
};

TEST_F(Layers, MatmulGradients) {
  const index_t N = 5, IC = 7, OC = 4;
  auto inp = random_vector(N * IC, 1), w = random_vector(OC * IC, 2), b = random_vector(OC, 3);
  const auto r = random_vector(N * OC, 4);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), inp.data(), w.data(), b.data(), N, IC, OC);
    return dot(out, r);
  };
  // The forward itself, against a plain loop.
  loss();
  for (index_t n = 0; n < N; ++n)
    for (index_t o = 0; o < OC; ++o) {
      double s = b[o];
      for (index_t i = 0; i < IC; ++i) s += inp[n * IC + i] * w[o * IC + i];
      ASSERT_NEAR(out[n * OC + o], s, 1e-12);
    }
  // Gradients accumulate: start from ones and subtract them afterwards.
  std::vector<double> dinp(N * IC, 1.0), dw(OC * IC, 1.0), db(OC, 1.0);
  matmul_backward(dinp.data(), dw.data(), db.data(), r.data(), inp.data(), w.data(), N, IC, OC);
  for (auto* g : {&dinp, &dw, &db})
    for (double& x : *g) x -= 1.0;
  expect_gradient("matmul dinp", inp, dinp, loss);
  expect_gradient("matmul dweight", w, dw, loss);
  expect_gradient("matmul dbias", b, db, loss);
}

TEST_F(Layers, TokenShiftForwardHistoryAndGradients) {
  const index_t B = 2, Tn = 5, C = 3;
  const int S = 2, W = (S + 1) * C;
  auto x = random_vector(B * Tn * C, 11);
  const auto r = random_vector(B * Tn * W, 13);
  std::vector<double> out(B * Tn * W);
  auto loss = [&] {
    token_shift_forward(out.data(), x.data(), B, Tn, C, S);
    return dot(out, r);
  };
  // The forward against the formula: rows before t = 0 (and across batch rows) are 0.
  loss();
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (int j = 0; j <= S; ++j)
        for (index_t c = 0; c < C; ++c)
          ASSERT_EQ(out[(b * Tn + t) * W + j * C + c], t - j >= 0 ? x[(b * Tn + t - j) * C + c] : 0.0)
              << "b " << b << " t " << t << " j " << j;
  // With history, a sequence cut in two gives the same rows as the whole (what decoding does).
  std::vector<double> head(2 * W), tail(3 * W), whole(Tn * W);
  token_shift_forward(whole.data(), x.data(), 1, Tn, C, S);
  std::vector<double> history(static_cast<std::size_t>(S * C), 0.0);
  token_shift_forward(head.data(), x.data(), 1, 2, C, S, history.data());
  std::copy(x.begin(), x.begin() + 2 * C, history.begin());  // the last S = 2 rows
  token_shift_forward(tail.data(), x.data() + 2 * C, 1, 3, C, S, history.data());
  for (index_t i = 0; i < 2 * W; ++i) EXPECT_EQ(head[i], whole[i]);
  for (index_t i = 0; i < 3 * W; ++i) EXPECT_EQ(tail[i], whole[2 * W + i]);

  std::vector<double> dx(B * Tn * C, 1.0);  // accumulates
  token_shift_backward(dx.data(), r.data(), B, Tn, C, S);
  for (double& v : dx) v -= 1.0;
  expect_gradient("token_shift dx", x, dx, loss);
}

TEST_F(Layers, EmbeddingGradients) {
  const index_t V = 6, C = 5, N = 7;
  const std::vector<std::int32_t> tokens = {3, 0, 3, 5, 1, 3, 0};  // repeats add up
  auto embed = random_vector(V * C, 5);
  const auto r = random_vector(N * C, 6);
  std::vector<double> out(N * C);
  auto loss = [&] {
    embedding_forward(out.data(), tokens.data(), embed.data(), N, C);
    return dot(out, r);
  };
  loss();
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c) ASSERT_EQ(out[n * C + c], embed[tokens[n] * C + c]);
  std::vector<double> dembed(V * C, 0.0);
  embedding_backward(dembed.data(), r.data(), tokens.data(), N, C);
  expect_gradient("embedding", embed, dembed, loss);
  // Token 2 and 4 never occur: their rows get no gradient.
  for (index_t c = 0; c < C; ++c) EXPECT_EQ(dembed[2 * C + c], 0.0);
}

TEST_F(Layers, RmsnormGradients) {
  const index_t N = 6, C = 9;
  auto inp = random_vector(N * C, 7), w = random_vector(C, 8);
  const auto r = random_vector(N * C, 9);
  std::vector<double> out(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, 1e-5, pool);
    return dot(out, r);
  };
  loss();
  for (index_t n = 0; n < N; ++n) {
    double ss = 0;
    for (index_t c = 0; c < C; ++c) ss += inp[n * C + c] * inp[n * C + c];
    const double rs = 1 / std::sqrt(ss / C + 1e-5);
    for (index_t c = 0; c < C; ++c) ASSERT_NEAR(out[n * C + c], inp[n * C + c] * rs * w[c], 1e-12);
  }
  std::vector<double> dinp(N * C, 0.0), dw(C, 0.0);
  rmsnorm_backward(dinp.data(), dw.data(), r.data(), inp.data(), w.data(), rstd.data(), N, C, pool);
  expect_gradient("rmsnorm dinp", inp, dinp, loss);
  expect_gradient("rmsnorm dweight", w, dw, loss);
}

TEST_F(Layers, RopeGradientsAndRotation) {
  const index_t B = 2, Tn = 5, H = 3, D = 8;
  const RopeTable<double> table(Tn + 3, D, 10000.0);
  auto inp = random_vector(B * Tn * H * D, 10);
  const auto r = random_vector(inp.size(), 11);
  std::vector<double> out(inp.size());
  const index_t pos0 = 3;  // rows of positions 3 .. 7, as the generator passes them
  auto loss = [&] {
    rope_forward(out.data(), inp.data(), table.cos_at(pos0), table.sin_at(pos0), B, Tn, H, D, pool);
    return dot(out, r);
  };
  loss();
  // Against the formula: pair (j, j + D/2) of token t rotated by (pos0 + t) theta^(-2j/D).
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t j = 0; j < D / 2; ++j) {
          const index_t o = ((b * Tn + t) * H + h) * D;
          const double a = static_cast<double>(pos0 + t) * std::pow(10000.0, -2.0 * j / D);
          ASSERT_NEAR(out[o + j], inp[o + j] * std::cos(a) - inp[o + j + D / 2] * std::sin(a), 1e-12);
          ASSERT_NEAR(out[o + j + D / 2], inp[o + j + D / 2] * std::cos(a) + inp[o + j] * std::sin(a), 1e-12);
        }
  std::vector<double> dinp(inp.size());
  rope_backward(dinp.data(), r.data(), table.cos_at(pos0), table.sin_at(pos0), B, Tn, H, D, pool);
  expect_gradient("rope dinp", inp, dinp, loss);
}

TEST_F(Layers, SwigluGradients) {
  const index_t n = 23;
  auto gate = random_vector(n, 12, 2.0), up = random_vector(n, 13);
  const auto r = random_vector(n, 14);
  std::vector<double> out(n);
  auto loss = [&] {
    swiglu_forward(out.data(), gate.data(), up.data(), n, pool);
    return dot(out, r);
  };
  loss();
  for (index_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], gate[i] / (1 + std::exp(-gate[i])) * up[i], 1e-12);
  std::vector<double> dgate(n, 0.0), dup(n, 0.0);
  swiglu_backward(dgate.data(), dup.data(), r.data(), gate.data(), up.data(), n, pool);
  expect_gradient("swiglu dgate", gate, dgate, loss);
  expect_gradient("swiglu dup", up, dup, loss);
}

TEST_F(Layers, SigmoidGateGradients) {
  const index_t n = 17;
  auto inp = random_vector(n, 15, 3.0);
  const auto r = random_vector(n, 16);
  std::vector<double> out(n);
  auto loss = [&] {
    sigmoid_forward(out.data(), inp.data(), n);
    return dot(out, r);
  };
  loss();
  for (index_t i = 0; i < n; ++i) {
    ASSERT_GT(out[i], 0.0);
    ASSERT_LT(out[i], 1.0);
  }
  std::vector<double> dinp(n, 0.0);
  sigmoid_backward(dinp.data(), r.data(), out.data(), n);
  expect_gradient("sigmoid dinp", inp, dinp, loss);
}

TEST_F(Layers, CrossEntropyGradients) {
  const index_t N = 6, V = 7;
  auto logits = random_vector(N * V, 17, 3.0);
  const std::vector<std::int32_t> targets = {2, -1, 6, 0, -1, 2};  // two ignored rows
  std::vector<double> probs(N * V), losses(N);
  auto loss = [&] { return crossentropy_forward(losses.data(), probs.data(), logits.data(), targets.data(), N, V, pool); };
  const double mean = loss();
  double expected = 0;
  for (index_t n = 0; n < N; ++n) {
    if (targets[n] < 0) {
      EXPECT_EQ(losses[n], 0.0);
      continue;
    }
    double z = 0;
    for (index_t v = 0; v < V; ++v) z += std::exp(logits[n * V + v]);
    expected += std::log(z) - logits[n * V + targets[n]];
  }
  EXPECT_NEAR(mean, expected / 4, 1e-12);
  std::vector<double> dlogits(N * V, 0.0);
  crossentropy_backward(dlogits.data(), probs.data(), targets.data(), 1.0 / 4, N, V, pool);
  expect_gradient("cross-entropy", logits, dlogits, loss);
  for (index_t v = 0; v < V; ++v) EXPECT_EQ(dlogits[1 * V + v], 0.0);
  // No targets at all: the mean is 0, not NaN.
  const std::vector<std::int32_t> none(N, -1);
  EXPECT_EQ(crossentropy_forward(losses.data(), probs.data(), logits.data(), none.data(), N, V, pool), 0.0);
  // Extreme logits stay finite.
  std::vector<double> big(V, 0.0);
  big[0] = 1e4;
  const std::int32_t t = 3;
  const double l = crossentropy_forward(losses.data(), probs.data(), big.data(), &t, 1, V, pool);
  EXPECT_NEAR(l, 1e4, 1e-9);
}

// The float forward of every layer against the double one on the same inputs.
TEST_F(Layers, FloatForwardMatchesDouble) {
  const index_t N = 33, C = 48, OC = 40, V = 50;
  const auto xd = convert<double>(convert<float>(random_vector(N * C, 20)));  // exactly representable
  const auto wd = convert<double>(convert<float>(random_vector(OC * C, 21, 0.2)));
  const auto bd = convert<double>(convert<float>(random_vector(OC, 22)));
  const auto xf = convert<float>(xd), wf = convert<float>(wd), bf = convert<float>(bd);
  auto check = [](const char* name, const std::vector<float>& f, const std::vector<double>& d, double tol) {
    const double err = rel_error(f.data(), d.data(), d.size());
    EXPECT_LT(err, tol) << name;
    std::printf("  %-16s float vs double rel err %.3g\n", name, err);
  };
  {
    std::vector<float> of(N * OC);
    std::vector<double> od(N * OC);
    matmul_forward(of.data(), xf.data(), wf.data(), bf.data(), N, C, OC);
    matmul_forward(od.data(), xd.data(), wd.data(), bd.data(), N, C, OC);
    check("matmul", of, od, 1e-6);
  }
  {
    std::vector<float> of(N * C), rf(N);
    std::vector<double> od(N * C), rd(N);
    rmsnorm_forward(of.data(), rf.data(), xf.data(), wf.data(), N, C, 1e-5, pool);
    rmsnorm_forward(od.data(), rd.data(), xd.data(), wd.data(), N, C, 1e-5, pool);
    check("rmsnorm", of, od, 1e-6);
  }
  {
    const RopeTable<float> tf(N, 16, 10000.0);
    const RopeTable<double> td(N, 16, 10000.0);
    std::vector<float> of(N * C);
    std::vector<double> od(N * C);
    rope_forward(of.data(), xf.data(), tf.cos_at(0), tf.sin_at(0), 1, N, 3, 16, pool);
    rope_forward(od.data(), xd.data(), td.cos_at(0), td.sin_at(0), 1, N, 3, 16, pool);
    check("rope", of, od, 1e-6);
  }
  {
    std::vector<float> of(N * C);
    std::vector<double> od(N * C);
    swiglu_forward(of.data(), xf.data(), wf.data(), N * C, pool);
    swiglu_forward(od.data(), xd.data(), wd.data(), N * C, pool);
    check("swiglu", of, od, 1e-6);
    sigmoid_forward(of.data(), xf.data(), N * C);
    sigmoid_forward(od.data(), xd.data(), N * C);
    check("sigmoid", of, od, 1e-6);
  }
  {
    std::vector<std::int32_t> targets(N);
    for (index_t n = 0; n < N; ++n) targets[n] = static_cast<std::int32_t>((n * 7) % V);
    std::vector<float> pf(N * V), lf(N);
    std::vector<double> pd(N * V), ld(N);
    const auto logd = convert<double>(convert<float>(random_vector(N * V, 23, 2.0)));
    const auto logf = convert<float>(logd);
    const double mf = crossentropy_forward(lf.data(), pf.data(), logf.data(), targets.data(), N, V, pool);
    const double md = crossentropy_forward(ld.data(), pd.data(), logd.data(), targets.data(), N, V, pool);
    EXPECT_NEAR(mf, md, 1e-6 * md);
    check("softmax", pf, pd, 1e-6);
  }
}

}  // namespace
}  // namespace nsa::model
