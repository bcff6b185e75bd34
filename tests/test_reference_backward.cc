// The float64 reference backward against central finite differences of the reference
// forward, with the selection held fixed (spec, "Backward": the indices are constants).
// Loss L = sum(o * d_out) with a random d_out.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reference/reference.h"
#include "test_cpu_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using cpu_test::GradBuffers;
using testing::ProblemShape;
using testing::RandomNsaProblem;

double loss(const RandomNsaProblem& prob, const std::vector<std::int32_t>& selection,
            const std::vector<double>& d_out) {
  std::vector<double> out;
  reference::nsa_forward_with_selection(prob.config(), prob.inputs64(), prob.out_view(out), nullptr,
                                        selection.data());
  double l = 0.0;
  for (size_t i = 0; i < out.size(); ++i) l += out[i] * d_out[i];
  return l;
}

// Checks `samples` random entries of one input buffer against its analytic gradient.
void check_tensor(RandomNsaProblem& prob, const std::vector<std::int32_t>& selection,
                  const std::vector<double>& d_out, std::vector<double>& x,
                  const std::vector<double>& grad, const char* name, std::mt19937_64& rng) {
  ASSERT_EQ(x.size(), grad.size()) << name;
  const size_t samples = std::min<size_t>(x.size(), 16);
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  double num = 0.0, den = 0.0;
  for (size_t k = 0; k < samples; ++k) {
    const size_t i = samples == x.size() ? k : pick(rng);
    const double h = 1e-5 * std::max(1.0, std::abs(x[i])), saved = x[i];
    x[i] = saved + h;
    const double up = loss(prob, selection, d_out);
    x[i] = saved - h;
    const double down = loss(prob, selection, d_out);
    x[i] = saved;
    const double fd = (up - down) / (2 * h);
    num += (fd - grad[i]) * (fd - grad[i]);
    den += grad[i] * grad[i];
  }
  if (den < 1e-18) {
    // The gradient is zero by structure (phi_k's b2 shifts every compressed score of a row
    // equally, which softmax ignores; with T < l phi is never applied): then the finite
    // differences must vanish too, up to their rounding (~1e-10 here).
    EXPECT_LT(std::sqrt(num), 1e-8) << name << ": analytic gradient is zero but finite differences are not";
    return;
  }
  EXPECT_LT(std::sqrt(num / den), 1e-6) << name;
}

struct FdCase {
  PhiKind phi;
  ProblemShape shape;
};

class ReferenceBackward : public ::testing::TestWithParam<FdCase> {};

TEST_P(ReferenceBackward, MatchesFiniteDifferences) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = 3;
  o.window = 24;
  o.phi = GetParam().phi;
  const Config config(o);
  RandomNsaProblem prob(config, GetParam().shape);
  const auto& s = prob.shape();

  std::vector<double> out;
  NsaSaved<double> saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(out), &saved);
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  std::vector<double> d_out(out.size());
  for (auto& x : d_out) x = normal(rng);

  GradBuffers<double> g(prob, 0.0);
  reference::nsa_backward(config, prob.inputs64(), saved,
                          contiguous_view<const double>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v),
                          g.grads);

  auto& b = prob.buffers64();
  check_tensor(prob, saved.sel_blocks, d_out, b.q, g.dq, "q", rng);
  check_tensor(prob, saved.sel_blocks, d_out, b.gates, g.dgates, "gates", rng);
  check_tensor(prob, saved.sel_blocks, d_out, b.k_cmp, g.dk_cmp, s.shared_kv ? "k (shared)" : "k_cmp", rng);
  check_tensor(prob, saved.sel_blocks, d_out, b.v_cmp, g.dv_cmp, s.shared_kv ? "v (shared)" : "v_cmp", rng);
  if (!s.shared_kv) {
    check_tensor(prob, saved.sel_blocks, d_out, b.k_slc, g.dk_slc, "k_slc", rng);
    check_tensor(prob, saved.sel_blocks, d_out, b.v_slc, g.dv_slc, "v_slc", rng);
    check_tensor(prob, saved.sel_blocks, d_out, b.k_win, g.dk_win, "k_win", rng);
    check_tensor(prob, saved.sel_blocks, d_out, b.v_win, g.dv_win, "v_win", rng);
  }
  const char* names[6] = {"pe", "w1", "b1", "w2", "b2", "w"};
  std::vector<double>* wk[6] = {&b.phi_k.pe, &b.phi_k.w1, &b.phi_k.b1, &b.phi_k.w2, &b.phi_k.b2, &b.phi_k.w};
  std::vector<double>* wv[6] = {&b.phi_v.pe, &b.phi_v.w1, &b.phi_v.b1, &b.phi_v.w2, &b.phi_v.b2, &b.phi_v.w};
  const bool used[3][6] = {{true, true, true, true, true, false},    // mlp
                           {true, false, false, false, false, true},  // linear
                           {false, false, false, false, false, false}};
  for (int i = 0; i < 6; ++i) {
    if (!used[static_cast<int>(config.phi())][i]) continue;
    check_tensor(prob, saved.sel_blocks, d_out, *wk[i], g.pk[i], (std::string("phi_k.") + names[i]).c_str(), rng);
    check_tensor(prob, saved.sel_blocks, d_out, *wv[i], g.pv[i], (std::string("phi_v.") + names[i]).c_str(), rng);
  }
}

