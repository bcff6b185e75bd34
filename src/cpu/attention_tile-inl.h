// Per-target SIMD building blocks of every CPU attention kernel (Highway, compiled once
// per target by each including .cc through foreach_target.h):
//   MatMulABt      C = A B^T, register-blocked 4 rows x 2 columns (dot products along dim)
//   TransposeTile, ScoresFromTransposed
//                  a key tile transposed once, and scores of query rows against it
//                  (vectorised along keys; the backward reuses one transpose for many rows)
//   ScoreTile      the two together: scores of query rows against one tile of keys, masked
//   ScoresInPlace  scores of a few rows against keys read where they lie (decode steps)
//   SoftmaxRescale, AccumulateValues
//                  fold one score tile into a SoftmaxState (online softmax, then P V)
//   AttendRange    the flash-attention loop: rows against keys [key0, key1), tile by tile
// Keys and values are float or bf16 (KeyValuesT<T>). bf16 is widened to fp32 as it is
// read, except on AVX-512 targets when the tile carries q_pairs (bf16_dot_enabled()):
// then the two products use the CPU's bf16 pair dot product, vdpbf16ps (the "Pairs"
// functions at the end: same tiles, same online softmax, fp32 accumulation).
// Reductions stay in a fixed order, so results are bitwise reproducible for a given target.

// Per-target include guard (Highway's idiom): re-included once per target.
#if defined(NSA_CPU_ATTENTION_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef NSA_CPU_ATTENTION_TILE_INL_H_
#undef NSA_CPU_ATTENTION_TILE_INL_H_
#else
#define NSA_CPU_ATTENTION_TILE_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for a softmax numerator, x = score - max <= 0, in 12 vector operations instead of
// the ~25 of Highway's Exp (which handles every x): n = round(x log2 e), r = x - n ln 2
// (two-constant Cody-Waite: n ln2_hi is exact), e^r by its Taylor series to r^6 (|r| <=
// ln 2 / 2: truncation below 1.3e-7 relative), times 2^n through the exponent bits. x = 0
// gives exactly 1; x below -86 (and -inf) gives exp(-86) ~ 4e-38, never a denormal: a
// softmax whose largest term is 1 cannot tell. Measured: exp was 8% of the fp32 NSA forward
// at T = 8192 and 14% of the bf16 one.
template <class D>
HWY_INLINE hn::Vec<D> ExpSoftmax(D d, hn::Vec<D> x) {
  const hn::RebindToSigned<D> di;
  x = hn::Max(x, hn::Set(d, -86.0f));
  const auto n = hn::Round(hn::Mul(x, hn::Set(d, 1.44269504088896341f)));
  auto r = hn::NegMulAdd(n, hn::Set(d, 0.693145751953125f), x);
  r = hn::NegMulAdd(n, hn::Set(d, 1.428606765330187e-06f), r);
  auto p = hn::Set(d, 1.0f / 720.0f);
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 120.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 24.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 6.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.5f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  const auto two_n = hn::ShiftLeft<23>(hn::ConvertTo(di, n));
  return hn::BitCast(d, hn::Add(hn::BitCast(di, p), two_n));
}

// fp32 value of a stored element, scalar and one vector of lanes (bf16: exact widening).
inline float ToFloat(float x) { return x; }
inline float ToFloat(bf16 x) { return static_cast<float>(x); }
template <class D>
HWY_INLINE hn::Vec<D> LoadF32(D d, const float* p) {
  return hn::LoadU(d, p);
}
template <class D>
HWY_INLINE hn::Vec<D> LoadF32(D d, const bf16* p) {
  const hn::RebindToUnsigned<D> du32;
  const hn::Rebind<std::uint16_t, D> du16;
  const auto bits = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const std::uint16_t*>(p)));
  return hn::BitCast(d, hn::ShiftLeft<16>(bits));
}

// v, kept in a register: GCC may fold a vector that is loaded once and used by several
// FMAs into a memory operand of each of them. Under the library's generic tuning it did so
// in ScoreRowsBlock's AVX2 code (10 loads per 8 FMAs, past Zen 3's 2 vector loads per
// cycle); under -march=znver3 also in ValueBlock (12 per 8). An empty asm that claims to
// change v makes the one load stay one; the asm emits no instruction and no result
// changes (same operations, same order).
template <class V>
HWY_INLINE V InRegister(V v) {
#if HWY_ARCH_X86 && HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128 && (defined(__GNUC__) || defined(__clang__))
#if HWY_MAX_BYTES >= 64
  asm("" : "+v"(v.raw));
#else
  asm("" : "+x"(v.raw));
#endif
#endif
  return v;
}

