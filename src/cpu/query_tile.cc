// pack_queries: gathers one query tile (tokens x the G heads of a kv group) from the
// strided q view into a contiguous [rows, d_k] block, pre-multiplied by the softmax scale,
// so every branch reads its queries with unit stride and never multiplies a score again.
#include "cpu/kernels.h"

namespace nsa::cpu {

QueryTile pack_queries(const TensorView<const float>& q, const SeqSpan& seq, index_t kv_head,
                       index_t group, index_t t0, index_t tokens, index_t d_v, float scale,
                       Scratch& s) {
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
      const float* src = q.ptr(seq.batch, seq.start + t0 + tok, kv_head * group + g);
      float* dst = s.q.data() + (tok * group + g) * tile.d_k;
      for (index_t c = 0; c < tile.d_k; ++c) dst[c] = src[c] * scale;
    }
  tile.q = s.q.data();
  return tile;
}

}  // namespace nsa::cpu
