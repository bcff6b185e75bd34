// decode::attend_heads: every kv head of a [T, H_kv, d] cache (the layout of
// dense_decode_step's K and V) against its G query rows, over keys [t0, t1), walking the
// cache in memory order. Per chunk of tokens (H_kv * chunk contiguous rows), the chunk's
// keys and values are copied in memory order into one contiguous fp32 block per kv head
// (PackChunk), then each head's rows are scored in place (ScoresInPlace), folded into that
// head's online-softmax state (SoftmaxRescale) and multiplied into its values
// (RowsTimesValues). Why the copy: read where they lie, a head's rows are H_kv * d apart
// (4 KiB at H_kv = 8, d = 128), so a chunk's rows of one head share a few L1 sets and
// evict each other between the products, and the prefetchers see H_kv strided streams.
// On a Zen 3 core, T = 32768, one thread: 8 / 8 / 128 (G = 8) 184-230 ns per kv head and
// key with the copy against 218-342 without, G = 4 166-189 against 188-257, 16 / 16 / 64
// 65-78 against 74-86; a software prefetch of the next chunk made each slower. Two threads,
// T = 65536: bench/results/decode_packed_zen3.txt. Highway, compiled per x86 target and
// dispatched at run time.
#include <algorithm>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "decode/attend_heads.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"
#include "decode/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

// Tokens per chunk: chunks of all kv heads' rows span about kHeadsChunkBytes of keys
// (16 fp32 rows at H_kv = 8, d = 128; 32 bf16 ones), 16 to 32 rows.
inline constexpr index_t kHeadsChunkBytes = 65536;
template <class E>
index_t heads_chunk(index_t kv_heads, index_t d_k) {
  const index_t rows = kHeadsChunkBytes / (kv_heads * d_k * static_cast<index_t>(sizeof(E)));
  return std::clamp<index_t>(rows / 16 * 16, 16, 32);
}

// The chunk x [n, kv_heads, dim] (E elements, rows of kv_heads * dim) -> out [kv_heads, n,
// dim] fp32: read in memory order, one forward stream, and each head's rows made
// contiguous (bf16 widened once here, not once per query row block).
template <class E>
void PackChunk(const E* x, index_t n, index_t kv_heads, index_t dim, float* out) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d)), Dv = dim - dim % NL;
  for (index_t j = 0; j < n; ++j)
    for (index_t h = 0; h < kv_heads; ++h) {
      const E* row = x + (j * kv_heads + h) * dim;
      float* o = out + (h * n + j) * dim;
      index_t c = 0;
      for (; c < Dv; c += NL) hn::StoreU(LoadF32(d, row + c), d, o + c);
      for (; c < dim; ++c) o[c] = ToFloat(row[c]);
    }
}

template <class E>
void AttendHeads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v, const E* k,
                 const E* v, index_t t0, index_t t1, SoftmaxState* states) {
  thread_local std::vector<float> S, kp, vp;
  const index_t chunk = heads_chunk<E>(kv_heads, d_k);
  auto grow = [](std::vector<float>& x, index_t n) {
    if (x.size() < static_cast<size_t>(n)) x.resize(static_cast<size_t>(n));
  };
  grow(S, group * kKeyTile);
  grow(kp, kv_heads * chunk * d_k);
  grow(vp, kv_heads * chunk * d_v);
  for (index_t c0 = t0; c0 < t1; c0 += chunk) {
    const index_t cn = std::min(chunk, t1 - c0);
    PackChunk(k + c0 * kv_heads * d_k, cn, kv_heads, d_k, kp.data());
    PackChunk(v + c0 * kv_heads * d_v, cn, kv_heads, d_v, vp.data());
    for (index_t h = 0; h < kv_heads; ++h) {
      SoftmaxState& st = states[h];
      ScoresInPlace(q + h * group * d_k, group, d_k, kp.data() + h * cn * d_k, d_k, cn, S.data());
      SoftmaxRescale(S.data(), group, cn, st, 0);
      RowsTimesValues(S.data(), kKeyTile, group, cn, vp.data() + h * cn * d_v, d_v, d_v, st.acc.data(), d_v);
    }
  }
}

void DecodeAttendHeads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v,
                       bool bf16_storage, const void* k, const void* v, index_t t0, index_t t1,
                       SoftmaxState* states) {
  if (bf16_storage)
    AttendHeads(q, kv_heads, group, d_k, d_v, static_cast<const bf16*>(k), static_cast<const bf16*>(v), t0, t1,
                states);
  else
    AttendHeads(q, kv_heads, group, d_k, d_v, static_cast<const float*>(k), static_cast<const float*>(v), t0, t1,
                states);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(DecodeAttendHeads);
}  // namespace nsa::cpu

namespace nsa::decode {

void attend_heads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v,
                  CacheStorage storage, const void* k, const void* v, index_t t0, index_t t1,
                  cpu::SoftmaxState* states) {
  HWY_DYNAMIC_DISPATCH(cpu::DecodeAttendHeads)(q, kv_heads, group, d_k, d_v, storage == CacheStorage::bf16, k, v,
                                               t0, t1, states);
}

}  // namespace nsa::decode
#endif
