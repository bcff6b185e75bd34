// Host-side launch helpers of the backward kernels: head-dim dispatch, zeroing of views,
// the key-major pass with its row split (run_key_pass), the exclusive scan.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>
#include <vector>

#include "cuda/backward_key_tile.cuh"
#include "cuda/backward_gates.cuh"
#include "cuda/backward_params.cuh"
#include "cuda/backward_sel_index.cuh"
#include "cuda/backward_selection_dq.cuh"
#include "cuda/backward_tiled_dq.cuh"
#include "cuda/forward.cuh"

namespace nsa::cuda::detail {

inline int bucket_dk(index_t d) { return d <= 128 ? 128 : d <= 192 ? 192 : 256; }

template <class Kernel>
void launch_bwd(Kernel kernel, dim3 grid, int threads, std::size_t smem, cudaStream_t stream,
                const BwdParams& bp, const char* name) {
  if (grid.x == 0 || grid.y == 0) return;
  NSA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<grid, threads, smem, stream>>>(bp);
  NSA_CUDA_CHECK_LAUNCH(name);
}

// dq of a tiled branch (bp.mode, bp.k/v, bp.lse/D, bp.accumulate set by the caller).
template <class T>
void launch_tiled_dq(const BwdParams& bp, std::size_t num_tiles, cudaStream_t stream) {
  const std::size_t smem = BwdDqConfig<T>::smem_bytes(bp.dk_dim, bp.dv_dim);
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(bp.H_kv * bp.chunks));
  switch (bucket_dk(bp.dk_dim)) {
    case 128: launch_bwd(tiled_dq_kernel<T, 128>, grid, 128, smem, stream, bp, "tiled_dq_kernel"); break;
    case 192: launch_bwd(tiled_dq_kernel<T, 192>, grid, 128, smem, stream, bp, "tiled_dq_kernel"); break;
    default: launch_bwd(tiled_dq_kernel<T, 256>, grid, 128, smem, stream, bp, "tiled_dq_kernel"); break;
  }
}

// dK/dV key-major over bp.tiles (KeyTask list of num_tasks entries).
template <class T>
void launch_key_pass(const BwdParams& bp, std::size_t num_tasks, cudaStream_t stream) {
  const std::size_t smem = BwdKeyConfig<T>::smem_bytes(bp.dk_dim, bp.dv_dim);
  const dim3 grid(static_cast<unsigned>(num_tasks), static_cast<unsigned>(bp.H_kv));
  if (bp.dk_dim <= 128 && bp.dv_dim <= 128)
    launch_bwd(key_tile_backward_kernel<T, 128, 128>, grid, 128, smem, stream, bp, "key_tile_backward_kernel");
  else if (bp.dk_dim <= 192 && bp.dv_dim <= 128)
    launch_bwd(key_tile_backward_kernel<T, 192, 128>, grid, 128, smem, stream, bp, "key_tile_backward_kernel");
  else
    launch_bwd(key_tile_backward_kernel<T, 256, 256>, grid, 128, smem, stream, bp, "key_tile_backward_kernel");
}

template <class T>
void launch_selection_dq(const BwdParams& bp, index_t rows, cudaStream_t stream) {
  using Cfg = SlcDqConfig<T>;
  const int chunks16 = (bp.G + 15) / 16;
  BwdParams sp = bp;
  sp.chunks = chunks16;
  sp.tiles_per_block = (bp.sel_block + Cfg::kKeys - 1) / Cfg::kKeys;
  const std::size_t smem = Cfg::smem_bytes(bp.dk_dim, bp.dv_dim, bp.top_n * sp.tiles_per_block);
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(bp.H_kv * chunks16));
  switch (bucket_dk(bp.dk_dim)) {
    case 128: launch_bwd(selection_dq_kernel<T, 128>, grid, Cfg::kThreads, smem, stream, sp, "selection_dq_kernel"); break;
    case 192: launch_bwd(selection_dq_kernel<T, 192>, grid, Cfg::kThreads, smem, stream, sp, "selection_dq_kernel"); break;
    default: launch_bwd(selection_dq_kernel<T, 256>, grid, Cfg::kThreads, smem, stream, sp, "selection_dq_kernel"); break;
  }
}

// The gate / D kernel (one warp per row and head) over all rows of p: gp's pointers and
// strides are set by the caller (NSA: 3 branches with gates; dense: 1, gate 1).
template <class T>
void launch_gate_backward(GateBwdParams gp, const Problem& p, int branches, cudaStream_t stream) {
  gp.rows = p.rows;
  gp.tokens = p.tokens;
  gp.H = static_cast<int>(p.heads);
  gp.dv = static_cast<int>(p.d_v);
  gp.branches = branches;
  const std::int64_t threads = p.rows * p.heads * 32;
  gate_backward_kernel<T><<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(gp);
  NSA_CUDA_CHECK_LAUNCH("gate_backward_kernel");
}

inline void zero_view(const TensorView<float>& v, cudaStream_t stream) {
  ZeroView z{v.data, v.stride[0], v.stride[1], v.stride[2], v.shape[1], v.shape[2], v.shape[3],
             v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3]};
  if (z.total == 0) return;
  zero_view_kernel<<<static_cast<unsigned>((z.total + 255) / 256), 256, 0, stream>>>(z);
  NSA_CUDA_CHECK_LAUNCH("zero_view_kernel");
}

