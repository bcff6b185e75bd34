// Per-target SIMD building blocks of the CPU backward kernels (Highway, compiled once per
// target by each including .cc through foreach_target.h), on top of the forward's
// attention_tile-inl.h (TransposeTile, ScoresFromTransposed, MatMulABt):
//   GemmAcc   C += A B or C += A^T B (A read through two strides), vectorised along the
//             columns of B and C, register-blocked 4 rows x kBlockVecs vectors
//   GradTile  one flash-backward tile: the probabilities P and dS of packed query rows
//             against <= kKeyTile keys, recomputed from the saved log-sum-exp
// Every reduction runs in a fixed order: bitwise reproducible for a given target.

#if defined(NSA_CPU_BACKWARD_TILE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef NSA_CPU_BACKWARD_TILE_INL_H_
#undef NSA_CPU_BACKWARD_TILE_INL_H_
#else
#define NSA_CPU_BACKWARD_TILE_INL_H_
#endif

#include <algorithm>

#include "cpu/attention_tile-inl.h"
#include "cpu/backward/backward_kernels.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// c[x][j + y * lanes ..] += sum_k a[x][k * a_k] * b[k][j + y * lanes ..] for the 4 rows x
// and NV vectors y: 4 * NV accumulators, each vector of B loaded once for the 4 rows, each
// element of A broadcast once for the NV vectors. Stored last row first, so a clamped
// duplicate row (aliasing the last real one) leaves the real row's values.
template <int NV, class D>
HWY_INLINE void GemmBlock(D d, const float* const* a, index_t a_k, const float* b, index_t ldb,
                          index_t K, index_t j, float* const* c) {
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  hn::Vec<D> acc[4][NV];
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x)
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) acc[x][y] = hn::LoadU(d, c[x] + j + y * NL);
  const float* bk = b + j;
  for (index_t k = 0; k < K; ++k, bk += ldb) {
    hn::Vec<D> bv[NV];
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) bv[y] = hn::LoadU(d, bk + y * NL);
    const index_t ak = k * a_k;
#pragma GCC unroll 4
    for (int x = 0; x < 4; ++x) {
      const auto av = hn::Set(d, a[x][ak]);
#pragma GCC unroll 4
      for (int y = 0; y < NV; ++y) acc[x][y] = hn::MulAdd(av, bv[y], acc[x][y]);
    }
  }
#pragma GCC unroll 4
  for (int x = 3; x >= 0; --x)
#pragma GCC unroll 4
    for (int y = 0; y < NV; ++y) hn::StoreU(acc[x][y], d, c[x] + j + y * NL);
}

// C[m][c] += sum_k A(m, k) * B[k][c] for m < M, k < K, c < N, with A(m, k) at
// a[m * a_m + k * a_k]: (a_m, a_k) = (lda, 1) gives C += A B, (1, lda) gives C += A^T B.
// Rows of B at b + k * ldb (any stride: keys straight from a strided view), rows of C at
// c + m * ldc. Blocks of 4 rows of C x kBlockVecs vectors of columns (then 2, then 1);
// remainder rows re-read a valid row (clamped index) and store identical values. Scalar
// tail for the last N % lanes columns.
inline void GemmAcc(const float* a, index_t a_m, index_t a_k, const float* b, index_t ldb,
                    index_t M, index_t K, index_t N, float* c, index_t ldc) {
  if (M <= 0 || K <= 0 || N <= 0) return;
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t Nv = N - N % NL;
  for (index_t m0 = 0; m0 < M; m0 += 4) {
    const float* ar[4];
    float* cr[4];
    for (index_t x = 0; x < 4; ++x) {
      const index_t m = std::min(m0 + x, M - 1);
      ar[x] = a + m * a_m;
      cr[x] = c + m * ldc;
    }
    index_t j = 0;
    for (; j + kBlockVecs * NL <= Nv; j += kBlockVecs * NL) GemmBlock<kBlockVecs>(d, ar, a_k, b, ldb, K, j, cr);
    for (; j + 2 * NL <= Nv; j += 2 * NL) GemmBlock<2>(d, ar, a_k, b, ldb, K, j, cr);
    for (; j < Nv; j += NL) GemmBlock<1>(d, ar, a_k, b, ldb, K, j, cr);
    for (index_t x = 0; x < 4 && m0 + x < M; ++x) {
      const float* arow = a + (m0 + x) * a_m;
      float* crow = c + (m0 + x) * ldc;
      for (index_t jj = Nv; jj < N; ++jj) {
        float sum = crow[jj];
        for (index_t k = 0; k < K; ++k) sum += arow[k * a_k] * b[k * ldb + jj];
        crow[jj] = sum;
      }
    }
  }
}

