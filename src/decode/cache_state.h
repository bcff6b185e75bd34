// DecodeCache::State: the layout of the decode cache (see include/nsa/decode.h).
//
// A sequence lists its chunks, pages of the cache's PagePool (decode/page_pool.h: shared by
// forked sequences, copied on write, a free list, a budget); chunk c holds tokens
// [c*C, (c+1)*C) and compressed blocks [c*C/d, (c+1)*C/d). A chunk is raw bytes holding
// elements of the cache's storage type (fp32 or bf16), laid out stream after stream:
//   raw K streams  (1 when shared, else cmp, slc, win)  each [H_kv, C, d_k]
//   raw V streams  (likewise)                           each [H_kv, C, d_v]
//   Kc [H_kv, C/d, d_k], Vc [H_kv, C/d, d_v]
// so the keys of one kv head inside a chunk are contiguous rows, what the attention
// loops want. C is a multiple of l' (a selection block never straddles two chunks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/fnv1a.h"
#include "cpu/block_scores.h"
#include "decode/kernels.h"
#include "decode/page_pool.h"
#include "nsa/decode.h"

namespace nsa {

struct DecodeSequence {
  index_t pos = 0;      // tokens stored
  index_t num_cmp = 0;  // compressed blocks stored = N_cmp(pos)
  std::vector<std::int32_t> pages;   // page table: chunk c is page pages[c] of the pool
  std::vector<TokensRead> read;      // [H_kv] of the last token
  std::vector<std::int32_t> sel;     // [H_kv, top_n] of the last token, -1 padded
};

// Per-worker buffers of a step.
struct DecodeScratch {
  std::vector<float> imp;      // [visible] group importance of compressed blocks
  std::vector<float> score;    // [candidates] selection-block scores
  std::vector<index_t> order;  // candidates for top-n
  std::vector<std::uint8_t> taken;
  std::vector<float> block, phi;         // phi input [l, dim] and its work space
  std::vector<float> kc;                 // phi's output [dim] before it is stored
};

namespace decode {

// The inputs of one token for one kv group.
struct TokenRow {
  const float* q = nullptr;  // head g of the group at q + g * q_head_stride, [d_k]
  index_t q_head_stride = 0;
  const float* k[kNumBranches] = {};  // per raw stream (only [0] when K/V are shared)
  const float* v[kNumBranches] = {};
  const float* gates = nullptr;  // head g at gates + g * gates_head_stride, [3]
  index_t gates_head_stride = 0;
};

// The work of one (sequence, kv head, token t) in a step, kept across its stages:
//   begin_token      store K/V of token t and compress the block it completes (when
//                    `store`; a chunk stores all its tokens first), copy q, list the
//                    compressed keys visible at t
//   attend_part      one branch over part p of P of its keys          (parallel in p)
//   select_token     merge the compression parts: o_cmp and the importance, choose the
//                    top-n blocks (into sel, read), list the selection and window keys
//   attend_part      selection and window, part p of P each           (parallel in p)
//   finish_token     merge them and write the gated combination
// With P = 1 the stages run back to back in one task. With more workers than (sequence,
// kv head) pairs (one long sequence), P > 1 splits each branch's keys across workers.
// Every stage reads only what token t sees (keys <= t, blocks complete at t), so the
// tokens of a chunk, stored first, are computed in any order with the same bits.
struct TokenWork {
  DecodeSequence* q = nullptr;
  index_t h = 0;
  index_t t = 0;      // the token's position in its sequence
  bool store = true;  // begin_token stores its K/V (false: stored already)
  TokenRow in;
  float* out = nullptr;  // head g at out + g * out_head_stride
  index_t out_head_stride = 0;
  std::vector<float> qs;                  // [G, d_k] the group's queries (bf16 cache: rounded)
  std::vector<Segment> segs[kNumBranches];  // each branch's key ranges, in key order
  std::vector<Partial> parts[kNumBranches];  // [P] per branch
  std::vector<float> o[kNumBranches];        // [G, d_v] merged branch outputs
  std::vector<std::int32_t> sel;             // [top_n] the chosen blocks, ascending, -1 padded
  TokensRead read;                           // what the token read
};

}  // namespace decode

struct DecodeCache::State {
  Config config;
  DecodeShape shape;
  cpu::BlockSpread spread;           // compressed-block importance -> selection-block scores
  index_t group = 0, chunk = 0, cmp_per_chunk = 0;
  int kv_streams = 0;                // raw K (and V) streams: 1 shared, 3 independent
  index_t elem_bytes = 4;            // bytes of one stored element (4 fp32, 2 bf16)
  index_t off_k[kNumBranches] = {};  // element offsets inside a chunk, per branch
  index_t off_v[kNumBranches] = {};
  index_t off_kc = 0, off_vc = 0, chunk_elems = 0;
  float scale = 0.0f;

