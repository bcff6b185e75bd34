// ModelConfig (validate, serialize/parse), the parameter table and init, and bad input to
// the model: every error is an nsa::Error with a message naming the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "model/generator.h"
#include "model/model.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

using testing::tiny_config;

// Runs fn, expects an nsa::Error whose message contains `needle`.
template <class F>
void expect_error(F&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, DefaultsAreValidAndRoundTrip) {
  ModelConfig c;
  c.nsa = default_small_nsa_options();
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.nsa.block_len, 16);
  EXPECT_EQ(c.nsa.stride, 8);
  EXPECT_EQ(c.nsa.sel_block, 32);
  EXPECT_EQ(c.nsa.top_n, 8);
  EXPECT_EQ(c.nsa.window, 128);
  EXPECT_EQ(c.nsa.phi, PhiKind::mlp);

  ModelConfig d = tiny_config(AttentionKind::nsa, true, PhiKind::linear);
  d.rope_theta = 12345.678;
  d.norm_eps = 1.0 / 3.0;
  d.nsa.scale = 0.1;
  d.nsa.phi_hidden = 5;
  const ModelConfig e = ModelConfig::parse(d.serialize());
  EXPECT_EQ(e.serialize(), d.serialize());
  EXPECT_EQ(e.rope_theta, d.rope_theta);
  EXPECT_EQ(e.norm_eps, d.norm_eps);
  EXPECT_TRUE(e.independent_kv);
  EXPECT_EQ(e.attention, AttentionKind::nsa);
  EXPECT_EQ(e.nsa.phi, PhiKind::linear);
  EXPECT_EQ(e.nsa.window, d.nsa.window);
  EXPECT_NE(d.describe().find("independent_kv"), std::string::npos);
  for (AttentionKind k : {AttentionKind::nsa, AttentionKind::full, AttentionKind::window})
    EXPECT_EQ(parse_attention_kind(attention_kind_name(k)), k);
}

TEST(ModelConfig, InvalidFieldsAreNamed) {
  auto with = [](auto change) {
    ModelConfig c = tiny_config(AttentionKind::nsa);
    change(c);
    return c;
  };
  expect_error([&] { with([](ModelConfig& c) { c.n_heads = 3; c.n_kv_heads = 2; }).validate(); }, "n_kv_heads");
  expect_error([&] { with([](ModelConfig& c) { c.d_k = 7; }).validate(); }, "d_k=7 must be even");
  expect_error([&] { with([](ModelConfig& c) { c.vocab = 0; }).validate(); }, "vocab");
  expect_error([&] { with([](ModelConfig& c) { c.d_model = -1; }).validate(); }, "d_model");
  expect_error([&] { with([](ModelConfig& c) { c.n_layers = 0; }).validate(); }, "n_layers");
  expect_error([&] { with([](ModelConfig& c) { c.mlp_hidden = 0; }).validate(); }, "mlp_hidden");
  expect_error([&] { with([](ModelConfig& c) { c.norm_eps = 0; }).validate(); }, "norm_eps");
  expect_error([&] { with([](ModelConfig& c) { c.rope_theta = NAN; }).validate(); }, "rope_theta");
  expect_error([&] { with([](ModelConfig& c) { c.init_std = -1; }).validate(); }, "init_std");
  expect_error([&] { with([](ModelConfig& c) { c.nsa.stride = 3; }).validate(); }, "stride");
  expect_error([&] { with([](ModelConfig& c) { c.attention = AttentionKind::full; c.independent_kv = true; }).validate(); },
               "independent_kv");
  // The model and the generator validate too.
  expect_error([&] { Model<float> m(with([](ModelConfig& c) { c.d_k = 5; })); }, "d_k");
  // Parsing: unknown keys, bad values, duplicates, invalid results.
  expect_error([] { ModelConfig::parse("vocab=12\nfoo=1\n"); }, "unknown key 'foo'");
  expect_error([] { ModelConfig::parse("vocab=twelve\n"); }, "vocab='twelve'");
  expect_error([] { ModelConfig::parse("vocab=12\nvocab=13\n"); }, "twice");
  expect_error([] { ModelConfig::parse("attention=sparse\n"); }, "sparse");
  expect_error([] { ModelConfig::parse("no equals sign\n"); }, "key=value");
  expect_error([] { ModelConfig::parse("d_k=9\n"); }, "d_k=9");
  expect_error([] { parse_attention_kind("dense"); }, "dense");
}

