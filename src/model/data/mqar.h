// Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology: Measuring and
// Improving Recall in Efficient Language Models"), at byte vocabulary:
//   <filler ...> k1 v1 k2 v2 ... kP vP <filler ...> k_a v_a k_b v_b ... (every key asked once)
// Keys and values come from two disjoint token ranges that text never uses (bytes >= 128;
// the training text is ASCII), so the filler cannot be mistaken for a pair:
//   keys   kMqarKeyFirst   .. kMqarKeyFirst + kMqarRange - 1     (128 .. 191)
//   values kMqarValueFirst .. kMqarValueFirst + kMqarRange - 1   (192 .. 255)
// The P keys of an example are distinct; each value is drawn independently.
//
// Layout of an example of C = options.context tokens with P pairs:
//   F = C - 4P filler tokens; the pairs sit after p = round(depth * F) of them, the queries
//   take the last 2P tokens:
//   tokens = filler[0, p) + pairs (2P) + filler[p, F) + queries (2P)
// Query i (i = 0..P-1, keys in a random order) is tokens[C-2P+2i] = its key and
// tokens[C-2P+2i+1] = its value; only the value is scored, under teacher forcing:
//   targets[C-2P+2i] = the value,  targets = -1 elsewhere.
// The distance of an answer is (query key position) - (position of the pair's value): the
// answer is inside a sliding window of w tokens (current token included) iff distance < w.
// depth 1 puts the pairs right before the queries, depth 0 at the start.
// The filler is a random passage of `text` (like the passkey's haystack) or, when text is
// null, uniformly random printable bytes (32..126).
// Draws from rng: the keys, the values, the query order, then the filler.
#pragma once

#include <cstdint>
#include <vector>

#include "model/data/corpus.h"

namespace nsa::model {

constexpr std::int32_t kMqarKeyFirst = 128;
constexpr std::int32_t kMqarValueFirst = 192;
constexpr int kMqarRange = 64;  // distinct keys, distinct values

struct MqarOptions {
  index_t context = 256;  // total tokens of the example
  int pairs = 16;         // key-value pairs, each asked once at the end (1..kMqarRange)
  double depth = 0.0;     // where the pairs sit in the filler before the queries: 0 start, 1 end
};

struct MqarAnswer {
  index_t position = 0;  // t with targets[t] = value (the query's key)
  index_t distance = 0;  // position - (position of the pair's value)
  std::int32_t value = 0;
};

struct MqarExample {
  std::vector<std::int32_t> tokens;   // [context]
  std::vector<std::int32_t> targets;  // [context]: the values at their query positions, -1 elsewhere
  std::vector<MqarAnswer> answers;    // [pairs], in query order
};

// Throws nsa::Error when pairs is not in 1..kMqarRange, the context cannot hold the pairs
// and the queries (C < 4P), depth is not in [0, 1], or text has fewer than F tokens.
MqarExample make_mqar(const std::vector<std::int32_t>* text, const MqarOptions& options, Rng& rng);

}  // namespace nsa::model
