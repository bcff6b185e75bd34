// Inverse of the saved selection: for every (sequence, kv head, selection block) the list
// of tokens that chose the block, ascending, so that the selection branch's dK/dV can be
// computed key-major (one CTA per block tile, rows in token order) without atomics.
//
// A counting sort with no atomics, deterministic by construction:
//   1. count: one warp per (sequence, kv head, chunk of C tokens) walks its tokens in
//      order and counts, per chosen block, the tokens of the chunk that chose it:
//      count[idx(s, h, j, chunk)], idx = region_s + (h * nblk_s + j) * nchunk_s + chunk.
//      (A token's chosen blocks are distinct, so the lanes never share a counter.)
//   2. exclusive scan of the counts (three kernels: block sums, their scan, local scans):
//      offset[idx] is where the chunk's tokens of block j start; because chunks of one
//      block are adjacent and in token order, the list of (s, h, j) is
//      who[offset[idx(s,h,j,0)] .. offset[idx(s,h,j,0) + nchunk_s]), ascending.
//   3. fill: the same walk as 1, writing the tokens at a cursor copied from the offsets.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

// One warp task of the count / fill walk.
struct SelWalkTask {
  std::int64_t seq, region, t0, t1;  // tokens [t0, t1) of the sequence
  int nblk, nchunk, chunk;
};

struct SelIndexParams {
  const std::int32_t* sel;  // [rows, H_kv, top_n]
  const SeqInfo* seqs;
  const SelWalkTask* tasks;
  std::int64_t num_tasks;
  int H_kv, top_n;
  std::int64_t* counter;  // count (pass 1) or cursor (pass 3), [N + 1]
  std::int32_t* who;      // pass 3 only
  bool fill;
};

// grid: (ceil(num_tasks * H_kv / 4)), 128 threads: one warp per (task, kv head).
static __global__ void sel_walk_kernel(const SelIndexParams p) {
  const std::int64_t w = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= p.num_tasks * p.H_kv) return;
  const SelWalkTask task = p.tasks[w / p.H_kv];
  const int h = static_cast<int>(w % p.H_kv);
  const SeqInfo seq = p.seqs[task.seq];
  const std::int64_t base = task.region + std::int64_t(h) * task.nblk * task.nchunk + task.chunk;
  for (std::int64_t t = task.t0; t < task.t1; ++t) {
    const std::int32_t* row = p.sel + ((seq.row0 + t) * p.H_kv + h) * p.top_n;
    for (int x = lane; x < p.top_n; x += 32) {
      const std::int32_t j = row[x];
      if (j < 0 || j >= task.nblk) continue;
      std::int64_t* ctr = p.counter + base + std::int64_t(j) * task.nchunk;
      if (p.fill) p.who[*ctr] = static_cast<std::int32_t>(t);
      *ctr += 1;
    }
    __syncwarp();  // orders this token's counter updates before the next token's
  }
}

// ---- exclusive scan of n int64 values (in place), 1024 per CTA ------------------------
constexpr int kScanBlock = 1024;

__device__ __forceinline__ std::int64_t block_exclusive_scan(std::int64_t x, std::int64_t* warp_sums,
                                                             std::int64_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  std::int64_t incl = x;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const std::int64_t y = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += y;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    std::int64_t s = lane < (blockDim.x >> 5) ? warp_sums[lane] : 0;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const std::int64_t y = __shfl_up_sync(0xffffffffu, s, off);
      if (lane >= off) s += y;
    }
    warp_sums[lane] = s;  // inclusive over warps
  }
  __syncthreads();
  const std::int64_t before = warp == 0 ? 0 : warp_sums[warp - 1];
  if (total != nullptr && threadIdx.x == 0) *total = warp_sums[(blockDim.x >> 5) - 1];
  const std::int64_t r = before + incl - x;
  __syncthreads();
  return r;
}

// Pass a: sums[b] = sum of block b's values.
static __global__ void __launch_bounds__(kScanBlock) scan_block_sums_kernel(const std::int64_t* x, std::int64_t n,
                                                                            std::int64_t* sums) {
  __shared__ std::int64_t ws[32];
  __shared__ std::int64_t total;
  const std::int64_t i = std::int64_t(blockIdx.x) * kScanBlock + threadIdx.x;
  block_exclusive_scan(i < n ? x[i] : 0, ws, &total);
  if (threadIdx.x == 0) sums[blockIdx.x] = total;
}

// Pass b: one CTA scans the block sums (exclusive, in place), in chunks with a carry.
static __global__ void __launch_bounds__(kScanBlock) scan_sums_kernel(std::int64_t* sums, std::int64_t nb) {
  __shared__ std::int64_t ws[32];
  __shared__ std::int64_t total;
  std::int64_t carry = 0;
  for (std::int64_t c0 = 0; c0 < nb; c0 += kScanBlock) {
    const std::int64_t i = c0 + threadIdx.x;
    const std::int64_t v = i < nb ? sums[i] : 0;
    const std::int64_t e = block_exclusive_scan(v, ws, &total);
    if (i < nb) sums[i] = carry + e;
    __syncthreads();
    carry += total;
    __syncthreads();
  }
}

// Pass c: local exclusive scan plus the block's offset.
static __global__ void __launch_bounds__(kScanBlock) scan_apply_kernel(std::int64_t* x, std::int64_t n,
                                                                       const std::int64_t* sums) {
  __shared__ std::int64_t ws[32];
  const std::int64_t i = std::int64_t(blockIdx.x) * kScanBlock + threadIdx.x;
  const std::int64_t v = i < n ? x[i] : 0;
  const std::int64_t e = block_exclusive_scan(v, ws, nullptr);
  if (i < n) x[i] = sums[blockIdx.x] + e;
}

}  // namespace nsa::cuda::detail
