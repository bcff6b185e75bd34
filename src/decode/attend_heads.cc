// decode::attend_heads: every kv head of a [T, H_kv, d] cache (the layout of
// dense_decode_step's K and V) against its G query rows, over keys [t0, t1), walking the
// cache in memory order. Per chunk of kHeadsChunk tokens (H_kv * kHeadsChunk contiguous
// rows), each head's rows are scored in place (ScoresInPlace: no transposed copy), folded
// into that head's online-softmax state (SoftmaxRescale) and multiplied into its values
// (RowsTimesValues): one pass over K and V together, so the hardware prefetchers see one
// forward stream of each instead of H_kv streams a row apart (4 KiB at H_kv = 8, d = 128,
// where they give up). Highway, compiled per x86 target and dispatched at run time.
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

// Tokens per chunk: 16 rows of one head stay in L1 between the two products (measured on
// Zen 3 at H_kv = 8, d = 128: 16 beat 32 and 64 by 10-40%).
inline constexpr index_t kHeadsChunk = 16;

template <class E>
void AttendHeads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v, const E* k,
                 const E* v, index_t t0, index_t t1, SoftmaxState* states) {
  thread_local std::vector<float> S;
  if (S.size() < static_cast<size_t>(group * kKeyTile)) S.resize(static_cast<size_t>(group * kKeyTile));
  const index_t ldk = kv_heads * d_k, ldv = kv_heads * d_v;
  for (index_t c0 = t0; c0 < t1; c0 += kHeadsChunk) {
    const index_t cn = std::min(kHeadsChunk, t1 - c0);
    for (index_t h = 0; h < kv_heads; ++h) {
      SoftmaxState& st = states[h];
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
