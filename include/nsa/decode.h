// Decoding with a cache (spec, "Decoding with a cache"): one DecodeCache per attention
// layer holds, for a batch of sequences of different lengths, the raw K/V of every branch
// (one storage when the branches share K/V), the compressed Kc/Vc so far and each
// sequence's position t.
//
//   prefill(seq, prompt)  fills an empty sequence from a prompt with the fp32 forward kernels
//                         (nsa::nsa_forward) and returns the prompt's outputs;
//   step(seqs, tokens)    appends one token to each listed sequence and returns its output:
//                         phi runs once for every compression block the token completes,
//                         then the three branches are computed for the new query.
// Decode at position t gives row t of a prefill of the same tokens (fp32 tolerance).
//
// Storage (DecodeShape::storage): fp32, or bf16, which halves the cache's memory and the
// bytes a step reads. A bf16 cache computes NSA on bf16 values: q, K, V, gates and phi's
// weights are rounded to bf16 as they come in (the caller's views stay fp32), phi runs in
// fp32 and its outputs Kc/Vc are rounded to bf16, products accumulate in fp32, exactly
// the function nsa_forward computes on bf16 inputs; prefill of an empty sequence is that
// forward. Accuracy: the spec's bf16 tolerance against the float64 reference run on the
// rounded values.
//
// Storage grows in chunks of `chunk_tokens` tokens (a multiple of sel_block): appending
// never copies what is already stored. Chunk c of a sequence holds, per stream
// (k_cmp, k_slc, k_win, v_cmp, v_slc, v_win; k and v only when K/V are shared), the
// [H_kv, chunk_tokens, dim] raw rows of tokens c*C .. c*C + C - 1, and the
// [H_kv, C/d, dim] compressed blocks c*C/d .. (c+1)*C/d - 1 of Kc and Vc.
//
// File format of save/load (little-endian):
//   header: magic "NSADCACH", u32 version, u32 byte-order mark 0x01020304, u64 header bytes,
//           config (l, d, l', n, n_init, n_local, w, phi kind, phi hidden as i64; scale f64),
//           shape (H, H_kv, d_k, d_v, shared_kv, max_seqs, max_tokens, storage (0 fp32,
//           1 bf16) as i64), u64 FNV-1a 64 of the phi weights (as stored: bf16-rounded
//           in a bf16 cache), i64 position of every sequence,
//           u64 payload bytes, u64 FNV-1a 64 of the payload, u64 FNV-1a 64 of the header;
//   payload: per sequence, per raw stream, per kv head its rows [t, dim]; then Kc and Vc
//           per kv head [N_cmp(t), dim]. Elements in the cache's storage type (fp32, or
//           bf16 as its 16 bits). Version 2 (version 1 had no storage field; it is refused).
// A save writes a temporary file next to the target and renames it into place; a load
// reads into a new cache and swaps it in only once everything has been checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nsa/attention.h"
#include "nsa/config.h"
#include "nsa/error.h"
#include "nsa/tensor.h"