// C[i][j] = sum_k A[i][k] * B[j][k] for i < M, j < N. Rows of A at a + i * lda, rows of B
// at b + j * ldb (any stride: B may be keys read straight from a strided view), C at
// c + i * ldc + j. K need not be a multiple of the vector length (scalar tail).
// Blocks of 4 rows x 2 columns keep 8 accumulators in registers: each loaded vector of B
// is used 4 times, each of A twice. Remainder rows/columns re-read a valid row (clamped
// index) and their results are dropped.
inline void MatMulABt(const float* a, index_t lda, index_t M, const float* b, index_t ldb,
                      index_t N, index_t K, float* c, index_t ldc) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t Kv = K - K % NL;
  for (index_t i0 = 0; i0 < M; i0 += 4) {
    const float* a0 = a + std::min(i0 + 0, M - 1) * lda;
    const float* a1 = a + std::min(i0 + 1, M - 1) * lda;
    const float* a2 = a + std::min(i0 + 2, M - 1) * lda;
    const float* a3 = a + std::min(i0 + 3, M - 1) * lda;
    for (index_t j0 = 0; j0 < N; j0 += 2) {
      const float* b0 = b + j0 * ldb;
      const float* b1 = b + std::min(j0 + 1, N - 1) * ldb;
      auto c00 = hn::Zero(d), c01 = hn::Zero(d), c10 = hn::Zero(d), c11 = hn::Zero(d);
      auto c20 = hn::Zero(d), c21 = hn::Zero(d), c30 = hn::Zero(d), c31 = hn::Zero(d);
      for (index_t k = 0; k < Kv; k += NL) {
        const auto vb0 = hn::LoadU(d, b0 + k), vb1 = hn::LoadU(d, b1 + k);
        const auto va0 = hn::LoadU(d, a0 + k);
        c00 = hn::MulAdd(va0, vb0, c00);
        c01 = hn::MulAdd(va0, vb1, c01);
        const auto va1 = hn::LoadU(d, a1 + k);
        c10 = hn::MulAdd(va1, vb0, c10);
        c11 = hn::MulAdd(va1, vb1, c11);
        const auto va2 = hn::LoadU(d, a2 + k);
        c20 = hn::MulAdd(va2, vb0, c20);
        c21 = hn::MulAdd(va2, vb1, c21);
        const auto va3 = hn::LoadU(d, a3 + k);
        c30 = hn::MulAdd(va3, vb0, c30);
        c31 = hn::MulAdd(va3, vb1, c31);
      }
      float r[4][2] = {
          {hn::GetLane(hn::SumOfLanes(d, c00)), hn::GetLane(hn::SumOfLanes(d, c01))},
          {hn::GetLane(hn::SumOfLanes(d, c10)), hn::GetLane(hn::SumOfLanes(d, c11))},
          {hn::GetLane(hn::SumOfLanes(d, c20)), hn::GetLane(hn::SumOfLanes(d, c21))},
          {hn::GetLane(hn::SumOfLanes(d, c30)), hn::GetLane(hn::SumOfLanes(d, c31))}};
      const float* ar[4] = {a0, a1, a2, a3};
      for (index_t k = Kv; k < K; ++k)
        for (int x = 0; x < 4; ++x) {
          r[x][0] += ar[x][k] * b0[k];
          r[x][1] += ar[x][k] * b1[k];
        }
      for (index_t x = 0; x < 4 && i0 + x < M; ++x)
        for (index_t y = 0; y < 2 && j0 + y < N; ++y) c[(i0 + x) * ldc + j0 + y] = r[x][y];
    }
  }
}

// AVX-512 targets: 16 x 16 blocks of 32-bit elements are transposed in registers.
#undef NSA_CPU_AVX512
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define NSA_CPU_AVX512 1
// o[c] = column c of the 16 x 16 matrix of uint32 whose rows are r[0..15].
inline void Transpose16x16(const __m512i* r, __m512i* o) {
  __m512i t[16], u[16], v[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm512_shuffle_i32x4(u[i], u[4 + i], 0x88);
    v[4 + i] = _mm512_shuffle_i32x4(u[i], u[4 + i], 0xdd);
    v[8 + i] = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0x88);
    v[12 + i] = _mm512_shuffle_i32x4(u[8 + i], u[12 + i], 0xdd);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    o[i] = _mm512_shuffle_i32x4(v[i], v[8 + i], 0x88);
    o[8 + i] = _mm512_shuffle_i32x4(v[i], v[8 + i], 0xdd);
  }
}

#else
#define NSA_CPU_AVX512 0
#endif

// kt [dim, kKeyTile] = the n rows x[s0 + j] (row stride ld) transposed, columns n .. the
// next multiple of the vector length zero-padded. Done once per key tile and reused by
// every chunk of query rows that meets the tile. T = bf16 widens to fp32. fp32 on AVX-512
// goes through registers 16 keys x 16 columns at a time (the rest element by element).
template <class T>
inline void TransposeTile(const T* x, index_t ld, index_t s0, index_t n, index_t dim, float* kt) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  index_t j = 0;
#if NSA_CPU_AVX512
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 16 <= n; j += 16) {
      const float* rows = x + (s0 + j) * ld;
      index_t c0 = 0;
      for (; c0 + 16 <= dim; c0 += 16) {
        __m512i r[16], o[16];
        for (index_t i = 0; i < 16; ++i) r[i] = _mm512_castps_si512(_mm512_loadu_ps(rows + i * ld + c0));
        Transpose16x16(r, o);
        for (index_t c = 0; c < 16; ++c) _mm512_storeu_si512(kt + (c0 + c) * kKeyTile + j, o[c]);
      }
      for (; c0 < dim; ++c0)
        for (index_t i = 0; i < 16; ++i) kt[c0 * kKeyTile + j + i] = rows[i * ld + c0];
    }
  }
#endif
  for (; j < n; ++j) {
    const T* row = x + (s0 + j) * ld;
    for (index_t c = 0; c < dim; ++c) kt[c * kKeyTile + j] = ToFloat(row[c]);
  }
  for (index_t c = 0; c < dim; ++c)
    for (index_t j = n; j < n_pad; ++j) kt[c * kKeyTile + j] = 0.0f;
}

// Row r of S [R, kKeyTile] (keys s0 .. s0+n-1): -inf outside lo[r] <= s0 + j < hi[r]
// (lo null: no mask) and in the padding columns n .. round_up(n, lanes).
inline void MaskScores(index_t R, index_t s0, index_t n, const index_t* lo, const index_t* hi,
                       float* S) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  for (index_t r = 0; r < R; ++r) {
    float* srow = S + r * kKeyTile;
    if (lo != nullptr) {
      const index_t begin = std::clamp(lo[r] - s0, index_t{0}, n);
      const index_t end = std::clamp(hi[r] - s0, begin, n);
      for (index_t j = 0; j < begin; ++j) srow[j] = kNegInf;
      for (index_t j = end; j < n; ++j) srow[j] = kNegInf;
    }
    for (index_t j = n; j < n_pad; ++j) srow[j] = kNegInf;
  }
}

