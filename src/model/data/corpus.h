// Training text: a byte-level tokenizer (token = byte value, vocab 256) and a corpus
// split into train and validation parts, from which batches are drawn.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/data/rng.h"
#include "nsa/config.h"
#include "nsa/error.h"

namespace nsa::model {

std::vector<std::int32_t> encode_bytes(const std::string& text);
std::string decode_bytes(const std::int32_t* tokens, index_t n);  // tokens outside 0..255 -> '?'

class Corpus {
 public:
  // Reads the whole file. The last floor(size * val_fraction) bytes are the validation
  // split, the rest the training split; val_fraction is in [0, 1), and nothing makes
  // either split hold a whole sequence (sample_batch and num_windows check that).
  // Throws nsa::Error naming the file when it is missing, unreadable or empty, and on a
  // val_fraction outside [0, 1).
  static Corpus from_file(const std::string& path, double val_fraction = 0.05);
  static Corpus from_text(const std::string& text, double val_fraction = 0.05);  // text may be empty

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

// `batch` windows of seq+1 tokens at uniformly random offsets of `split` (row r draws its
// offset with rng.uniform_int(split.size() - seq), rows in order: the same rng state gives
// the same batch). Throws nsa::Error when the split is shorter than seq + 1 tokens, or
// batch, seq < 1.
Batch sample_batch(const std::vector<std::int32_t>& split, index_t batch, index_t seq, Rng& rng);

// The consecutive, non-overlapping windows of `split` (for a deterministic validation
// loss): window i has tokens split[i*seq, (i+1)*seq) and targets one token later, so there
// are count = (split.size() - 1) / seq of them (0 for a split of 0 or 1 token).
// window_batch returns windows first_window .. first_window + batch - 1 as rows; throws
// nsa::Error when they are not all within 0 .. count - 1, or batch, seq < 1.
index_t num_windows(const std::vector<std::int32_t>& split, index_t seq);
Batch window_batch(const std::vector<std::int32_t>& split, index_t first_window, index_t batch,
                   index_t seq);

}  // namespace nsa::model
