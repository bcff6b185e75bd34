// Generator: autoregressive decoding of a Model<float> through per-layer caches, for a
// batch of independent sequences (slots 0 .. max_seqs - 1) of different lengths.
//
// nsa and window layers use nsa::DecodeCache (spec, "Decoding with a cache"), whose pages
// let sequences share a prefix (fork) and roll back (truncate); full layers keep each
// sequence's roped K and V and call nsa::dense_decode_step. prefill + step give the same
// logits as a full forward over the same tokens (fp32 tolerance), which the tests check;
// a batched step gives each sequence the logits of its own step.
//
// The journal (for a server that persists conversations): with journal on, every token
// appended to a sequence also leaves its "row", everything the generator stored for it
// (per layer: the raw K/V of each key stream, and the normed input the token shift reads),
// in that sequence's journal until take_journal() hands the rows out. restore() appends
// such rows to a sequence without running the model: the caches then hold exactly what
// they held when the rows were made (the same K/V bits, the same compressed blocks), so a
// restored conversation continues bitwise as if it had never left memory.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"

namespace nsa::model {

// What one sequence's last appended token did in each layer (for monitoring).
struct LayerStep {
  std::vector<std::vector<std::int32_t>> selected;  // per kv head: chosen selection blocks
                                                    //   (ascending; empty: full, window)
  float gates[3] = {0, 0, 0};  // mean over query heads of (cmp, slc, win); full: 0
  std::int64_t tokens_read = 0;  // summed over kv heads
};

class Generator {
 public:
  // Reads the model's parameters at construction (copies what the caches need); the model
  // must outlive the generator and must not change while it is used. max_tokens: the limit
  // of one sequence; max_pages: the nsa/window caches' page budget (per layer; 0: none).
  Generator(const Model<float>& model, index_t max_tokens, index_t max_seqs = 1, index_t max_pages = 0,
            bool journal = false);
  ~Generator();

  // Appends tokens (n >= 1) to sequence `seq` and returns the logits [vocab] after the last.
  const float* prefill(index_t seq, const std::int32_t* tokens, index_t n, ThreadPool& pool);
  // Appends tokens[i] to sequence seqs[i] for `count` distinct sequences, as one batched
  // step (one pass of the projections over `count` rows); returns logits [count, vocab].
  const float* step(const index_t* seqs, const std::int32_t* tokens, index_t count, ThreadPool& pool);
  // Sequence 0 (the one-sequence use of `nsa generate`).
  const float* prefill(const std::int32_t* tokens, index_t n, ThreadPool& pool) { return prefill(0, tokens, n, pool); }
  const float* step(std::int32_t token, ThreadPool& pool) {
    const index_t seq = 0;
    return step(&seq, &token, 1, pool);
  }

  void reset(index_t seq);                   // empties `seq` (and its journal)
  void fork(index_t src, index_t dst);       // `dst` (empty) becomes a copy of `src`, pages shared
  void truncate(index_t seq, index_t tokens);  // keeps the first `tokens` tokens of `seq`

  index_t max_seqs() const;
  index_t max_tokens() const;
  index_t position(index_t seq) const;  // tokens appended so far
  index_t position() const { return position(0); }
  // Attention tokens read by the last appended token, summed over layers and kv heads.
  std::int64_t last_tokens_read(index_t seq) const;
  std::int64_t last_tokens_read() const { return last_tokens_read(0); }
  // Per layer, what the last token appended to `seq` by prefill or step selected and read.
  std::vector<LayerStep> last_step(index_t seq) const;
  // Bytes of K/V (and compressed blocks) held for all sequences, all layers.
  std::size_t cache_bytes() const;

  // The journal (constructor's `journal`): floats per token row, the rows of `seq` made
  // since the last take (moved out: [rows, row_floats()]), and their restoration.
  index_t row_floats() const;
  std::vector<float> take_journal(index_t seq);
  // Appends `n` rows [n, row_floats()] to `seq` (no logits; last_step() reads as empty).
  void restore(index_t seq, const float* rows, index_t n, ThreadPool& pool);

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace nsa::model
