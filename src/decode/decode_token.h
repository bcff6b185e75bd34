// The per-(sequence, kv head) work of a decode step (decode_token.cc).
#pragma once

#include "decode/cache_state.h"

namespace nsa::decode {

// The inputs of one token for one kv group.
struct TokenRow {
  const float* q = nullptr;  // head g of the group at q + g * q_head_stride, [d_k]
  index_t q_head_stride = 0;
  const float* k[kNumBranches] = {};  // per raw stream (only [0] when K/V are shared)
  const float* v[kNumBranches] = {};
  const float* gates = nullptr;  // head g at gates + g * gates_head_stride, [3]
  index_t gates_head_stride = 0;
};

// Compressed block i of kv head h: phi over raw k_cmp / v_cmp rows i*d .. i*d+l-1 into Kc/Vc.
void compress_block(const DecodeCache::State& st, const DecodeSequence& q, index_t h, index_t i,
                    DecodeScratch& s);

// Appends token t = q.pos of kv head h (q.pos is advanced by the caller once every head is
// done), compresses the block it completes, and writes the G heads' outputs to
// out + g * out_head_stride. Records q.read[h] and q.sel[h].
void decode_token(const DecodeCache::State& st, DecodeSequence& q, index_t h, const TokenRow& in,
                  float* out, index_t out_head_stride, DecodeScratch& s);

}  // namespace nsa::decode
