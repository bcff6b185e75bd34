// The attention layer (projections, RoPE, gates, operator, output projection) of every
// kind: backward against central finite differences in float64, float against double.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "model/attention_layer.h"
#include "model/model_layout.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

using testing::central_difference;
using testing::random_vector;
using testing::rel_error;
using testing::tiny_config;

struct Case {
  const char* name;
  ModelConfig config;
};

std::vector<Case> cases() {
  ModelConfig nsa_mlp = tiny_config(AttentionKind::nsa);
  nsa_mlp.n_heads = 3;
  ModelConfig nsa_ind = tiny_config(AttentionKind::nsa, true, PhiKind::linear);
  nsa_ind.n_heads = 4;
  nsa_ind.n_kv_heads = 2;
  return {{"nsa_mlp", nsa_mlp},
          {"nsa_independent_kv_linear", nsa_ind},
          {"full", tiny_config(AttentionKind::full)},
          {"window", tiny_config(AttentionKind::window)}};
}

bool is_attention_tensor(const std::string& name) {
  for (const char* other : {"attn_norm", "mlp_norm", "w_gate", "w_up", "w_down"})
    if (name.size() >= std::string(other).size() &&
        name.compare(name.size() - std::string(other).size(), std::string::npos, other) == 0)
      return false;
  return name.rfind("layers.0.", 0) == 0;
}

class AttentionLayer : public ::testing::TestWithParam<int> {
 protected:
  ThreadPool pool{2};
};

TEST_P(AttentionLayer, GradientsMatchFiniteDifferences) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  ModelConfig config = c.config;
  config.n_layers = 1;
  const ModelLayout layout(config);
  const AttentionShape shape(config);
  const index_t B = 2, Tn = 40, N = B * Tn, C = config.d_model;
  auto params = random_vector(layout.num_params(), 100 + GetParam(), 0.3);
  auto x = random_vector(N * C, 200 + GetParam());
  const auto r = random_vector(N * C, 300 + GetParam());
  const RopeTable<double> rope(Tn, config.d_k, config.rope_theta);
  AttentionActs<double> acts;
  acts.resize(shape, N);
  std::vector<double> out(N * C);
  auto loss = [&] {
    attention_forward(shape, layout.layer<const double>(params.data(), 0), x.data(), B, Tn,
                      rope.cos_at(0), rope.sin_at(0), acts, out.data(), pool);
    double s = 0;
    for (std::size_t i = 0; i < out.size(); ++i) s += out[i] * r[i];
    return s;
  };
  loss();
  const std::vector<std::int32_t> selection = acts.saved.sel_blocks;
  if (config.attention == AttentionKind::nsa) {
    // Some query chose a block beyond the forced ones (else selection is not exercised).
    const Config op(config.nsa);
    bool chosen = false;
    for (index_t row = 0; row < N && !chosen; ++row) {
      const index_t t = row % Tn, cur = t / op.sel_block();
      for (index_t j = 0; j < op.top_n(); ++j) {
        const std::int32_t blk = selection[row * shape.H_kv * op.top_n() + j];
        if (blk > 0 && blk < cur - op.n_local() + 1) chosen = true;
      }
    }
    EXPECT_TRUE(chosen);
  }

  std::vector<double> grads(params.size(), 0.0), dx(N * C, 0.0);
  AttentionScratch<double> scratch;
  attention_backward(shape, layout.layer<const double>(params.data(), 0), layout.layer(grads.data(), 0),
                     x.data(), B, Tn, rope.cos_at(0), rope.sin_at(0), acts, r.data(), dx.data(),
                     scratch, pool);

  Rng rng(7);
  auto check = [&](const std::string& name, double* values, const double* grad, std::size_t n, int samples) {
    double max_diff = 0, max_grad = 0;
    for (int s = 0; s < samples; ++s) {
      const std::size_t i = rng.uniform_int(n);
      const double fd = central_difference(loss, values + i, 1e-6);
      ASSERT_EQ(acts.saved.sel_blocks, selection) << "selection changed under the perturbation";
      EXPECT_NEAR(grad[i], fd, 1e-7 + 1e-6 * std::abs(fd)) << c.name << " " << name << "[" << i << "]";
      max_diff = std::max(max_diff, std::abs(grad[i] - fd));
      max_grad = std::max(max_grad, std::abs(grad[i]));
    }
    // A constant added to every Kc (phi_k's b2; linear phi_k's pe, through W) shifts all the
    // scores of a query equally: softmax and selection ignore it, its gradient is 0.
    const bool structurally_zero = name.ends_with("phi_k.b2") ||
                                   (config.nsa.phi == PhiKind::linear && name.ends_with("phi_k.pe"));
    if (structurally_zero) EXPECT_LT(max_grad, 1e-10) << c.name << " " << name;
    else EXPECT_GT(max_grad, 1e-4) << c.name << " " << name << ": gradient is (nearly) zero";
    std::printf("  %-26s %-22s OK, maxdiff = %.3g (max |grad| %.3g)\n", c.name, name.c_str(), max_diff, max_grad);
  };
  check("dx", x.data(), dx.data(), x.size(), 24);
  std::set<std::string> seen;
  for (const TensorInfo& t : layout.tensors()) {
    if (!is_attention_tensor(t.name)) continue;
    seen.insert(t.name.substr(9));
    check(t.name, params.data() + t.offset, grads.data() + t.offset, t.size, 6);
  }
  // Every parameter the kind owns was checked.
  if (config.attention == AttentionKind::full) EXPECT_EQ(seen.count("wg"), 0u);
  else EXPECT_EQ(seen.count("wg") + seen.count("bg"), 2u);
  if (config.independent_kv) EXPECT_EQ(seen.count("wk_slc") + seen.count("wv_win"), 2u);
  if (config.nsa.phi == PhiKind::linear) EXPECT_EQ(seen.count("phi_k.w") + seen.count("phi_v.pe"), 2u);
  if (config.attention == AttentionKind::nsa && config.nsa.phi == PhiKind::mlp)
    EXPECT_EQ(seen.count("phi_k.w1") + seen.count("phi_v.b2"), 2u);
  // The parameters the layer does not own received nothing.
  for (const TensorInfo& t : layout.tensors()) {
    if (is_attention_tensor(t.name)) continue;
    for (std::size_t i = 0; i < t.size; ++i) ASSERT_EQ(grads[t.offset + i], 0.0) << t.name;
  }
}

