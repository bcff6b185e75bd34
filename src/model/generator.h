// Generator: autoregressive decoding of a Model<float> through per-layer caches.
//
// nsa and window layers use nsa::DecodeCache (spec, "Decoding with a cache"); full layers
// keep their roped K and V and call nsa::dense_decode_step. prefill + step give the same
// logits as a full forward over the same tokens (fp32 tolerance), which the tests check.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"

namespace nsa::model {

class Generator {
 public:
  // Reads the model's parameters at construction (copies what the caches need); the model
  // must outlive the generator and must not change while it is used.
  Generator(const Model<float>& model, index_t max_tokens);
  ~Generator();

  // Appends tokens (n >= 1) and returns the logits [vocab] after the last one.
  const float* prefill(const std::int32_t* tokens, index_t n, ThreadPool& pool);
  // Appends one token and returns the logits [vocab] after it.
  const float* step(std::int32_t token, ThreadPool& pool);

  index_t position() const;  // tokens appended so far
  // Attention tokens read by the last appended token, summed over layers and kv heads.
  std::int64_t last_tokens_read() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace nsa::model
