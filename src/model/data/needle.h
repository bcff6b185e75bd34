// The passkey / needle-in-a-haystack task (the paper's Figure 5, at small scale):
//   <filler text ...> " The passkey is 48213. " <filler text ...>
//   " What is the passkey? The passkey is 48213."
// The filler is taken from a text (the corpus) so the haystack looks like the training
// data. Only the answer's digits are scored: targets are -1 everywhere else.
//
// Layout of an example of C = options.context tokens with a passkey of d digits:
//   needle   = " The passkey is " + key + ". "                        18 + d tokens
//   question = " What is the passkey? The passkey is " + key + "."    38 + d tokens
//   haystack = H = C - (56 + 2d) consecutive filler tokens
//   tokens   = haystack[0, p) + needle + haystack[p, H) + question
// The haystack starts at a random offset of `filler`, moved to the first line start after
// it within 256 tokens, else to the last one before it within 256 tokens, if any. p is depth * H rounded, moved by at most 8
// tokens to the nearest word end (haystack[p] is ' ' or '\n', or p is 0 or H) when there
// is one that close. The key has exactly d digits (the first is not 0). The answer digits
// sit at tokens[C-1-d, C-1) (the last token is the final "."), so the targets are
//   targets[t] = tokens[t + 1]  for t in [C-2-d, C-2)   (answer_start = C-2-d),
//   targets[t] = -1             elsewhere,
// i.e. under teacher forcing the model is scored on predicting each digit of the answer
// from the question and the digits before it. Draws from rng: the key, then the offset.
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

// Throws nsa::Error when the context is too short to hold the needle and the question
// (C < 56 + 2d), when the filler has fewer than H tokens, when depth is not in [0, 1] or
// digits not in 1..18.
NeedleExample make_needle(const std::vector<std::int32_t>& filler, const NeedleOptions& options,
                          Rng& rng);

// A training batch whose rows are needle examples at random depths, with the targets of
// the whole text (not only the answer) so that the model also learns the language: each
// row is make_needle(filler, {seq, rng.uniform(), 5}, rng).tokens (seq tokens, the depth
// drawn first), with targets[t] = tokens[t + 1] for t < seq - 1 and targets[seq - 1] = -1.
// Throws like make_needle (seq >= 66 is needed), and on batch < 1.
Batch needle_batch(const std::vector<std::int32_t>& filler, index_t batch, index_t seq, Rng& rng);

}  // namespace nsa::model
