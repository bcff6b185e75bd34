// pack_queries: gathers one query tile (tokens x the G heads of a kv group) from the
// strided q view into a contiguous [rows, d_k] block, pre-multiplied by the softmax scale,
// so every branch reads its queries with unit stride and never multiplies a score again.
// bf16 queries are widened; for the bf16 dot-product path they are also packed as bf16
// pairs, unscaled (the scale is applied to the fp32 scores: no second rounding of q).
#include <cstring>

#include "cpu/kernels.h"

namespace nsa::cpu {

namespace {

template <class T>
QueryTile pack(const TensorView<const T>& q, const SeqSpan& seq, index_t kv_head, index_t group,
               index_t t0, index_t tokens, index_t d_v, float scale, Scratch& s) {
  QueryTile tile;
  tile.t0 = t0;
  tile.tokens = tokens;
  tile.group = group;
  tile.rows = tokens * group;
  tile.d_k = q.dim();
  tile.d_v = d_v;
  s.q.resize(static_cast<size_t>(tile.rows * tile.d_k));
  for (index_t tok = 0; tok < tokens; ++tok)
    for (index_t g = 0; g < group; ++g) {
      const T* src = q.ptr(seq.batch, seq.start + t0 + tok, kv_head * group + g);
      float* dst = s.q.data() + (tok * group + g) * tile.d_k;
      for (index_t c = 0; c < tile.d_k; ++c) dst[c] = static_cast<float>(src[c]) * scale;
    }
  tile.q = s.q.data();
  return tile;
}

}  // namespace

QueryTile pack_queries(const TensorView<const float>& q, const SeqSpan& seq, index_t kv_head,
                       index_t group, index_t t0, index_t tokens, index_t d_v, float scale,
                       Scratch& s) {
  return pack(q, seq, kv_head, group, t0, tokens, d_v, scale, s);
}

QueryTile pack_queries(const TensorView<const bf16>& q, const SeqSpan& seq, index_t kv_head,
                       index_t group, index_t t0, index_t tokens, index_t d_v, float scale,
                       Scratch& s, bool pairs) {
  QueryTile tile = pack(q, seq, kv_head, group, t0, tokens, d_v, scale, s);
  if (!pairs) return tile;
  const index_t d_k = tile.d_k, np = (d_k + 1) / 2;
  s.q_pairs.resize(static_cast<size_t>(tile.rows * np));
  for (index_t tok = 0; tok < tokens; ++tok)
    for (index_t g = 0; g < group; ++g) {
      const bf16* src = q.ptr(seq.batch, seq.start + t0 + tok, kv_head * group + g);
      std::uint32_t* dst = s.q_pairs.data() + (tok * group + g) * np;
      std::memcpy(dst, src, static_cast<size_t>(d_k / 2) * 4);
      if (d_k % 2) dst[np - 1] = src[d_k - 1].bits;  // (q[d_k-1], 0)
    }
  tile.q_pairs = s.q_pairs.data();
  tile.scale = scale;
  return tile;
}

}  // namespace nsa::cpu
