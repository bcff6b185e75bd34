// Selection branch with group-centric loading, fused with the gated combine.
//
// One CTA per (token t, kv head, chunk of 16 query heads): the (up to) 16 heads of the
// group form the 16 rows of an mma tile, so each selected K/V block is loaded into shared
// memory once for all of them. The chosen blocks are split into tiles of kKeys keys and
// dealt round-robin to the 4 warps (each warp loads its own tiles into its own shared
// memory, no block barrier in the loop); the warps' softmax states are merged at the end.
// This keeps the CTA short and the SM busy for any G in 1..16 (for G < 16 the unused
// mma rows are wasted compute, but the branch is bound by K/V loads, not by math).
// Then o = g_cmp o_cmp + g_slc o_slc + g_win o_win, reading o_cmp and o_win from the
// fp32 branch outputs written by the compression and window kernels.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

struct SlcParams {
  const void* q;
  std::int64_t q_sb, q_st, q_sh;
  const void* k;
  std::int64_t k_sb, k_st, k_sh;
  const void* v;
  std::int64_t v_sb, v_st, v_sh;
  const void* gates;
  std::int64_t g_sb, g_st, g_sh;
  void* out;
  std::int64_t o_sb, o_st, o_sh;
  const float* o_cmp;  // [rows, H, d_v]
  const float* o_win;  // [rows, H, d_v]
  float* o_slc;        // [rows, H, d_v] or null
  float* lse;          // [rows, H] or null
  const std::int32_t* sel;  // [rows, H_kv, top_n]
  const SeqInfo* seqs;
  int num_seqs, H, H_kv, G, chunks, dk, dv, top_n, sel_block, tiles_per_block;
  float scale_log2;
};

template <class T>
struct SlcConfig {
  static constexpr int kWarps = 4, kThreads = 128;
  static constexpr int kKeys = sizeof(T) == 2 ? 32 : 16;  // keys per warp tile
  __host__ __device__ static std::size_t kv_bytes(int dk, int dv) {
    return std::size_t(kWarps) * kKeys * (dk + dv + 2 * kPad<T>) * sizeof(T);
  }
  __host__ __device__ static std::size_t merge_bytes(int dv) { return std::size_t(kWarps) * 16 * (dv + 2) * sizeof(float); }
  static std::size_t smem_bytes(int dk, int dv, int max_tiles) {
    const std::size_t q = std::size_t(16) * (dk + kPad<T>) * sizeof(T);
    const std::size_t kv = kv_bytes(dk, dv), mg = merge_bytes(dv);
    return q + (kv > mg ? kv : mg) + std::size_t(max_tiles) * sizeof(std::int64_t);
  }
};

