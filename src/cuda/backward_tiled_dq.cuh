// dq of the tiled branches (dense causal, compression over Kc/Vc, sliding window):
// query-major, FlashAttention-2 style. The CTA layout is the forward's (tiled_attention.cuh):
// 4 warps x 16 rows = 64 (token, head) rows packed group-centric, so the G heads of a
// kv group share every K/V tile. Per key tile each warp recomputes
//   S = Q K^T, P = exp2(S scale log2e - lse2) (masked), dP = dO V^T,
//   dS = P (gate dP - D),  dq += dS K
// and at the end writes (or, accumulate, adds) scale * dq into the fp32 dq view. Every
// dq row belongs to one CTA: no atomics, deterministic.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/backward_params.cuh"
#include "cuda/tiled_attention.cuh"

namespace nsa::cuda::detail {

template <class T>
struct BwdDqConfig {
  static constexpr int kRows = 64;
  static constexpr int kKeys = sizeof(T) == 2 ? 64 : 32;
  static constexpr int kThreads = 128;
  static std::size_t smem_bytes(int dk, int dv) {
    return (std::size_t(kRows + kKeys) * (dk + kPad<T>) + std::size_t(kRows + kKeys) * (dv + kPad<T>)) * sizeof(T);
  }
};

// Is key s visible to the query at position t (t = -1: padding, sees nothing)?
__device__ __forceinline__ bool bwd_allowed(const BwdParams& p, std::int64_t t, std::int64_t s) {
  if (p.mode == kBwdCmp) return s * p.stride + p.block_len - 1 <= t;
  if (p.mode == kBwdWin) return s <= t && s > t - p.window;
  return s <= t;  // dense; selection (inside a chosen block)
}

template <class T, int DKMAX>
__global__ void __launch_bounds__(128) tiled_dq_kernel(const BwdParams p) {
  using Cfg = BwdDqConfig<T>;
  constexpr int NT = Cfg::kKeys / 8, DKT = DKMAX / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ldk = p.dk_dim + kPad<T>, ldv = p.dv_dim + kPad<T>;
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* sdo = sq + Cfg::kRows * ldk;
  T* sk = sdo + Cfg::kRows * ldv;
  T* sv = sk + Cfg::kKeys * ldk;

  const TileA tile = static_cast<const TileA*>(p.tiles)[blockIdx.x];
  const SeqInfo seq = p.seqs[tile.seq];
  const int hk = blockIdx.y / p.chunks, chunk = blockIdx.y % p.chunks;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const T* q = static_cast<const T*>(p.q);
  const T* dout = static_cast<const T*>(p.d_out);
  const T* kp = static_cast<const T*>(p.k);
  const T* vp = static_cast<const T*>(p.v);

  auto row_token = [&](int r) -> std::int64_t {
    const int slot = r / p.gh, hh = chunk * p.gh + r % p.gh;
    const std::int64_t t = tile.t0 + slot;
    return (slot < p.tokens_per_tile && hh < p.G && t < seq.len) ? t : -1;
  };
  auto row_head = [&](int r) { return hk * p.G + chunk * p.gh + r % p.gh; };

  load_rows<T>(sq, ldk, Cfg::kRows, p.dk_dim, [&](int r) -> const T* {
    const std::int64_t t = row_token(r);
    return t < 0 ? nullptr : q + seq.batch * p.q_sb + (seq.start + t) * p.q_st + row_head(r) * p.q_sh;
  }, tid, Cfg::kThreads);
  load_rows<T>(sdo, ldv, Cfg::kRows, p.dv_dim, [&](int r) -> const T* {
    const std::int64_t t = row_token(r);
    return t < 0 ? nullptr : dout + seq.batch * p.do_sb + (seq.start + t) * p.do_st + row_head(r) * p.do_sh;
  }, tid, Cfg::kThreads);

  const std::int64_t t_first = tile.t0;
  const std::int64_t t_last = min64(tile.t0 + p.tokens_per_tile - 1, seq.len - 1);
  std::int64_t lo = 0, hi = t_last + 1;
  std::int64_t key_base = seq.start, key_batch = seq.batch;
  if (p.mode == kBwdWin) lo = max64(0, t_first - p.window + 1);
  if (p.mode == kBwdCmp) {
    hi = t_last >= p.block_len - 1 ? (t_last - p.block_len + 1) / p.stride + 1 : 0;
    key_base = seq.cmp0;
    key_batch = 0;
  }
  lo = lo / Cfg::kKeys * Cfg::kKeys;

  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const std::int64_t tok0 = row_token(r0), tok1 = row_token(r1);
  const RowInfo i0 = bwd_row_info<T>(p, seq, tok0, row_head(r0));
  const RowInfo i1 = bwd_row_info<T>(p, seq, tok1, row_head(r1));
  float dq[DKT][4];
#pragma unroll
  for (int n = 0; n < DKT; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  for (std::int64_t kb = lo; kb < hi; kb += Cfg::kKeys) {
    __syncthreads();
    auto krow = [&](const T* base, std::int64_t sb, std::int64_t st, std::int64_t sh) {
      return [=](int r) -> const T* {
        const std::int64_t s = kb + r;
        return s < hi ? base + key_batch * sb + (key_base + s) * st + hk * sh : nullptr;
      };
    };
    load_rows<T>(sk, ldk, Cfg::kKeys, p.dk_dim, krow(kp, p.k_sb, p.k_st, p.k_sh), tid, Cfg::kThreads);
    load_rows<T>(sv, ldv, Cfg::kKeys, p.dv_dim, krow(vp, p.v_sb, p.v_st, p.v_sh), tid, Cfg::kThreads);
    __syncthreads();

    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
    WarpGemm<T, NT>::qk(s, sq + warp * 16 * ldk, ldk, sk, ldk, p.dk_dim);
    WarpGemm<T, NT>::qk(dp, sdo + warp * 16 * ldv, ldv, sv, ldv, p.dv_dim);
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const std::int64_t key = kb + j * 8 + 2 * c + e;
        const float p0 = bwd_allowed(p, tok0, key) ? exp2f(s[j][e] * p.scale_log2 - i0.lse2) : 0.f;
        const float p1 = bwd_allowed(p, tok1, key) ? exp2f(s[j][2 + e] * p.scale_log2 - i1.lse2) : 0.f;
        s[j][e] = p0 * (i0.gate * dp[j][e] - i0.D);
        s[j][2 + e] = p1 * (i1.gate * dp[j][2 + e] - i1.D);
      }
    WarpGemm<T, NT>::template pv<DKT>(dq, s, sk, ldk, p.dk_dim);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const std::int64_t t = half ? tok1 : tok0;
    if (t < 0) continue;
    const int head = row_head(half ? r1 : r0);
    float* dst = p.dq + seq.batch * p.dq_sb + (seq.start + t) * p.dq_st + head * p.dq_sh;
    store_frag_row<DKT>(dst, dq, half, p.dk_dim, p.scale, p.accumulate);
  }
}

}  // namespace nsa::cuda::detail