// The window kind's gates are (0, 0, sigmoid(.)); nsa's are three sigmoids.
TEST_P(AttentionLayer, GatesAndFloatMatchDouble) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  ModelConfig config = c.config;
  config.n_layers = 1;
  const ModelLayout layout(config);
  const AttentionShape shape(config);
  const index_t B = 2, Tn = 40, N = B * Tn, C = config.d_model;
  const auto pd = testing::convert<double>(testing::convert<float>(random_vector(layout.num_params(), 11, 0.3)));
  const auto xd = testing::convert<double>(testing::convert<float>(random_vector(N * C, 12)));
  const auto pf = testing::convert<float>(pd);
  const auto xf = testing::convert<float>(xd);
  const RopeTable<double> rd(Tn, config.d_k, config.rope_theta);
  const RopeTable<float> rf(Tn, config.d_k, config.rope_theta);
  AttentionActs<double> ad;
  AttentionActs<float> af;
  ad.resize(shape, N);
  af.resize(shape, N);
  std::vector<double> od(N * C);
  std::vector<float> of(N * C);
  attention_forward(shape, layout.layer<const double>(pd.data(), 0), xd.data(), B, Tn, rd.cos_at(0),
                    rd.sin_at(0), ad, od.data(), pool);
  attention_forward(shape, layout.layer<const float>(pf.data(), 0), xf.data(), B, Tn, rf.cos_at(0),
                    rf.sin_at(0), af, of.data(), pool);
  const double err = rel_error(of.data(), od.data(), od.size());
  EXPECT_LT(err, 1e-5) << c.name;
  std::printf("  %-26s forward float vs double rel err %.3g\n", c.name, err);
  if (config.attention != AttentionKind::full) {
    EXPECT_EQ(af.saved.sel_blocks, ad.saved.sel_blocks);
    for (index_t i = 0; i < N * shape.H; ++i) {
      if (config.attention == AttentionKind::window) {
        EXPECT_EQ(ad.gates[i * 3 + 0], 0.0);
        EXPECT_EQ(ad.gates[i * 3 + 1], 0.0);
      }
      for (int b = 0; b < 3; ++b) EXPECT_LT(ad.gates[i * 3 + b], 1.0);
      EXPECT_GT(ad.gates[i * 3 + 2], 0.0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, AttentionLayer, ::testing::Range(0, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(cases()[static_cast<std::size_t>(info.param)].name);
                         });

}  // namespace
}  // namespace nsa::model
