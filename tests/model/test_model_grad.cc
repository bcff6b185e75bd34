// Whole-model gradient check in float64: every parameter tensor (several entries each)
// against central finite differences of Model<double>::forward, for each attention kind.
// Selection is discrete: the check asserts that no perturbation changed a chosen block.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "model/model.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

using testing::central_difference;
using testing::tiny_config;

struct Case {
  const char* name;
  ModelConfig config;
  AttentionSchedule schedule;  // a training schedule's step (default: the config's operator)
};

std::vector<Case> cases() {
  ModelConfig nsa_mlp = tiny_config(AttentionKind::nsa);
  nsa_mlp.n_heads = 3;
  ModelConfig nsa_shift = tiny_config(AttentionKind::nsa);
  nsa_shift.token_shift = 2;
  ModelConfig full_shift = tiny_config(AttentionKind::full);
  full_shift.token_shift = 1;
  // Mid-schedule: the selection gate scaled, top_n and window wider than the config's.
  AttentionSchedule mid;
  mid.selection_gate = 0.375;
  mid.top_n = tiny_config(AttentionKind::nsa).nsa.top_n + 1;
  mid.window = tiny_config(AttentionKind::nsa).nsa.window + 5;
  return {{"nsa_mlp", nsa_mlp, {}},
          {"nsa_independent_kv", tiny_config(AttentionKind::nsa, true), {}},
          {"full", tiny_config(AttentionKind::full), {}},
          {"window", tiny_config(AttentionKind::window), {}},
          {"nsa_token_shift", nsa_shift, {}},
          {"full_token_shift", full_shift, {}},
          {"nsa_scheduled", tiny_config(AttentionKind::nsa), mid}};
}

// Token ids and targets of a [batch, seq] batch; a few targets ignored.
void make_batch(int vocab, index_t batch, index_t seq, std::uint64_t seed, std::vector<std::int32_t>& tokens,
                std::vector<std::int32_t>& targets) {
  Rng rng(seed);
  tokens.resize(static_cast<std::size_t>(batch * seq));
  targets.resize(tokens.size());
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.uniform_int(static_cast<std::uint64_t>(vocab)));
  for (auto& t : targets) t = static_cast<std::int32_t>(rng.uniform_int(static_cast<std::uint64_t>(vocab)));
  for (std::size_t i = 0; i < targets.size(); i += 7) targets[i] = -1;
}

class ModelGradient : public ::testing::TestWithParam<int> {
 protected:
  ThreadPool pool{2};
};

TEST_P(ModelGradient, EveryTensorMatchesFiniteDifferences) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  Model<double> model(c.config);
  model.init(42);
  model.set_attention_schedule(c.schedule);
  // Move every tensor off its init (norms 1, biases 0, pe 0) so that each is checked at a
  // generic point.
  Rng noise(43);
  for (std::size_t i = 0; i < model.num_params(); ++i) model.params()[i] += 0.05 * noise.normal();

  const index_t B = 2, Tn = 40;
  std::vector<std::int32_t> tokens, targets;
  make_batch(c.config.vocab, B, Tn, 44, tokens, targets);
  const double loss0 = model.forward(tokens.data(), targets.data(), B, Tn, pool);
  EXPECT_TRUE(std::isfinite(loss0));
  std::vector<std::vector<std::int32_t>> selection;
  if (c.config.attention != AttentionKind::full)
    for (int l = 0; l < c.config.n_layers; ++l) selection.push_back(model.attention_saved(l).sel_blocks);
  model.backward(pool);
  const std::vector<double> grads(model.grads(), model.grads() + model.num_params());

  auto loss = [&] {
    const double value = model.forward(tokens.data(), targets.data(), B, Tn, pool);
    for (std::size_t l = 0; l < selection.size(); ++l)
      EXPECT_EQ(model.attention_saved(static_cast<int>(l)).sel_blocks, selection[l])
          << "layer " << l << ": a perturbation changed the selection";
    return value;
  };
  Rng pick(45);
  int checked = 0;
  for (const TensorInfo& t : model.tensors()) {
    double max_diff = 0, max_grad = 0;
    for (int s = 0; s < 4; ++s) {
      const std::size_t i = t.offset + pick.uniform_int(t.size);
      const double fd = central_difference(loss, model.params() + i, 1e-6);
      EXPECT_NEAR(grads[i], fd, 1e-8 + 2e-6 * std::abs(fd)) << c.name << " " << t.name << "[" << i - t.offset << "]";
      max_diff = std::max(max_diff, std::abs(grads[i] - fd));
      max_grad = std::max(max_grad, std::abs(grads[i]));
    }
    // phi_k's b2 shifts every compressed score of a query equally: its gradient is 0.
    if (!t.name.ends_with("phi_k.b2")) EXPECT_GT(max_grad, 1e-7) << c.name << " " << t.name << " is zero";
    std::printf("  %-20s %-22s OK, maxdiff = %.3g (max |grad| %.3g)\n", c.name, t.name.c_str(), max_diff, max_grad);
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(model.tensors().size()));
  // backward() overwrites: a second call gives the same gradients, not twice them.
  model.forward(tokens.data(), targets.data(), B, Tn, pool);
  model.backward(pool);
  for (std::size_t i = 0; i < grads.size(); ++i) ASSERT_EQ(model.grads()[i], grads[i]);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ModelGradient, ::testing::Range(0, static_cast<int>(cases().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(cases()[static_cast<std::size_t>(info.param)].name);
                         });

}  // namespace
}  // namespace nsa::model