// Vectors of keys (or of value columns) one register block spans: 4 rows x kBlockVecs
// vectors of accumulators. AVX-512 has 32 registers (16 accumulators + 4 loads + a
// broadcast fit); the 16-register targets keep 8 accumulators.
inline constexpr int kBlockVecs = HWY_MAX_BYTES >= 64 ? 4 : 2;

// out[x][j + y * lanes ..] = sum_c q[x][c] * kt[c][j + y * lanes ..] for the 4 rows x and
// NV vectors y: 4 * NV accumulators, each key vector loaded once for the 4 rows, each query
// element broadcast once for the NV vectors. Rows are stored last to first, so a clamped
// duplicate row (aliasing the last real one) leaves the real row's values.
template <int NV, class D>
HWY_INLINE void ScoreBlock(D d, const float* const* q, index_t dim, const float* kt, index_t j,
                           float* const* out) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  hn::Vec<D> acc[4][NV];
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x)
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) acc[x][y] = hn::Zero(d);
  const float* kc = kt + j;
  for (index_t c = 0; c < dim; ++c, kc += kKeyTile) {
    hn::Vec<D> k[NV];
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) k[y] = hn::LoadU(d, kc + y * NL);
#pragma GCC unroll 4
    for (int x = 0; x < 4; ++x) {
      const auto a = hn::Set(d, q[x][c]);
#pragma GCC unroll 4
      for (int y = 0; y < NV; ++y) acc[x][y] = hn::MulAdd(a, k[y], acc[x][y]);
    }
  }
#pragma GCC unroll 4
  for (int x = 3; x >= 0; --x)
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) hn::StoreU(acc[x][y], d, out[x] + j + y * NL);
}

// S [R, kKeyTile] = a [R, dim] times the transposed tile kt [dim, kKeyTile] (n keys, key
// index s0 + j): blocks of 4 rows x kBlockVecs vectors of keys (then 2, then 1 for the
// rest), no horizontal reductions and no dim tails.
// Key s0 + j is -inf for row r unless lo[r] <= s0 + j < hi[r] (lo null: no mask); columns
// n .. n_pad are -inf.
inline void ScoresFromTransposed(const float* a, index_t R, index_t dim, const float* kt, index_t s0,
                                 index_t n, const index_t* lo, const index_t* hi, float* S) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  for (index_t r0 = 0; r0 < R; r0 += 4) {
    const float* q[4];
    float* out[4];
    for (index_t x = 0; x < 4; ++x) {
      const index_t r = std::min(r0 + x, R - 1);
      q[x] = a + r * dim;
      out[x] = S + r * kKeyTile;
    }
    index_t j = 0;
    for (; j + kBlockVecs * NL <= n_pad; j += kBlockVecs * NL) ScoreBlock<kBlockVecs>(d, q, dim, kt, j, out);
    for (; j + 2 * NL <= n_pad; j += 2 * NL) ScoreBlock<2>(d, q, dim, kt, j, out);
    for (; j < n_pad; j += NL) ScoreBlock<1>(d, q, dim, kt, j, out);
  }
  MaskScores(R, s0, n, lo, hi, S);
}