template <class V>
void set_out_strides(std::int64_t& sb, std::int64_t& st, std::int64_t& sh, const V& v) {
  sb = v.stride[0];
  st = v.stride[1];
  sh = v.stride[2];
}

constexpr std::int64_t kAllTokens = std::int64_t(1) << 62;  // KeyTask::i1 of an unsplit tile

// Key tiles of <= 64 keys over [0, n_keys) of every sequence; n_keys(s) given.
template <class NKeys>
std::vector<KeyTask> key_tasks(const Problem& p, NKeys n_keys) {
  std::vector<KeyTask> tasks;
  for (std::size_t s = 0; s < p.seqs.size(); ++s) {
    const index_t n = n_keys(s);
    for (index_t s0 = 0; s0 < n; s0 += 64)
      tasks.push_back({static_cast<std::int64_t>(s), s0, static_cast<int>(std::min<index_t>(64, n - s0)), -1, 0, 0, 0,
                       0, kAllTokens, -1});
  }
  return tasks;
}

// Runs one key-major pass over `tasks`. tokens(task): an upper bound of the query tokens
// the tile sees, or -1 for a tile that is never split. Tiles with more than seg_tokens
// tokens are split into parts of seg_tokens tokens (partials + key_reduce_kernel), where
// seg_tokens * G ~ max(1024, all rows / (8 * SMs)) rows: enough CTAs for the GPU, no tile
// much longer than the average. Tasks then run longest first.
template <class T, class Tokens>
void run_key_pass(BwdParams bp, std::vector<KeyTask> tasks, Tokens tokens, int slot0, Workspace& ws,
                  cudaStream_t stream) {
  if (tasks.empty()) return;
  int dev = 0, sms = 0;
  NSA_CUDA_CHECK(cudaGetDevice(&dev));
  NSA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  std::int64_t total_rows = 0;
  for (const KeyTask& t : tasks) total_rows += std::max<std::int64_t>(0, tokens(t)) * bp.G;
  const std::int64_t seg_rows = std::max<std::int64_t>(1024, total_rows / (8 * std::max(sms, 1)) + 1);
  const std::int64_t seg_tokens = std::max<std::int64_t>(1, (seg_rows + bp.G - 1) / bp.G);
  std::vector<KeyTask> run;
  std::vector<KeyReduce> splits;
  std::vector<std::int64_t> work;  // estimated tokens per CTA, for the ordering
  std::int64_t parts = 0;
  for (const KeyTask& t : tasks) {
    const std::int64_t bound = tokens(t);
    if (bound <= seg_tokens) {
      run.push_back(t);
      work.push_back(bound < 0 ? 0 : bound);
      continue;
    }
    const std::int64_t nparts = (bound + seg_tokens - 1) / seg_tokens;
    splits.push_back({t.seq, t.s0, parts, t.n, static_cast<int>(nparts)});
    for (std::int64_t q = 0; q < nparts; ++q) {
      KeyTask x = t;
      x.i0 = q * seg_tokens;
      x.i1 = q + 1 == nparts ? kAllTokens : (q + 1) * seg_tokens;
      x.part = parts++;
      run.push_back(x);
      work.push_back(std::min(bound, (q + 1) * seg_tokens) - q * seg_tokens);
    }
  }
  std::vector<std::size_t> order(run.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return work[a] > work[b]; });
  std::vector<KeyTask> sorted;
  for (std::size_t i : order) sorted.push_back(run[i]);
  KeyTask* tasks_dev = nullptr;
  upload(ws, slot0, sorted, stream, &tasks_dev);
  bp.tiles = tasks_dev;
  bp.partial = static_cast<float*>(ws.get(slot0 + 1, std::max<std::size_t>(1, std::size_t(parts) * bp.H_kv * 64 *
                                                                               (bp.dk_dim + bp.dv_dim)) * sizeof(float)));
  launch_key_pass<T>(bp, sorted.size(), stream);
  if (splits.empty()) return;
  KeyReduce* splits_dev = nullptr;
  upload(ws, slot0 + 2, splits, stream, &splits_dev);
  key_reduce_kernel<<<dim3(static_cast<unsigned>(splits.size()), static_cast<unsigned>(bp.H_kv)), 256, 0, stream>>>(
      bp, splits_dev);
  NSA_CUDA_CHECK_LAUNCH("key_reduce_kernel");
}

// Exclusive scan of n int64 values in place (backward_sel_index.cuh); slot: scratch for the block sums.
inline void exclusive_scan(std::int64_t* x, std::int64_t n, int slot, Workspace& ws, cudaStream_t stream) {
  const std::int64_t nb = (n + kScanBlock - 1) / kScanBlock;
  auto* sums = static_cast<std::int64_t*>(ws.get(slot, std::size_t(std::max<std::int64_t>(nb, 1)) * 8));
  scan_block_sums_kernel<<<static_cast<unsigned>(nb), kScanBlock, 0, stream>>>(x, n, sums);
  NSA_CUDA_CHECK_LAUNCH("scan_block_sums_kernel");
  scan_sums_kernel<<<1, kScanBlock, 0, stream>>>(sums, nb);
  NSA_CUDA_CHECK_LAUNCH("scan_sums_kernel");
  scan_apply_kernel<<<static_cast<unsigned>(nb), kScanBlock, 0, stream>>>(x, n, sums);
  NSA_CUDA_CHECK_LAUNCH("scan_apply_kernel");
}

}  // namespace nsa::cuda::detail
