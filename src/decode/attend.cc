// decode::attend_partial: the G query rows of one kv group against a few contiguous key
// ranges, one decode step, and its row kernel (attend_rows; the lanes kernel for large
// groups is attend_lanes.cc). Highway, compiled for every x86 target and dispatched at
// run time, on the forward's building blocks (cpu/attention_tile-inl.h):
//   scores   a chunk of keys transposed (TransposeTile), then ScoresFromTransposed
//   softmax  max, exp(s - max) and its sum per row, vectorised
//   P V      RowsTimesValues (ValueBlock: 4 rows x up to 4 vectors of d_v), values read
//            straight from the cache
// Both products walk the keys in chunks of kKeyTile, so each cache row comes from memory
// once per step and the G rows reuse it from cache. A bf16 cache's rows go through the
// bf16 pair dot product (vdpbf16ps, q and P rounded to bf16) where the CPU has it
// (cpu::bf16_dot_enabled), else they are widened to fp32 as read.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "decode/attend.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"
#include "decode/kernels.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

// Softmax numerators of one row in place: row[i] = exp(row[i] - max); returns {max, sum}.
inline void ExpRow(float* row, index_t n, float& m, float& l) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t nv = n - n % NL;
  auto vmax = hn::Set(d, kNegInf);
  for (index_t i = 0; i < nv; i += NL) vmax = hn::Max(vmax, hn::LoadU(d, row + i));
  float mx = hn::GetLane(hn::MaxOfLanes(d, vmax));
  for (index_t i = nv; i < n; ++i) mx = std::max(mx, row[i]);
  const auto vm = hn::Set(d, mx);
  auto vsum = hn::Zero(d);
  for (index_t i = 0; i < nv; i += NL) {
    const auto p = ExpSoftmax(d, hn::Sub(hn::LoadU(d, row + i), vm));
    vsum = hn::Add(vsum, p);
    hn::StoreU(p, d, row + i);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  for (index_t i = nv; i < n; ++i) {
    row[i] = std::exp(row[i] - mx);
    sum += row[i];
  }
  m = mx;
  l = sum;
}

// Software prefetch of rows [r0, r1) of a segment's keys (values): rows `ld` elements
// apart, `dim` used. A [T, H_kv, d] cache puts one kv head's rows a page apart at d = 128,
// H_kv = 8, where the hardware prefetchers stop; the next chunk is fetched while this one
// is computed.
template <class E>
inline void PrefetchRows(const E* base, index_t ld, index_t r0, index_t r1, index_t dim) {
  constexpr index_t kLine = 64 / sizeof(E);
  for (index_t r = r0; r < r1; ++r)
    for (index_t c = 0; c < dim; c += kLine) hwy::Prefetch(base + r * ld + c);
}