// out[i] = the sum of the lanes of v[i], i < 8. On AVX2 and AVX-512 a tree of pairwise
// adds reduces the 8 together (~10 operations for all 8, against ~6 each for SumOfLanes);
// elsewhere SumOfLanes. The order of the additions is fixed per target.
template <class D>
HWY_INLINE void SumsOf8(D d, const hn::Vec<D>* v, float* out) {
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
  __m256 h[8];
  if constexpr (HWY_MAX_BYTES == 64) {  // fold each 512-bit vector to 256 bits first
    const hn::Half<D> dh;
    for (int i = 0; i < 8; ++i) h[i] = hn::Add(hn::LowerHalf(dh, v[i]), hn::UpperHalf(dh, v[i])).raw;
  } else {
    for (int i = 0; i < 8; ++i) h[i] = v[i].raw;
  }
  const __m256 t0 = _mm256_hadd_ps(h[0], h[1]), t1 = _mm256_hadd_ps(h[2], h[3]);
  const __m256 t2 = _mm256_hadd_ps(h[4], h[5]), t3 = _mm256_hadd_ps(h[6], h[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
#else
  for (int i = 0; i < 8; ++i) out[i] = hn::GetLane(hn::SumOfLanes(d, v[i]));
#endif
}

// Rows i0 .. i0+NR-1 of S against keys j0 .. j0+NK-1 (NR * NK = 8 accumulators, each key
// vector loaded once for the NR rows, the 8 dot products reduced together by SumsOf8; a dim
// tail added in scalar). Keys past n re-read the last one (clamped) and are not stored.
template <int NR, int NK, class T>
HWY_INLINE void ScoreRowsBlock(const float* const* ar, index_t dim, const T* x, index_t ld, index_t j0,
                               index_t n, float* const* srow) {
  static_assert(NR * NK == 8, "SumsOf8 reduces 8 accumulators");
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t Kv = dim - dim % NL;
  const T* b[NK];
  for (int y = 0; y < NK; ++y) b[y] = x + std::min<index_t>(j0 + y, n - 1) * ld;
  hn::Vec<decltype(d)> c[8];  // c[i * NK + y]: row i against key j0 + y
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) c[i] = hn::Zero(d);
  for (index_t k = 0; k < Kv; k += NL) {
    hn::Vec<decltype(d)> kv[NK];
#pragma GCC unroll 8
    for (int y = 0; y < NK; ++y) kv[y] = InRegister(LoadF32(d, b[y] + k));
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const auto q = InRegister(hn::LoadU(d, ar[i] + k));
#pragma GCC unroll 8
      for (int y = 0; y < NK; ++y) c[i * NK + y] = hn::MulAdd(q, kv[y], c[i * NK + y]);
    }
  }
  float r[8];
  SumsOf8(d, c, r);
  for (index_t k = Kv; k < dim; ++k)
    for (int i = 0; i < NR; ++i)
      for (int y = 0; y < NK; ++y) r[i * NK + y] += ar[i][k] * ToFloat(b[y][k]);
  for (int i = 0; i < NR; ++i)
    for (int y = 0; y < NK && j0 + y < n; ++y) srow[i][j0 + y] = r[i * NK + y];
}

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
// The 16 lanes of out = the lane sums of v[0..16): out[i] = sum of v[i]'s lanes, as one
// vector (a transposing add tree in registers: 15 combines of two shuffles and an add,
// ~2.8 operations per sum against ~3.3 for SumsOf8 and its 8 scalar stores).
HWY_INLINE __m512 SumsOf16(const __m512* v) {
  __m512 a[8], b[4], c[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // 128-bit lane L of a[i]: v[2i], v[2i+1] halves of lane L summed
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // lane L of b[i]: the lane-L sums of v[4i .. 4i+4)
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // lanes (0 + 2, 1 + 3) of b[2i], then of b[2i+1]
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}

// Rows i0 .. i0+NR-1 of S against keys j0 .. j0+16/NR-1: 16 accumulators (NR = 4, 2 or 1
// rows x 16/NR keys), each key vector loaded once for the NR rows, the 16 sums reduced
// together into one vector (SumsOf16) and stored as NR runs of 16/NR scores (the keys past
// n re-read the last one and land in S's padding columns, which MaskScores sets to -inf;
// j0 + 16/NR <= kKeyTile). A dim tail is added in scalar.
template <int NR, class T>
HWY_INLINE void ScoreRowsBlock16(const float* const* ar, index_t dim, const T* x, index_t ld, index_t j0,
                                 index_t n, float* const* srow) {
  constexpr int NK = 16 / NR;
  const hn::ScalableTag<float> d;
  const index_t Kv = dim - dim % 16;
  const T* b[NK];
#pragma GCC unroll 16
  for (int y = 0; y < NK; ++y) b[y] = x + std::min<index_t>(j0 + y, n - 1) * ld;
  __m512 c[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) c[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (index_t k = 0; k < Kv; k += 16) {
    __m512 kv[NK];
#pragma GCC unroll 16
    for (int y = 0; y < NK; ++y) kv[y] = LoadF32(d, b[y] + k).raw;
#pragma GCC unroll 4
    for (int i = 0; i < NR; ++i) {
      const __m512 q = _mm512_loadu_ps(ar[i] + k);
#pragma GCC unroll 16
      for (int y = 0; y < NK; ++y) c[i * NK + y] = _mm512_fmadd_ps(q, kv[y], c[i * NK + y]);
    }
  }
  __m512 r = SumsOf16(c);
  if (Kv < dim) {
    alignas(64) float t[16];
    _mm512_store_ps(t, r);
    for (index_t k = Kv; k < dim; ++k)
      for (int i = 0; i < NR; ++i)
        for (int y = 0; y < NK; ++y) t[i * NK + y] += ar[i][k] * ToFloat(b[y][k]);
    r = _mm512_load_ps(t);
  }
  if constexpr (NR == 4) {
    _mm_storeu_ps(srow[0] + j0, _mm512_extractf32x4_ps(r, 0));
    _mm_storeu_ps(srow[1] + j0, _mm512_extractf32x4_ps(r, 1));
    _mm_storeu_ps(srow[2] + j0, _mm512_extractf32x4_ps(r, 2));
    _mm_storeu_ps(srow[3] + j0, _mm512_extractf32x4_ps(r, 3));
  } else if constexpr (NR == 2) {
    _mm256_storeu_ps(srow[0] + j0, _mm512_castps512_ps256(r));
    _mm256_storeu_ps(srow[1] + j0, _mm512_extractf32x8_ps(r, 1));
  } else {
    _mm512_storeu_ps(srow[0] + j0, r);
  }
}
#endif

// One in-place block of NR rows (4, 2, 1) against kInPlaceBlock / NR keys.
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
inline constexpr int kInPlaceBlock = 16;
#else
inline constexpr int kInPlaceBlock = 8;
#endif
template <int NR, class T>
HWY_INLINE void InPlaceBlock(const float* const* ar, index_t dim, const T* x, index_t ld, index_t j0, index_t n,
                             float* const* srow) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  ScoreRowsBlock16<NR>(ar, dim, x, ld, j0, n, srow);
#else
  ScoreRowsBlock<NR, kInPlaceBlock / NR>(ar, dim, x, ld, j0, n, srow);
#endif
}

// S [R, kKeyTile] = a [R, dim] (contiguous rows) times the n keys read in place, key j at
// x + j * ld (T = bf16 widens; any stride, so a [T, H_kv, d] cache's head is read where it
// lies, with no transposed copy): for the few rows of a decode step, where a transpose
// would cost as much as the products. Blocks of 4 rows, then 2, then 1 (no row is computed
// twice): on AVX-512 by 16 keys / rows (ScoreRowsBlock16: at llama3-8b's G = 4 on an Intel
// Xeon it took the in-cache scores from ~19 to ~14 cycles per row and key), elsewhere
// 4 x 2, 2 x 4, 1 x 8 (ScoreRowsBlock). Columns n .. round_up(n, lanes) are -inf.
template <class T>
inline void ScoresInPlace(const float* a, index_t R, index_t dim, const T* x, index_t ld, index_t n, float* S) {
  index_t i0 = 0;
  const float* ar[4];
  float* srow[4];
  auto rows = [&](index_t count) {
    for (index_t i = 0; i < count; ++i) {
      ar[i] = a + (i0 + i) * dim;
      srow[i] = S + (i0 + i) * kKeyTile;
    }
  };
  for (; i0 + 4 <= R; i0 += 4) {
    rows(4);
    for (index_t j0 = 0; j0 < n; j0 += kInPlaceBlock / 4) InPlaceBlock<4>(ar, dim, x, ld, j0, n, srow);
  }
  if (i0 + 2 <= R) {
    rows(2);
    for (index_t j0 = 0; j0 < n; j0 += kInPlaceBlock / 2) InPlaceBlock<2>(ar, dim, x, ld, j0, n, srow);
    i0 += 2;
  }
  if (i0 < R) {
    rows(1);
    for (index_t j0 = 0; j0 < n; j0 += kInPlaceBlock) InPlaceBlock<1>(ar, dim, x, ld, j0, n, srow);
  }
  MaskScores(R, 0, n, nullptr, nullptr, S);
}

// ---- bf16 pair dot product (vdpbf16ps) ---------------------------------------------------
// AVX-512 targets only. Highway 1.0.3 has no target with AVX512_BF16 (its bf16
// ReorderWidenMulAccumulate is two shifts and two FMAs on every x86 target), so these
// functions add the ISA themselves: GCC merges target("avx512bf16") with the target
// pragma Highway puts around this namespace. They run only when bf16_dot_enabled().
// A uint32 holds a pair of bf16, the lower-indexed element in the low half;
// vdpbf16ps(acc, a, b) adds a.lo * b.lo + a.hi * b.hi to each fp32 lane of acc.
#undef NSA_CPU_BF16_DOT
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define NSA_CPU_BF16_DOT 1
#define NSA_CPU_BF16_DOT_ATTR __attribute__((target("avx512bf16")))

// kt [ceil(dim/2), kKeyTile] = the bf16 pairs of the n rows x[s0 + j] transposed (an odd
// dim's last pair is (x[dim-1], 0)); columns n .. round_up(n, 16) zero. Blocks of 16 keys
// x 16 pairs go through registers; the pairs beyond the last whole block are scalar.
inline void TransposePairs(const bf16* x, index_t ld, index_t s0, index_t n, index_t dim,
                           std::uint32_t* kt) {
  const index_t whole = dim / 2, pairs = (dim + 1) / 2;
  for (index_t j0 = 0; j0 < n; j0 += 16) {
    const index_t keys = std::min<index_t>(16, n - j0);
    const bf16* row[16];
    for (index_t i = 0; i < 16; ++i) row[i] = x + (s0 + j0 + std::min(i, keys - 1)) * ld;
    index_t p0 = 0;
    for (; p0 + 16 <= whole; p0 += 16) {
      __m512i r[16], o[16];
      for (index_t i = 0; i < 16; ++i)
        r[i] = i < keys ? _mm512_loadu_si512(row[i] + 2 * p0) : _mm512_setzero_si512();
      Transpose16x16(r, o);
      for (index_t c = 0; c < 16; ++c) _mm512_storeu_si512(kt + (p0 + c) * kKeyTile + j0, o[c]);
    }
    for (index_t i = 0; i < 16; ++i) {
      for (index_t p = p0; p < pairs; ++p) {
        std::uint32_t pair = 0;
        if (i < keys) {
          if (p < whole)
            std::memcpy(&pair, row[i] + 2 * p, 4);
          else
            pair = row[i][dim - 1].bits;  // (x[dim-1], 0)
        }
        kt[p * kKeyTile + j0 + i] = pair;
      }
    }
  }
}

// The one micro-kernel of the pairs path, C (+)= scale * A B with A and B in bf16 pairs:
// C[x][col + 16y ..] for 4 rows x of A and NC vectors y of 16 columns of B,
//   (kAccumulate: += A B, else: = scale * A B)
// where A row x is a[x][0 .. len) and B row k is b + k * ldb. 4 * NC accumulators, each
// vector of B loaded once for the 4 rows, each pair of A broadcast once for NC vectors.
template <int NC, bool kAccumulate>
NSA_CPU_BF16_DOT_ATTR inline void PairsBlock(const std::uint32_t* const* a, index_t len,
                                             const std::uint32_t* b, index_t ldb, index_t col,
                                             float scale, float* const* c) {
  __m512 acc[4][NC];
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x)
#pragma GCC unroll 4
    for (int y = 0; y < NC; ++y)
      acc[x][y] = kAccumulate ? _mm512_loadu_ps(c[x] + col + 16 * y) : _mm512_setzero_ps();
  for (index_t k = 0; k < len; ++k) {
    __m512bh bv[NC];
#pragma GCC unroll 4
    for (int y = 0; y < NC; ++y) bv[y] = (__m512bh)_mm512_loadu_si512(b + k * ldb + col + 16 * y);
#pragma GCC unroll 4
    for (int x = 0; x < 4; ++x) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[x][k]));