namespace nsa {

class ThreadPool;

// The error save / load throw: an nsa::Error that also says whether the file system failed
// (io: cannot open, write, rename) or the file is not a valid cache for this layer
// (bad_file: truncated, corrupted, another version, config, shape or weights).
class DecodeFileError : public Error {
 public:
  enum class Kind { io, bad_file };
  DecodeFileError(Kind kind, const std::string& message) : Error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// The element type of a cache's K/V and Kc/Vc (see the top of this file).
enum class CacheStorage : int { fp32 = 0, bf16 = 1 };

// Sizes of one layer's cache.
struct DecodeShape {
  index_t heads = 0, kv_heads = 0;  // H, H_kv (H a multiple of H_kv)
  index_t d_k = 0, d_v = 0;
  bool shared_kv = false;           // one K/V for the three branches
  index_t max_seqs = 1;             // batch capacity: sequence ids 0 .. max_seqs - 1
  index_t max_tokens = 0;           // per-sequence limit; 0 = unbounded
  index_t chunk_tokens = 0;         // growth granularity; 0 = the smallest multiple of
                                    //   sel_block >= 1024 (then a chunk's 1024 / d
                                    //   compressed keys are one run for the step: 256-token
                                    //   chunks cost 12% more at T = 65536); must be a
                                    //   multiple of sel_block
  CacheStorage storage = CacheStorage::fp32;
  index_t max_pages = 0;            // memory budget in chunks (pages) of the whole cache,
                                    //   all sequences; 0 = no limit. A call that would need
                                    //   more throws nsa::Error and changes nothing
};

// The tokens given to prefill (B = 1, T = prompt length) or step (B = sequences, T = 1).
// Views [B, T, heads, dim] as in attention.h. With shared K/V, k_slc/v_slc/k_win/v_win
// are left empty (or are the very same views as k_cmp/v_cmp).
struct DecodeTokens {
  TensorView<const float> q;             // [B, T, H, d_k]
  TensorView<const float> k_cmp, v_cmp;  // [B, T, H_kv, d_k] / [B, T, H_kv, d_v]
  TensorView<const float> k_slc, v_slc;
  TensorView<const float> k_win, v_win;
  TensorView<const float> gates;         // [B, T, H, 3], order (cmp, slc, win)
};

// Tokens read by one query of one kv group (the paper's memory-access measure): visible
// compressed blocks, tokens of the chosen blocks, window tokens; overlaps counted twice.
struct TokensRead {
  index_t cmp = 0, slc = 0, win = 0;
  index_t total() const { return cmp + slc + win; }
};

// What query t (its position in the sequence) of one kv group reads with the chosen
// selection blocks sel[0 .. top_n) (ascending, -1 padded): the visible compressed blocks,
// the chosen blocks' tokens up to t, the window (the paper's measure: a token two
// branches read counts in both). The one count the cache, `nsa inspect` and the tests use.
TokensRead tokens_read(const Config& config, index_t t, const std::int32_t* sel);

struct DecodeMemory {
  std::size_t bytes = 0;         // everything the cache holds (chunks, phi weights, tables)
  std::size_t chunk_bytes = 0;   // one chunk
  index_t chunk_tokens = 0;      // tokens per chunk
  index_t chunks = 0;            // chunks (pages) in use, all sequences; a shared one once
  index_t shared_chunks = 0;     // chunks held by more than one sequence (fork)
  index_t max_chunks = 0;        // DecodeShape::max_pages (0: no limit)
  index_t tokens = 0;            // tokens stored, all sequences
  // Bytes of one stored token once chunks are full: chunk_bytes / chunk_tokens.
  double bytes_per_token() const {
    return chunk_tokens ? static_cast<double>(chunk_bytes) / static_cast<double>(chunk_tokens) : 0.0;
  }
};

// One caller at a time per cache (the calls that take a ThreadPool use its workers).
class DecodeCache {
 public:
  // Copies phi's weights (the layer's parameters; sizes as in PhiWeights for this config).
  // Throws nsa::Error on an invalid shape or missing weights.
  DecodeCache(const Config& config, const DecodeShape& shape, const PhiWeights<float>& phi_k,
              const PhiWeights<float>& phi_v);
  ~DecodeCache();
  DecodeCache(DecodeCache&&) noexcept;
  DecodeCache& operator=(DecodeCache&&) noexcept;
  DecodeCache(const DecodeCache&) = delete;
  DecodeCache& operator=(const DecodeCache&) = delete;
  void swap(DecodeCache& other) noexcept;

  const Config& config() const;
  const DecodeShape& shape() const;  // chunk_tokens resolved

  // Appends a prompt of T >= 0 tokens (views with B = 1) to sequence `seq` and writes its
  // outputs into out [1, T, H, d_v]. An empty sequence is filled with one nsa_forward call;
  // a non-empty one by the decode path as one chunk (all T tokens stored, then their
  // attention in parallel over tokens and kv heads), each row bitwise what T one-token
  // steps give. All-or-nothing: throws nsa::Error before changing anything on invalid input.
  void prefill(index_t seq, const DecodeTokens& prompt, TensorView<float> out, ThreadPool& pool);

  // Stores the K/V of T >= 0 tokens (views with B = 1; q and gates are not read) at the end
  // of sequence `seq` and compresses the blocks they complete, without computing outputs:
  // for restoring a conversation from its keys and values, or filling a benchmark's cache.
  void append(index_t seq, const DecodeTokens& tokens, ThreadPool& pool);

