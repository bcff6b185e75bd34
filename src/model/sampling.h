// Sampling the next token from logits: the one rule of `nsa generate` and `nsa serve`.
#pragma once

#include <cstdint>

#include "model/data/rng.h"

namespace nsa::model {

// Argmax when temperature <= 0, else a draw from softmax(logits / temperature) restricted
// to the top_k largest (top_k <= 0: all), with one rng.uniform().
std::int32_t sample_token(const float* logits, int vocab, double temperature, int top_k, Rng& rng);

}  // namespace nsa::model