#pragma GCC unroll 4
      for (int y = 0; y < NC; ++y) acc[x][y] = _mm512_dpbf16_ps(acc[x][y], av, bv[y]);
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
#pragma GCC unroll 4
  for (int x = 3; x >= 0; --x)  // clamped duplicate rows alias the last real one
#pragma GCC unroll 4
    for (int y = 0; y < NC; ++y)
      _mm512_storeu_ps(c[x] + col + 16 * y, kAccumulate ? acc[x][y] : _mm512_mul_ps(acc[x][y], vs));
}

// C [R, width] (+)= scale * A [R, len] B [len, width] (see PairsBlock), rows of A at
// a + r * lda, of C at c + r * ldc; width a multiple of 16.
template <bool kAccumulate>
NSA_CPU_BF16_DOT_ATTR inline void PairsProduct(const std::uint32_t* a, index_t lda, index_t R,
                                               index_t len, const std::uint32_t* b, index_t ldb,
                                               index_t width, float scale, float* c, index_t ldc) {
  for (index_t r0 = 0; r0 < R; r0 += 4) {
    const std::uint32_t* ar[4];
    float* cr[4];
    for (index_t x = 0; x < 4; ++x) {
      const index_t r = std::min(r0 + x, R - 1);
      ar[x] = a + r * lda;
      cr[x] = c + r * ldc;
    }
    index_t col = 0;
    for (; col + 64 <= width; col += 64) PairsBlock<4, kAccumulate>(ar, len, b, ldb, col, scale, cr);
    for (; col + 32 <= width; col += 32) PairsBlock<2, kAccumulate>(ar, len, b, ldb, col, scale, cr);
    for (; col < width; col += 16) PairsBlock<1, kAccumulate>(ar, len, b, ldb, col, scale, cr);
  }
}

