// decode::attend_lanes: attend_partial with the group's query heads as the lanes of a
// vector (16 fp32 on AVX-512, 8 on AVX2), for groups of many heads (the paper's G = 16).
// The row kernel (attend.cc) transposes every chunk of keys so that its G rows' scores
// need no horizontal sums; here nothing of the cache is transposed:
//   scores   S[j] (a vector over heads) = sum_c k[j][c] * qT[c], qT [d_k, NL] the heads'
//            queries transposed once per call, each key element broadcast; 8 keys at a
//            time (8 accumulators, each qT vector loaded once for the 8)
//   softmax  online over chunks of kChunk keys, per lane (running max m, sum l)
//   P V      accT[c] (a vector over heads) += v[j][c] * p[j], each value element
//            broadcast; kCols columns at a time
// Heads in blocks of NL lanes; lanes past G hold q = 0 and are dropped. Each key and value
// element is read from memory once per head block, and a broadcast FMA is one load and
// one FMA: the loop runs at the FMA rate instead of waiting on transposes.
// bf16 caches: scores with vdpbf16ps (pairs of key elements broadcast against pairs of
// the heads' rounded queries) where the CPU has it, else widened; P V in fp32, each
// broadcast bf16 value widened.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "decode/attend_lanes.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"
#include "decode/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

constexpr index_t kChunk = 64;                        // keys per online-softmax step
constexpr int kKeys = 8;                              // keys per score block
// Prefetch distance in keys, into L1 (measured: 16 and 32 keys slower on the dense step
// at T = 65536; into L2 only, _MM_HINT_T1, slower too: 4.7 -> 5.0 ms on one thread).
constexpr index_t kPrefetchKeys = 64;

// Rows a fixed distance ahead in the concatenation of the segments, for software
// prefetching: the hardware prefetchers lose the stream at every segment (a selection
// block is 64 keys), and a fixed distance inside one segment would fetch rows the next
// segment does not need. Keys asked for never decrease, so the cursor only moves forward.
class Ahead {
 public:
  Ahead(const decode::Segment* segs, index_t nsegs, bool values) : segs_(segs), nsegs_(nsegs), values_(values) {}
  // Row `key` of the concatenated segments (rows of dim elements of E, at the segment's
  // stride), null past the end.
  template <class E>
  const E* row(index_t key, index_t dim) {
    while (s_ < nsegs_ && key >= base_ + segs_[s_].count) base_ += segs_[s_++].count;
    if (s_ >= nsegs_) return nullptr;
    const decode::Segment& seg = segs_[s_];
    return static_cast<const E*>(values_ ? seg.v : seg.k) + (key - base_) * (values_ ? seg.ldv(dim) : seg.ldk(dim));
  }

 private:
  const decode::Segment* segs_;
  index_t nsegs_;
  bool values_;
  index_t s_ = 0, base_ = 0;
};
constexpr int kCols = HWY_MAX_BYTES >= 64 ? 16 : 8;  // value columns per P V block

// ST [cn, NL] = scores of keys k[0 .. cn) (rows of d_k elements, ldk apart; bf16 widened)
// against qT [d_k, NL]. A short last block re-reads the last key (clamped), drops the duplicates.
// Key j is key0 + j of the concatenated segments: rows kPrefetchKeys further are prefetched.
template <class D, class E>
HWY_INLINE void LaneScores(D d, const E* k, index_t ldk, index_t cn, index_t d_k, const float* qT, float* ST,
                           Ahead& ahead, index_t key0) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  for (index_t j0 = 0; j0 < cn; j0 += kKeys) {
    const E* kr[kKeys];
    const E* pf[kKeys];
    for (int x = 0; x < kKeys; ++x) {
      kr[x] = k + std::min<index_t>(j0 + x, cn - 1) * ldk;
      pf[x] = ahead.row<E>(key0 + j0 + x + kPrefetchKeys, d_k);
      if (pf[x] == nullptr) pf[x] = kr[x];  // past the end: a row already in cache
    }
    hn::Vec<D> a[kKeys];
#pragma GCC unroll 8
    for (int x = 0; x < kKeys; ++x) a[x] = hn::Zero(d);
    for (index_t c = 0; c < d_k; ++c) {
      if (c % 16 == 0)
        for (int x = 0; x < kKeys; ++x) hwy::Prefetch(pf[x] + c);
      const auto qv = hn::LoadU(d, qT + c * NL);
#pragma GCC unroll 8
      for (int x = 0; x < kKeys; ++x) a[x] = hn::MulAdd(hn::Set(d, ToFloat(kr[x][c])), qv, a[x]);
    }
    for (int x = 0; x < kKeys && j0 + x < cn; ++x) hn::StoreU(a[x], d, ST + (j0 + x) * NL);
  }
}

