// Recall end to end: a tiny NSA model learns MQAR within seconds (answer accuracy on
// held-out examples well above chance), deterministically; the scoring functions of
// eval/recall.h against hand-made logits; the progressive-training schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "model/data/corpus.h"
#include "model/eval/recall.h"
#include "model/training/schedule.h"
#include "model/training/trainer.h"
#include "nsa/thread_pool.h"

namespace nsa::model {
namespace {

Corpus letters_corpus() {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += static_cast<char>('a' + (i * 7 + i / 13) % 26);
  return Corpus::from_text(text, 0.2);
}

// One attention layer with the token shift: enough for an induction head over 4 pairs.
ModelConfig tiny_recall_config() {
  ModelConfig c;
  c.d_model = 64;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 16;
  c.d_v = 16;
  c.mlp_hidden = 32;
  c.init_std = 0.1;
  c.token_shift = 1;
  c.attention = AttentionKind::nsa;
  c.nsa.block_len = 8;
  c.nsa.stride = 4;
  c.nsa.sel_block = 16;
  c.nsa.top_n = 4;
  c.nsa.window = 16;
  return c;
}

TrainOptions tiny_recall_options() {
  TrainOptions o;
  o.steps = 400;
  o.batch = 16;
  o.seq = 64;
  o.lr = 3e-3;
  o.min_lr = 1e-3;
  o.warmup = 10;
  o.tasks = "mqar";
  o.mqar_pairs = 4;
  o.seed = 1;
  return o;
}

TEST(RecallSmoke, TinyNsaModelLearnsMqarWellAboveChance) {
  ThreadPool pool(2);
  const Corpus corpus = letters_corpus();
  Trainer trainer(tiny_recall_config(), tiny_recall_options());
  std::vector<double> losses;
  while (!trainer.done()) losses.push_back(trainer.step(corpus, pool).loss);
  Rng rng(99);
  MqarOptions options;
  options.context = 64;
  options.pairs = 4;
  options.depth = 0.0;
  const MqarScore score = mqar_score(trainer.model(), &corpus.val(), options, 64, 16, rng, pool);
  std::printf("  after %zu steps: held-out MQAR accuracy %.3f (%lld answers; chance %.3f), loss %.3f -> %.3f\n",
              losses.size(), score.accuracy(), static_cast<long long>(score.answers), 1.0 / kMqarRange,
              losses.front(), losses.back());
  EXPECT_EQ(score.answers, 64 * 4);
  EXPECT_EQ(score.beyond, score.answers) << "depth 0 puts every answer beyond a 16-token window";
  EXPECT_GT(score.accuracy(), 10.0 / kMqarRange) << "not well above chance (1/64)";
  EXPECT_LT(losses.back(), losses.front() - 1.0);

  // Deterministic: the same seed gives the same first steps, bit for bit.
  TrainOptions short_run = tiny_recall_options();
  short_run.steps = 5;
  Trainer a(tiny_recall_config(), short_run), b(tiny_recall_config(), short_run);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.step(corpus, pool).loss, b.step(corpus, pool).loss) << "step " << i + 1;
}

TEST(RecallScore, MqarSplitsWithinAndBeyondTheWindow) {
  // A model whose answers are whatever its random init says: the counts, not the accuracy,
  // are checked, and the accuracy against argmax_accuracy over the same forward.
  ThreadPool pool(1);
  Model<float> m(tiny_recall_config());
  m.init(3);
  MqarOptions options;
  options.context = 64;
  options.pairs = 4;
  options.depth = 1.0;  // pairs right before the queries: distances 1..15 < 16
  Rng rng(5);
  const MqarScore near = mqar_score(m, nullptr, options, 8, 16, rng, pool, 3);
  EXPECT_EQ(near.answers, 32);
  EXPECT_EQ(near.within, 32);
  EXPECT_EQ(near.beyond, 0);
  options.depth = 0.0;
  const MqarScore far = mqar_score(m, nullptr, options, 8, 16, rng, pool, 8);
  EXPECT_EQ(far.beyond, 32);
  // The same examples scored by argmax_accuracy over one batch agree with mqar_score.
  Rng r1(11), r2(11);
  const MqarScore s = mqar_score(m, nullptr, options, 4, 16, r1, pool, 4);
  std::vector<std::int32_t> tokens, targets;
  for (int i = 0; i < 4; ++i) {
    const MqarExample ex = make_mqar(nullptr, options, r2);
    tokens.insert(tokens.end(), ex.tokens.begin(), ex.tokens.end());
    targets.insert(targets.end(), ex.targets.begin(), ex.targets.end());
  }
  m.forward(tokens.data(), targets.data(), 4, 64, pool);
  EXPECT_DOUBLE_EQ(argmax_accuracy(m, targets.data()), s.accuracy());
}

TEST(Schedule, CompressionFirstAndSparsify) {
  ModelConfig c = tiny_recall_config();  // l' = 16, top_n 4, window 16
  TrainOptions o = tiny_recall_options();  // seq 64: 4 selection blocks
  o.selection_delay = 10;
  o.selection_ramp = 3;
  EXPECT_EQ(schedule_at(c, o, 0).selection_gate, 0.0);
  EXPECT_EQ(schedule_at(c, o, 9).selection_gate, 0.0);
  EXPECT_EQ(schedule_at(c, o, 10).selection_gate, 0.25);
  EXPECT_EQ(schedule_at(c, o, 12).selection_gate, 0.75);
  EXPECT_EQ(schedule_at(c, o, 13).selection_gate, 1.0);
  EXPECT_EQ(schedule_at(c, o, 13).top_n, 0) << "no sparsify: the config's top_n";
  o.selection_delay = o.selection_ramp = 0;
  o.seq = 256;  // 16 blocks of 16; the whole sequence is 256 tokens
  o.sparsify_steps = 4;
  const AttentionSchedule s0 = schedule_at(c, o, 0), s2 = schedule_at(c, o, 2), s4 = schedule_at(c, o, 4);
  EXPECT_EQ(s0.top_n, 16);
  EXPECT_EQ(s0.window, 256);
  EXPECT_EQ(s2.top_n, 8);   // sqrt(16 * 4)
  EXPECT_EQ(s2.window, 64); // sqrt(256 * 16)
  EXPECT_EQ(s4.top_n, 0);
  EXPECT_EQ(s4.window, 0);
  EXPECT_EQ(s0.selection_gate, 1.0);
  // The window kind shrinks its window only; full has no schedule.
  c.attention = AttentionKind::window;
  EXPECT_EQ(schedule_at(c, o, 0).top_n, 0);
  EXPECT_EQ(schedule_at(c, o, 0).window, 256);
  c.attention = AttentionKind::full;
  EXPECT_EQ(schedule_at(c, o, 0).window, 0);
}

TEST(Schedule, ResumedScheduledRunIsBitwiseExact) {
  ThreadPool pool(2);
  const Corpus corpus = letters_corpus();
  TrainOptions o = tiny_recall_options();
  o.steps = 8;
  o.tasks = "text:0.5,mqar:0.5";
  o.selection_delay = 2;
  o.selection_ramp = 3;
  o.sparsify_steps = 6;
  Trainer straight(tiny_recall_config(), o);
  std::vector<double> expected;
  while (!straight.done()) expected.push_back(straight.step(corpus, pool).loss);
  Trainer first(tiny_recall_config(), o);
  for (int i = 0; i < 4; ++i) first.step(corpus, pool);
  const std::string path = ::testing::TempDir() + "nsa_schedule_resume.safetensors";
  first.save(path);
  Trainer resumed = Trainer::resume(path);
  EXPECT_EQ(resumed.options().serialize(), o.serialize());
  for (int i = 4; i < 8; ++i) EXPECT_EQ(resumed.step(corpus, pool).loss, expected[static_cast<std::size_t>(i)]) << i;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace nsa::model
