// Host launchers of the NSA forward pass and the dense baseline, for one storage type.
// Included once per storage type (forward_f32.cu, forward_bf16.cu, forward_f16.cu) to
// bound compile time: per type, 2 tiled-attention and 2 selection instantiations
// (d_v <= 128 and d_v <= 256), 1 GEMM, 1 mean kernel.
//
// Order of the forward pass (one stream, no host synchronisation):
//   1. phi_K, phi_V             -> Kc, Vc                  (phi.cuh)
//   2. compression attention    -> o_cmp, lse_cmp, scores  (tiled_attention.cuh, mode cmp)
//   3. top-n selection          -> sel_blocks              (select_blocks.cuh)
//   4. window attention         -> o_win, lse_win          (tiled_attention.cuh, mode win)
//   5. selection attention + gated combine -> out, lse_slc (selection_attention.cuh)
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/problem.h"
#include "cuda/common.cuh"
#include "cuda/phi.cuh"
#include "cuda/select_blocks.cuh"
#include "cuda/selection_attention.cuh"
#include "cuda/tiled_attention.cuh"

namespace nsa::cuda::detail {

// Workspace slots.
enum Slot : int { kSlotSeqs, kSlotTiles, kSlotBranchOut, kSlotLse, kSlotScores, kSlotSel,
                  kSlotKc, kSlotVc, kSlotHidden, kSlotDenseTiles };

inline void check_dims(index_t dk, index_t dv) {
  for (auto [d, name] : {std::pair{dk, "d_k"}, std::pair{dv, "d_v"}})
    if (d % 16 != 0 || d < 16 || d > 256)
      throw Error(std::string("CUDA kernels need ") + name + " to be a multiple of 16 in [16, 256], got " +
                  std::to_string(d));
}

template <class V>
void check_aligned(const V& v, const char* name) {
  using E = std::remove_cv_t<std::remove_pointer_t<decltype(v.data)>>;
  const std::size_t bytes = sizeof(E);
  if (reinterpret_cast<std::uintptr_t>(v.data) % 16 != 0 || (v.stride[0] * bytes) % 16 != 0 ||
      (v.stride[1] * bytes) % 16 != 0 || (v.stride[2] * bytes) % 16 != 0)
    throw Error(std::string(name) + ": CUDA kernels need 16-byte aligned data and strides");
}

// With NSA_CUDA_PHASES=1 in the environment, nsa_forward records an event after each
// phase and prints the phase times to stderr (synchronising; for the kernel lab only).
class PhaseTimer {
 public:
  explicit PhaseTimer(cudaStream_t stream) : stream_(stream) {
    const char* e = std::getenv("NSA_CUDA_PHASES");
    on_ = e != nullptr && *e != '\0' && *e != '0';
    mark("start");
  }
  void mark(const char* name) {
    if (!on_) return;
    cudaEvent_t e;
    NSA_CUDA_CHECK(cudaEventCreate(&e));
    NSA_CUDA_CHECK(cudaEventRecord(e, stream_));
    events_.push_back(e);
    names_.push_back(name);
  }
  ~PhaseTimer() {
    if (!on_ || events_.empty()) return;
    cudaEventSynchronize(events_.back());
    std::string line = "nsa_forward phases (ms):";
    float total = 0.f;
    for (std::size_t i = 1; i < events_.size(); ++i) {
      float ms = 0.f;
      cudaEventElapsedTime(&ms, events_[i - 1], events_[i]);
      total += ms;
      char buf[64];
      std::snprintf(buf, sizeof(buf), " %s=%.3f", names_[i], ms);
      line += buf;
    }
    char buf[64];
    std::snprintf(buf, sizeof(buf), " total=%.3f", total);
    std::fprintf(stderr, "%s%s\n", line.c_str(), buf);
    for (auto e : events_) cudaEventDestroy(e);
  }

