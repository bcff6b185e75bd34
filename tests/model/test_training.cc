// The trainer: options round-trip, checkpoints (round trip, exact resume, conversion from
// full to nsa, errors), and the data mixture.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "model/checkpoint/safetensors.h"
#include "model/training/checkpoint_io.h"
#include "model/training/trainer.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa::model {
namespace {

ModelConfig tiny_config(AttentionKind kind) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 16;
  c.d_v = 8;
  c.mlp_hidden = 48;
  c.attention = kind;
  c.nsa.block_len = 8;
  c.nsa.stride = 4;
  c.nsa.sel_block = 16;
  c.nsa.top_n = 3;
  c.nsa.window = 16;
  return c;
}

TrainOptions tiny_options() {
  TrainOptions o;
  o.steps = 6;
  o.batch = 2;
  o.seq = 96;
  o.warmup = 2;
  o.lr = 3e-3;
  o.min_lr = 3e-4;
  o.tasks = "needle:0.5,text:0.5";
  o.eval_batches = 1;
  o.seed = 7;
  return o;
}

Corpus tiny_corpus() {
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += "In the beginning was the word " + std::to_string(i * 37 % 101) + ", and the word was with us.\n";
  return Corpus::from_text(text, 0.1);
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("nsa_training_test_" + name)).string();
}

TEST(TrainOptions, SerializeParseRoundTrip) {
  TrainOptions o = tiny_options();
  o.lr = 1.0 / 3.0;
  o.seed = 0xFFFFFFFFFFFFFFFFull;
  const TrainOptions back = TrainOptions::parse(o.serialize());
  EXPECT_EQ(back.serialize(), o.serialize());
  EXPECT_EQ(back.lr, o.lr);
  EXPECT_EQ(back.seed, o.seed);
}

TEST(TrainOptions, RejectsBadValues) {
  EXPECT_THROW(TrainOptions::parse("steps=0\n"), Error);
  EXPECT_THROW(TrainOptions::parse("steps=ten\n"), Error);
  EXPECT_THROW(TrainOptions::parse("stepz=10\n"), Error);
  EXPECT_THROW(TrainOptions::parse("steps=10\nsteps=11\n"), Error);
  EXPECT_THROW(TrainOptions::parse("needle_fraction=1.5\n"), Error);
  EXPECT_THROW(TrainOptions::parse("seed=-1\n"), Error);
}

TEST(Trainer, LossDecreasesOverSteps) {
  ThreadPool pool(2);
  const Corpus corpus = tiny_corpus();
  TrainOptions o = tiny_options();
  o.steps = 40;
  o.tasks = "text:1";
  o.lr = 1e-2;
  Trainer trainer(tiny_config(AttentionKind::nsa), o);
  const double before = trainer.validation_loss(corpus, pool);
  while (!trainer.done()) trainer.step(corpus, pool);
  const double after = trainer.validation_loss(corpus, pool);
  EXPECT_LT(after, before - 0.5) << "validation loss " << before << " -> " << after;
}

TEST(Trainer, ResumeIsBitwiseExact) {
  for (AttentionKind kind : {AttentionKind::nsa, AttentionKind::full, AttentionKind::window}) {
    SCOPED_TRACE(attention_kind_name(kind));
    ThreadPool pool(2);
    const Corpus corpus = tiny_corpus();
    Trainer straight(tiny_config(kind), tiny_options());
    std::vector<double> straight_losses;
    while (!straight.done()) straight_losses.push_back(straight.step(corpus, pool).loss);

    Trainer first(tiny_config(kind), tiny_options());
    for (int i = 0; i < 3; ++i) first.step(corpus, pool);
    const std::string path = temp_path("resume.safetensors");
    first.save(path);
    Trainer resumed = Trainer::resume(path);
    EXPECT_EQ(resumed.steps_done(), 3);
    std::vector<double> resumed_losses;
    while (!resumed.done()) resumed_losses.push_back(resumed.step(corpus, pool).loss);
    ASSERT_EQ(resumed_losses.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed_losses[i], straight_losses[3 + i]) << "step " << 4 + i;
    const Model<float>& a = straight.model();
    const Model<float>& b = resumed.model();
    ASSERT_EQ(a.num_params(), b.num_params());
    EXPECT_EQ(0, std::memcmp(a.params(), b.params(), a.num_params() * sizeof(float)))
        << "parameters differ after resume";
    std::remove(path.c_str());
  }
}