// One chunk's softmax step on ST [cn, NL] (scores in, p = exp(s - m_new) out): m, l the
// running max and sum per lane, accT [d_v, NL] rescaled by exp(m_old - m_new).
template <class D>
HWY_INLINE void LaneSoftmax(D d, float* ST, index_t cn, hn::Vec<D>& m, hn::Vec<D>& l, float* accT, index_t d_v) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const auto neg_inf = hn::Set(d, kNegInf);
  auto cmax = neg_inf;
  for (index_t j = 0; j < cn; ++j) cmax = hn::Max(cmax, hn::LoadU(d, ST + j * NL));
  const auto m_new = hn::Max(m, cmax);
  const auto alpha = hn::IfThenElseZero(hn::Ne(m, neg_inf), ExpSoftmax(d, hn::Sub(m, m_new)));
  l = hn::Mul(l, alpha);
  for (index_t c = 0; c < d_v; ++c) hn::StoreU(hn::Mul(hn::LoadU(d, accT + c * NL), alpha), d, accT + c * NL);
  for (index_t j = 0; j < cn; ++j) {
    const auto p = ExpSoftmax(d, hn::Sub(hn::LoadU(d, ST + j * NL), m_new));
    l = hn::Add(l, p);
    hn::StoreU(p, d, ST + j * NL);
  }
  m = m_new;
}

// accT[c0 + y] += sum_j v[j][c0 + y] * P[j] for y < CB: CB accumulators, each P vector
// loaded once for the CB columns. E = bf16 widens each broadcast element (two per load).
// pf: rows to prefetch (for the first column block only), one per key, may be null.
template <int CB, class D, class E>
HWY_INLINE void LaneValues(D d, const float* P, index_t cn, const E* v, index_t ldv, index_t d_v, index_t c0,
                           float* accT, const E* const* pf) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  hn::Vec<D> a[CB];
#pragma GCC unroll 16
  for (int y = 0; y < CB; ++y) a[y] = hn::LoadU(d, accT + (c0 + y) * NL);
  for (index_t j = 0; j < cn; ++j) {
    const auto pv = hn::LoadU(d, P + j * NL);
    const E* vr = v + j * ldv + c0;
    if (pf != nullptr && pf[j] != nullptr)
      for (index_t c = 0; c < d_v; c += 64 / static_cast<index_t>(sizeof(E))) hwy::Prefetch(pf[j] + c);
    if constexpr (std::is_same_v<E, bf16> && CB % 2 == 0) {
      // Two bf16 values per 32-bit broadcast; the even one shifted into place, the odd one
      // masked (a bf16 is the upper half of its float).
      const hn::RebindToUnsigned<D> du;
      const auto upper = hn::Set(du, 0xFFFF0000u);
#pragma GCC unroll 8
      for (int y = 0; y < CB; y += 2) {
        std::uint32_t pair;
        std::memcpy(&pair, vr + y, 4);
        const auto both = hn::Set(du, pair);
        a[y] = hn::MulAdd(hn::BitCast(d, hn::ShiftLeft<16>(both)), pv, a[y]);
        a[y + 1] = hn::MulAdd(hn::BitCast(d, hn::And(both, upper)), pv, a[y + 1]);
      }
    } else {
#pragma GCC unroll 16
      for (int y = 0; y < CB; ++y) a[y] = hn::MulAdd(hn::Set(d, ToFloat(vr[y])), pv, a[y]);
    }
  }