ProblemShape shape(index_t T, index_t H, index_t H_kv, index_t d_k, index_t d_v, bool shared = false) {
  ProblemShape s{.batch = 1, .tokens = T, .heads = H, .kv_heads = H_kv, .d_k = d_k, .d_v = d_v};
  s.shared_kv = shared;
  s.seed = static_cast<std::uint64_t>(T * 31 + H * 7 + d_k);
  return s;
}

ProblemShape varlen(std::vector<std::int64_t> lens) {
  ProblemShape s = shape(0, 2, 2, 6, 4);
  s.seqlens = std::move(lens);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Grid, ReferenceBackward,
    ::testing::Values(FdCase{PhiKind::mlp, shape(100, 3, 1, 8, 6)},          // G = 3, d_k != d_v
                      FdCase{PhiKind::mlp, shape(100, 2, 2, 6, 8)},          // G = 1
                      FdCase{PhiKind::linear, shape(97, 3, 1, 6, 4)},        // T not a multiple of blocks
                      FdCase{PhiKind::mean, shape(100, 3, 1, 8, 6)},
                      FdCase{PhiKind::mlp, shape(100, 4, 2, 6, 6, true)},    // shared K/V: grads add up
                      FdCase{PhiKind::mlp, shape(7, 2, 1, 4, 4)},            // T < l
                      FdCase{PhiKind::mlp, varlen({40, 3, 61})}));

TEST(ReferenceDenseBackward, MatchesFiniteDifferences) {
  testing::RandomDenseProblem prob({.batch = 2, .tokens = 30, .heads = 3, .kv_heads = 1, .d_k = 6, .d_v = 5});
  auto in = prob.inputs64();
  const index_t n_out = prob.out_size();
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> d_out(n_out);
  for (auto& x : d_out) x = normal(rng);
  std::vector<double> dq(2 * 30 * 3 * 6), dk(2 * 30 * 6), dv(2 * 30 * 5);
  DenseGradients<double> g{contiguous_view(dq.data(), 2, 30, 3, 6), contiguous_view(dk.data(), 2, 30, 1, 6),
                           contiguous_view(dv.data(), 2, 30, 1, 5)};
  reference::dense_backward(in, contiguous_view<const double>(d_out.data(), 2, 30, 3, 5), g);

  auto loss_of = [&]() {
    std::vector<double> out;
    reference::dense_forward(in, prob.out_view(out), nullptr);
    double l = 0.0;
    for (index_t i = 0; i < n_out; ++i) l += out[i] * d_out[i];
    return l;
  };
  struct Item { const double* data; const std::vector<double>* grad; const char* name; };
  for (const Item& item : {Item{in.q.data, &dq, "q"}, Item{in.k.data, &dk, "k"}, Item{in.v.data, &dv, "v"}}) {
    double* x = const_cast<double*>(item.data);
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < item.grad->size(); i += 7) {
      const double saved = x[i], h = 1e-5;
      x[i] = saved + h;
      const double up = loss_of();
      x[i] = saved - h;
      const double down = loss_of();
      x[i] = saved;
      const double fd = (up - down) / (2 * h);
      num += (fd - (*item.grad)[i]) * (fd - (*item.grad)[i]);
      den += (*item.grad)[i] * (*item.grad)[i];
    }
    ASSERT_GT(den, 0.0);
    EXPECT_LT(std::sqrt(num / den), 1e-6) << item.name;
  }
}

}  // namespace
}  // namespace nsa
