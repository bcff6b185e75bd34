// Helpers of the serve tests: a small byte-level checkpoint, temporary folders, and the
// reference reply of a conversation computed offline with a one-sequence Generator.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "model/data/corpus.h"
#include "model/data/rng.h"
#include "model/generator.h"
#include "model/model.h"
#include "model/sampling.h"
#include "model/training/checkpoint_io.h"
#include "nsa/thread_pool.h"

namespace nsa::serve::testing {

// A fresh empty folder under the system's temporary one, removed at destruction.
struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "nsa_serve_XXXXXX").string();
    path = mkdtemp(t.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// A random byte-level model: vocab 256, 2 layers, 2 query heads on 1 kv head, token shift
// 1; NSA blocks small enough that a few hundred tokens use every branch.
inline model::ModelConfig serve_config(model::AttentionKind kind = model::AttentionKind::nsa) {
  model::ModelConfig c;
  c.vocab = 256;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_k = 16;
  c.d_v = 16;
  c.mlp_hidden = 48;
  c.init_std = 0.3;
  c.token_shift = 1;
  c.attention = kind;
  c.nsa.block_len = 8;
  c.nsa.stride = 4;
  c.nsa.sel_block = 16;
  c.nsa.top_n = 4;
  c.nsa.n_init = 1;
  c.nsa.n_local = 2;
  c.nsa.window = 32;
  return c;
}

inline std::string write_checkpoint(const std::string& path, model::AttentionKind kind = model::AttentionKind::nsa,
                                    std::uint64_t seed = 5) {
  model::Model<float> m(serve_config(kind));
  m.init(seed);
  model::save_checkpoint(path, m, nullptr);
  return path;
}

// The reply a turn should get: the turns before it replayed with the engine's call
// pattern on one sequence (each turn's new tokens prefilled, the reply stepped), then this
// turn's tokens and its sampling. history: per earlier turn (new tokens, max_tokens);
// every reply greedy unless `temperature`.
struct OfflineTurn {
  std::string new_text;
  std::int64_t max_tokens = 16;
  double temperature = 0;
  std::uint64_t seed = 0;
};

inline std::vector<std::string> offline_replies(const model::Model<float>& m, const std::vector<OfflineTurn>& turns) {
  ThreadPool pool(1);
  model::Generator gen(m, 32768);
  std::vector<std::string> replies;
  std::vector<std::int32_t> pending;
  for (const OfflineTurn& t : turns) {
    std::vector<std::int32_t> fresh = pending;
    const std::vector<std::int32_t> add = model::encode_bytes(t.new_text);
    fresh.insert(fresh.end(), add.begin(), add.end());
    model::Rng rng(t.seed);
    const float* logits = gen.prefill(fresh.data(), static_cast<index_t>(fresh.size()), pool);
    std::string reply;
    for (;;) {
      const std::int32_t tok = model::sample_token(logits, m.config().vocab, t.temperature, 0, rng);
      reply += static_cast<char>(tok);
      if (static_cast<std::int64_t>(reply.size()) >= t.max_tokens) {
        pending = {tok};
        break;
      }
      logits = gen.step(tok, pool);
    }
    replies.push_back(reply);
  }
  return replies;
}

}  // namespace nsa::serve::testing