template <class E>  // stored element: float or bf16 (widened as read)
void AttendSegments(const float* q, float scale, index_t group, index_t d_k, index_t d_v,
                    const decode::Segment* segs, index_t nsegs, float* m, float* l, float* acc,
                    float* probs, index_t n) {
  // Scores probs [G, n], key-major in chunks of kKeyTile keys: the chunk is transposed
  // (kt [d_k, kKeyTile]) so that the G rows' scores need no horizontal sums.
  thread_local std::vector<float> qs, kt, S;  // per worker thread, grown once
  qs.resize(static_cast<size_t>(group * d_k));
  for (index_t i = 0; i < group * d_k; ++i) qs[i] = q[i] * scale;
  if (kt.size() < static_cast<size_t>(d_k * kKeyTile)) kt.resize(static_cast<size_t>(d_k * kKeyTile));
  if (S.size() < static_cast<size_t>(group * kKeyTile)) S.resize(static_cast<size_t>(group * kKeyTile));
  for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s)
    for (index_t c0 = 0; c0 < segs[s].count; c0 += kKeyTile) {
      const index_t cn = std::min(kKeyTile, segs[s].count - c0);
      PrefetchRows(static_cast<const E*>(segs[s].k), segs[s].ldk(d_k), c0 + cn,
                   std::min(segs[s].count, c0 + cn + kKeyTile), d_k);
      TransposeTile(static_cast<const E*>(segs[s].k), segs[s].ldk(d_k), c0, cn, d_k, kt.data());
      ScoresFromTransposed(qs.data(), group, d_k, kt.data(), 0, cn, nullptr, nullptr, S.data());
      for (index_t g = 0; g < group; ++g)
        std::copy(S.data() + g * kKeyTile, S.data() + g * kKeyTile + cn, probs + g * n + col + c0);
    }
  for (index_t g = 0; g < group; ++g) ExpRow(probs + g * n, n, m[g], l[g]);
  // acc [G, d_v] = P V, chunk by chunk.
  std::fill(acc, acc + group * d_v, 0.0f);
  for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s)
    for (index_t c0 = 0; c0 < segs[s].count; c0 += kKeyTile) {
      const index_t cn = std::min(kKeyTile, segs[s].count - c0);
      const index_t ldv = segs[s].ldv(d_v);
      PrefetchRows(static_cast<const E*>(segs[s].v), ldv, c0 + cn, std::min(segs[s].count, c0 + cn + kKeyTile), d_v);
      RowsTimesValues(probs + col + c0, n, group, cn, static_cast<const E*>(segs[s].v) + c0 * ldv, ldv, d_v, acc,
                      d_v);
    }
}

#if NSA_CPU_BF16_DOT
// AttendSegments over bf16 keys and values with the CPU's bf16 pair dot product
// (vdpbf16ps): q is rounded to bf16 pairs, each chunk of keys transposed into pairs
// (TransposePairs), scores = scale * PairsProduct; P V with P rounded to bf16
// (RowsTimesValuePairs). The forward's bf16 path, on the decode step's G rows.
NSA_CPU_BF16_DOT_ATTR void AttendSegmentPairs(const float* q, float scale, index_t group, index_t d_k,
                                              index_t d_v, const decode::Segment* segs, index_t nsegs,
                                              float* m, float* l, float* acc, float* probs, index_t n) {
  const index_t np = (d_k + 1) / 2;
  thread_local std::vector<std::uint32_t> qp, kt, vt, pp;
  thread_local std::vector<float> S;
  auto grow = [](auto& v, index_t size) {
    if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
  };
  grow(qp, group * np);
  grow(kt, np * kKeyTile);
  grow(vt, kKeyTile / 2 * d_v);
  grow(pp, group * kKeyTile / 2);
  grow(S, group * kKeyTile);
  for (index_t g = 0; g < group; ++g)
    for (index_t c = 0; c < np; ++c) {
      const float hi = 2 * c + 1 < d_k ? q[g * d_k + 2 * c + 1] : 0.0f;  // an odd d_k pairs with 0
      qp[g * np + c] = std::uint32_t{bf16(q[g * d_k + 2 * c]).bits} | std::uint32_t{bf16(hi).bits} << 16;
    }
  for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s)
    for (index_t c0 = 0; c0 < segs[s].count; c0 += kKeyTile) {
      const index_t cn = std::min(kKeyTile, segs[s].count - c0);
      PrefetchRows(static_cast<const bf16*>(segs[s].k), segs[s].ldk(d_k), c0 + cn,
                   std::min(segs[s].count, c0 + cn + kKeyTile), d_k);
      TransposePairs(static_cast<const bf16*>(segs[s].k), segs[s].ldk(d_k), c0, cn, d_k, kt.data());
      PairsProduct<false>(qp.data(), np, group, np, kt.data(), kKeyTile, (cn + 15) / 16 * 16, scale, S.data(),
                          kKeyTile);
      for (index_t g = 0; g < group; ++g)
        std::copy(S.data() + g * kKeyTile, S.data() + g * kKeyTile + cn, probs + g * n + col + c0);
    }
  for (index_t g = 0; g < group; ++g) ExpRow(probs + g * n, n, m[g], l[g]);
  std::fill(acc, acc + group * d_v, 0.0f);
  for (index_t s = 0, col = 0; s < nsegs; col += segs[s].count, ++s)
    for (index_t c0 = 0; c0 < segs[s].count; c0 += kKeyTile) {
      const index_t cn = std::min(kKeyTile, segs[s].count - c0);
      const index_t ldv = segs[s].ldv(d_v);
      PrefetchRows(static_cast<const bf16*>(segs[s].v), ldv, c0 + cn, std::min(segs[s].count, c0 + cn + kKeyTile), d_v);
      RowsTimesValuePairs(probs + col + c0, n, group, cn, static_cast<const bf16*>(segs[s].v) + c0 * ldv, ldv,
                          d_v, acc, d_v, vt.data(), pp.data());
    }
}
#endif