// Packed query rows of one branch, the inputs of GradTile. Row r:
//   q    [R, d_k]  query times the softmax scale
//   d_o  [R, d_v]  dL/d o (the combined output's gradient, not yet gated)
//   gate [R]       the branch's gate (1 for dense attention)
//   lse  [R]       the branch's saved log-sum-exp
//   dot  [R]       d_o . o_b (o_b the branch output), so that D = gate * dot
//   lo, hi [R]     visible keys lo <= s < hi (null: every key of the tile)
struct RowPack {
  const float *q, *d_o, *gate, *lse, *dot;
  const index_t *lo, *hi;
  index_t rows, d_k, d_v;
};

// One tile of the flash backward, keys s0 .. s0+n-1 (n <= kKeyTile) given transposed:
// ktk [d_k, kKeyTile], ktv [d_v, kKeyTile] (TransposeTile). For rows r < R:
//   P[r][j]  = gate_r * exp(q_r . k_j - lse_r)        (0 where masked)
//   dS[r][j] = P[r][j] * (d_o_r . v_j - dot_r)        = dL/d(scaled score), gate folded in
// both [R, kKeyTile]; columns n .. n_pad are 0. Then dV_j += sum_r P[r][j] d_o_r,
// dK_j += sum_r dS[r][j] q_r (q pre-scaled), dq_r += scale * sum_j dS[r][j] k_j.
inline void GradTile(const RowPack& rp, const float* ktk, const float* ktv, index_t s0, index_t n,
                     float* P, float* dS) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL, R = rp.rows;
  ScoresFromTransposed(rp.q, R, rp.d_k, ktk, s0, n, rp.lo, rp.hi, P);  // -inf where masked
  ScoresFromTransposed(rp.d_o, R, rp.d_v, ktv, s0, n, nullptr, nullptr, dS);  // d_o . v
  const auto neg_inf = hn::Set(d, kNegInf);
  for (index_t r = 0; r < R; ++r) {
    float* prow = P + r * kKeyTile;
    float* drow = dS + r * kKeyTile;
    const auto lse = hn::Set(d, rp.lse[r]), dot = hn::Set(d, rp.dot[r]);
    const auto gate = hn::Set(d, rp.gate[r]);
    for (index_t j = 0; j < n_pad; j += NL) {
      const auto s = hn::LoadU(d, prow + j);
      const auto visible = hn::Ne(s, neg_inf);
      // lse = -inf only for rows that see no key at all: then every s is -inf too.
      const auto p = hn::IfThenElseZero(visible, hn::Mul(gate, ExpSoftmax(d, hn::Sub(s, lse))));
      const auto ds = hn::IfThenElseZero(visible, hn::Mul(p, hn::Sub(hn::LoadU(d, drow + j), dot)));
      hn::StoreU(p, d, prow + j);
      hn::StoreU(ds, d, drow + j);
    }
  }
}

// Keys and values s0 .. s0+n-1 transposed, [d_k, kKeyTile] and [d_v, kKeyTile].
struct TransposedTile {
  const float *k, *v;
};

// Read from the tiles transposed up front when kv has them and s0 .. s0+n-1 lies inside
// one of them (see KeyStep); otherwise transposed into s.ktk / s.ktv.
inline TransposedTile TransposeKeyValues(const KeyValues& kv, index_t s0, index_t n, index_t d_k,
                                         index_t d_v, BwdScratch& s) {
  if (kv.kt != nullptr && kv.vt != nullptr && s0 % kKeyTile + n <= kKeyTile) {
    const index_t tile = s0 / kKeyTile, off = s0 % kKeyTile;
    return {kv.kt + tile * d_k * kKeyTile + off, kv.vt + tile * d_v * kKeyTile + off};
  }
  TransposeTile(kv.k, kv.k_stride, s0, n, d_k, s.ktk.data());
  TransposeTile(kv.v, kv.v_stride, s0, n, d_v, s.ktv.data());
  return {s.ktk.data(), s.ktv.data()};
}

// Keys to take from s0 in one step: a whole kKeyTile, or up to the end of s0's tile when
// kv's keys and values were transposed up front (a step must not straddle two tiles).
inline index_t KeyStep(const KeyValues& kv, index_t s0) {
  return kv.kt != nullptr && kv.vt != nullptr ? kKeyTile - s0 % kKeyTile : kKeyTile;
}

// Sizes the per-tile scratch of GradTile for R rows.
inline void ReserveGradScratch(index_t R, index_t d_k, index_t d_v, BwdScratch& s) {
  const size_t tile = static_cast<size_t>(R * kKeyTile);
  if (s.p.size() < tile) s.p.resize(tile);
  if (s.ds.size() < tile) s.ds.resize(tile);
  if (s.ktk.size() < static_cast<size_t>(d_k * kKeyTile)) s.ktk.resize(static_cast<size_t>(d_k * kKeyTile));
  if (s.ktv.size() < static_cast<size_t>(d_v * kKeyTile)) s.ktv.resize(static_cast<size_t>(d_v * kKeyTile));
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