#pragma GCC unroll 16
  for (int y = 0; y < CB; ++y) hn::StoreU(a[y], d, accT + (c0 + y) * NL);
}

// All d_v columns of values ldv apart; value j is key0 + j of the concatenated segments
// (prefetch as LaneScores).
template <class D, class E>
HWY_INLINE void LaneValuesAll(D d, const float* P, index_t cn, const E* v, index_t ldv, index_t d_v, float* accT,
                              Ahead& ahead, index_t key0) {
  const E* pf[kChunk];
  for (index_t j = 0; j < cn; ++j) pf[j] = ahead.row<E>(key0 + j + kPrefetchKeys, d_v);
  index_t c = 0;
  const E* const* first = pf;  // the whole rows are prefetched during the first block
  for (; c + kCols <= d_v; c += kCols, first = nullptr) LaneValues<kCols>(d, P, cn, v, ldv, d_v, c, accT, first);
  for (; c + 4 <= d_v; c += 4, first = nullptr) LaneValues<4>(d, P, cn, v, ldv, d_v, c, accT, first);
  for (; c < d_v; ++c, first = nullptr) LaneValues<1>(d, P, cn, v, ldv, d_v, c, accT, first);
}

#if NSA_CPU_BF16_DOT
// LaneScores over bf16 keys with vdpbf16ps: qTp [ceil(d_k/2), 16] the heads' bf16 query
// pairs, each 32-bit pair of a key row broadcast against them (an odd d_k's last element
// in fp32 against q_last [16]); times scale.
NSA_CPU_BF16_DOT_ATTR inline void LaneScorePairs(const bf16* k, index_t ldk, index_t cn, index_t d_k,
                                                 const std::uint32_t* qTp,
                                                 const float* q_last, float scale, float* ST, Ahead& ahead,
                                                 index_t key0) {
  const index_t whole = d_k / 2;
  const __m512 vs = _mm512_set1_ps(scale);
  for (index_t j0 = 0; j0 < cn; j0 += kKeys) {
    const bf16* kr[kKeys];
    const bf16* pf[kKeys];
    for (int x = 0; x < kKeys; ++x) {
      kr[x] = k + std::min<index_t>(j0 + x, cn - 1) * ldk;
      pf[x] = ahead.row<bf16>(key0 + j0 + x + kPrefetchKeys, d_k);
      if (pf[x] == nullptr) pf[x] = kr[x];
    }
    __m512 a[kKeys];
#pragma GCC unroll 8
    for (int x = 0; x < kKeys; ++x) a[x] = _mm512_setzero_ps();
    for (index_t c = 0; c < whole; ++c) {
      if (c % 16 == 0)  // 16 pairs: one cache line
        for (int x = 0; x < kKeys; ++x) hwy::Prefetch(pf[x] + 2 * c);
      const __m512bh qv = (__m512bh)_mm512_loadu_si512(qTp + c * 16);
#pragma GCC unroll 8
      for (int x = 0; x < kKeys; ++x) {
        std::uint32_t pair;
        std::memcpy(&pair, kr[x] + 2 * c, 4);
        a[x] = _mm512_dpbf16_ps(a[x], (__m512bh)_mm512_set1_epi32(static_cast<int>(pair)), qv);
      }
    }
    if (d_k % 2) {
      const __m512 ql = _mm512_loadu_ps(q_last);
      for (int x = 0; x < kKeys; ++x) a[x] = _mm512_fmadd_ps(_mm512_set1_ps(static_cast<float>(kr[x][d_k - 1])), ql, a[x]);
    }
    for (int x = 0; x < kKeys && j0 + x < cn; ++x) _mm512_storeu_ps(ST + (j0 + x) * 16, _mm512_mul_ps(a[x], vs));
  }
}
#endif

