// Tiled flash attention over a contiguous key range with a per-row mask: the dense causal
// baseline, the compression branch (keys = compressed blocks Kc/Vc, plus the importance
// scores pass) and the sliding window branch.
//
// A CTA of 4 warps owns 64 rows; rows are (token, head) pairs packed group-centric:
// row r = token t0 + r / gh, head kv_head * G + chunk * gh + r % gh with gh = min(G, 64),
// so the G query heads of a kv group share every K/V tile loaded into shared memory
// (GQA packing; for G = 1 the rows are 64 consecutive tokens of one head).
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

enum TiledMode : int { kDense = 0, kCmpMode = 1, kWinMode = 2 };

struct TileA {
  std::int64_t seq, t0;
};

struct TiledParams {
  const void* q;
  std::int64_t q_sb, q_st, q_sh;
  const void* k;  // raw [B,T,H_kv,d_k] (dense, win) or Kc [total_cmp,H_kv,d_k] (cmp)
  std::int64_t k_sb, k_st, k_sh;
  const void* v;
  std::int64_t v_sb, v_st, v_sh;
  void* out;  // storage type with strides (out_f32 = false) or float [rows, H, d_v] (true)
  std::int64_t o_sb, o_st, o_sh;
  bool out_f32;
  float* lse;     // [rows, H] or null
  float* scores;  // cmp: [chunks, rows, H_kv, nsel_max] (zeroed by the caller) or null
  std::int64_t nsel_max, rows;
  const SeqInfo* seqs;
  const TileA* tiles;
  int H, H_kv, G, gh, chunks, tokens_per_tile, dk, dv;
  float scale_log2;
  int mode, block_len, stride, sel_block, window;
};

template <class T>
struct TiledConfig {
  static constexpr int kRows = 64;                                  // rows per CTA
  static constexpr int kKeys = sizeof(T) == 2 ? 64 : 32;            // keys per tile
  static constexpr int kThreads = 128;
  static std::size_t smem_bytes(int dk, int dv) {
    const std::size_t q = std::size_t(kRows) * (dk + kPad<T>) * sizeof(T);
    const std::size_t k = std::size_t(kKeys) * (dk + kPad<T>) * sizeof(T);
    const std::size_t v = std::size_t(kKeys) * (dv + kPad<T>) * sizeof(T);
    const std::size_t p = std::size_t(kRows) * (kKeys + 1) * sizeof(float);
    return q + k + (v > p ? v : p);
  }
};

// Is key `s` visible to the query at position `t` (t = -1: an empty row)?
__device__ __forceinline__ bool tiled_allowed(const TiledParams& p, std::int64_t t, std::int64_t s) {
  if (p.mode == kCmpMode) return s * p.stride + p.block_len - 1 <= t;
  if (p.mode == kWinMode) return s <= t && s > t - p.window;
  return s <= t;
}