TEST(Checkpoint, WeightsRoundTripAndConfig) {
  Model<float> model(tiny_config(AttentionKind::nsa));
  model.init(3);
  const std::string path = temp_path("weights.safetensors");
  save_checkpoint(path, model, nullptr);
  const Model<float> back = load_model(path);
  EXPECT_EQ(back.config().serialize(), model.config().serialize());
  ASSERT_EQ(back.num_params(), model.num_params());
  EXPECT_EQ(0, std::memcmp(back.params(), model.params(), model.num_params() * sizeof(float)));
  // Weights only: there is nothing to resume.
  EXPECT_THROW(Trainer::resume(path), CheckpointError);
  std::remove(path.c_str());
}

TEST(Checkpoint, TruncatedAndCorruptedAreRejected) {
  Model<float> model(tiny_config(AttentionKind::full));
  model.init(3);
  const std::string path = temp_path("damaged.safetensors");
  save_checkpoint(path, model, nullptr);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (std::size_t cut : {std::size_t{0}, std::size_t{5}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_THROW(load_model(path), CheckpointError) << "cut at " << cut;
  }
  // A checkpoint whose metadata says another format.
  SafetensorsWriter other;
  other.add_metadata("nsa.format", "something-else");
  other.write(path);
  try {
    load_model(path);
    ADD_FAILURE() << "a foreign file was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("nsa.format"), std::string::npos) << e.what();
  }
  // A parameter missing from an otherwise valid checkpoint is named.
  SafetensorsWriter partial;
  partial.add_metadata("nsa.format", "nsa-model-1");
  partial.add_metadata("nsa.model_config", model.config().serialize());
  partial.write(path);
  try {
    load_model(path);
    ADD_FAILURE() << "a checkpoint without parameters was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("embed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_model(temp_path("does-not-exist.safetensors")), CheckpointError);
  std::remove(path.c_str());
}

TEST(Trainer, ConvertFullToNsaKeepsSharedWeights) {
  Model<float> full(tiny_config(AttentionKind::full));
  full.init(11);
  const std::string path = temp_path("full.safetensors");
  save_checkpoint(path, full, nullptr);
  Trainer nsa_run(tiny_config(AttentionKind::nsa), tiny_options());
  const std::vector<std::string> fresh = nsa_run.init_from(path);
  // Only gates and phi are new.
  EXPECT_FALSE(fresh.empty());
  for (const std::string& name : fresh)
    EXPECT_TRUE(name.find(".wg") != std::string::npos || name.find(".bg") != std::string::npos ||
                name.find(".phi_") != std::string::npos)
        << name << " should have been copied from the full checkpoint";
  const Model<float>& m = nsa_run.model();
  for (const TensorInfo& t : full.tensors()) {
    const TensorInfo& u = m.tensor(t.name);
    EXPECT_EQ(0, std::memcmp(full.params() + t.offset, m.params() + u.offset, t.size * sizeof(float))) << t.name;
  }
  std::remove(path.c_str());
}

TEST(Trainer, NonFiniteLossStopsWithoutDamage) {
  ThreadPool pool(1);
  const Corpus corpus = tiny_corpus();
  TrainOptions o = tiny_options();
  Trainer trainer(tiny_config(AttentionKind::full), o);
  trainer.step(corpus, pool);
  Model<float>& m = trainer.model();
  m.params()[m.tensor("final_norm").offset] = std::nanf("");
  std::vector<float> poisoned(m.params(), m.params() + m.num_params());
  EXPECT_THROW(trainer.step(corpus, pool), Error);
  EXPECT_EQ(trainer.steps_done(), 1);
  EXPECT_EQ(0, std::memcmp(m.params(), poisoned.data(), poisoned.size() * sizeof(float)));
}

}  // namespace
}  // namespace nsa::model