  // Appends one token to each of the `count` distinct sequences seqs[0..count) (views with
  // B = count, T = 1) and writes their outputs into out [count, 1, H, d_v].
  // With T = k > 1 each sequence takes k tokens in one call (the draft tokens of
  // speculative decoding), out [count, k, H, d_v]: token j sees the tokens before it and
  // makes its own selection, bitwise as k steps of one token would (run as one chunk, in
  // parallel over sequences, tokens and kv heads); `truncate` then drops
  // the rejected ones. All-or-nothing like prefill.
  void step(const index_t* seqs, index_t count, const DecodeTokens& tokens, TensorView<float> out,
            ThreadPool& pool);

  // Empties sequence `seq` and releases its storage.
  void reset(index_t seq);

  // Makes the empty sequence `dst` a copy of `src` (its tokens, compressed blocks and last
  // selection) that shares src's chunks instead of copying them: a common prefix (a system
  // prompt, a conversation's history) is stored once. A shared chunk is copied when either
  // sequence first writes into it (copy on write), so the two then diverge independently.
  // Throws when dst holds tokens (reset it first) or src == dst.
  void fork(index_t src, index_t dst);

  // Keeps the first `tokens` tokens of `seq` (0 <= tokens <= position) and drops the rest,
  // releasing the chunks past them: the rollback of rejected speculative tokens, or of an
  // edited turn. The next token is then position `tokens`; tokens_read / selected_blocks
  // read as after append until the next step.
  void truncate(index_t seq, index_t tokens);

  index_t position(index_t seq) const;  // tokens stored = the position of the next token
  index_t num_cmp_blocks(index_t seq) const;
  // Of the last token appended to `seq` by prefill or step (zeros / empty before any, after
  // append, and after load): tokens read, and the chosen selection blocks (ascending) of
  // kv head `kv_head`.
  TokensRead tokens_read(index_t seq, index_t kv_head) const;
  std::vector<std::int32_t> selected_blocks(index_t seq, index_t kv_head) const;
  // Sum of tokens_read(...).total() over every token appended by step/prefill since creation.
  std::int64_t total_tokens_read() const;

  DecodeMemory memory() const;

  // Throws DecodeFileError (naming the file and the cause) when writing fails; the file at
  // `path`, if any, is then left as it was.
  void save(const std::string& path) const;
  // Replaces the cache's contents with the file's. The file must have been written by a
  // cache of the same config, H, H_kv, d_k, d_v, shared_kv and phi weights, with no more
  // sequences than max_seqs. On any error (missing, truncated, corrupted, mismatched)
  // throws DecodeFileError and leaves the cache as it was.
  void load(const std::string& path);

  // One sequence, as a file of one sequence (the same format; load() reads it into a cache
  // as sequence 0): a conversation written when it goes idle, brought back later.
  void save_sequence(index_t seq, const std::string& path) const;
  // Replaces sequence `seq` with the one sequence of a file written by save_sequence (or a
  // whole-cache file holding at most one non-empty sequence), under the same checks as
  // load; the other sequences are untouched. On any error `seq` is kept as it was.
  void load_sequence(index_t seq, const std::string& path);

  struct State;  // implementation (src/decode/cache_state.h)

 private:
  std::unique_ptr<State> state_;
};

// The dense baseline of one decode step: for every query head h of the single new token,
// out[h] = softmax(scale q[h] . k[0..T)) v[0..T) over a cache of T tokens.
//   q [H, d_k]; k [T, H_kv, d_k]; v [T, H_kv, d_v]; out [H, d_v]; scale 0 = 1/sqrt(d_k).
// Threads split the kv heads and, for long caches, the keys (split-K with a merge).
void dense_decode_step(const float* q, const float* k, const float* v, index_t tokens,
                       index_t heads, index_t kv_heads, index_t d_k, index_t d_v, double scale,
                       float* out, ThreadPool& pool);
// The same over a bf16 cache (k, v bf16; fp32 accumulation). Where the CPU has a bf16 dot
// product (vdpbf16ps) q and the probabilities are rounded to bf16 for it, as in the bf16
// forward; elsewhere k and v are widened to fp32. The spec's bf16 tolerance either way.
void dense_decode_step(const float* q, const bf16* k, const bf16* v, index_t tokens,
                       index_t heads, index_t kv_heads, index_t d_k, index_t d_v, double scale,
                       float* out, ThreadPool& pool);

}  // namespace nsa
