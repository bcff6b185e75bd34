// CUDA decoding with a cache (spec, "Decoding with a cache"): the device counterpart of
// nsa::DecodeCache (include/nsa/decode.h), for storage T = float, nsa::cuda::bf16 or
// nsa::cuda::f16 (fp32 accumulation always).
//
// One DecodeCache per attention layer holds in device memory, for up to max_seqs sequences
// of up to max_tokens tokens each (fixed capacity, allocated up front):
//   raw K/V of each branch  [max_seqs, max_tokens, H_kv, d]  (one stream when shared_kv)
//   compressed Kc/Vc        [max_seqs, N_cmp(max_tokens), H_kv, d]
// and every sequence's position t on the host (the launcher plans each step from it).
//
//   prefill(seq, prompt)   fills an EMPTY sequence from a prompt: one nsa_forward call (its
//                          Kc/Vc are kept) and a copy of the raw K/V; returns the outputs;
//   append(seq, tokens)    stores K/V of tokens at the end of a sequence and compresses the
//                          blocks they complete, without computing outputs (benchmarks,
//                          restoring a conversation);
//   step(seqs, tokens)     one new token for each of n distinct sequences (of any lengths):
//                            1. append its K/V,
//                            2. phi of every compression block it completes
//                               (block (t-l+1)/d when t >= l-1 and (t-l+1) % d == 0),
//                            3. compression attention over the visible Kc/Vc, split-K,
//                            4. merge, importance scores p_slc, top-n per kv group,
//                            5. selection + window attention, split-K,
//                            6. merge of the partials and the gated sum -> out.
// Decode at position t gives row t of nsa_forward on the same tokens (the kernels'
// tolerance). All launches are asynchronous on `stream`; one stream per cache at a time.
//
// Host vs device: every TensorView and PhiWeights pointer points to DEVICE memory (phi's
// weights are copied into the cache at construction); sequence ids are HOST arrays.
// Head dims d_k, d_v: multiples of 16 in [16, 256]. Any G = H / H_kv >= 1. prefill's views
// follow nsa_forward's rules (16-byte aligned rows); step and append take any strides.
//
// Status: written on a machine without a GPU. Until nsa_gpu_check has passed on a GPU,
// treat every kernel behind this header as unverified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "nsa/attention.h"
#include "nsa/config.h"
#include "nsa/cuda.h"
#include "nsa/tensor.h"

namespace nsa::cuda {

// Sizes of one layer's device cache.
struct DecodeCacheShape {
  index_t heads = 0, kv_heads = 0;  // H, H_kv (H a multiple of H_kv)
  index_t d_k = 0, d_v = 0;
  bool shared_kv = false;           // one K/V for the three branches
  index_t max_seqs = 1;             // sequence ids 0 .. max_seqs - 1
  index_t max_tokens = 0;           // per-sequence capacity (> 0), allocated up front
};

// The tokens given to prefill / append (B = 1, T = tokens) or step (B = sequences, T = 1).
// Views [B, T, heads, dim] in device memory, as in attention.h. With shared K/V,
// k_slc/v_slc/k_win/v_win are left empty (or are the same views as k_cmp/v_cmp).
// append reads only the K/V views.
template <class T>
struct DecodeTokens {
  TensorView<const T> q;             // [B, T, H, d_k]
  TensorView<const T> k_cmp, v_cmp;  // [B, T, H_kv, d_k] / [B, T, H_kv, d_v]
  TensorView<const T> k_slc, v_slc;
  TensorView<const T> k_win, v_win;
  TensorView<const T> gates;         // [B, T, H, 3], order (cmp, slc, win), already in [0, 1]
};

template <class T>
class DecodeCache {
 public:
  // Copies phi's weights (device pointers, sizes as in PhiWeights for this config) and
  // allocates the whole capacity. Throws nsa::Error on an invalid shape, missing weights,
  // or a capacity the kernels cannot handle.
  DecodeCache(const Config& config, const DecodeCacheShape& shape, const PhiWeights<T>& phi_k,
              const PhiWeights<T>& phi_v);
  ~DecodeCache();
  DecodeCache(DecodeCache&&) noexcept;
  DecodeCache& operator=(DecodeCache&&) noexcept;
  DecodeCache(const DecodeCache&) = delete;
  DecodeCache& operator=(const DecodeCache&) = delete;

  const Config& config() const;
  const DecodeCacheShape& shape() const;

  // Fills the empty sequence `seq` from a prompt of T >= 0 tokens (views with B = 1) and
  // writes its outputs into out [1, T, H, d_v]. Throws nsa::Error, before launching
  // anything, on invalid input (bad id, non-empty sequence, too long, wrong shapes).
  void prefill(index_t seq, const DecodeTokens<T>& prompt, TensorView<T> out, void* stream = nullptr);

  // Stores the K/V of T >= 0 tokens (views with B = 1; q and gates are not read) at the end
  // of sequence `seq` and compresses the blocks they complete; no outputs.
  void append(index_t seq, const DecodeTokens<T>& tokens, void* stream = nullptr);

  // Appends one token to each of the `count` distinct sequences seqs[0..count) (host array;
  // views with B = count, T = 1) and writes their outputs into out [count, 1, H, d_v].
  // Throws nsa::Error before launching anything on invalid input (bad or repeated id, a
  // sequence at capacity, wrong shapes).
  void step(const index_t* seqs, index_t count, const DecodeTokens<T>& tokens, TensorView<T> out,
            void* stream = nullptr);

  // Empties sequence `seq` (its storage stays allocated).
  void reset(index_t seq);

  index_t position(index_t seq) const;  // tokens stored = the position of the next token
  index_t num_cmp_blocks(index_t seq) const;
  // Chosen selection blocks (ascending, -1 padded, top_n entries) of item `item` (index into
  // the seqs array of the last step) and kv head `kv_head`. Synchronises `stream`.
  std::vector<std::int32_t> last_selection(index_t item, index_t kv_head, void* stream = nullptr) const;
  // Device bytes held by the cache (K/V, Kc/Vc, phi weights; scratch excluded).
  std::size_t memory_bytes() const;

  struct State;  // implementation (src/cuda/decode.cuh)

 private:
  std::unique_ptr<State> state_;
};

// The dense baseline of one decode step, split-K over the keys with a merge: for every query
// head h of the single new token, out[h] = softmax(scale q[h] . k[0..T)) v[0..T).
//   q [H, d_k]; k [T, H_kv, d_k]; v [T, H_kv, d_v]; out [H, d_v]; all device, contiguous,
//   16-byte aligned; scale 0 = 1/sqrt(d_k).
template <class T>
void dense_decode_step(const T* q, const T* k, const T* v, index_t tokens, index_t heads,
                       index_t kv_heads, index_t d_k, index_t d_v, double scale, T* out,
                       Workspace& workspace, void* stream = nullptr);

}  // namespace nsa::cuda
