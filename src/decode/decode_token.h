// The per-(sequence, kv head) work of a decode step (decode_token.cc).
#pragma once

#include "decode/cache_state.h"

namespace nsa::decode {

// Compressed block i of kv head h: phi over raw k_cmp / v_cmp rows i*d .. i*d+l-1 into Kc/Vc.
void compress_block(const DecodeCache::State& st, const DecodeSequence& q, index_t h, index_t i,
                    DecodeScratch& s);

// The stages of a step (TokenWork in cache_state.h says what each does).
void begin_token(const DecodeCache::State& st, TokenWork& w, index_t parts, DecodeScratch& s);
void attend_part(const DecodeCache::State& st, TokenWork& w, int branch, index_t part, index_t parts);
void select_token(const DecodeCache::State& st, TokenWork& w, DecodeScratch& s);
void finish_token(const DecodeCache::State& st, TokenWork& w);

}  // namespace nsa::decode