// Rows 0 .. heads-1 of P (row g at p + g * n, columns 0 .. cn-1) = ST [cn, NL] transposed:
// 16 x 16 blocks in registers on AVX-512, element by element elsewhere.
template <class D>
HWY_INLINE void TransposeOut(D d, const float* ST, index_t cn, index_t heads, float* p, index_t n) {
#if NSA_CPU_AVX512
  if (hn::Lanes(d) == 16) {
    for (index_t j0 = 0; j0 < cn; j0 += 16) {
      const index_t k = std::min<index_t>(16, cn - j0);
      __m512i r[16], o[16];
      for (index_t i = 0; i < 16; ++i)
        r[i] = i < k ? _mm512_loadu_si512(ST + (j0 + i) * 16) : _mm512_setzero_si512();
      Transpose16x16(r, o);
      const auto mask = static_cast<__mmask16>((1u << k) - 1u);
      for (index_t g = 0; g < heads; ++g) _mm512_mask_storeu_epi32(p + g * n + j0, mask, o[g]);
    }
    return;
  }
#endif
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  for (index_t j = 0; j < cn; ++j)
    for (index_t g = 0; g < heads; ++g) p[g * n + j] = ST[j * NL + g];
}

// The whole call for one block of heads h0 .. h0 + NL - 1 (those < G are real). E is the
// stored element; pairs: bf16 scores by vdpbf16ps (AVX-512 targets, E = bf16).
template <class E>
void AttendHeadBlock(const float* q, float scale, index_t group, index_t h0, index_t d_k, index_t d_v,
                     const decode::Segment* segs, index_t nsegs, bool pairs, float* m, float* l, float* acc,
                     float* probs, index_t n) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t heads = std::min(NL, group - h0);
  thread_local std::vector<float> qT, ST, accT, chunk_m, q_last;
  thread_local std::vector<std::uint32_t> qTp;
  qT.assign(static_cast<size_t>(d_k * NL), 0.0f);
  for (index_t g = 0; g < heads; ++g)
    for (index_t c = 0; c < d_k; ++c) qT[c * NL + g] = q[(h0 + g) * d_k + c] * scale;
#if NSA_CPU_BF16_DOT
  if (pairs) {  // the heads' queries rounded to bf16, in pairs: qTp [ceil(d_k/2), 16]
    const index_t np = (d_k + 1) / 2;
    qTp.assign(static_cast<size_t>(np * 16), 0u);
    q_last.assign(16, 0.0f);
    for (index_t g = 0; g < heads; ++g) {
      const float* qg = q + (h0 + g) * d_k;
      for (index_t c = 0; c < d_k / 2; ++c)
        qTp[c * 16 + g] = std::uint32_t{bf16(qg[2 * c]).bits} | std::uint32_t{bf16(qg[2 * c + 1]).bits} << 16;
      if (d_k % 2) q_last[g] = static_cast<float>(bf16(qg[d_k - 1]));
    }
  }
#else
  (void)pairs;
