// Per-target SIMD building blocks of every CPU attention kernel (Highway, compiled once
// per target by each including .cc through foreach_target.h):
//   MatMulABt      C = A B^T, register-blocked 4 rows x 2 columns (dot products along dim)
//   TransposeTile, ScoresFromTransposed
//                  a key tile transposed once, and scores of query rows against it
//                  (vectorised along keys; the backward reuses one transpose for many rows)
//   ScoreTile      the two together: scores of query rows against one tile of keys, masked
//   SoftmaxUpdate  folds one score tile into a SoftmaxState (online softmax + P V)
//   AttendRange    the flash-attention loop: rows against keys [key0, key1), tile by tile
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
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

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

// kt [dim, kKeyTile] = the n rows x[s0 + j] (row stride ld) transposed, columns n .. the
// next multiple of the vector length zero-padded. Done once per key tile and reused by
// every chunk of query rows that meets the tile.
inline void TransposeTile(const float* x, index_t ld, index_t s0, index_t n, index_t dim, float* kt) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  for (index_t j = 0; j < n; ++j) {
    const float* row = x + (s0 + j) * ld;
    for (index_t c = 0; c < dim; ++c) kt[c * kKeyTile + j] = row[c];
  }
  for (index_t c = 0; c < dim; ++c)
    for (index_t j = n; j < n_pad; ++j) kt[c * kKeyTile + j] = 0.0f;
}

// S [R, kKeyTile] = a [R, dim] times the transposed tile kt [dim, kKeyTile] (n keys, key
// index s0 + j): 4 rows x 2 vectors of keys, no horizontal reductions and no dim tails.
// Key s0 + j is -inf for row r unless lo[r] <= s0 + j < hi[r] (lo null: no mask); columns
// n .. n_pad are -inf.
inline void ScoresFromTransposed(const float* a, index_t R, index_t dim, const float* kt, index_t s0,
                                 index_t n, const index_t* lo, const index_t* hi, float* S) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t n_pad = (n + NL - 1) / NL * NL;
  for (index_t r0 = 0; r0 < R; r0 += 4) {
    const float* q0 = a + r0 * dim;
    const float* q1 = a + std::min(r0 + 1, R - 1) * dim;
    const float* q2 = a + std::min(r0 + 2, R - 1) * dim;
    const float* q3 = a + std::min(r0 + 3, R - 1) * dim;
    for (index_t j = 0; j < n_pad; j += 2 * NL) {
      const bool two = j + NL < n_pad;
      const index_t j1 = two ? j + NL : j;
      auto c00 = hn::Zero(d), c01 = hn::Zero(d), c10 = hn::Zero(d), c11 = hn::Zero(d);
      auto c20 = hn::Zero(d), c21 = hn::Zero(d), c30 = hn::Zero(d), c31 = hn::Zero(d);
      const float* kc = kt;
      for (index_t c = 0; c < dim; ++c, kc += kKeyTile) {
        const auto k0 = hn::LoadU(d, kc + j), k1 = hn::LoadU(d, kc + j1);
        const auto a0 = hn::Set(d, q0[c]);
        c00 = hn::MulAdd(a0, k0, c00);
        c01 = hn::MulAdd(a0, k1, c01);
        const auto a1 = hn::Set(d, q1[c]);
        c10 = hn::MulAdd(a1, k0, c10);
        c11 = hn::MulAdd(a1, k1, c11);
        const auto a2 = hn::Set(d, q2[c]);
        c20 = hn::MulAdd(a2, k0, c20);
        c21 = hn::MulAdd(a2, k1, c21);
        const auto a3 = hn::Set(d, q3[c]);
        c30 = hn::MulAdd(a3, k0, c30);
        c31 = hn::MulAdd(a3, k1, c31);
      }
      float* out[4] = {S + r0 * kKeyTile, S + std::min(r0 + 1, R - 1) * kKeyTile,
                       S + std::min(r0 + 2, R - 1) * kKeyTile, S + std::min(r0 + 3, R - 1) * kKeyTile};
      hn::StoreU(c30, d, out[3] + j);
      hn::StoreU(c20, d, out[2] + j);
      hn::StoreU(c10, d, out[1] + j);
      hn::StoreU(c00, d, out[0] + j);
      if (two) {
        hn::StoreU(c31, d, out[3] + j1);
        hn::StoreU(c21, d, out[2] + j1);
        hn::StoreU(c11, d, out[1] + j1);
        hn::StoreU(c01, d, out[0] + j1);
      }
    }
  }
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

// Scores of `rows` packed (pre-scaled) query rows q [rows, d_k] against keys s0 .. s0+n-1
// (n <= kKeyTile) into S [rows, kKeyTile]. Key s is masked (-inf) for row r unless
// lo[r] <= s < hi[r] (lo/hi null: no mask). Columns n .. round_up(n, lanes) are set to
// -inf so later passes run on whole vectors.
// The key tile is first transposed into kt [d_k, kKeyTile] (zero-padded columns), so the
// scores are vectorised along keys: S[r][j..j+lanes) += q[r][c] * kt[c][j..j+lanes), a
// 4 rows x 2 vectors block of accumulators, no horizontal reductions and no dim tails.
inline void ScoreTile(const float* q, index_t rows, index_t d_k, const KeyValues& kv,
                      index_t s0, index_t n, const index_t* lo, const index_t* hi, float* S,
                      float* kt) {
  TransposeTile(kv.k, kv.k_stride, s0, n, d_k, kt);
  ScoresFromTransposed(q, rows, d_k, kt, s0, n, lo, hi, S);
}

