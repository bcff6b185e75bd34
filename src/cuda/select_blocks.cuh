// Top-n selection of blocks per (token, kv group) from the importance scores that the
// compression kernel accumulated: forced initial and local blocks first, then the highest
// remaining scores (ties to the lower block index), kept ascending, -1 padded (spec,
// branch 2). One warp per (row, kv head); the score row is staged in shared memory.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <climits>

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

struct SelectParams {
  const float* scores;  // [chunks, rows, H_kv, nsel_max]
  std::int32_t* sel;    // [rows, H_kv, top_n]
  const SeqInfo* seqs;
  std::int64_t rows, nsel_max;
  int num_seqs, chunks, H_kv, top_n, n_init, n_local, sel_block, warps_per_block;
};

static __global__ void select_blocks_kernel(const SelectParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const std::int64_t task = std::int64_t(blockIdx.x) * p.warps_per_block + warp;
  if (task >= p.rows * p.H_kv) return;
  float* sc = reinterpret_cast<float*>(smem_raw) + std::size_t(warp) * (p.nsel_max + p.top_n);
  int* chosen = reinterpret_cast<int*>(sc + p.nsel_max);
  const std::int64_t row = task / p.H_kv;
  const int hk = static_cast<int>(task % p.H_kv);
  const SeqInfo seq = p.seqs[find_seq(p.seqs, p.num_seqs, row)];
  const std::int64_t t = row - seq.row0;
  const int cur = static_cast<int>(t / p.sel_block), nsel = cur + 1;

  for (int j = lane; j < nsel; j += 32) {
    float s = 0.f;
    for (int ch = 0; ch < p.chunks; ++ch)
      s += p.scores[((std::int64_t(ch) * p.rows + row) * p.H_kv + hk) * p.nsel_max + j];
    sc[j] = s;  // >= 0; chosen blocks are marked -1
  }
  __syncwarp();
  int count = 0;
  if (lane == 0) {
    for (int j = 0; j < p.n_init && j < nsel; ++j) { chosen[count++] = j; sc[j] = -1.f; }
    for (int k = 0; k < p.n_local; ++k) {
      const int j = cur - k;
      if (j >= 0 && sc[j] >= 0.f) { chosen[count++] = j; sc[j] = -1.f; }
    }
  }
  count = __shfl_sync(0xffffffffu, count, 0);
  __syncwarp();
  const int want = min(p.top_n, nsel);
  for (; count < want; ++count) {
    float best = -0.5f;  // chosen blocks hold -1, candidates >= 0
    int bi = INT_MAX;
    for (int j = lane; j < nsel; j += 32) {
      const float s = sc[j];
      if (s > best) { best = s; bi = j; }  // ascending j per lane: ties keep the lower index
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, off);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
      if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    if (lane == 0) { chosen[count] = bi; sc[bi] = -1.f; }
    __syncwarp();
  }
  if (lane == 0) {
    for (int i = 1; i < count; ++i) {  // insertion sort, count <= top_n
      const int x = chosen[i];
      int k = i - 1;
      while (k >= 0 && chosen[k] > x) { chosen[k + 1] = chosen[k]; --k; }
      chosen[k + 1] = x;
    }
  }
  __syncwarp();
  std::int32_t* out = p.sel + (row * p.H_kv + hk) * p.top_n;
  for (int i = lane; i < p.top_n; i += 32) out[i] = i < count ? chosen[i] : -1;
}

}  // namespace nsa::cuda::detail
