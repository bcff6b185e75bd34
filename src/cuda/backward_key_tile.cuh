// dK, dV key-major, FlashAttention-2 style: one CTA per (key tile of <= 64 keys, kv head).
// The tile's K/V stay in shared memory while the CTA walks every query row that can see
// one of its keys, 32 (token, head) rows at a time, the G heads of the group included
// (rows are token-major, head-minor), so the G heads accumulate into the kv head's
// dK/dV inside one CTA, in a fixed order. Each warp owns 16 keys and computes transposed
// scores:
//   S^T = K Q^T, P^T = exp2(S^T scale log2e - lse2[col]) (masked), dP^T = V dO^T,
//   dS^T = P^T (gate dP^T - D[col]),  dV += (gate P^T) dO,  dK += dS^T Q
// The rows seen by a tile, by branch:
//   dense       tokens s0 .. len-1
//   window      tokens s0 .. min(len, s0 + n - 1 + w) - 1
//   compression compressed keys [s0, s0 + n): tokens s0*d + l - 1 .. len-1
//   selection   the tokens that chose the tile's block (backward_sel_index.cuh), ascending
// At the end each key row is written (or, accumulate, added: branches sharing a gradient
// view) once: no atomics, deterministic. Tiles whose rows are many (the early compressed
// keys, the forced selection blocks: up to T*G rows) are split over their token range
// into parts; each part writes partial dK|dV rows and key_reduce_kernel sums the parts in
// order, so the result stays deterministic while the long tail disappears.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/backward_params.cuh"
#include "cuda/backward_tiled_dq.cuh"