// Folds the score tile S [rows, kKeyTile] (keys s0 .. s0+n-1, masked entries -inf) into
// rows row0 .. row0+rows-1 of `st`: rescale by exp(m_old - m_new), add exp(S - m_new) to
// l and exp(S - m_new) V to acc. S is overwritten with the probabilities (0 where masked).
inline void SoftmaxUpdate(float* S, index_t rows, index_t n, const KeyValues& kv, index_t s0,
                          SoftmaxState& st, index_t row0) {
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
      const auto p = hn::IfThenElseZero(hn::Ne(sv, neg_inf), hn::Exp(d, hn::Sub(sv, vm)));
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
  // acc[r] += sum_j p[r][j] v[s0 + j]: 4 rows x 1 vector of d_v per step, v loaded once.
  const index_t Dv = d_v - d_v % NL;
  const float* vbase = kv.v + s0 * kv.v_stride;
  for (index_t r0 = 0; r0 < rows; r0 += 4) {
    const index_t nr = std::min<index_t>(4, rows - r0);
    const float* p0 = S + (r0 + 0) * kKeyTile;
    const float* p1 = S + (r0 + std::min<index_t>(1, nr - 1)) * kKeyTile;
    const float* p2 = S + (r0 + std::min<index_t>(2, nr - 1)) * kKeyTile;
    const float* p3 = S + (r0 + std::min<index_t>(3, nr - 1)) * kKeyTile;
    float* o0 = st.acc_row(row0 + r0);
    float* o1 = st.acc_row(row0 + r0 + std::min<index_t>(1, nr - 1));
    float* o2 = st.acc_row(row0 + r0 + std::min<index_t>(2, nr - 1));
    float* o3 = st.acc_row(row0 + r0 + std::min<index_t>(3, nr - 1));
    for (index_t c = 0; c < Dv; c += NL) {
      auto a0 = hn::LoadU(d, o0 + c), a1 = hn::LoadU(d, o1 + c);
      auto a2 = hn::LoadU(d, o2 + c), a3 = hn::LoadU(d, o3 + c);
      for (index_t j = 0; j < n; ++j) {
        const auto vv = hn::LoadU(d, vbase + j * kv.v_stride + c);
        a0 = hn::MulAdd(hn::Set(d, p0[j]), vv, a0);
        a1 = hn::MulAdd(hn::Set(d, p1[j]), vv, a1);
        a2 = hn::MulAdd(hn::Set(d, p2[j]), vv, a2);
        a3 = hn::MulAdd(hn::Set(d, p3[j]), vv, a3);
      }
      // Clamped duplicate rows alias the last real row and hold identical values.
      hn::StoreU(a3, d, o3 + c);
      hn::StoreU(a2, d, o2 + c);
      hn::StoreU(a1, d, o1 + c);
      hn::StoreU(a0, d, o0 + c);
    }
    const float* pr[4] = {p0, p1, p2, p3};
    for (index_t x = 0; x < nr; ++x) {
      float* o = st.acc_row(row0 + r0 + x);
      for (index_t c = Dv; c < d_v; ++c) {
        float sum = o[c];
        for (index_t j = 0; j < n; ++j) sum += pr[x][j] * vbase[j * kv.v_stride + c];
        o[c] = sum;
      }
    }
  }
}

// Sizes the score tile [rows, kKeyTile] and the transposed key tile [d_k, kKeyTile].
inline void ReserveTileScratch(index_t rows, index_t d_k, Scratch& s) {
  if (s.scores.size() < static_cast<size_t>(rows * kKeyTile))
    s.scores.resize(static_cast<size_t>(rows * kKeyTile));
  if (s.kt.size() < static_cast<size_t>(d_k * kKeyTile))
    s.kt.resize(static_cast<size_t>(d_k * kKeyTile));
}

// The flash-attention loop: `rows` packed query rows (q [rows, d_k], pre-scaled), rows
// row0.. of `st`, against keys key0 .. key1-1 in tiles of kKeyTile; row r sees keys
// lo[r] <= s < hi[r] (null: all of them). Uses s.scores and s.kt, grown as needed.
inline void AttendRange(const float* q, index_t rows, index_t d_k, const KeyValues& kv,
                        index_t key0, index_t key1, const index_t* lo, const index_t* hi,
                        SoftmaxState& st, index_t row0, Scratch& s) {
  ReserveTileScratch(rows, d_k, s);
  for (index_t s0 = key0; s0 < key1; s0 += kKeyTile) {
    const index_t n = std::min(kKeyTile, key1 - s0);
    ScoreTile(q, rows, d_k, kv, s0, n, lo, hi, s.scores.data(), s.kt.data());
    SoftmaxUpdate(s.scores.data(), rows, n, kv, s0, st, row0);
  }
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
