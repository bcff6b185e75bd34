// dq of the selection branch: query-major over the saved chosen blocks.
//
// One CTA per (token t, kv head, chunk of 16 query heads), as in the forward
// (selection_attention.cuh): the heads of the group are the 16 rows of an mma tile, the
// chosen blocks' key tiles (keys s <= t) are dealt round-robin to the 4 warps, and each
// warp accumulates its own partial dq [16, d_k]:
//   S = Q K^T, P = exp2(S scale log2e - lse2), dP = dO V^T, dS = P (gate dP - D), dq += dS K
// The 4 partials are then summed in warp order through shared memory and ADDED (scaled)
// into the dq view (the tiled branches wrote it before). Deterministic: the tile-to-warp
// assignment and the merge order depend only on the saved selection.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/backward_params.cuh"

namespace nsa::cuda::detail {

template <class T>
struct SlcDqConfig {
  static constexpr int kWarps = 4, kThreads = 128;
  static constexpr int kKeys = sizeof(T) == 2 ? 32 : 16;  // keys per warp tile
  __host__ __device__ static std::size_t kv_bytes(int dk, int dv) {
    return std::size_t(kWarps) * kKeys * (dk + dv + 2 * kPad<T>) * sizeof(T);
  }
  __host__ __device__ static std::size_t merge_bytes(int dk) { return std::size_t(kWarps) * 16 * dk * sizeof(float); }
  static std::size_t smem_bytes(int dk, int dv, int max_tiles) {
    const std::size_t qd = std::size_t(16) * (dk + dv + 2 * kPad<T>) * sizeof(T);
    const std::size_t kv = kv_bytes(dk, dv), mg = merge_bytes(dk);
    return qd + (kv > mg ? kv : mg) + std::size_t(max_tiles) * sizeof(std::int64_t);
  }
};

template <class T, int DKMAX>
__global__ void __launch_bounds__(128) selection_dq_kernel(const BwdParams p) {
  using Cfg = SlcDqConfig<T>;
  constexpr int NT = Cfg::kKeys / 8, DKT = DKMAX / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ldk = p.dk_dim + kPad<T>, ldv = p.dv_dim + kPad<T>;
  T* sq = reinterpret_cast<T*>(smem_raw);
  T* sdo = sq + 16 * ldk;
  unsigned char* kv_area = reinterpret_cast<unsigned char*>(sdo + 16 * ldv);
  const std::size_t kv = Cfg::kv_bytes(p.dk_dim, p.dv_dim), mg = Cfg::merge_bytes(p.dk_dim);
  std::int64_t* tiles = reinterpret_cast<std::int64_t*>(kv_area + (kv > mg ? kv : mg));

  const std::int64_t row = blockIdx.x;
  const int hk = blockIdx.y / p.chunks, chunk = blockIdx.y % p.chunks;
  const SeqInfo seq = p.seqs[find_seq(p.seqs, p.num_seqs, row)];
  const std::int64_t t = row - seq.row0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const int head0 = hk * p.G + chunk * 16;
  const int nrows = min(16, p.G - chunk * 16);
  const T* q = static_cast<const T*>(p.q);
  const T* dout = static_cast<const T*>(p.d_out);
  const T* kp = static_cast<const T*>(p.k);
  const T* vp = static_cast<const T*>(p.v);

  load_rows<T>(sq, ldk, 16, p.dk_dim, [&](int r) -> const T* {
    return r < nrows ? q + seq.batch * p.q_sb + (seq.start + t) * p.q_st + (head0 + r) * p.q_sh : nullptr;
  }, tid, Cfg::kThreads);
  load_rows<T>(sdo, ldv, 16, p.dv_dim, [&](int r) -> const T* {
    return r < nrows ? dout + seq.batch * p.do_sb + (seq.start + t) * p.do_st + (head0 + r) * p.do_sh : nullptr;
  }, tid, Cfg::kThreads);
  __shared__ int ntiles;
  if (tid == 0) {
    // Tiles of the chosen blocks that start at or before t, in block order (as the forward).
    const std::int32_t* sel = p.sel + (row * p.H_kv + hk) * p.top_n;
    int n = 0;
    for (int b = 0; b < p.top_n; ++b) {
      const std::int32_t j = sel[b];
      if (j < 0) continue;
      for (int sub = 0; sub < p.tiles_per_block; ++sub) {
        const std::int64_t start = std::int64_t(j) * p.sel_block + std::int64_t(sub) * Cfg::kKeys;
        if (start <= t && sub * Cfg::kKeys < p.sel_block) tiles[n++] = start;
      }
    }
    ntiles = n;
  }
  __syncthreads();

  const RowInfo i0 = bwd_row_info<T>(p, seq, g < nrows ? t : -1, head0 + g);
  const RowInfo i1 = bwd_row_info<T>(p, seq, g + 8 < nrows ? t : -1, head0 + g + 8);
  T* sk = reinterpret_cast<T*>(kv_area) + std::size_t(warp) * Cfg::kKeys * (ldk + ldv);
  T* sv = sk + Cfg::kKeys * ldk;
  float dq[DKT][4];
#pragma unroll
  for (int n = 0; n < DKT; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  for (int ti = warp; ti < ntiles; ti += Cfg::kWarps) {
    const std::int64_t ks = tiles[ti];
    const std::int64_t block_end = (ks / p.sel_block + 1) * p.sel_block;
    const std::int64_t kend = min64(block_end, t + 1);  // keys [ks, kend) are visible
    __syncwarp();
    auto krow = [&](const T* base, std::int64_t sb, std::int64_t st, std::int64_t sh) {
      return [=](int r) -> const T* {
        const std::int64_t s = ks + r;
        return s < kend ? base + seq.batch * sb + (seq.start + s) * st + hk * sh : nullptr;
      };
    };
    load_rows<T>(sk, ldk, Cfg::kKeys, p.dk_dim, krow(kp, p.k_sb, p.k_st, p.k_sh), lane, 32);
    load_rows<T>(sv, ldv, Cfg::kKeys, p.dv_dim, krow(vp, p.v_sb, p.v_st, p.v_sh), lane, 32);
    __syncwarp();
    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
    WarpGemm<T, NT>::qk(s, sq, ldk, sk, ldk, p.dk_dim);
    WarpGemm<T, NT>::qk(dp, sdo, ldv, sv, ldv, p.dv_dim);
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool ok = ks + j * 8 + 2 * c + e < kend;
        const float p0 = ok ? exp2f(s[j][e] * p.scale_log2 - i0.lse2) : 0.f;
        const float p1 = ok ? exp2f(s[j][2 + e] * p.scale_log2 - i1.lse2) : 0.f;
        s[j][e] = p0 * (i0.gate * dp[j][e] - i0.D);
        s[j][2 + e] = p1 * (i1.gate * dp[j][2 + e] - i1.D);
      }
    WarpGemm<T, NT>::template pv<DKT>(dq, s, sk, ldk, p.dk_dim);
  }

  // Merge the warps' partials in warp order: md [4][16][d_k].
  __syncthreads();
  float* md = reinterpret_cast<float*>(kv_area);
#pragma unroll
  for (int n = 0; n < DKT; ++n)
    if (n * 8 < p.dk_dim) {
      float* r0 = md + (warp * 16 + g) * p.dk_dim + n * 8 + 2 * c;
      float* r1 = r0 + 8 * p.dk_dim;
      r0[0] = dq[n][0]; r0[1] = dq[n][1];
      r1[0] = dq[n][2]; r1[1] = dq[n][3];
    }
  __syncthreads();
  for (int i = tid; i < nrows * p.dk_dim; i += Cfg::kThreads) {
    const int r = i / p.dk_dim, col = i - r * p.dk_dim;
    float acc = 0.f;
    for (int w = 0; w < Cfg::kWarps; ++w) acc += md[(w * 16 + r) * p.dk_dim + col];
    float* dst = p.dq + seq.batch * p.dq_sb + (seq.start + t) * p.dq_st + (head0 + r) * p.dq_sh + col;
    *dst = (p.accumulate ? *dst : 0.f) + acc * p.scale;
  }
}

}  // namespace nsa::cuda::detail