 private:
  cudaStream_t stream_;
  bool on_ = false;
  std::vector<cudaEvent_t> events_;
  std::vector<const char*> names_;
};

template <class T>
void upload(Workspace& ws, int slot, const std::vector<T>& host, cudaStream_t stream, T** dev) {
  *dev = static_cast<T*>(ws.get(slot, std::max<std::size_t>(host.size(), 1) * sizeof(T)));
  // From pageable memory, cudaMemcpyAsync returns once the source has been staged, so the
  // host vector may die right after; the copy stays ordered on the stream.
  NSA_CUDA_CHECK(cudaMemcpyAsync(*dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

inline std::vector<SeqInfo> seq_infos(const Problem& p) {
  std::vector<SeqInfo> out;
  for (std::size_t s = 0; s < p.seqs.size(); ++s) {
    const auto& q = p.seqs[s];
    out.push_back({q.batch, q.start, q.len, q.row0, p.cmp_offsets.empty() ? 0 : p.cmp_offsets[s]});
  }
  return out;
}

inline std::vector<TileA> tiled_plan(const Problem& p, int tokens_per_tile) {
  std::vector<TileA> tiles;
  for (std::size_t s = 0; s < p.seqs.size(); ++s)
    for (index_t t0 = 0; t0 < p.seqs[s].len; t0 += tokens_per_tile)
      tiles.push_back({static_cast<std::int64_t>(s), t0});
  // Longest tiles (latest tokens: most keys) first, so the tail of the grid is short.
  std::reverse(tiles.begin(), tiles.end());
  return tiles;
}

// Fills the group packing of the tiled kernel: gh heads per token slot, chunks of gh heads.
inline void tiled_packing(TiledParams& tp, const Problem& p) {
  tp.H = static_cast<int>(p.heads);
  tp.H_kv = static_cast<int>(p.kv_heads);
  tp.G = static_cast<int>(p.group);
  tp.gh = std::min(tp.G, 64);
  tp.chunks = (tp.G + tp.gh - 1) / tp.gh;
  tp.tokens_per_tile = 64 / tp.gh;
  tp.dk = static_cast<int>(p.d_k);
  tp.dv = static_cast<int>(p.d_v);
  tp.rows = p.rows;
}

template <class T>
void launch_tiled(const TiledParams& tp, std::size_t num_tiles, cudaStream_t stream) {
  if (num_tiles == 0) return;
  const std::size_t smem = TiledConfig<T>::smem_bytes(tp.dk, tp.dv);
  const dim3 grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(tp.H_kv * tp.chunks));
  if (tp.dv <= 128) {
    NSA_CUDA_CHECK(cudaFuncSetAttribute(tiled_attention_kernel<T, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    tiled_attention_kernel<T, 128><<<grid, TiledConfig<T>::kThreads, smem, stream>>>(tp);
  } else {
    NSA_CUDA_CHECK(cudaFuncSetAttribute(tiled_attention_kernel<T, 256>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    tiled_attention_kernel<T, 256><<<grid, TiledConfig<T>::kThreads, smem, stream>>>(tp);
  }
  NSA_CUDA_CHECK_LAUNCH("tiled_attention_kernel");
}

template <class V>
void set_strides(std::int64_t& sb, std::int64_t& st, std::int64_t& sh, const V& v) {
  sb = v.stride[0];
  st = v.stride[1];
  sh = v.stride[2];
}

template <class Tag>
void run_phi(const Config& config, const Problem& p, const TensorView<const Tag>& x,
             const PhiWeights<Tag>& w, index_t dim, void* dst, const SeqInfo* seqs,
             Workspace& ws, cudaStream_t stream) {
  using T = typename DeviceType<Tag>::type;
  const index_t total_cmp = p.cmp_offsets.back();
  if (total_cmp == 0) return;
  GemmParams g{};
  g.x = x.data;
  set_strides(g.x_sb, g.x_st, g.x_sh, x);
  g.seqs = seqs;
  g.num_seqs = static_cast<int>(p.seqs.size());
  g.H_kv = static_cast<int>(p.kv_heads);
  g.dim = static_cast<int>(dim);
  g.stride = config.stride();
  g.M = total_cmp * p.kv_heads;
  launch_phi<T>(config, g, w, dim, dst, kSlotHidden, ws, stream);
}

template <class Tag>
void nsa_forward_impl(const Config& config, const NsaInputs<Tag>& in, TensorView<Tag> out,
                      NsaSavedDevice* saved, Workspace& ws, void* stream_ptr) {
  using T = typename DeviceType<Tag>::type;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const Problem p = validate_nsa(config, in, out, /*check_values=*/false);
  check_dims(p.d_k, p.d_v);
  const struct { const TensorView<const Tag>& v; const char* name; } views[] = {
      {in.q, "q"}, {in.k_cmp, "k_cmp"}, {in.v_cmp, "v_cmp"}, {in.k_slc, "k_slc"}, {in.v_slc, "v_slc"},
      {in.k_win, "k_win"}, {in.v_win, "v_win"}};
  for (const auto& v : views) check_aligned(v.v, v.name);
  check_aligned(out, "out");
  if (p.heads * std::int64_t(3) > (std::int64_t(1) << 31)) throw Error("too many heads");

  const index_t rows = p.rows, H = p.heads, Hkv = p.kv_heads, dv = p.d_v, dk = p.d_k;
  const index_t total_cmp = p.cmp_offsets.back();
  const int top_n = config.top_n();
  index_t max_len = 0;
  for (const auto& s : p.seqs) max_len = std::max(max_len, s.len);
  const index_t nsel_max = std::max<index_t>(1, config.num_sel_blocks(max_len));

  // Outputs kept for the backward pass (saved) or scratch (workspace).
  auto buffer = [&](DeviceBuffer* keep, int slot, std::size_t bytes) -> void* {
    if (keep != nullptr) { keep->reserve(bytes); return keep->data(); }
    return ws.get(slot, bytes);
  };
  const std::size_t elt = sizeof(T);
  void* kc = buffer(saved ? &saved->k_cmp_blocks : nullptr, kSlotKc, std::max<index_t>(total_cmp, 1) * Hkv * dk * elt);
  void* vc = buffer(saved ? &saved->v_cmp_blocks : nullptr, kSlotVc, std::max<index_t>(total_cmp, 1) * Hkv * dv * elt);
  float* branch_out = static_cast<float*>(buffer(saved ? &saved->branch_out : nullptr, kSlotBranchOut, std::size_t(3) * rows * H * dv * sizeof(float)));
  float* lse = static_cast<float*>(buffer(saved ? &saved->lse : nullptr, kSlotLse, std::size_t(3) * rows * H * sizeof(float)));
  auto* sel = static_cast<std::int32_t*>(buffer(saved ? &saved->sel_blocks : nullptr, kSlotSel, std::size_t(rows) * Hkv * top_n * sizeof(std::int32_t)));
  if (saved != nullptr) {
    saved->rows = rows; saved->heads = H; saved->kv_heads = Hkv; saved->top_n = top_n;
    saved->d_k = dk; saved->d_v = dv; saved->total_cmp = total_cmp; saved->cmp_offsets = p.cmp_offsets;
  }

  SeqInfo* seqs = nullptr;
  upload(ws, kSlotSeqs, seq_infos(p), stream, &seqs);

  PhaseTimer timer(stream);
  // 1. phi
  run_phi<Tag>(config, p, in.k_cmp, in.phi_k, dk, kc, seqs, ws, stream);
  run_phi<Tag>(config, p, in.v_cmp, in.phi_v, dv, vc, seqs, ws, stream);

  timer.mark("phi");
  // 2. compression attention + importance scores
  TiledParams tp{};
  tiled_packing(tp, p);
  const std::vector<TileA> tiles_host = tiled_plan(p, tp.tokens_per_tile);
  TileA* tiles = nullptr;
  upload(ws, kSlotTiles, tiles_host, stream, &tiles);
  float* scores = static_cast<float*>(ws.get(kSlotScores, std::size_t(tp.chunks) * rows * Hkv * nsel_max * sizeof(float)));
  NSA_CUDA_CHECK(cudaMemsetAsync(scores, 0, std::size_t(tp.chunks) * rows * Hkv * nsel_max * sizeof(float), stream));
  tp.q = in.q.data;
  set_strides(tp.q_sb, tp.q_st, tp.q_sh, in.q);
  tp.k = kc;
  tp.k_sb = 0; tp.k_st = Hkv * dk; tp.k_sh = dk;
  tp.v = vc;
  tp.v_sb = 0; tp.v_st = Hkv * dv; tp.v_sh = dv;
  tp.out = branch_out;
  tp.out_f32 = true;
  tp.lse = lse;
  tp.scores = scores;
  tp.nsel_max = nsel_max;
  tp.seqs = seqs;
  tp.tiles = tiles;
  tp.scale_log2 = static_cast<float>(p.scale) * kLog2e;
  tp.mode = kCmpMode;
  tp.block_len = config.block_len();
  tp.stride = config.stride();
  tp.sel_block = config.sel_block();
  tp.window = config.window();
  launch_tiled<T>(tp, tiles_host.size(), stream);
  timer.mark("cmp+scores");

  // 3. top-n selection
  {
    SelectParams sp{};
    sp.scores = scores;
    sp.sel = sel;
    sp.seqs = seqs;
    sp.rows = rows;
    sp.nsel_max = nsel_max;
    sp.num_seqs = static_cast<int>(p.seqs.size());
    sp.chunks = tp.chunks;
    sp.H_kv = static_cast<int>(Hkv);
    sp.top_n = top_n;
    sp.n_init = config.n_init();
    sp.n_local = config.n_local();
    sp.sel_block = config.sel_block();
    const std::size_t per_warp = std::size_t(nsel_max + top_n) * 4;
    int warps = 8;
    while (warps > 1 && per_warp * warps > 96 * 1024) warps /= 2;
    if (per_warp * warps > 200 * 1024)
      throw Error("sequence too long for the CUDA top-n kernel (" + std::to_string(nsel_max) + " selection blocks)");
    sp.warps_per_block = warps;
    const std::size_t smem = per_warp * warps;
    NSA_CUDA_CHECK(cudaFuncSetAttribute(select_blocks_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const std::int64_t tasks = rows * Hkv;
    select_blocks_kernel<<<static_cast<unsigned>((tasks + warps - 1) / warps), 32 * warps, smem, stream>>>(sp);
    NSA_CUDA_CHECK_LAUNCH("select_blocks_kernel");
  }
  timer.mark("topn");

  // 4. sliding window
  TiledParams wp = tp;
  wp.k = in.k_win.data;
  set_strides(wp.k_sb, wp.k_st, wp.k_sh, in.k_win);
  wp.v = in.v_win.data;
  set_strides(wp.v_sb, wp.v_st, wp.v_sh, in.v_win);
  wp.out = branch_out + std::size_t(2) * rows * H * dv;
  wp.lse = lse + std::size_t(2) * rows * H;
  wp.scores = nullptr;
  wp.mode = kWinMode;
  launch_tiled<T>(wp, tiles_host.size(), stream);
  timer.mark("win");

  // 5. selection attention + gated combine
  {
    using Cfg = SlcConfig<T>;
    SlcParams sp{};
    sp.q = in.q.data;
    set_strides(sp.q_sb, sp.q_st, sp.q_sh, in.q);
    sp.k = in.k_slc.data;
    set_strides(sp.k_sb, sp.k_st, sp.k_sh, in.k_slc);
    sp.v = in.v_slc.data;
    set_strides(sp.v_sb, sp.v_st, sp.v_sh, in.v_slc);
    sp.gates = in.gates.data;
    set_strides(sp.g_sb, sp.g_st, sp.g_sh, in.gates);
    sp.out = out.data;
    set_strides(sp.o_sb, sp.o_st, sp.o_sh, out);
    sp.o_cmp = branch_out;
    sp.o_win = branch_out + std::size_t(2) * rows * H * dv;
    sp.o_slc = saved != nullptr ? branch_out + std::size_t(1) * rows * H * dv : nullptr;
    sp.lse = lse + std::size_t(1) * rows * H;
    sp.sel = sel;
    sp.seqs = seqs;
    sp.num_seqs = static_cast<int>(p.seqs.size());
    sp.H = static_cast<int>(H);
    sp.H_kv = static_cast<int>(Hkv);
    sp.G = static_cast<int>(p.group);
    sp.chunks = (sp.G + 15) / 16;
    sp.dk = static_cast<int>(dk);
    sp.dv = static_cast<int>(dv);
    sp.top_n = top_n;
    sp.sel_block = config.sel_block();
    sp.tiles_per_block = (config.sel_block() + Cfg::kKeys - 1) / Cfg::kKeys;
    sp.scale_log2 = tp.scale_log2;
    const std::size_t smem = Cfg::smem_bytes(sp.dk, sp.dv, top_n * sp.tiles_per_block);
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(Hkv * sp.chunks));
    if (dv <= 128) {
      NSA_CUDA_CHECK(cudaFuncSetAttribute(selection_attention_kernel<T, 128>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      selection_attention_kernel<T, 128><<<grid, Cfg::kThreads, smem, stream>>>(sp);
    } else {
      NSA_CUDA_CHECK(cudaFuncSetAttribute(selection_attention_kernel<T, 256>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
      selection_attention_kernel<T, 256><<<grid, Cfg::kThreads, smem, stream>>>(sp);
    }
    NSA_CUDA_CHECK_LAUNCH("selection_attention_kernel");
  }
  timer.mark("slc+combine");
}

template <class Tag>
void dense_forward_impl(const DenseInputs<Tag>& in, TensorView<Tag> out, float* lse, Workspace& ws,
                        void* stream_ptr) {
  using T = typename DeviceType<Tag>::type;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const Problem p = validate_dense(in, out, /*check_values=*/false);
  check_dims(p.d_k, p.d_v);
  check_aligned(in.q, "q");
  check_aligned(in.k, "k");
  check_aligned(in.v, "v");
  check_aligned(out, "out");
  SeqInfo* seqs = nullptr;
  upload(ws, kSlotSeqs, seq_infos(p), stream, &seqs);
  TiledParams tp{};
  tiled_packing(tp, p);
  const std::vector<TileA> tiles_host = tiled_plan(p, tp.tokens_per_tile);
  TileA* tiles = nullptr;
  upload(ws, kSlotDenseTiles, tiles_host, stream, &tiles);
  tp.q = in.q.data;
  set_strides(tp.q_sb, tp.q_st, tp.q_sh, in.q);
  tp.k = in.k.data;
  set_strides(tp.k_sb, tp.k_st, tp.k_sh, in.k);
  tp.v = in.v.data;
  set_strides(tp.v_sb, tp.v_st, tp.v_sh, in.v);
  tp.out = out.data;
  set_strides(tp.o_sb, tp.o_st, tp.o_sh, out);
  tp.out_f32 = false;
  tp.lse = lse;
  tp.seqs = seqs;
  tp.tiles = tiles;
  tp.scale_log2 = static_cast<float>(p.scale) * kLog2e;
  tp.mode = kDense;
  launch_tiled<T>(tp, tiles_host.size(), stream);
}

}  // namespace nsa::cuda::detail

namespace nsa::cuda {
template <class Tag>
void nsa_forward(const Config& config, const NsaInputs<Tag>& in, TensorView<Tag> out,
                 NsaSavedDevice* saved, Workspace& workspace, void* stream) {
  detail::nsa_forward_impl<Tag>(config, in, out, saved, workspace, stream);
}
template <class Tag>
void dense_forward(const DenseInputs<Tag>& in, TensorView<Tag> out, float* lse,
                   Workspace& workspace, void* stream) {
  detail::dense_forward_impl<Tag>(in, out, lse, workspace, stream);
}
}  // namespace nsa::cuda

// Explicit instantiation of the public entry points for one storage type.
#define NSA_CUDA_INSTANTIATE(Tag)                                                               \
  template void nsa::cuda::nsa_forward<Tag>(const nsa::Config&, const nsa::NsaInputs<Tag>&,     \
                                            nsa::TensorView<Tag>, nsa::cuda::NsaSavedDevice*,    \
                                            nsa::cuda::Workspace&, void*);                       \
  template void nsa::cuda::dense_forward<Tag>(const nsa::DenseInputs<Tag>&, nsa::TensorView<Tag>, \
                                              float*, nsa::cuda::Workspace&, void*);