// O [R, d_v] += P [R, n] V [n, d_v] (n <= kKeyTile) with the probabilities P rounded to
// bf16 (vcvtne2ps2bf16, nearest even) and V bf16: row r of P at p + r * ldp (entries from
// n on are never read: they count as 0), value j at v + j * v_stride, row r of O at
// o + r * ldo. The values are first interleaved by pairs of keys into vt [n/2, Dv] (Dv:
// d_v rounded down to 16), P into pp [R, kKeyTile / 2]; d_v's tail is scalar fp32.
NSA_CPU_BF16_DOT_ATTR inline void RowsTimesValuePairs(const float* p, index_t ldp, index_t R, index_t n,
                                                      const bf16* v, index_t v_stride, index_t d_v, float* o,
                                                      index_t ldo, std::uint32_t* vt, std::uint32_t* pp) {
  const index_t Dv = d_v - d_v % 16, key_pairs = (n + 1) / 2;
  for (index_t jp = 0; jp < key_pairs; ++jp) {
    const bf16* v0 = v + 2 * jp * v_stride;
    const bool odd = 2 * jp + 1 == n;  // the last key has no partner: pair it with 0
    const bf16* v1 = odd ? v0 : v0 + v_stride;
    for (index_t c = 0; c < Dv; c += 16) {
      const __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0 + c)));
      const __m512i hi = odd ? _mm512_setzero_si512()
                             : _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1 + c)));
      _mm512_storeu_si512(vt + jp * Dv + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
  auto head = [n](index_t j) {  // lanes j .. j+15 that are below n
    const index_t k = std::max<index_t>(0, std::min<index_t>(16, n - j));
    return static_cast<__mmask16>((1u << k) - 1u);
  };
  for (index_t r = 0; r < R; ++r)
    for (index_t j = 0; j < 2 * key_pairs; j += 32) {
      const float* prow = p + r * ldp + j;
      const __m512 a = _mm512_maskz_loadu_ps(head(j), prow), b = _mm512_maskz_loadu_ps(head(j + 16), prow + 16);
      _mm512_storeu_si512(pp + r * (kKeyTile / 2) + j / 2, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  PairsProduct<true>(pp, kKeyTile / 2, R, key_pairs, vt, Dv, Dv, 1.0f, o, ldo);
  for (index_t r = 0; r < R; ++r) {
    float* orow = o + r * ldo;
    for (index_t c = Dv; c < d_v; ++c) {
      float sum = orow[c];
      for (index_t j = 0; j < n; ++j) sum += p[r * ldp + j] * ToFloat(v[j * v_stride + c]);
      orow[c] = sum;
    }
  }
}

// acc[row0 + r] += sum_j P[r][j] v[s0 + j] (P in S, 0 where masked): RowsTimesValuePairs.
NSA_CPU_BF16_DOT_ATTR inline void AccumulateValuePairs(const float* S, index_t rows, index_t n,
                                                       const KeyValuesT<bf16>& kv, index_t s0,
                                                       SoftmaxState& st, index_t row0, Scratch& s) {
  RowsTimesValuePairs(S, kKeyTile, rows, n, kv.v + s0 * kv.v_stride, kv.v_stride, st.dim, st.acc_row(row0),
                      st.dim, s.vt_pairs.data(), s.p_pairs.data());
}
#else
#define NSA_CPU_BF16_DOT 0
#endif  // AVX-512 targets

// Whether this tile's bf16 products use vdpbf16ps (see QueryTile::q_pairs).
template <class T>
inline bool UsePairs(const QueryTile& tile) {
  return NSA_CPU_BF16_DOT && std::is_same_v<T, bf16> && tile.q_pairs != nullptr;
}

// ---- the tile loop -------------------------------------------------------------------------

// Scores of query rows row0 .. row0+rows-1 of the tile (packed, pre-scaled: tile.q
// [rows, d_k]) against keys s0 .. s0+n-1 (n <= kKeyTile) into s.scores [rows, kKeyTile].
// Key s is masked (-inf) for row r unless lo[r] <= s < hi[r] (lo/hi null: no mask).
// Columns n .. round_up(n, lanes) are set to -inf so later passes run on whole vectors.
// The key tile is first transposed into kt [d_k, kKeyTile] (zero-padded columns), so the
// scores are vectorised along keys: S[r][j..j+lanes) += q[r][c] * kt[c][j..j+lanes), a
// 4 rows x 2 vectors block of accumulators, no horizontal reductions and no dim tails.
template <class T>
inline void ScoreTile(const QueryTile& tile, index_t row0, index_t rows, const KeyValuesT<T>& kv,
                      index_t s0, index_t n, const index_t* lo, const index_t* hi, Scratch& s) {
  float* S = s.scores.data();
#if NSA_CPU_BF16_DOT
  if constexpr (std::is_same_v<T, bf16>) {
    if (UsePairs<T>(tile)) {
      const index_t pairs = (tile.d_k + 1) / 2;
      const std::uint32_t* kt = s.kt_pairs.data();
      if (kv.kt_pairs != nullptr)  // transposed up front, s0 .. s0+n-1 inside one tile
        kt = kv.kt_pairs + (s0 / kKeyTile) * pairs * kKeyTile + s0 % kKeyTile;
      else
        TransposePairs(kv.k, kv.k_stride, s0, n, tile.d_k, s.kt_pairs.data());
      PairsProduct<false>(tile.q_pairs + row0 * pairs, pairs, rows, pairs, kt, kKeyTile,
                          (n + 15) / 16 * 16, tile.scale, S, kKeyTile);
      MaskScores(rows, s0, n, lo, hi, S);
      return;
    }
  }
#endif
  const float* kt = s.kt.data();
  if (kv.kt != nullptr) {  // transposed up front; AttendRange keeps s0 .. s0+n-1 in one tile
    // From a column offset the last row's vector may run past the tile: KeyTiles pads it.
    kt = kv.kt + (s0 / kKeyTile) * tile.d_k * kKeyTile + s0 % kKeyTile;
  } else {
    TransposeTile(kv.k, kv.k_stride, s0, n, tile.d_k, s.kt.data());
  }
  ScoresFromTransposed(tile.q + row0 * tile.d_k, rows, tile.d_k, kt, s0, n, lo, hi, S);
}

// Folds the score tile S [rows, kKeyTile] (keys s0 .. s0+n-1, masked entries -inf) into
// the softmax statistics of rows row0 .. row0+rows-1 of `st`: rescale acc and l by
// exp(m_old - m_new), add exp(S - m_new) to l. S is overwritten with the probabilities
// exp(S - m_new) (0 where masked and in the padding columns); AccumulateValues adds P V.
inline void SoftmaxRescale(float* S, index_t rows, index_t n, SoftmaxState& st, index_t row0) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  const index_t d_v = st.dim;
  const auto neg_inf = hn::Set(d, kNegInf);
  for (index_t r = 0; r < rows; ++r) {
    float* srow = S + r * kKeyTile;
    auto vmax = neg_inf;
    for (index_t j = 0; j < n_pad; j += NL) vmax = hn::Max(vmax, hn::LoadU(d, srow + j));
    const float tile_max = hn::GetLane(hn::MaxOfLanes(d, vmax));
    if (tile_max == kNegInf) {  // nothing visible in this tile: p = 0
      std::fill(srow, srow + n_pad, 0.0f);
      continue;
    }
    float& m = st.m[row0 + r];
    const float m_new = std::max(m, tile_max);
    const float alpha = std::exp(m - m_new);  // 0 when m = -inf
    const auto vm = hn::Set(d, m_new);
    auto vsum = hn::Zero(d);
    for (index_t j = 0; j < n_pad; j += NL) {
      const auto sv = hn::LoadU(d, srow + j);
      const auto p = hn::IfThenElseZero(hn::Ne(sv, neg_inf), ExpSoftmax(d, hn::Sub(sv, vm)));
      vsum = hn::Add(vsum, p);
      hn::StoreU(p, d, srow + j);
    }
    float& l = st.l[row0 + r];
    l = l * alpha + hn::GetLane(hn::SumOfLanes(d, vsum));
    m = m_new;
    if (alpha != 1.0f) {
      float* acc = st.acc_row(row0 + r);
      for (index_t c = 0; c < d_v; ++c) acc[c] *= alpha;
    }
  }
}

// o[x][c + y * lanes ..] += sum_j p[x][j] v[j][c + y * lanes ..] for the NR rows x and NV
// vectors y of value columns: NR * NV accumulators, each value vector loaded (and widened,
// for bf16) once for the NR rows. Each output sums over j in order, so how rows are grouped
// into blocks does not change a bit of the result.
template <int NR, int NV, class D, class T>
HWY_INLINE void ValueBlock(D d, const float* const* p, index_t n, const T* v, index_t v_stride,
                           index_t c, float* const* o) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  hn::Vec<D> acc[NR][NV];
#pragma GCC unroll 4
  for (int x = 0; x < NR; ++x)
#pragma GCC unroll 8
    for (int y = 0; y < NV; ++y) acc[x][y] = hn::LoadU(d, o[x] + c + y * NL);
  const T* vj = v + c;
  for (index_t j = 0; j < n; ++j, vj += v_stride) {
    hn::Vec<D> vv[NV];
#pragma GCC unroll 8
    for (int y = 0; y < NV; ++y) vv[y] = InRegister(LoadF32(d, vj + y * NL));
#pragma GCC unroll 4
    for (int x = 0; x < NR; ++x) {
      const auto px = hn::Set(d, p[x][j]);
#pragma GCC unroll 8
      for (int y = 0; y < NV; ++y) acc[x][y] = hn::MulAdd(px, vv[y], acc[x][y]);
    }
  }
#pragma GCC unroll 4
  for (int x = 0; x < NR; ++x)
#pragma GCC unroll 8
    for (int y = 0; y < NV; ++y) hn::StoreU(acc[x][y], d, o[x] + c + y * NL);
}

