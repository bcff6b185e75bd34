// Training a tiny model on a repetitive byte string with a small inline Adam (the real
// AdamW is src/model/optim) lowers the loss substantially, for each attention kind.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "model/model.h"
#include "nsa/thread_pool.h"
#include "test_model_util.h"

namespace nsa::model {
namespace {

ModelConfig tiny_byte_model(AttentionKind kind) {
  ModelConfig c;
  c.vocab = 256;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 16;
  c.d_v = 16;
  c.mlp_hidden = 64;
  c.attention = kind;
  c.nsa = testing::tiny_nsa_options();
  c.nsa.block_len = 8;
  c.nsa.stride = 4;
  c.nsa.sel_block = 16;
  c.nsa.top_n = 4;
  c.nsa.window = 16;
  return c;
}

class ModelTrain : public ::testing::TestWithParam<AttentionKind> {
 protected:
  ThreadPool pool{2};
};

TEST_P(ModelTrain, LossFallsOnRepetitiveText) {
  const ModelConfig config = tiny_byte_model(GetParam());
  Model<float> model(config);
  model.init(1234);
  std::string text;
  while (text.size() < 2000) text += "the quick brown fox jumps over the lazy dog; ";
  const index_t B = 4, Tn = 64;
  std::vector<std::int32_t> tokens(B * Tn), targets(B * Tn);
  std::vector<float> m(model.num_params(), 0.f), v(model.num_params(), 0.f);
  Rng rng(99);
  const double lr = 1e-2, b1 = 0.9, b2 = 0.99, eps = 1e-8;
  double first = 0, last = 0;
  const int steps = 40;
  for (int step = 1; step <= steps; ++step) {
    for (index_t b = 0; b < B; ++b) {
      const std::size_t start = rng.uniform_int(text.size() - Tn - 1);
      for (index_t t = 0; t < Tn; ++t) {
        tokens[b * Tn + t] = static_cast<unsigned char>(text[start + t]);
        targets[b * Tn + t] = static_cast<unsigned char>(text[start + t + 1]);
      }
    }
    const double loss = model.forward(tokens.data(), targets.data(), B, Tn, pool);
    ASSERT_TRUE(std::isfinite(loss));
    if (step == 1) first = loss;
    last = loss;
    model.backward(pool);
    float* p = model.params();
    const float* g = model.grads();
    for (std::size_t i = 0; i < model.num_params(); ++i) {
      m[i] = static_cast<float>(b1 * m[i] + (1 - b1) * g[i]);
      v[i] = static_cast<float>(b2 * v[i] + (1 - b2) * g[i] * g[i]);
      const double mh = m[i] / (1 - std::pow(b1, step)), vh = v[i] / (1 - std::pow(b2, step));
      p[i] -= static_cast<float>(lr * mh / (std::sqrt(vh) + eps));
    }
  }
  std::printf("  %s: loss %.3f -> %.3f after %d steps\n", attention_kind_name(GetParam()), first, last, steps);
  EXPECT_NEAR(first, std::log(256.0), 0.3);  // a fresh model is near uniform
  EXPECT_LT(last, 0.45 * first);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ModelTrain,
                         ::testing::Values(AttentionKind::nsa, AttentionKind::full, AttentionKind::window),
                         [](const ::testing::TestParamInfo<AttentionKind>& info) {
                           return std::string(attention_kind_name(info.param));
                         });

}  // namespace
}  // namespace nsa::model
