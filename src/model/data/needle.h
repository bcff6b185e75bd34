// The passkey / needle-in-a-haystack task (the paper's Figure 5, at small scale):
//   <filler text ...> " The passkey is 48213. " <filler text ...>
//   " What is the passkey? The passkey is 48213."
// The filler is taken from a text (the corpus) so the haystack looks like the training
// data. Only the answer's digits are scored: targets are -1 everywhere else.
#pragma once

#include <cstdint>
#include <vector>

#include "model/data/corpus.h"

namespace nsa::model {

struct NeedleOptions {
  index_t context = 1024;  // total tokens of the example (prompt + answer)
  double depth = 0.5;      // where the needle sits in the haystack, 0 = start, 1 = end
  int digits = 5;          // passkey length
};

struct NeedleExample {
  std::vector<std::int32_t> tokens;   // [context]: the example; tokens[t] is the input at t
  std::vector<std::int32_t> targets;  // [context]: the answer digits at the positions that
                                      //   predict them, -1 elsewhere
  std::vector<std::int32_t> answer;   // the passkey's digit tokens
  index_t answer_start = 0;           // first position t with targets[t] != -1
  index_t needle_position = 0;        // token index where the needle sentence starts
};

// Throws nsa::Error when the context is too short to hold the needle and the question.
NeedleExample make_needle(const std::vector<std::int32_t>& filler, const NeedleOptions& options,
                          Rng& rng);

// A training batch whose rows are needle examples at random depths, with the targets of
// the whole text (not only the answer) so that the model also learns the language.
Batch needle_batch(const std::vector<std::int32_t>& filler, index_t batch, index_t seq, Rng& rng);

}  // namespace nsa::model