// bf16_pairs: the caller found bf16_dot_enabled() (only AVX-512 targets have the code).
void DecodeAttendPartial(const float* q, float scale, index_t group, index_t d_k, index_t d_v,
                         bool bf16_storage, bool bf16_pairs, const decode::Segment* segs, index_t nsegs,
                         float* m, float* l, float* acc, float* probs, index_t n) {
#if NSA_CPU_BF16_DOT
  if (bf16_storage && bf16_pairs)
    return AttendSegmentPairs(q, scale, group, d_k, d_v, segs, nsegs, m, l, acc, probs, n);
#else
  (void)bf16_pairs;
#endif
  if (bf16_storage)
    AttendSegments<bf16>(q, scale, group, d_k, d_v, segs, nsegs, m, l, acc, probs, n);
  else
    AttendSegments<float>(q, scale, group, d_k, d_v, segs, nsegs, m, l, acc, probs, n);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(DecodeAttendPartial);
}  // namespace nsa::cpu

namespace nsa::decode {

namespace {
std::atomic<AttendPath> g_path{AttendPath::automatic};
}  // namespace

void set_attend_path(AttendPath path) { g_path.store(path); }
AttendPath attend_path() { return g_path.load(std::memory_order_relaxed); }

void attend_rows(const float* q, float scale, index_t group, index_t d_k, index_t d_v, CacheStorage storage,
                 const Segment* segs, index_t nsegs, float* m, float* l, float* acc, float* probs, index_t n) {
  const bool b16 = storage == CacheStorage::bf16;
  HWY_DYNAMIC_DISPATCH(cpu::DecodeAttendPartial)(q, scale, group, d_k, d_v, b16, b16 && cpu::bf16_dot_enabled(),
                                                 segs, nsegs, m, l, acc, probs, n);
}

void attend_partial(const float* q, float scale, index_t group, index_t d_k, index_t d_v,
                    CacheStorage storage, const Segment* segs, index_t nsegs, cpu::SoftmaxState& state,
                    std::vector<float>* probs) {
  index_t n = 0;
  for (index_t s = 0; s < nsegs; ++s) n += segs[s].count;
  if (probs != nullptr) probs->resize(static_cast<size_t>(group * n));
  state.reset(group, d_v);
  if (n == 0) return;
  float *m = state.m.data(), *l = state.l.data(), *acc = state.acc.data();
  const AttendPath path = attend_path();
  if (path == AttendPath::lanes || (path == AttendPath::automatic && group >= kLanesMinGroup)) {
    attend_lanes(q, scale, group, d_k, d_v, storage, segs, nsegs, m, l, acc, probs ? probs->data() : nullptr, n);
    return;
  }
  // The row kernel works in a probabilities buffer whether or not the caller keeps them.
  thread_local std::vector<float> own;
  std::vector<float>& buf = probs != nullptr ? *probs : own;
  buf.resize(static_cast<size_t>(group * n));
  attend_rows(q, scale, group, d_k, d_v, storage, segs, nsegs, m, l, acc, buf.data(), n);
}

}  // namespace nsa::decode
#endif