TEST(ModelParams, TableAndInit) {
  ModelConfig c = tiny_config(AttentionKind::nsa);
  c.init_std = 0.02;
  c.n_layers = 2;
  Model<float> a(c), b(c), other(c);
  EXPECT_EQ(a.tensor("embed").shape, (std::vector<std::int64_t>{c.vocab, c.d_model}));
  EXPECT_EQ(a.tensor("layers.1.wq").shape, (std::vector<std::int64_t>{c.n_heads * c.d_k, c.d_model}));
  EXPECT_EQ(a.tensor("layers.0.wg").shape, (std::vector<std::int64_t>{c.n_heads * 3, c.d_model}));
  EXPECT_EQ(a.tensor("layers.0.phi_v.w1").shape,
            (std::vector<std::int64_t>{c.d_v, c.nsa.block_len * c.d_v}));
  EXPECT_EQ(a.tensor("layers.0.wo").shape, (std::vector<std::int64_t>{c.d_model, c.n_heads * c.d_v}));
  EXPECT_FALSE(a.tensor("layers.0.bg").decay);
  EXPECT_TRUE(a.tensor("layers.0.w_up").decay);
  expect_error([&] { a.tensor("layers.0.wk_cmp"); }, "layers.0.wk_cmp");
  std::size_t total = 0;
  for (const TensorInfo& t : a.tensors()) {
    EXPECT_EQ(t.offset, total) << t.name;
    total += t.size;
  }
  EXPECT_EQ(total, a.num_params());
  for (std::size_t i = 0; i < a.num_params(); ++i) ASSERT_EQ(a.params()[i], 0.f);  // until init

  a.init(5);
  b.init(5);
  other.init(6);
  EXPECT_TRUE(std::equal(a.params(), a.params() + a.num_params(), b.params()));
  EXPECT_FALSE(std::equal(a.params(), a.params() + a.num_params(), other.params()));
  auto stats = [&](const std::string& name, double& mean, double& sd) {
    const TensorInfo& t = a.tensor(name);
    double s = 0, ss = 0;
    for (std::size_t i = 0; i < t.size; ++i) {
      s += a.params()[t.offset + i];
      ss += a.params()[t.offset + i] * a.params()[t.offset + i];
    }
    mean = s / t.size;
    sd = std::sqrt(ss / t.size - mean * mean);
  };
  double mean = 0, sd = 0;
  stats("layers.0.attn_norm", mean, sd);
  EXPECT_EQ(mean, 1.0);
  stats("layers.1.bg", mean, sd);
  EXPECT_EQ(mean, 0.0);
  EXPECT_EQ(sd, 0.0);
  stats("embed", mean, sd);
  EXPECT_NEAR(sd, 0.02, 0.003);
  stats("layers.0.w_down", mean, sd);
  EXPECT_NEAR(sd, 0.02 / std::sqrt(4.0), 0.002);
  stats("layers.0.phi_k.w1", mean, sd);
  EXPECT_NEAR(sd, 1.0 / std::sqrt(c.nsa.block_len * c.d_k), 0.03);

  // Kinds own different tensors.
  Model<float> full(tiny_config(AttentionKind::full)), window(tiny_config(AttentionKind::window)),
      ind(tiny_config(AttentionKind::nsa, true));
  expect_error([&] { full.tensor("layers.0.wg"); }, "wg");
  EXPECT_EQ(window.tensor("layers.0.wg").shape[0], 2);  // H * 1 branch
  expect_error([&] { window.tensor("layers.0.phi_k.pe"); }, "phi_k");
  EXPECT_EQ(ind.tensor("layers.1.wv_slc").shape[0], 6);
}

TEST(ModelInput, BadInputThrows) {
  ThreadPool pool(2);
  Model<float> model(tiny_config(AttentionKind::nsa));
  model.init(1);
  std::vector<std::int32_t> tokens(20, 3), targets(20, 4);
  expect_error([&] { model.forward(tokens.data(), targets.data(), 1, 0, pool); }, "seq must be >= 1");
  expect_error([&] { model.forward(tokens.data(), targets.data(), 0, 20, pool); }, "batch");
  tokens[7] = 24;  // vocab is 24
  expect_error([&] { model.forward(tokens.data(), targets.data(), 1, 20, pool); }, "token 24 at index 7");
  tokens[7] = -2;
  expect_error([&] { model.forward(tokens.data(), targets.data(), 1, 20, pool); }, "token -2");
  tokens[7] = 3;
  targets[3] = -5;
  expect_error([&] { model.forward(tokens.data(), targets.data(), 1, 20, pool); }, "target -5");
  targets[3] = 4;
  expect_error([&] { model.backward(pool); }, "no forward");
  expect_error([&] { model.logits(); }, "no forward");
  expect_error([&] { model.attention_saved(0); }, "no forward");
  EXPECT_NO_THROW(model.forward(tokens.data(), targets.data(), 2, 10, pool));
  expect_error([&] { model.gates(2); }, "layer 2");
  Model<float> full(tiny_config(AttentionKind::full));
  full.init(1);
  full.forward(tokens.data(), targets.data(), 2, 10, pool);
  expect_error([&] { full.gates(0); }, "full");

  // Every target ignored: loss 0, gradients 0.
  std::vector<std::int32_t> none(20, -1);
  EXPECT_EQ(model.forward(tokens.data(), none.data(), 1, 20, pool), 0.0);
  model.backward(pool);
  for (std::size_t i = 0; i < model.num_params(); ++i) ASSERT_EQ(model.grads()[i], 0.f);

  // The generator.
  expect_error([&] { Generator g(model, 0); }, "max_tokens");
  Generator gen(model, 8);
  expect_error([&] { gen.prefill(tokens.data(), 0, pool); }, "at least one token");
  expect_error([&] { gen.step(99, pool); }, "token 99");
  EXPECT_EQ(gen.position(), 0);
  gen.prefill(tokens.data(), 8, pool);
  expect_error([&] { gen.step(1, pool); }, "max_tokens=8");
  EXPECT_EQ(gen.position(), 8);
}

}  // namespace
}  // namespace nsa::model