// Rows p[0 .. NR) times the values into o[0 .. NR), column blocks of NV vectors (then
// fewer), d_v's tail scalar. NV * NR accumulators: 4 rows x kBlockVecs, 2 x 2 kBlockVecs,
// 1 x 4 kBlockVecs (the same register budget for every row count).
template <int NR, int NV, class T>
inline void RowBlockTimesValues(const float* const* pr, index_t n, const T* v, index_t v_stride, index_t d_v,
                                float* const* or_) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t Dv = d_v - d_v % NL;
  index_t c = 0;
  for (; c + NV * NL <= Dv; c += NV * NL) ValueBlock<NR, NV>(d, pr, n, v, v_stride, c, or_);
  if constexpr (NV >= 4)
    for (; c + 2 * NL <= Dv; c += 2 * NL) ValueBlock<NR, 2>(d, pr, n, v, v_stride, c, or_);
  for (; c < Dv; c += NL) ValueBlock<NR, 1>(d, pr, n, v, v_stride, c, or_);
  for (index_t x = 0; x < NR; ++x)
    for (index_t cc = Dv; cc < d_v; ++cc) {
      float sum = or_[x][cc];
      for (index_t j = 0; j < n; ++j) sum += pr[x][j] * ToFloat(v[j * v_stride + cc]);
      or_[x][cc] = sum;
    }
}