template <class T, int DVMAX>
__global__ void __launch_bounds__(128) tiled_attention_kernel(const TiledParams p) {
  using Cfg = TiledConfig<T>;
  constexpr int NT = Cfg::kKeys / 8, DT = DVMAX / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ldk = p.dk + kPad<T>, ldv = p.dv + kPad<T>;
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* sk = sq + Cfg::kRows * ldk;
  T* sv = sk + Cfg::kKeys * ldk;
  float* sp = reinterpret_cast<float*>(sv);  // cmp scores pass reuses the V tile
  constexpr int ldp = Cfg::kKeys + 1;

  const TileA tile = p.tiles[blockIdx.x];
  const SeqInfo seq = p.seqs[tile.seq];
  const int hk = blockIdx.y / p.chunks, chunk = blockIdx.y % p.chunks;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const T* q = static_cast<const T*>(p.q);
  const T* kp = static_cast<const T*>(p.k);
  const T* vp = static_cast<const T*>(p.v);

  // Row r -> (token, head); token -1 marks a padding row.
  auto row_token = [&](int r) -> std::int64_t {
    const int slot = r / p.gh, hh = chunk * p.gh + r % p.gh;
    const std::int64_t t = tile.t0 + slot;
    return (slot < p.tokens_per_tile && hh < p.G && t < seq.len) ? t : -1;
  };
  auto row_head = [&](int r) { return hk * p.G + chunk * p.gh + r % p.gh; };

  load_rows<T>(sq, ldk, Cfg::kRows, p.dk, [&](int r) -> const T* {
    const std::int64_t t = row_token(r);
    return t < 0 ? nullptr : q + seq.batch * p.q_sb + (seq.start + t) * p.q_st + row_head(r) * p.q_sh;
  }, tid, Cfg::kThreads);

  const std::int64_t t_first = tile.t0;
  const std::int64_t t_last = min64(tile.t0 + p.tokens_per_tile - 1, seq.len - 1);
  std::int64_t lo = 0, hi = t_last + 1;
  std::int64_t key_base = seq.start, key_batch = seq.batch;
  if (p.mode == kWinMode) lo = max64(0, t_first - p.window + 1);
  if (p.mode == kCmpMode) {
    hi = t_last >= p.block_len - 1 ? (t_last - p.block_len + 1) / p.stride + 1 : 0;
    key_base = seq.cmp0;
    key_batch = 0;
  }
  lo = lo / Cfg::kKeys * Cfg::kKeys;  // align tiles (masked keys below lo are harmless)

  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const std::int64_t tok0 = row_token(r0), tok1 = row_token(r1);
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float o[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

  for (std::int64_t kb = lo; kb < hi; kb += Cfg::kKeys) {
    __syncthreads();
    auto krow = [&](const T* base, std::int64_t sb, std::int64_t st, std::int64_t sh) {
      return [=](int r) -> const T* {
        const std::int64_t s = kb + r;
        return s < hi ? base + key_batch * sb + (key_base + s) * st + hk * sh : nullptr;
      };
    };
    load_rows<T>(sk, ldk, Cfg::kKeys, p.dk, krow(kp, p.k_sb, p.k_st, p.k_sh), tid, Cfg::kThreads);
    load_rows<T>(sv, ldv, Cfg::kKeys, p.dv, krow(vp, p.v_sb, p.v_st, p.v_sh), tid, Cfg::kThreads);
    __syncthreads();

    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    WarpGemm<T, NT>::qk(s, sq + warp * 16 * ldk, ldk, sk, ldk, p.dk);

    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const std::int64_t key = kb + j * 8 + 2 * c + e;
        s[j][e] = tiled_allowed(p, tok0, key) ? s[j][e] * p.scale_log2 : -INFINITY;
        s[j][2 + e] = tiled_allowed(p, tok1, key) ? s[j][2 + e] * p.scale_log2 : -INFINITY;
        mx0 = fmaxf(mx0, s[j][e]);
        mx1 = fmaxf(mx1, s[j][2 + e]);
      }
    const float mn0 = fmaxf(m0, quad_max(mx0)), mn1 = fmaxf(m1, quad_max(mx1));
    const float use0 = mn0 == -INFINITY ? 0.f : mn0, use1 = mn1 == -INFINITY ? 0.f : mn1;
    const float al0 = exp2f(m0 - use0), al1 = exp2f(m1 - use1);
    m0 = mn0;
    m1 = mn1;
    l0 *= al0;
    l1 *= al1;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
      o[n][0] *= al0; o[n][1] *= al0; o[n][2] *= al1; o[n][3] *= al1;
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      s[j][0] = exp2f(s[j][0] - use0);
      s[j][1] = exp2f(s[j][1] - use0);
      s[j][2] = exp2f(s[j][2] - use1);
      s[j][3] = exp2f(s[j][3] - use1);
      l0 += s[j][0] + s[j][1];
      l1 += s[j][2] + s[j][3];
    }
    WarpGemm<T, NT>::template pv<DT>(o, s, sv, ldv, p.dv);
  }

  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  // lse in log2 units of the scaled scores; -inf for rows that see nothing.
  const float lse2_0 = l0 > 0.f ? m0 + log2f(l0) : -INFINITY;
  const float lse2_1 = l1 > 0.f ? m1 + log2f(l1) : -INFINITY;
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r1 : r0;
    const std::int64_t t = half ? tok1 : tok0;
    if (t < 0) continue;
    const float inv = half ? inv1 : inv0;
    const int head = row_head(r);
    const std::int64_t row = seq.row0 + t;
    if (p.lse != nullptr) p.lse[row * p.H + head] = (half ? lse2_1 : lse2_0) * kLn2;
    if (p.out_f32) {
      float* out = static_cast<float*>(p.out) + (row * p.H + head) * p.dv;
#pragma unroll
      for (int n = 0; n < DT; ++n)
        if (n * 8 < p.dv)
          *reinterpret_cast<float2*>(out + n * 8 + 2 * c) =
              make_float2(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    } else {
      T* out = static_cast<T*>(p.out) + seq.batch * p.o_sb + (seq.start + t) * p.o_st + head * p.o_sh;
#pragma unroll
      for (int n = 0; n < DT; ++n)
        if (n * 8 < p.dv) {
          out[n * 8 + 2 * c] = from_f32<T>(o[n][2 * half] * inv);
          out[n * 8 + 2 * c + 1] = from_f32<T>(o[n][2 * half + 1] * inv);
        }
    }
  }

  if (p.mode != kCmpMode || p.scores == nullptr) return;

  // ---- importance scores: p(t,h)[i] = exp(scale q.Kc[i] - lse), summed over the heads of
  // the token and mapped onto selection blocks by overlap / stride (spec, branch 2).
  // Each CTA owns its (token, kv head, chunk) score rows, so plain read-modify-write.
  const int ntok = static_cast<int>(t_last - t_first + 1);
  for (std::int64_t kb = lo; kb < hi; kb += Cfg::kKeys) {
    __syncthreads();
    load_rows<T>(sk, ldk, Cfg::kKeys, p.dk, [&](int r) -> const T* {
      const std::int64_t s = kb + r;
      return s < hi ? kp + (key_base + s) * p.k_st + hk * p.k_sh : nullptr;
    }, tid, Cfg::kThreads);
    __syncthreads();
    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    WarpGemm<T, NT>::qk(s, sq + warp * 16 * ldk, ldk, sk, ldk, p.dk);
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const std::int64_t key = kb + j * 8 + 2 * c + e;
        sp[r0 * ldp + j * 8 + 2 * c + e] =
            tiled_allowed(p, tok0, key) ? exp2f(s[j][e] * p.scale_log2 - lse2_0) : 0.f;
        sp[r1 * ldp + j * 8 + 2 * c + e] =
            tiled_allowed(p, tok1, key) ? exp2f(s[j][2 + e] * p.scale_log2 - lse2_1) : 0.f;
      }
    __syncthreads();
    // Selection blocks touched by compressed blocks kb .. kb + kKeys - 1.
    const std::int64_t kend = min64(kb + Cfg::kKeys, hi);
    const std::int64_t j_lo = kb * p.stride / p.sel_block;
    const std::int64_t j_hi = ((kend - 1) * p.stride + p.block_len - 1) / p.sel_block;
    const int nj = static_cast<int>(j_hi - j_lo + 1);
    const float inv_stride = 1.f / p.stride;
    for (int pair = tid; pair < ntok * nj; pair += Cfg::kThreads) {
      const int slot = pair / nj;
      const std::int64_t j = j_lo + pair % nj;
      const std::int64_t js = j * p.sel_block, je = js + p.sel_block;  // [js, je)
      // compressed blocks i with [i*d, i*d+l) overlapping [js, je)
      std::int64_t i_lo = js - p.block_len + 1 > 0 ? (js - p.block_len + 1 + p.stride - 1) / p.stride : 0;
      std::int64_t i_hi = (je - 1) / p.stride;
      i_lo = max64(i_lo, kb);
      i_hi = min64(i_hi, kend - 1);
      float acc = 0.f;
      for (std::int64_t i = i_lo; i <= i_hi; ++i) {
        const std::int64_t a = max64(i * p.stride, js), b = min64(i * p.stride + p.block_len, je);
        const float w = static_cast<float>(b - a) * inv_stride;
        float ph = 0.f;
        for (int hh = 0; hh < p.gh; ++hh) ph += sp[(slot * p.gh + hh) * ldp + (i - kb)];
        acc += w * ph;
      }
      const std::int64_t row = seq.row0 + t_first + slot;
      float* dst = p.scores + ((static_cast<std::int64_t>(chunk) * p.rows + row) * p.H_kv + hk) * p.nsel_max + j;
      *dst += acc;
    }
  }
}

}  // namespace nsa::cuda::detail