namespace nsa::cuda::detail {

template <class T>
struct BwdKeyConfig {
  static constexpr int kKeys = 64;  // 4 warps x 16 keys
  static constexpr int kRows = 32;  // query rows per step
  static constexpr int kThreads = 128;
  static std::size_t smem_bytes(int dk, int dv) {
    return std::size_t(kKeys + kRows) * (dk + dv + 2 * kPad<T>) * sizeof(T) +
           std::size_t(kRows) * (sizeof(RowInfo) + sizeof(std::int64_t));
  }
};

template <class T, int DKMAX, int DVMAX>
__global__ void __launch_bounds__(128) key_tile_backward_kernel(const BwdParams p) {
  using Cfg = BwdKeyConfig<T>;
  constexpr int NQ = Cfg::kRows / 8, DKT = DKMAX / 8, DVT = DVMAX / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int ldk = p.dk_dim + kPad<T>, ldv = p.dv_dim + kPad<T>;
  T* sk = reinterpret_cast<T*>(smem_raw);
  T* sv = sk + Cfg::kKeys * ldk;
  T* sq = sv + Cfg::kKeys * ldv;
  T* sdo = sq + Cfg::kRows * ldk;
  std::int64_t* stok = reinterpret_cast<std::int64_t*>(sdo + Cfg::kRows * ldv);
  RowInfo* sinfo = reinterpret_cast<RowInfo*>(stok + Cfg::kRows);

  const KeyTask task = static_cast<const KeyTask*>(p.tiles)[blockIdx.x];
  const SeqInfo seq = p.seqs[task.seq];
  const int hk = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const T* q = static_cast<const T*>(p.q);
  const T* dout = static_cast<const T*>(p.d_out);
  const T* kp = static_cast<const T*>(p.k);
  const T* vp = static_cast<const T*>(p.v);

  const bool cmp = p.mode == kBwdCmp;
  const std::int64_t key_base = cmp ? seq.cmp0 : seq.start, key_batch = cmp ? 0 : seq.batch;
  auto krow = [&](const T* base, std::int64_t sb, std::int64_t st, std::int64_t sh) {
    return [=](int r) -> const T* {
      return r < task.n ? base + key_batch * sb + (key_base + task.s0 + r) * st + hk * sh : nullptr;
    };
  };
  load_rows<T>(sk, ldk, Cfg::kKeys, p.dk_dim, krow(kp, p.k_sb, p.k_st, p.k_sh), tid, Cfg::kThreads);
  load_rows<T>(sv, ldv, Cfg::kKeys, p.dv_dim, krow(vp, p.v_sb, p.v_st, p.v_sh), tid, Cfg::kThreads);

  // The query tokens of this tile: t_lo + i (ranges) or list[i] (selection), i < ntok.
  std::int64_t t_lo = task.s0, ntok = 0;
  const std::int32_t* list = nullptr;
  switch (p.mode) {
    case kBwdDense: ntok = seq.len - task.s0; break;
    case kBwdWin: ntok = min64(seq.len, task.s0 + task.n - 1 + p.window) - task.s0; break;
    case kBwdCmp:
      t_lo = task.s0 * p.stride + p.block_len - 1;
      ntok = max64(0, seq.len - t_lo);
      break;
    default: {
      const std::int64_t idx = task.list0 + (std::int64_t(hk) * task.nblk + task.block) * task.nchunk;
      const std::int64_t b = p.who_offset[idx], e = p.who_offset[idx + task.nchunk];
      list = p.who + b;
      ntok = e - b;
    }
  }
  const std::int64_t r_begin = min64(task.i0, ntok) * p.G, r_end = min64(task.i1, ntok) * p.G;

  const int kr0 = warp * 16 + g, kr1 = kr0 + 8;  // this thread's key rows
  const std::int64_t key0 = kr0 < task.n ? task.s0 + kr0 : -1, key1 = kr1 < task.n ? task.s0 + kr1 : -1;
  float dk[DKT][4], dv[DVT][4];
#pragma unroll
  for (int n = 0; n < DKT; ++n) dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
#pragma unroll
  for (int n = 0; n < DVT; ++n) dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;

  for (std::int64_t r0 = r_begin; r0 < r_end; r0 += Cfg::kRows) {
    __syncthreads();
    auto token_of = [&](int r) -> std::int64_t {
      const std::int64_t ri = r0 + r;
      if (ri >= r_end) return -1;
      const std::int64_t i = ri / p.G;
      return list != nullptr ? std::int64_t(list[i]) : t_lo + i;
    };
    auto head_of = [&](int r) { return hk * p.G + static_cast<int>((r0 + r) % p.G); };
    load_rows<T>(sq, ldk, Cfg::kRows, p.dk_dim, [&](int r) -> const T* {
      const std::int64_t t = token_of(r);
      return t < 0 ? nullptr : q + seq.batch * p.q_sb + (seq.start + t) * p.q_st + head_of(r) * p.q_sh;
    }, tid, Cfg::kThreads);
    load_rows<T>(sdo, ldv, Cfg::kRows, p.dv_dim, [&](int r) -> const T* {
      const std::int64_t t = token_of(r);
      return t < 0 ? nullptr : dout + seq.batch * p.do_sb + (seq.start + t) * p.do_st + head_of(r) * p.do_sh;
    }, tid, Cfg::kThreads);
    if (tid < Cfg::kRows) {
      const std::int64_t t = token_of(tid);
      stok[tid] = t;
      sinfo[tid] = bwd_row_info<T>(p, seq, t, head_of(tid));
    }
    __syncthreads();

    float st[NQ][4], dpt[NQ][4];
#pragma unroll
    for (int j = 0; j < NQ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
    WarpGemm<T, NQ>::qk(st, sk + warp * 16 * ldk, ldk, sq, ldk, p.dk_dim);
    WarpGemm<T, NQ>::qk(dpt, sv + warp * 16 * ldv, ldv, sdo, ldv, p.dv_dim);
#pragma unroll
    for (int j = 0; j < NQ; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = j * 8 + 2 * c + e;
        const RowInfo in = sinfo[col];
        const std::int64_t t = stok[col];
        const float p0 = key0 >= 0 && bwd_allowed(p, t, key0) ? exp2f(st[j][e] * p.scale_log2 - in.lse2) : 0.f;
        const float p1 = key1 >= 0 && bwd_allowed(p, t, key1) ? exp2f(st[j][2 + e] * p.scale_log2 - in.lse2) : 0.f;
        st[j][e] = p0 * (in.gate * dpt[j][e] - in.D);      // dS^T
        st[j][2 + e] = p1 * (in.gate * dpt[j][2 + e] - in.D);
        dpt[j][e] = p0 * in.gate;                          // P^T of dO_b = gate dO
        dpt[j][2 + e] = p1 * in.gate;
      }
    WarpGemm<T, NQ>::template pv<DVT>(dv, dpt, sdo, ldv, p.dv_dim);
    WarpGemm<T, NQ>::template pv<DKT>(dk, st, sq, ldk, p.dk_dim);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const std::int64_t key = half ? key1 : key0;
    if (key < 0) continue;
    if (task.part >= 0) {  // one part of a split tile: dK | dV row into the partials
      const int width = p.dk_dim + p.dv_dim;
      float* dst = p.partial + ((task.part * p.H_kv + hk) * Cfg::kKeys + (half ? kr1 : kr0)) * width;
      store_frag_row<DKT>(dst, dk, half, p.dk_dim, p.scale, false);
      store_frag_row<DVT>(dst + p.dk_dim, dv, half, p.dv_dim, 1.f, false);
      continue;
    }
    const std::int64_t at = key_base + key;
    store_frag_row<DKT>(p.dk + key_batch * p.dk_sb + at * p.dk_st + hk * p.dk_sh, dk, half, p.dk_dim, p.scale,
                        p.accumulate);
    store_frag_row<DVT>(p.dv + key_batch * p.dv_sb + at * p.dv_st + hk * p.dv_sh, dv, half, p.dv_dim, 1.f,
                        p.accumulate);
  }
}

// Sum of a split tile's partials, in part order, written (or added) like an unsplit tile.
// grid (splits, H_kv), 256 threads over the tile's n x (d_k + d_v) values.
static __global__ void __launch_bounds__(256) key_reduce_kernel(const BwdParams p, const KeyReduce* splits) {
  const KeyReduce r = splits[blockIdx.x];
  const int hk = blockIdx.y, width = p.dk_dim + p.dv_dim;
  const SeqInfo seq = p.seqs[r.seq];
  const bool cmp = p.mode == kBwdCmp;
  const std::int64_t key_base = cmp ? seq.cmp0 : seq.start, key_batch = cmp ? 0 : seq.batch;
  for (int i = threadIdx.x; i < r.n * width; i += blockDim.x) {
    const int row = i / width, col = i - row * width;
    float acc = 0.f;
    for (int q = 0; q < r.nparts; ++q)
      acc += p.partial[(((r.part0 + q) * p.H_kv + hk) * 64 + row) * std::int64_t(width) + col];
    const std::int64_t at = key_base + r.s0 + row;
    float* dst = col < p.dk_dim ? p.dk + key_batch * p.dk_sb + at * p.dk_st + hk * p.dk_sh + col
                                : p.dv + key_batch * p.dv_sb + at * p.dv_st + hk * p.dv_sh + (col - p.dk_dim);
    *dst = (p.accumulate ? *dst : 0.f) + acc;
  }
}

}  // namespace nsa::cuda::detail
