// decode::attend_heads: every kv head of a [T, H_kv, d] cache (the layout of
// dense_decode_step's K and V) against its G query rows, over keys [t0, t1), walking the
// cache in memory order. Per chunk of tokens (H_kv * chunk contiguous
// rows), each head's rows are scored in place (ScoresInPlace: no transposed copy), folded
// into that head's online-softmax state (SoftmaxRescale) and multiplied into its values
// (RowsTimesValues): one pass over K and V together, so the hardware prefetchers see one
// forward stream of each instead of H_kv streams a row apart (4 KiB at H_kv = 8, d = 128,
// where they give up). Highway, compiled per x86 target and dispatched at run time.
#include <algorithm>
#include <type_traits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "decode/attend_heads.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"
#include "decode/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

// Tokens per chunk: chunks of all kv heads' rows span about kHeadsChunkBytes of keys
// (16 fp32 rows at H_kv = 8, d = 128; 32 bf16 ones), 16 to 32 rows. Measured at
// T = 65536: on Zen 3 at H_kv = 8, d = 128, fp32, 16 rows beat 32 and 64 by 10-40%; on an
// Intel Xeon (Emerald Rapids), one thread, a bf16 cache at that shape took 26 ns per query
// row and key with 16 rows, 18 with 32 (the fp32 chunk's bytes), 19 with 64; at H_kv = 4,
// G = 7 32 and 16 rows tied and 64 lost 12%.
inline constexpr index_t kHeadsChunkBytes = 65536;
template <class E>
index_t heads_chunk(index_t kv_heads, index_t d_k) {
  const index_t rows = kHeadsChunkBytes / (kv_heads * d_k * static_cast<index_t>(sizeof(E)));
  return std::clamp<index_t>(rows / 16 * 16, 16, 32);
}

// A bf16 chunk's rows sit two to a 4 KiB page at llama3-8b's shape, a pattern the hardware
// prefetchers follow less well than the fp32 one: while head h of a chunk is computed, its
// share (1 / H_kv) of the next chunk's K and V lines is prefetched in memory order (on an
// Intel Xeon, one thread, T = 65536: 10-15% faster at G = 1 and 4; for fp32 it was 5-20%
// slower, so fp32 leaves it to the hardware).
template <class E>
void PrefetchShare(const E* next, index_t rows, index_t ld, index_t h, index_t kv_heads) {
  const char* p = reinterpret_cast<const char*>(next);
  const index_t bytes = rows * ld * static_cast<index_t>(sizeof(E));
  for (index_t b = h * bytes / kv_heads / 64 * 64; b < (h + 1) * bytes / kv_heads; b += 64) hwy::Prefetch(p + b);
}

template <class E>
void AttendHeads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v, const E* k,
                 const E* v, index_t t0, index_t t1, SoftmaxState* states) {
  thread_local std::vector<float> S;
  if (S.size() < static_cast<size_t>(group * kKeyTile)) S.resize(static_cast<size_t>(group * kKeyTile));
  const index_t ldk = kv_heads * d_k, ldv = kv_heads * d_v, chunk = heads_chunk<E>(kv_heads, d_k);
  for (index_t c0 = t0; c0 < t1; c0 += chunk) {
    const index_t cn = std::min(chunk, t1 - c0), next = std::min(chunk, t1 - c0 - cn);
    for (index_t h = 0; h < kv_heads; ++h) {
      SoftmaxState& st = states[h];
      if (std::is_same_v<E, bf16> && next > 0) {
        PrefetchShare(k + (c0 + cn) * ldk, next, ldk, h, kv_heads);
        PrefetchShare(v + (c0 + cn) * ldv, next, ldv, h, kv_heads);
      }
      ScoresInPlace(q + h * group * d_k, group, d_k, k + c0 * ldk + h * d_k, ldk, cn, S.data());
      SoftmaxRescale(S.data(), group, cn, st, 0);
      RowsTimesValues(S.data(), kKeyTile, group, cn, v + c0 * ldv + h * d_v, ldv, d_v, st.acc.data(), d_v);
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