// O [R, d_v] += P [R, n] V [n, d_v]: row r of P at p + r * ldp, of O at o + r * ldo, value
// j at v + j * v_stride (T = bf16 widens). Blocks of 4 rows, then 2, then 1 (no row is
// computed twice: a decode step's G = 1 or 3 rows cost what they are).
template <class T>
inline void RowsTimesValues(const float* p, index_t ldp, index_t R, index_t n, const T* v, index_t v_stride,
                            index_t d_v, float* o, index_t ldo) {
  index_t r0 = 0;
  auto rows = [&](index_t count, const float** pr, float** or_) {
    for (index_t x = 0; x < count; ++x) {
      pr[x] = p + (r0 + x) * ldp;
      or_[x] = o + (r0 + x) * ldo;
    }
  };
  const float* pr[4];
  float* or_[4];
  for (; r0 + 4 <= R; r0 += 4) {
    rows(4, pr, or_);
    RowBlockTimesValues<4, kBlockVecs>(pr, n, v, v_stride, d_v, or_);
  }
  if (r0 + 2 <= R) {
    rows(2, pr, or_);
    RowBlockTimesValues<2, 2 * kBlockVecs>(pr, n, v, v_stride, d_v, or_);
    r0 += 2;
  }
  if (r0 < R) {
    rows(1, pr, or_);
    RowBlockTimesValues<1, 4 * kBlockVecs>(pr, n, v, v_stride, d_v, or_);
  }
}

// acc[row0 + r] += sum_j P[r][j] v[s0 + j] (P from SoftmaxRescale, in S): RowsTimesValues.
template <class T>
inline void AccumulateValues(const float* S, index_t rows, index_t n, const KeyValuesT<T>& kv,
                             index_t s0, SoftmaxState& st, index_t row0) {
  RowsTimesValues(S, kKeyTile, rows, n, kv.v + s0 * kv.v_stride, kv.v_stride, st.dim, st.acc_row(row0),
                  st.dim);
}

// Sizes the score tile [rows, kKeyTile] and the key tile of the path in use: transposed
// fp32 [d_k, kKeyTile], or on the pairs path the key, value and probability pair tiles.
template <class T>
inline void ReserveTileScratch(const QueryTile& tile, index_t rows, Scratch& s) {
  auto grow = [](auto& v, index_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  grow(s.scores, rows * kKeyTile);
  if (UsePairs<T>(tile)) {
    grow(s.kt_pairs, (tile.d_k + 1) / 2 * kKeyTile);
    grow(s.vt_pairs, kKeyTile / 2 * tile.d_v);
    grow(s.p_pairs, rows * kKeyTile / 2);
  } else {
    grow(s.kt, tile.d_k * kKeyTile);
  }
}

// The flash-attention loop: query rows row0 .. row0+rows-1 of the tile (state rows of
// `st` likewise) against keys key0 .. key1-1 in tiles of kKeyTile; row r sees keys
// lo[r] <= s < hi[r] (null: all of them). Uses s.scores and the key tiles, grown as needed.
// keep (may be null; key0 and every step a multiple of kKeyTile): each tile's
// probabilities before normalisation are also copied out with the running max they are
// relative to: row r's key s gets keep.p[r * keep.ld + s - key0] = exp(score - m_tile)
// (0 where masked, and up to the next multiple of the vector length), and keep.m[r *
// keep.m_ld + (s - key0) / kKeyTile] = m_tile. Then exp(score - lse) = p * exp(m_tile - lse)
// needs one exp per row and tile instead of one per score (the compression branch's
// importance pass).
struct KeptTiles {
  float* p = nullptr;
  index_t ld = 0;
  float* m = nullptr;
  index_t m_ld = 0;
};

template <class T>
inline void AttendRange(const QueryTile& tile, index_t row0, index_t rows, const KeyValuesT<T>& kv,
                        index_t key0, index_t key1, const index_t* lo, const index_t* hi,
                        SoftmaxState& st, Scratch& s, const KeptTiles* keep = nullptr) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  ReserveTileScratch<T>(tile, rows, s);
  float* S = s.scores.data();
  for (index_t s0 = key0, n = 0; s0 < key1; s0 += n) {
    // Pre-transposed keys come in fixed tiles: an unaligned start takes a shorter first step.
    n = std::min(kv.pretransposed() ? kKeyTile - s0 % kKeyTile : kKeyTile, key1 - s0);
    ScoreTile(tile, row0, rows, kv, s0, n, lo, hi, s);
    SoftmaxRescale(S, rows, n, st, row0);
    if (keep != nullptr) {
      const index_t n_pad = (n + NL - 1) / NL * NL, t = (s0 - key0) / kKeyTile;
      for (index_t r = 0; r < rows; ++r) {
        std::copy(S + r * kKeyTile, S + r * kKeyTile + n_pad, keep->p + r * keep->ld + (s0 - key0));
        keep->m[r * keep->m_ld + t] = st.m[row0 + r];
      }
    }
#if NSA_CPU_BF16_DOT
    if constexpr (std::is_same_v<T, bf16>) {
      if (UsePairs<T>(tile)) {
        AccumulateValuePairs(S, rows, n, kv, s0, st, row0, s);
        continue;
      }
    }
#endif
    AccumulateValues(S, rows, n, kv, s0, st, row0);
  }
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
