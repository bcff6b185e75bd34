// Training text: a byte-level tokenizer (token = byte value, vocab 256) and a corpus
// split into train and validation parts, from which batches are drawn.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/data/rng.h"
#include "nsa/config.h"

namespace nsa::model {

std::vector<std::int32_t> encode_bytes(const std::string& text);
std::string decode_bytes(const std::int32_t* tokens, index_t n);  // tokens outside 0..255 -> '?'

class Corpus {
 public:
  // Reads the whole file. The last `val_fraction` of the bytes (rounded down to whole
  // bytes, at least one sequence's worth is not required) is the validation split.
  // Throws nsa::Error naming the file when it is missing, unreadable or empty.
  static Corpus from_file(const std::string& path, double val_fraction = 0.05);
  static Corpus from_text(const std::string& text, double val_fraction = 0.05);

  const std::vector<std::int32_t>& train() const { return train_; }
  const std::vector<std::int32_t>& val() const { return val_; }
  std::size_t size() const { return train_.size() + val_.size(); }

 private:
  std::vector<std::int32_t> train_, val_;
};

// A batch of next-token prediction windows: tokens [batch, seq], targets [batch, seq]
// (targets[b, t] = the token after tokens[b, t]; -1 = no loss at that position).
struct Batch {
  index_t batch = 0, seq = 0;
  std::vector<std::int32_t> tokens, targets;
};

// `batch` windows of seq+1 tokens at uniformly random offsets of `split`. Throws
// nsa::Error when the split is shorter than seq + 1 tokens.
Batch sample_batch(const std::vector<std::int32_t>& split, index_t batch, index_t seq, Rng& rng);

// The i-th of the consecutive, non-overlapping windows of `split` (for a deterministic
// validation loss): count = (split.size() - 1) / seq windows.
index_t num_windows(const std::vector<std::int32_t>& split, index_t seq);
Batch window_batch(const std::vector<std::int32_t>& split, index_t first_window, index_t batch,
                   index_t seq);

}  // namespace nsa::model