  // One buffer per PhiField (nsa/phi_fields.h); in a bf16 cache the bf16-rounded weights (widened).
  std::vector<float> phi_k_buf[kPhiFields.size()], phi_v_buf[kPhiFields.size()];
  PhiWeights<float> phi_k, phi_v;                 // views of the buffers
  std::uint64_t phi_fingerprint = 0;

  std::vector<DecodeSequence> seqs;
  decode::PagePool pool;  // every sequence's chunks
  std::int64_t total_read = 0;
  std::vector<DecodeScratch> scratch;  // one per worker
  std::vector<decode::TokenWork> work;  // one per (sequence, kv head) of the current step

  State(const Config& c, const DecodeShape& s, const PhiWeights<float>& pk,
        const PhiWeights<float>& pv);
  // A fresh, empty state with the same config, shape and weights.
  std::unique_ptr<State> empty_copy() const;

  bool is_bf16() const { return shape.storage == CacheStorage::bf16; }

  // Raw row of token s of kv head h in branch b's key (value) stream.
  std::byte* key(const DecodeSequence& q, int b, index_t h, index_t s) const {
    return at(q, s / chunk, off_k[b] + (h * chunk + s % chunk) * shape.d_k);
  }
  std::byte* value(const DecodeSequence& q, int b, index_t h, index_t s) const {
    return at(q, s / chunk, off_v[b] + (h * chunk + s % chunk) * shape.d_v);
  }
  // Compressed block i of kv head h.
  std::byte* kc(const DecodeSequence& q, index_t h, index_t i) const {
    return at(q, i / cmp_per_chunk, off_kc + (h * cmp_per_chunk + i % cmp_per_chunk) * shape.d_k);
  }
  std::byte* vc(const DecodeSequence& q, index_t h, index_t i) const {
    return at(q, i / cmp_per_chunk, off_vc + (h * cmp_per_chunk + i % cmp_per_chunk) * shape.d_v);
  }
  std::byte* at(const DecodeSequence& q, index_t chunk_index, index_t element) const {
    return pool.data(q.pages[static_cast<size_t>(chunk_index)]) + element * elem_bytes;
  }
  // Stores n fp32 values at dst in the storage type (bf16: rounded to nearest even).
  void put(std::byte* dst, const float* src, index_t n) const {
    if (is_bf16())
      to_bf16(src, reinterpret_cast<bf16*>(dst), static_cast<size_t>(n));
    else
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
  // Reads n stored values as fp32 (exact).
  void get(const std::byte* src, float* dst, index_t n) const {
    if (is_bf16())
      to_float(reinterpret_cast<const bf16*>(src), dst, static_cast<size_t>(n));
    else
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  }
  // x as the cache computes with it: rounded to bf16 in a bf16 cache (q, gates).
  float rounded(float x) const { return is_bf16() ? static_cast<float>(bf16(x)) : x; }
  // Pages that prepare_write(q, tokens) takes from the pool: the shared pages it copies and
  // the new ones. Callers check the sum over a call's sequences against pool.available()
  // before changing anything (check_budget), so a call either fits or changes nothing.
  // copies (may be null): the copies earlier sequences of the same call will make, by page
  // id; updated. A page shared by two sequences that both write it is copied once: the
  // second then holds it alone.
  index_t pages_needed(const DecodeSequence& q, index_t tokens,
                       std::vector<std::pair<std::int32_t, std::int32_t>>* copies = nullptr) const;
  // Makes sequence q writable up to `tokens` tokens: copies every shared page that storing
  // tokens q.pos .. tokens - 1 and their compressed blocks would write (copy on write), then
  // takes new pages until q holds `tokens`.
  void prepare_write(DecodeSequence& q, index_t tokens);
  // Drops q's pages from index `keep` on.
  void release_pages(DecodeSequence& q, size_t keep);
  // Empties q: its pages go back to the pool, its tables are sized for the shape.
  void init_sequence(DecodeSequence& q);
  // Chunks (pages) that hold `tokens` tokens.
  index_t chunks_for(index_t tokens) const { return (tokens + chunk - 1) / chunk; }
  DecodeSequence& sequence(index_t seq, const char* what);
  const DecodeSequence& sequence(index_t seq, const char* what) const;
};


}  // namespace nsa
