// A conversation of 1000 short turns (about 7k tokens) through the engine with a state folder:
// every reply equals the offline generation of the same turns, the tokens each step reads
// follow the spec's count for the blocks it chose (and stay a fraction of what dense
// attention reads), and the cache grows by the model's bytes per token.
#include <gtest/gtest.h>

#include "nsa/decode.h"
#include "serve/engine.h"
#include "test_serve_util.h"

namespace nsa::serve {
namespace {

TEST(LongConversation, ThousandTurnsFollowTheFormulas) {
  testing::TempDir dir;
  EngineOptions o;
  o.checkpoint = testing::write_checkpoint(dir.file("model.safetensors"));
  o.state_dir = dir.file("state");
  o.max_context = 32768;
  Engine engine(o);
  const model::Model<float> model = model::load_model(o.checkpoint);
  const model::ModelConfig& cfg = model.config();
  const int kTurns = 1000;
  std::vector<testing::OfflineTurn> turns;
  for (int i = 0; i < kTurns; ++i) turns.push_back({" " + std::to_string(i) + ":", 3, 0.8, 7u + static_cast<unsigned>(i)});
  const std::vector<std::string> want = testing::offline_replies(model, turns);

  const Config op(cfg.nsa);
  std::int64_t tokens_at_half = 0;
  double bytes_at_half = 0;
  auto cache_bytes = [&] {
    const std::string m = engine.metrics_text();
    const std::size_t at = m.find("\nnsa_cache_bytes ");
    return std::stod(m.substr(at + 17));
  };
  for (int i = 0; i < kTurns; ++i) {
    TurnRequest r;
    r.conversation = "long";
    r.tokens = model::encode_bytes(turns[static_cast<std::size_t>(i)].new_text);
    r.sampling.max_tokens = 3;
    r.sampling.temperature = 0.8;
    r.sampling.seed = 7u + static_cast<unsigned>(i);
    const std::string got = engine.submit(r)->wait();
    ASSERT_EQ(got, want[static_cast<std::size_t>(i)]) << "turn " << i;
    if (i % 97 == 0 || i == kTurns - 1) {
      // The last step read what the spec counts for the blocks it chose.
      const AttentionSnapshot a = engine.attention("long");
      const index_t t = a.position - 1;
      std::int64_t expect = 0;
      for (const model::LayerStep& l : a.layers)
        for (const auto& sel : l.selected) {
          std::vector<std::int32_t> padded(sel);
          padded.resize(static_cast<std::size_t>(op.top_n()), -1);
          expect += nsa::tokens_read(op, t, padded.data()).total();
        }
      EXPECT_EQ(a.tokens_read, expect) << "turn " << i;
      EXPECT_EQ(a.dense_tokens, a.position * cfg.n_layers * cfg.n_kv_heads);
      if (a.position > 4096) EXPECT_LT(a.tokens_read * 3, a.dense_tokens) << "turn " << i;
    }
    if (i == kTurns / 2) {
      tokens_at_half = engine.conversation("long").tokens;
      bytes_at_half = cache_bytes();
    }
  }
  // Bytes per token: raw K/V (one shared stream) + the compressed blocks (one per stride
  // tokens) + the token shift's normed row, per layer.
  const double per_token = cfg.n_layers * (cfg.n_kv_heads * (cfg.d_k + cfg.d_v) * 4.0 * (1.0 + 1.0 / cfg.nsa.stride) +
                                           cfg.d_model * 4.0);
  const std::int64_t tokens = engine.conversation("long").tokens;
  const double grown = (cache_bytes() - bytes_at_half) / static_cast<double>(tokens - tokens_at_half);
  EXPECT_NEAR(grown, per_token, 0.1 * per_token) << tokens << " tokens";
  EXPECT_GT(tokens, 6000);
}

}  // namespace
}  // namespace nsa::serve
