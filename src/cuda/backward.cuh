// Host launchers of the NSA backward pass and of the dense baseline's backward, for one
// storage type. Included once per storage type (backward_{f32,bf16,f16}.cu).
//
// Order of the NSA backward (one stream, no host synchronisation):
//   0. zero the six dk/dv views (aliased views: the branches add into them)
//   1. gates: dgates, D_b per branch                       (backward_gates.cuh)
//   2. dq: compression (writes), window (adds), selection (adds)
//                                  (backward_tiled_dq.cuh, backward_selection_dq.cuh)
//   3. window dK/dV, key-major, added into dk_win/dv_win    (backward_key_tile.cuh)
//   4. selection: inverse index, then dK/dV key-major, added (backward_sel_index.cuh)
//   5. compression: dKc/dVc key-major into fp32 scratch, then phi backward: parameters
//      written, raw k_cmp/v_cmp gradients added (backward_phi.cuh, backward_phi_launch.cuh)
// Launch helpers (head-dim dispatch, the split key pass, the scan): backward_launch.cuh.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "common/validate_backward.h"
#include "cuda/backward_launch.cuh"
#include "cuda/backward_phi_launch.cuh"
#include "nsa/cuda_backward.h"

namespace nsa::cuda::detail {

// Workspace slots of the backward pass (after the forward's, so that one Workspace can
// serve both). A key pass uses 3 slots from its first (tasks, partials, splits), phi 8.
enum BwdSlot : int {
  kBSlotSeqs = 32, kBSlotD, kBSlotTiles, kBSlotSelWalk, kBSlotSelCount, kBSlotSelCursor,
  kBSlotSelWho, kBSlotScanSums, kBSlotDkc, kBSlotDvc, kBSlotWinPass, kBSlotSlcPass = kBSlotWinPass + 3,
  kBSlotCmpPass = kBSlotSlcPass + 3, kBSlotDensePass = kBSlotCmpPass + 3, kBSlotPhiK = kBSlotDensePass + 3,
  kBSlotPhiV = kBSlotPhiK + 8, kBSlotEnd = kBSlotPhiV + 8
};

template <class Tag>
void nsa_backward_impl(const Config& config, const NsaInputs<Tag>& in, const NsaSavedDevice& saved,
                       TensorView<const Tag> d_out, const NsaGradients<float>& g, Workspace& ws,
                       void* stream_ptr) {
  using T = typename DeviceType<Tag>::type;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  // ---- validation (throws before launching anything)
  nsa::detail::check_view(d_out, "d_out");
  if (in.q.data != nullptr && in.v_cmp.data != nullptr)
    nsa::detail::check_shape(d_out, "d_out", in.q.shape[0], in.q.shape[1], in.q.shape[2], in.v_cmp.shape[3]);
  const Problem p = validate_nsa(config, in, d_out, /*check_values=*/false);
  check_dims(p.d_k, p.d_v);
  const struct { const TensorView<const Tag>& v; const char* name; } views[] = {
      {in.q, "q"}, {in.k_cmp, "k_cmp"}, {in.v_cmp, "v_cmp"}, {in.k_slc, "k_slc"}, {in.v_slc, "v_slc"},
      {in.k_win, "k_win"}, {in.v_win, "v_win"}, {d_out, "d_out"}};
  for (const auto& v : views) check_aligned(v.v, v.name);
  auto mismatch = [](const char* what, index_t got, index_t want) {
    throw Error("saved state does not match the inputs: " + std::string(what) + " is " + std::to_string(got) +
                ", expected " + std::to_string(want) + " (pass the NsaSavedDevice of the forward call)");
  };
  const index_t rows = p.rows, H = p.heads, Hkv = p.kv_heads, dk = p.d_k, dv = p.d_v, G = p.group;
  const index_t total_cmp = p.cmp_offsets.back();
  const int top_n = config.top_n();
  if (saved.rows != rows) mismatch("rows", saved.rows, rows);
  if (saved.heads != H) mismatch("heads", saved.heads, H);
  if (saved.kv_heads != Hkv) mismatch("kv_heads", saved.kv_heads, Hkv);
  if (saved.top_n != top_n) mismatch("top_n", saved.top_n, top_n);
  if (saved.d_k != dk) mismatch("d_k", saved.d_k, dk);
  if (saved.d_v != dv) mismatch("d_v", saved.d_v, dv);
  if (saved.total_cmp != total_cmp) mismatch("total_cmp", saved.total_cmp, total_cmp);
  if (saved.cmp_offsets != p.cmp_offsets)
    throw Error("saved state does not match the inputs: compressed block offsets differ (other sequence lengths?)");
  auto need_bytes = [&](const DeviceBuffer& b, std::size_t bytes, const char* what) {
    if (b.data() == nullptr || b.bytes() < bytes)
      throw Error(std::string("saved.") + what + " is smaller than the inputs need (" + std::to_string(b.bytes()) +
                  " < " + std::to_string(bytes) + " bytes)");
  };
  need_bytes(saved.lse, std::size_t(3) * rows * H * sizeof(float), "lse");
  need_bytes(saved.branch_out, std::size_t(3) * rows * H * dv * sizeof(float), "branch_out");
  need_bytes(saved.sel_blocks, std::size_t(rows) * Hkv * top_n * sizeof(std::int32_t), "sel_blocks");
  need_bytes(saved.k_cmp_blocks, std::size_t(total_cmp) * Hkv * dk * sizeof(T), "k_cmp_blocks");
  need_bytes(saved.v_cmp_blocks, std::size_t(total_cmp) * Hkv * dv * sizeof(T), "v_cmp_blocks");
  nsa::detail::check_grad_view(g.dq, "dq", p.batch, p.tokens, H, dk);
  nsa::detail::check_grad_view(g.dk_cmp, "dk_cmp", p.batch, p.tokens, Hkv, dk);
  nsa::detail::check_grad_view(g.dv_cmp, "dv_cmp", p.batch, p.tokens, Hkv, dv);
  nsa::detail::check_grad_view(g.dk_slc, "dk_slc", p.batch, p.tokens, Hkv, dk);
  nsa::detail::check_grad_view(g.dv_slc, "dv_slc", p.batch, p.tokens, Hkv, dv);
  nsa::detail::check_grad_view(g.dk_win, "dk_win", p.batch, p.tokens, Hkv, dk);
  nsa::detail::check_grad_view(g.dv_win, "dv_win", p.batch, p.tokens, Hkv, dv);
  nsa::detail::check_grad_view(g.dgates, "dgates", p.batch, p.tokens, H, 3);
  nsa::detail::check_phi_grads(config, g.phi_k, "phi_k gradient");
  nsa::detail::check_phi_grads(config, g.phi_v, "phi_v gradient");

  // ---- 0. zero the key/value gradients (the branches add into them)
  for (const auto* v : {&g.dk_cmp, &g.dv_cmp, &g.dk_slc, &g.dv_slc, &g.dk_win, &g.dv_win}) zero_view(*v, stream);
  SeqInfo* seqs = nullptr;
  upload(ws, kBSlotSeqs, seq_infos(p), stream, &seqs);

  // ---- 1. gates and D
  float* D = static_cast<float*>(ws.get(kBSlotD, std::size_t(3) * rows * H * sizeof(float)));
  {
    GateBwdParams gp{};
    gp.d_out = d_out.data;
    set_strides(gp.do_sb, gp.do_st, gp.do_sh, d_out);
    gp.gates = in.gates.data;
    set_strides(gp.g_sb, gp.g_st, gp.g_sh, in.gates);
    gp.branch_out = saved.branch_out.as<float>();
    gp.dgates = g.dgates.data;
    set_out_strides(gp.dg_sb, gp.dg_st, gp.dg_sh, g.dgates);
    gp.D = D;
    launch_gate_backward<T>(gp, p, 3, stream);
  }

  // ---- common parameters
  BwdParams bp{};
  bp.q = in.q.data;
  set_strides(bp.q_sb, bp.q_st, bp.q_sh, in.q);
  bp.d_out = d_out.data;
  set_strides(bp.do_sb, bp.do_st, bp.do_sh, d_out);
  bp.gates = in.gates.data;
  set_strides(bp.g_sb, bp.g_st, bp.g_sh, in.gates);
  bp.dq = g.dq.data;
  set_out_strides(bp.dq_sb, bp.dq_st, bp.dq_sh, g.dq);
  bp.seqs = seqs;
  bp.num_seqs = static_cast<int>(p.seqs.size());
  bp.H = static_cast<int>(H);
  bp.H_kv = static_cast<int>(Hkv);
  bp.G = static_cast<int>(G);
  bp.dk_dim = static_cast<int>(dk);
  bp.dv_dim = static_cast<int>(dv);
  bp.scale = static_cast<float>(p.scale);
  bp.scale_log2 = bp.scale * kLog2e;
  bp.block_len = config.block_len();
  bp.stride = config.stride();
  bp.sel_block = config.sel_block();
  bp.window = config.window();
  bp.sel = saved.sel_blocks.as<const std::int32_t>();
  bp.top_n = top_n;
  TiledParams tp{};
  tiled_packing(tp, p);
  bp.gh = tp.gh;
  bp.chunks = tp.chunks;
  bp.tokens_per_tile = tp.tokens_per_tile;
  const float* lse = saved.lse.as<const float>();
  const std::size_t rh = std::size_t(rows) * H;
  auto branch = [&](BwdParams b, int mode, int col, const void* k, const void* v) {
    b.mode = mode;
    b.gate_col = col;
    b.lse = lse + col * rh;
    b.D = D + col * rh;
    b.k = k;
    b.v = v;
    return b;
  };
  const T* kc = saved.k_cmp_blocks.as<const T>();
  const T* vc = saved.v_cmp_blocks.as<const T>();
  BwdParams cmp = branch(bp, kBwdCmp, kCmp, kc, vc);
  cmp.k_sb = 0; cmp.k_st = Hkv * dk; cmp.k_sh = dk;
  cmp.v_sb = 0; cmp.v_st = Hkv * dv; cmp.v_sh = dv;
  BwdParams win = branch(bp, kBwdWin, kWin, in.k_win.data, in.v_win.data);
  set_strides(win.k_sb, win.k_st, win.k_sh, in.k_win);
  set_strides(win.v_sb, win.v_st, win.v_sh, in.v_win);
  BwdParams slc = branch(bp, kBwdSlc, kSlc, in.k_slc.data, in.v_slc.data);
  set_strides(slc.k_sb, slc.k_st, slc.k_sh, in.k_slc);
  set_strides(slc.v_sb, slc.v_st, slc.v_sh, in.v_slc);

  // ---- 2. dq: compression writes, window and selection add
  {
    const std::vector<TileA> tiles_host = tiled_plan(p, tp.tokens_per_tile);
    TileA* tiles = nullptr;
    upload(ws, kBSlotTiles, tiles_host, stream, &tiles);
    cmp.tiles = tiles;
    cmp.accumulate = false;
    launch_tiled_dq<T>(cmp, tiles_host.size(), stream);
    win.tiles = tiles;
    win.accumulate = true;
    launch_tiled_dq<T>(win, tiles_host.size(), stream);
    slc.accumulate = true;
    launch_selection_dq<T>(slc, rows, stream);
  }

  // ---- 3. window dK/dV
  {
    win.dk = g.dk_win.data;
    set_out_strides(win.dk_sb, win.dk_st, win.dk_sh, g.dk_win);
    win.dv = g.dv_win.data;
    set_out_strides(win.dv_sb, win.dv_st, win.dv_sh, g.dv_win);
    win.accumulate = true;
    // A window tile sees at most w + 63 tokens: never split.
    run_key_pass<T>(win, key_tasks(p, [&](std::size_t s) { return p.seqs[s].len; }),
                    [](const KeyTask&) -> std::int64_t { return -1; }, kBSlotWinPass, ws, stream);
  }

  // ---- 4. selection: inverse index, then dK/dV
  {
    index_t max_len = 0;
    for (const auto& s : p.seqs) max_len = std::max(max_len, s.len);
    // Tokens per walk chunk: 256, more for very long sequences (the counts array holds
    // H_kv * blocks * chunks entries per sequence).
    const index_t C = 256 * std::max<index_t>(1, (max_len + 65535) / 65536);
    std::vector<SelWalkTask> walk;
    std::vector<KeyTask> tasks;
    std::int64_t region = 0;
    const index_t lsel = config.sel_block();
    for (std::size_t s = 0; s < p.seqs.size(); ++s) {
      const index_t len = p.seqs[s].len;
      const int nblk = static_cast<int>(config.num_sel_blocks(len));
      const int nchunk = static_cast<int>((len + C - 1) / C);
      for (int ch = 0; ch < nchunk; ++ch)
        walk.push_back({static_cast<std::int64_t>(s), region, ch * C, std::min(len, (ch + 1) * C), nblk, nchunk, ch});
      for (int j = 0; j < nblk; ++j)
        for (index_t s0 = j * lsel; s0 < std::min(len, (j + 1) * lsel); s0 += 64)
          tasks.push_back({static_cast<std::int64_t>(s), s0,
                           static_cast<int>(std::min({index_t(64), len - s0, (j + 1) * lsel - s0})), j, region,
                           nblk, nchunk, 0, kAllTokens, -1});
      region += Hkv * std::int64_t(nblk) * nchunk;
    }
    if (!tasks.empty()) {
      const std::int64_t N = region;
      auto* count = static_cast<std::int64_t*>(ws.get(kBSlotSelCount, std::size_t(N + 1) * 8));
      auto* cursor = static_cast<std::int64_t*>(ws.get(kBSlotSelCursor, std::size_t(N + 1) * 8));
      auto* who = static_cast<std::int32_t*>(ws.get(kBSlotSelWho, std::max<std::size_t>(1, std::size_t(rows) * Hkv * top_n) * 4));
      NSA_CUDA_CHECK(cudaMemsetAsync(count, 0, std::size_t(N + 1) * 8, stream));
      SelWalkTask* walk_dev = nullptr;
      upload(ws, kBSlotSelWalk, walk, stream, &walk_dev);
      SelIndexParams ip{};
      ip.sel = bp.sel;
      ip.seqs = seqs;
      ip.tasks = walk_dev;
      ip.num_tasks = static_cast<std::int64_t>(walk.size());
      ip.H_kv = static_cast<int>(Hkv);
      ip.top_n = top_n;
      ip.counter = count;
      ip.who = who;
      ip.fill = false;
      const std::int64_t warps = ip.num_tasks * Hkv;
      const unsigned blocks = static_cast<unsigned>((warps + 3) / 4);
      sel_walk_kernel<<<blocks, 128, 0, stream>>>(ip);
      NSA_CUDA_CHECK_LAUNCH("sel_walk_kernel (count)");
      exclusive_scan(count, N + 1, kBSlotScanSums, ws, stream);
      NSA_CUDA_CHECK(cudaMemcpyAsync(cursor, count, std::size_t(N + 1) * 8, cudaMemcpyDeviceToDevice, stream));
      ip.counter = cursor;
      ip.fill = true;
      sel_walk_kernel<<<blocks, 128, 0, stream>>>(ip);
      NSA_CUDA_CHECK_LAUNCH("sel_walk_kernel (fill)");

      slc.who = who;
      slc.who_offset = count;
      slc.dk = g.dk_slc.data;
      set_out_strides(slc.dk_sb, slc.dk_st, slc.dk_sh, g.dk_slc);
      slc.dv = g.dv_slc.data;
      set_out_strides(slc.dv_sb, slc.dv_st, slc.dv_sh, g.dv_slc);
      slc.accumulate = true;
      // The forced initial blocks are chosen by every later token: split those (bound: the
      // tokens from the tile on); the lengths of the other lists are known on the device
      // only, and are short unless a block is chosen by most tokens.
      const int n_init = config.n_init();
      run_key_pass<T>(slc, tasks,
                      [&](const KeyTask& t) -> std::int64_t {
                        return t.block < n_init ? p.seqs[t.seq].len - t.s0 : -1;
                      },
                      kBSlotSlcPass, ws, stream);
    }
  }

  // ---- 5. compression: dKc/dVc, then phi
  {
    float* dkc = static_cast<float*>(ws.get(kBSlotDkc, std::max<std::size_t>(1, std::size_t(total_cmp) * Hkv * dk) * 4));
    float* dvc = static_cast<float*>(ws.get(kBSlotDvc, std::max<std::size_t>(1, std::size_t(total_cmp) * Hkv * dv) * 4));
    cmp.dk = dkc;
    cmp.dk_sb = 0; cmp.dk_st = Hkv * dk; cmp.dk_sh = dk;
    cmp.dv = dvc;
    cmp.dv_sb = 0; cmp.dv_st = Hkv * dv; cmp.dv_sh = dv;
    cmp.accumulate = false;
    run_key_pass<T>(cmp, key_tasks(p, [&](std::size_t s) { return p.cmp_offsets[s + 1] - p.cmp_offsets[s]; }),
                    [&](const KeyTask& t) -> std::int64_t {
                      return std::max<std::int64_t>(0, p.seqs[t.seq].len - (t.s0 * config.stride() + config.block_len() - 1));
                    },
                    kBSlotCmpPass, ws, stream);
    run_phi_backward<Tag>(config, p, in.k_cmp, in.phi_k, dk, dkc, g.dk_cmp, g.phi_k, seqs, kBSlotPhiK, ws, stream);
    run_phi_backward<Tag>(config, p, in.v_cmp, in.phi_v, dv, dvc, g.dv_cmp, g.phi_v, seqs, kBSlotPhiV, ws, stream);
  }
}

template <class Tag>
void dense_backward_impl(const DenseInputs<Tag>& in, TensorView<const Tag> out, const float* lse,
                         TensorView<const Tag> d_out, const DenseGradients<float>& g, Workspace& ws,
                         void* stream_ptr) {
  using T = typename DeviceType<Tag>::type;
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  nsa::detail::check_view(d_out, "d_out");
  if (in.q.data != nullptr && in.v.data != nullptr)
    nsa::detail::check_shape(d_out, "d_out", in.q.shape[0], in.q.shape[1], in.q.shape[2], in.v.shape[3]);
  const Problem p = validate_dense(in, d_out, /*check_values=*/false);
  check_dims(p.d_k, p.d_v);
  nsa::detail::check_view(out, "out");
  nsa::detail::check_shape(out, "out", p.batch, p.tokens, p.heads, p.d_v);
  if (lse == nullptr) throw Error("lse is null: pass the [rows, H] log-sum-exp of dense_forward");
  check_aligned(in.q, "q");
  check_aligned(in.k, "k");
  check_aligned(in.v, "v");
  check_aligned(d_out, "d_out");
  nsa::detail::check_grad_view(g.dq, "dq", p.batch, p.tokens, p.heads, p.d_k);
  nsa::detail::check_grad_view(g.dk, "dk", p.batch, p.tokens, p.kv_heads, p.d_k);
  nsa::detail::check_grad_view(g.dv, "dv", p.batch, p.tokens, p.kv_heads, p.d_v);
  const index_t rows = p.rows, H = p.heads;

  SeqInfo* seqs = nullptr;
  upload(ws, kBSlotSeqs, seq_infos(p), stream, &seqs);
  float* D = static_cast<float*>(ws.get(kBSlotD, std::size_t(rows) * H * sizeof(float)));
  {
    GateBwdParams gp{};
    gp.d_out = d_out.data;
    set_strides(gp.do_sb, gp.do_st, gp.do_sh, d_out);
    gp.out = out.data;
    set_strides(gp.o_sb, gp.o_st, gp.o_sh, out);
    gp.D = D;
    launch_gate_backward<T>(gp, p, 1, stream);
  }
  BwdParams bp{};
  bp.q = in.q.data;
  set_strides(bp.q_sb, bp.q_st, bp.q_sh, in.q);
  bp.k = in.k.data;
  set_strides(bp.k_sb, bp.k_st, bp.k_sh, in.k);
  bp.v = in.v.data;
  set_strides(bp.v_sb, bp.v_st, bp.v_sh, in.v);
  bp.d_out = d_out.data;
  set_strides(bp.do_sb, bp.do_st, bp.do_sh, d_out);
  bp.gates = nullptr;
  bp.gate_col = 0;
  bp.lse = lse;
  bp.D = D;
  bp.dq = g.dq.data;
  set_out_strides(bp.dq_sb, bp.dq_st, bp.dq_sh, g.dq);
  bp.dk = g.dk.data;
  set_out_strides(bp.dk_sb, bp.dk_st, bp.dk_sh, g.dk);
  bp.dv = g.dv.data;
  set_out_strides(bp.dv_sb, bp.dv_st, bp.dv_sh, g.dv);
  bp.accumulate = false;
  bp.seqs = seqs;
  bp.num_seqs = static_cast<int>(p.seqs.size());
  bp.H = static_cast<int>(H);
  bp.H_kv = static_cast<int>(p.kv_heads);
  bp.G = static_cast<int>(p.group);
  bp.dk_dim = static_cast<int>(p.d_k);
  bp.dv_dim = static_cast<int>(p.d_v);
  bp.scale = static_cast<float>(p.scale);
  bp.scale_log2 = bp.scale * kLog2e;
  bp.mode = kBwdDense;
  TiledParams tp{};
  tiled_packing(tp, p);
  bp.gh = tp.gh;
  bp.chunks = tp.chunks;
  bp.tokens_per_tile = tp.tokens_per_tile;

  const std::vector<TileA> tiles_host = tiled_plan(p, tp.tokens_per_tile);
  TileA* tiles = nullptr;
  upload(ws, kBSlotTiles, tiles_host, stream, &tiles);
  bp.tiles = tiles;
  launch_tiled_dq<T>(bp, tiles_host.size(), stream);

  run_key_pass<T>(bp, key_tasks(p, [&](std::size_t s) { return p.seqs[s].len; }),
                  [&](const KeyTask& t) -> std::int64_t { return p.seqs[t.seq].len - t.s0; }, kBSlotDensePass, ws,
                  stream);
}

}  // namespace nsa::cuda::detail

