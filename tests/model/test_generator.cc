// Generator: prefill + steps through the per-layer caches give a full forward's logits at
// every position (fp32 tolerance), for each kind; greedy generation through the generator
// equals greedy decoding by repeated full forward passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "model/generator.h"
#include "model/model.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

using testing::rel_error;
using testing::tiny_config;

struct Case {
  const char* name;
  ModelConfig config;
};

std::vector<Case> cases() {
  ModelConfig nsa_mlp = tiny_config(AttentionKind::nsa);
  nsa_mlp.n_heads = 4;
  nsa_mlp.n_kv_heads = 2;
  // The token shift's history must carry across prefill and steps.
  ModelConfig nsa_shift = tiny_config(AttentionKind::nsa);
  nsa_shift.token_shift = 2;
  ModelConfig full_shift = tiny_config(AttentionKind::full);
  full_shift.token_shift = 1;
  return {{"nsa_mlp", nsa_mlp},
          {"nsa_independent_kv", tiny_config(AttentionKind::nsa, true, PhiKind::linear)},
          {"full", tiny_config(AttentionKind::full)},
          {"window", tiny_config(AttentionKind::window)},
          {"nsa_token_shift", nsa_shift},
          {"full_token_shift", full_shift}};
}

class GeneratorKinds : public ::testing::TestWithParam<int> {
 protected:
  ThreadPool pool{2};
};

TEST_P(GeneratorKinds, LogitsMatchFullForward) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  const ModelConfig& cfg = c.config;
  Model<float> model(cfg);
  model.init(21);
  const index_t Tn = 60, V = cfg.vocab;
  std::vector<std::int32_t> tokens(Tn), targets(Tn, -1);
  Rng rng(22);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.uniform_int(V));
  model.forward(tokens.data(), targets.data(), 1, Tn, pool);
  const std::vector<float> full(model.logits(), model.logits() + Tn * V);

  Generator gen(model, Tn);
  double worst = 0;
  auto check = [&](const float* logits, index_t t) {
    const double err = rel_error(logits, full.data() + t * V, static_cast<std::size_t>(V));
    EXPECT_LT(err, 1e-5) << c.name << " position " << t;
    worst = std::max(worst, err);
  };
  // A prompt on an empty cache, a second prompt appended to it, then single steps.
  check(gen.prefill(tokens.data(), 13, pool), 12);
  check(gen.prefill(tokens.data() + 13, 6, pool), 18);
  EXPECT_EQ(gen.position(), 19);
  for (index_t t = 19; t < Tn; ++t) {
    check(gen.step(tokens[t], pool), t);
    EXPECT_EQ(gen.position(), t + 1);
    const std::int64_t read = gen.last_tokens_read();
    const std::int64_t layers = cfg.n_layers, kv = cfg.n_kv_heads;
    if (cfg.attention == AttentionKind::full) EXPECT_EQ(read, layers * kv * (t + 1));
    if (cfg.attention == AttentionKind::window)
      EXPECT_EQ(read, layers * kv * std::min<std::int64_t>(t + 1, cfg.nsa.window));
    if (cfg.attention == AttentionKind::nsa) {
      // At least the window, and fewer than every token once per branch.
      EXPECT_GT(read, layers * kv * cfg.nsa.window);
      EXPECT_LT(read, layers * kv * 3 * (t + 1));
    }
  }
  std::printf("  %-20s worst logits rel err %.3g\n", c.name, worst);
}

TEST_P(GeneratorKinds, GreedyMatchesRepeatedFullForward) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  Model<float> model(c.config);
  model.init(31);
  const index_t prompt = 9, total = 40, V = c.config.vocab;
  std::vector<std::int32_t> seq(prompt);
  Rng rng(32);
  for (auto& t : seq) t = static_cast<std::int32_t>(rng.uniform_int(V));
  auto argmax = [V](const float* x) { return static_cast<std::int32_t>(std::max_element(x, x + V) - x); };

  // Through the generator.
  auto generate = [&](std::vector<std::int32_t> tokens) {
    Generator gen(model, total);
    std::int32_t next = argmax(gen.prefill(tokens.data(), static_cast<index_t>(tokens.size()), pool));
    while (static_cast<index_t>(tokens.size()) < total) {
      tokens.push_back(next);
      if (static_cast<index_t>(tokens.size()) < total) next = argmax(gen.step(next, pool));
    }
    return tokens;
  };
  const std::vector<std::int32_t> by_gen = generate(seq);
  // By full forward passes over the whole prefix.
  std::vector<std::int32_t> by_full = seq;
  while (static_cast<index_t>(by_full.size()) < total) {
    const index_t n = static_cast<index_t>(by_full.size());
    std::vector<std::int32_t> targets(n, -1);
    model.forward(by_full.data(), targets.data(), 1, n, pool);
    by_full.push_back(argmax(model.logits() + (n - 1) * V));
  }
  EXPECT_EQ(by_gen, by_full) << c.name;
  // Generation depends on the context: another prompt, another continuation.
  std::vector<std::int32_t> other = seq;
  std::reverse(other.begin(), other.end());
  const std::vector<std::int32_t> by_other = generate(other);
  EXPECT_FALSE(std::equal(by_gen.begin() + prompt, by_gen.end(), by_other.begin() + prompt)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Kinds, GeneratorKinds, ::testing::Range(0, static_cast<int>(cases().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(cases()[static_cast<std::size_t>(info.param)].name);
                         });

}  // namespace
}  // namespace nsa::model
