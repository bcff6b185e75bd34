// Generator: prefill + steps through the per-layer caches give a full forward's logits at
// every position (fp32 tolerance), for each kind; greedy generation through the generator
// equals greedy decoding by repeated full forward passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "model/generator.h"
#include "model/model.h"
#include "nsa/error.h"
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

// Random tokens of the model's vocabulary.
std::vector<std::int32_t> random_tokens(index_t n, index_t vocab, std::uint64_t seed) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  Rng rng(seed);
  for (auto& x : t) x = static_cast<std::int32_t>(rng.uniform_int(vocab));
  return t;
}

// The logits after feeding `tokens` to a fresh one-sequence generator (a prompt, then steps).
std::vector<float> alone(const Model<float>& model, const std::vector<std::int32_t>& tokens, index_t prompt,
                         ThreadPool& pool) {
  Generator gen(model, 128);
  const float* logits = gen.prefill(tokens.data(), prompt, pool);
  for (std::size_t i = static_cast<std::size_t>(prompt); i < tokens.size(); ++i) logits = gen.step(tokens[i], pool);
  return {logits, logits + model.config().vocab};
}

TEST_P(GeneratorKinds, BatchedStepGivesEachSequenceItsOwnLogits) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  Model<float> model(c.config);
  model.init(41);
  const index_t V = c.config.vocab;
  // Three sequences of different lengths (prompts 5, 23, 1), then 20 batched steps, with
  // the batch's order changing.
  std::vector<std::vector<std::int32_t>> seq = {random_tokens(25, V, 1), random_tokens(43, V, 2),
                                                random_tokens(21, V, 3)};
  const index_t prompt[3] = {5, 23, 1};
  Generator gen(model, 128, 4);
  for (index_t s = 0; s < 3; ++s) gen.prefill(s + 1, seq[static_cast<std::size_t>(s)].data(), prompt[s], pool);
  for (index_t i = 0; i < 20; ++i) {
    const index_t ids[3] = {(i % 3) + 1, ((i + 1) % 3) + 1, ((i + 2) % 3) + 1};
    std::int32_t tok[3];
    for (int j = 0; j < 3; ++j) tok[j] = seq[static_cast<std::size_t>(ids[j] - 1)][static_cast<std::size_t>(prompt[ids[j] - 1] + i)];
    const float* logits = gen.step(ids, tok, 3, pool);
    if (i < 19) continue;
    for (int j = 0; j < 3; ++j) {
      const index_t s = ids[j] - 1;
      std::vector<std::int32_t> mine(seq[static_cast<std::size_t>(s)].begin(),
                                     seq[static_cast<std::size_t>(s)].begin() + prompt[s] + 20);
      const std::vector<float> ref = alone(model, mine, prompt[s], pool);
      EXPECT_LT(rel_error(logits + j * V, ref.data(), static_cast<std::size_t>(V)), 1e-5) << c.name << " seq " << s;
      EXPECT_EQ(gen.position(ids[j]), prompt[s] + 20);
    }
  }
  EXPECT_EQ(gen.position(0), 0);
}

TEST_P(GeneratorKinds, ForkAndTruncateContinueAsAFreshSequence) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  Model<float> model(c.config);
  model.init(51);
  const index_t V = c.config.vocab;
  const std::vector<std::int32_t> a = random_tokens(50, V, 4);
  std::vector<std::int32_t> b(a.begin(), a.begin() + 30);  // shares a's first 30 tokens
  const std::vector<std::int32_t> tail = random_tokens(12, V, 5);
  b.insert(b.end(), tail.begin(), tail.end());
  Generator gen(model, 128, 2);
  gen.prefill(0, a.data(), 40, pool);
  for (index_t t = 40; t < 50; ++t) gen.step(a[static_cast<std::size_t>(t)], pool);
  // b: a fork of a rolled back to the common prefix, then its own tokens.
  gen.fork(0, 1);
  gen.truncate(1, 30);
  EXPECT_EQ(gen.position(1), 30);
  EXPECT_TRUE(gen.last_step(1).empty());
  const float* lb = gen.prefill(1, b.data() + 30, 6, pool);
  for (index_t t = 36; t < 42; ++t) {
    const index_t id = 1;
    lb = gen.step(&id, &b[static_cast<std::size_t>(t)], 1, pool);
  }
  const std::vector<float> got_b(lb, lb + V);
  EXPECT_LT(rel_error(got_b.data(), alone(model, b, 36, pool).data(), static_cast<std::size_t>(V)), 1e-5) << c.name;
  // a is unchanged by its fork's writes.
  const std::int32_t next = 7;
  const float* la = gen.step(next, pool);
  std::vector<std::int32_t> a_next = a;
  a_next.push_back(next);
  EXPECT_LT(rel_error(la, alone(model, a_next, 40, pool).data(), static_cast<std::size_t>(V)), 1e-5) << c.name;
}