#endif
  if (ST.size() < static_cast<size_t>(kChunk * NL)) ST.resize(static_cast<size_t>(kChunk * NL));
  accT.assign(static_cast<size_t>(d_v * NL), 0.0f);
  chunk_m.clear();
  auto vm = hn::Set(d, kNegInf), vl = hn::Zero(d);
  Ahead ahead_k(segs, nsegs, false), ahead_v(segs, nsegs, true);
  for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s) {
    const E* k = static_cast<const E*>(segs[s].k);
    const E* v = static_cast<const E*>(segs[s].v);
    const index_t ldk = segs[s].ldk(d_k), ldv = segs[s].ldv(d_v);
    for (index_t c0 = 0; c0 < segs[s].count; c0 += kChunk) {
      const index_t cn = std::min(kChunk, segs[s].count - c0);
#if NSA_CPU_BF16_DOT
      if constexpr (std::is_same_v<E, bf16>) {
        if (pairs) {
          LaneScorePairs(k + c0 * ldk, ldk, cn, d_k, qTp.data(), q_last.data(), scale, ST.data(), ahead_k, col + c0);
        } else {
          LaneScores(d, k + c0 * ldk, ldk, cn, d_k, qT.data(), ST.data(), ahead_k, col + c0);
        }
      } else {
        LaneScores(d, k + c0 * ldk, ldk, cn, d_k, qT.data(), ST.data(), ahead_k, col + c0);
      }
#else
      LaneScores(d, k + c0 * ldk, ldk, cn, d_k, qT.data(), ST.data(), ahead_k, col + c0);
#endif
      LaneSoftmax(d, ST.data(), cn, vm, vl, accT.data(), d_v);
      if (probs != nullptr) {  // p relative to this chunk's max; rescaled at the end
        TransposeOut(d, ST.data(), cn, heads, probs + h0 * n + col + c0, n);
        chunk_m.resize(chunk_m.size() + NL);
        hn::StoreU(vm, d, chunk_m.data() + chunk_m.size() - NL);
      }
      LaneValuesAll(d, ST.data(), cn, v + c0 * ldv, ldv, d_v, accT.data(), ahead_v, col + c0);
    }
  }
  float mv[64], lv[64];  // >= NL on every target
  hn::StoreU(vm, d, mv);
  hn::StoreU(vl, d, lv);
  for (index_t g = 0; g < heads; ++g) {
    m[h0 + g] = mv[g];
    l[h0 + g] = lv[g];
    for (index_t c = 0; c < d_v; ++c) acc[(h0 + g) * d_v + c] = accT[c * NL + g];
  }
  if (probs != nullptr) {
    index_t chunk = 0;
    for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s)
      for (index_t c0 = 0; c0 < segs[s].count; c0 += kChunk, ++chunk) {
        const index_t cn = std::min(kChunk, segs[s].count - c0);
        for (index_t g = 0; g < heads; ++g) {
          const float f = std::exp(chunk_m[chunk * NL + g] - mv[g]);
          float* row = probs + (h0 + g) * n + col + c0;
          for (index_t j = 0; j < cn; ++j) row[j] *= f;
        }
      }
  }
}

// bf16_pairs: the caller found bf16_dot_enabled() (only AVX-512 targets have the code).
void DecodeAttendLanes(const float* q, float scale, index_t group, index_t d_k, index_t d_v, bool bf16_storage,
                       bool bf16_pairs, const decode::Segment* segs, index_t nsegs, float* m, float* l, float* acc, float* probs,
                       index_t n) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  for (index_t h0 = 0; h0 < group; h0 += NL) {
    if (bf16_storage)
      AttendHeadBlock<bf16>(q, scale, group, h0, d_k, d_v, segs, nsegs, bf16_pairs, m, l, acc, probs, n);
    else
      AttendHeadBlock<float>(q, scale, group, h0, d_k, d_v, segs, nsegs, false, m, l, acc, probs, n);
  }
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(DecodeAttendLanes);
}  // namespace nsa::cpu

namespace nsa::decode {

void attend_lanes(const float* q, float scale, index_t group, index_t d_k, index_t d_v, CacheStorage storage,
                  const Segment* segs, index_t nsegs, float* m, float* l, float* acc, float* probs, index_t n) {
  const bool b16 = storage == CacheStorage::bf16;
  HWY_DYNAMIC_DISPATCH(cpu::DecodeAttendLanes)(q, scale, group, d_k, d_v, b16, b16 && cpu::bf16_dot_enabled(),
                                               segs, nsegs, m, l, acc, probs, n);
}

}  // namespace nsa::decode
#endif