namespace nsa::cuda {
template <class Tag>
void nsa_backward(const Config& config, const NsaInputs<Tag>& in, const NsaSavedDevice& saved,
                  TensorView<const Tag> d_out, const NsaGradients<float>& grads, Workspace& workspace,
                  void* stream) {
  detail::nsa_backward_impl<Tag>(config, in, saved, d_out, grads, workspace, stream);
}
template <class Tag>
void dense_backward(const DenseInputs<Tag>& in, TensorView<const Tag> out, const float* lse,
                    TensorView<const Tag> d_out, const DenseGradients<float>& grads, Workspace& workspace,
                    void* stream) {
  detail::dense_backward_impl<Tag>(in, out, lse, d_out, grads, workspace, stream);
}
}  // namespace nsa::cuda

// Explicit instantiation of the backward entry points for one storage type.
#define NSA_CUDA_INSTANTIATE_BACKWARD(Tag)                                                          \
  template void nsa::cuda::nsa_backward<Tag>(const nsa::Config&, const nsa::NsaInputs<Tag>&,        \
                                             const nsa::cuda::NsaSavedDevice&, nsa::TensorView<const Tag>, \
                                             const nsa::NsaGradients<float>&, nsa::cuda::Workspace&, void*); \
  template void nsa::cuda::dense_backward<Tag>(const nsa::DenseInputs<Tag>&, nsa::TensorView<const Tag>, \
                                               const float*, nsa::TensorView<const Tag>,            \
                                               const nsa::DenseGradients<float>&, nsa::cuda::Workspace&, void*);