template <class T, int DVMAX>
__global__ void __launch_bounds__(128) selection_attention_kernel(const SlcParams p) {
  using Cfg = SlcConfig<T>;
  constexpr int NT = Cfg::kKeys / 8, DT = DVMAX / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ldk = p.dk + kPad<T>, ldv = p.dv + kPad<T>;
  T* sq = reinterpret_cast<T*>(smem_raw);
  unsigned char* kv_area = smem_raw + std::size_t(16) * ldk * sizeof(T);
  const std::size_t kv = Cfg::kv_bytes(p.dk, p.dv), mg = Cfg::merge_bytes(p.dv);
  std::int64_t* tiles = reinterpret_cast<std::int64_t*>(kv_area + (kv > mg ? kv : mg));

  const std::int64_t row = blockIdx.x;
  const int hk = blockIdx.y / p.chunks, chunk = blockIdx.y % p.chunks;
  const SeqInfo seq = p.seqs[find_seq(p.seqs, p.num_seqs, row)];
  const std::int64_t t = row - seq.row0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const int head0 = hk * p.G + chunk * 16;
  const int nrows = min(16, p.G - chunk * 16);
  const T* q = static_cast<const T*>(p.q);
  const T* kp = static_cast<const T*>(p.k);
  const T* vp = static_cast<const T*>(p.v);

  load_rows<T>(sq, ldk, 16, p.dk, [&](int r) -> const T* {
    return r < nrows ? q + seq.batch * p.q_sb + (seq.start + t) * p.q_st + (head0 + r) * p.q_sh : nullptr;
  }, tid, Cfg::kThreads);
  __shared__ int ntiles;
  if (tid == 0) {
    // Tiles of the chosen blocks that start at or before t, in block order.
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

  T* sk = reinterpret_cast<T*>(kv_area) + std::size_t(warp) * Cfg::kKeys * (ldk + ldv);
  T* sv = sk + Cfg::kKeys * ldk;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  float o[DT][4];
#pragma unroll
  for (int n = 0; n < DT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;

  for (int ti = warp; ti < ntiles; ti += Cfg::kWarps) {
    const std::int64_t ks = tiles[ti];
    const std::int64_t block_end = (ks / p.sel_block + 1) * p.sel_block;
    const std::int64_t kend = min64(block_end, t + 1);  // keys [ks, kend) are valid
    __syncwarp();
    auto krow = [&](const T* base, std::int64_t sb, std::int64_t st, std::int64_t sh) {
      return [=](int r) -> const T* {
        const std::int64_t s = ks + r;
        return s < kend ? base + seq.batch * sb + (seq.start + s) * st + hk * sh : nullptr;
      };
    };
    load_rows<T>(sk, ldk, Cfg::kKeys, p.dk, krow(kp, p.k_sb, p.k_st, p.k_sh), lane, 32);
    load_rows<T>(sv, ldv, Cfg::kKeys, p.dv, krow(vp, p.v_sb, p.v_st, p.v_sh), lane, 32);
    __syncwarp();
    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    WarpGemm<T, NT>::qk(s, sq, ldk, sk, ldk, p.dk);
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool ok = ks + j * 8 + 2 * c + e < kend;
        s[j][e] = ok ? s[j][e] * p.scale_log2 : -INFINITY;
        s[j][2 + e] = ok ? s[j][2 + e] * p.scale_log2 : -INFINITY;
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

  // ---- merge the 4 warps' states: mo [4][16][dv], mm [4][16], ml [4][16]
  __syncthreads();
  float* mo = reinterpret_cast<float*>(kv_area);
  float* mm = mo + Cfg::kWarps * 16 * p.dv;
  float* ml = mm + Cfg::kWarps * 16;
#pragma unroll
  for (int n = 0; n < DT; ++n)
    if (n * 8 < p.dv) {
      float* r0 = mo + (warp * 16 + g) * p.dv + n * 8 + 2 * c;
      float* r1 = r0 + 8 * p.dv;
      r0[0] = o[n][0]; r0[1] = o[n][1];
      r1[0] = o[n][2]; r1[1] = o[n][3];
    }
  if (c == 0) {
    mm[warp * 16 + g] = m0; mm[warp * 16 + g + 8] = m1;
    ml[warp * 16 + g] = l0; ml[warp * 16 + g + 8] = l1;
  }
  __syncthreads();
  const T* gates = static_cast<const T*>(p.gates);
  T* out = static_cast<T*>(p.out);
  for (int i = tid; i < nrows * p.dv; i += Cfg::kThreads) {
    const int r = i / p.dv, col = i - r * p.dv;
    float M = -INFINITY;
    for (int w = 0; w < Cfg::kWarps; ++w) M = fmaxf(M, mm[w * 16 + r]);
    float L = 0.f, acc = 0.f;
    if (M != -INFINITY)
      for (int w = 0; w < Cfg::kWarps; ++w) {
        const float mw = mm[w * 16 + r];
        if (mw == -INFINITY) continue;
        const float f = exp2f(mw - M);
        L += ml[w * 16 + r] * f;
        acc += mo[(w * 16 + r) * p.dv + col] * f;
      }
    const float o_slc = L > 0.f ? acc / L : 0.f;
    const int head = head0 + r;
    const std::int64_t bo = (row * p.H + head) * p.dv + col;
    if (col == 0 && p.lse != nullptr) p.lse[row * p.H + head] = L > 0.f ? (M + log2f(L)) * kLn2 : -INFINITY;
    if (p.o_slc != nullptr) p.o_slc[bo] = o_slc;
    const T* gp = gates + seq.batch * p.g_sb + (seq.start + t) * p.g_st + head * p.g_sh;
    const float res = to_f32(gp[0]) * p.o_cmp[bo] + to_f32(gp[1]) * o_slc + to_f32(gp[2]) * p.o_win[bo];
    out[seq.batch * p.o_sb + (seq.start + t) * p.o_st + head * p.o_sh + col] = from_f32<T>(res);
  }
}

}  // namespace nsa::cuda::detail