TEST_P(GeneratorKinds, RestoredJournalContinuesBitwise) {
  const Case c = cases()[static_cast<std::size_t>(GetParam())];
  Model<float> model(c.config);
  model.init(61);
  const index_t V = c.config.vocab;
  const std::vector<std::int32_t> t = random_tokens(70, V, 6);
  Generator live(model, 128, 2, 0, true);
  // Two "turns": a prompt and steps, then a second prompt and steps; the journal taken after each.
  std::vector<float> rows;
  live.prefill(1, t.data(), 20, pool);
  for (index_t i = 20; i < 35; ++i) {
    const index_t id = 1;
    live.step(&id, &t[static_cast<std::size_t>(i)], 1, pool);
  }
  rows = live.take_journal(1);
  EXPECT_EQ(static_cast<index_t>(rows.size()), 35 * live.row_floats());
  EXPECT_TRUE(live.take_journal(1).empty());
  live.prefill(1, t.data() + 35, 17, pool);
  std::vector<float> more = live.take_journal(1);
  rows.insert(rows.end(), more.begin(), more.end());

  Generator restored(model, 128, 3, 0, true);
  restored.restore(2, rows.data(), 35, pool);
  restored.restore(2, rows.data() + 35 * restored.row_floats(), 17, pool);
  EXPECT_EQ(restored.position(2), 52);
  EXPECT_TRUE(restored.take_journal(2).empty());  // restored rows are not journaled again
  for (index_t i = 52; i < 70; ++i) {
    const index_t a = 1, b = 2;
    const float* x = live.step(&a, &t[static_cast<std::size_t>(i)], 1, pool);
    const std::vector<float> want(x, x + V);
    const float* y = restored.step(&b, &t[static_cast<std::size_t>(i)], 1, pool);
    ASSERT_EQ(0, std::memcmp(want.data(), y, static_cast<std::size_t>(V) * sizeof(float)))
        << c.name << " position " << i;
  }
  EXPECT_EQ(live.cache_bytes() > 0, true);
}

INSTANTIATE_TEST_SUITE_P(Kinds, GeneratorKinds, ::testing::Range(0, static_cast<int>(cases().size())),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(cases()[static_cast<std::size_t>(info.param)].name);
                         });

}  // namespace
}  // namespace nsa::model

namespace nsa::model {
namespace {

TEST(GeneratorErrors, BadCallsAreRefusedAndChangeNothing) {
  ThreadPool pool(1);
  Model<float> model(testing::tiny_config(AttentionKind::nsa));
  model.init(71);
  const std::int32_t tok[4] = {1, 2, 3, 4};
  Generator gen(model, 16, 2, 0, true);
  auto expect_error = [](auto&& f, const char* what) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one naming '" << what << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error([&] { gen.prefill(2, tok, 2, pool); }, "outside [0, 2)");
  expect_error([&] { const index_t s = 0; gen.step(&s, tok, 1, pool); }, "empty sequence 0");
  gen.prefill(0, tok, 4, pool);
  gen.prefill(1, tok, 2, pool);
  expect_error([&] { const index_t s[2] = {0, 0}; gen.step(s, tok, 2, pool); }, "twice");
  const std::int32_t bad = 100000;
  expect_error([&] { gen.prefill(0, &bad, 1, pool); }, "outside [0, vocab=");
  std::vector<std::int32_t> many(13, 1);
  expect_error([&] { gen.prefill(0, many.data(), 13, pool); }, "exceed max_tokens=16");
  expect_error([&] { gen.truncate(0, 5); }, "cannot keep 5");
  expect_error([&] { gen.fork(0, 1); }, "reset it first");
  EXPECT_EQ(gen.position(0), 4);
  EXPECT_EQ(gen.position(1), 2);
  EXPECT_EQ(static_cast<index_t>(gen.take_journal(0).size()), 4 * gen.row_floats());
}

TEST(GeneratorErrors, PageBudgetRefusalLeavesTheSequences) {
  ThreadPool pool(1);
  Model<float> model(testing::tiny_config(AttentionKind::nsa));
  model.init(72);
  // One page per layer: the second sequence cannot get one.
  Generator gen(model, 4096, 2, 1, true);
  const std::vector<std::int32_t> t(8, 3);
  gen.prefill(0, t.data(), 8, pool);
  const std::vector<float> journal_before = gen.take_journal(0);
  try {
    gen.prefill(1, t.data(), 8, pool);
    ADD_FAILURE() << "no error for a prefill over the page budget";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_pages"), std::string::npos) << e.what();
  }
  EXPECT_EQ(gen.position(1), 0);
  EXPECT_TRUE(gen.take_journal(1).empty());
  EXPECT_TRUE(gen.last_step(1).empty());
  // Once sequence 0 is released, sequence 1 fits.
  gen.reset(0);
  gen.prefill(1, t.data(), 8, pool);
  EXPECT_EQ(gen.position(1), 8);
}

}  // namespace
}  // namespace nsa::model
