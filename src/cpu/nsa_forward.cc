// nsa::nsa_forward, fp32 CPU: validation, then two parallel phases.
//   1. phi: compress every (block, kv head) of k_cmp / v_cmp once -> Kc, Vc
//   2. per (sequence, kv head, query tile) task, all G heads of the group together:
//      compression attention + importance -> top-n blocks -> selection attention ->
//      window attention -> gated combine into out (and the saved tensors)
// Each task writes only its own rows, so the result does not depend on which worker ran
// which task: bitwise identical for any thread count.
#include <algorithm>
#include <limits>

#include "cpu/kernels.h"
#include "nsa/thread_pool.h"

namespace nsa {

namespace {

struct TileTask {
  index_t seq, kv_head, t0, tokens;
};

}  // namespace

void nsa_forward(const Config& config, const NsaInputs<float>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool) {
  const Problem p = validate_nsa(config, in, out);  // throws before anything is written
  const index_t H = p.heads, H_kv = p.kv_heads, G = p.group, d_k = p.d_k, d_v = p.d_v;
  const index_t top_n = config.top_n(), total_cmp = p.cmp_offsets.back();
  const float inf = std::numeric_limits<float>::infinity();

  // Phase 1: Kc [total_cmp, H_kv, d_k], Vc [total_cmp, H_kv, d_v].
  std::vector<float> kc_local, vc_local;
  std::vector<float>& kc = saved ? saved->k_cmp_blocks : kc_local;
  std::vector<float>& vc = saved ? saved->v_cmp_blocks : vc_local;
  kc.resize(static_cast<size_t>(total_cmp * H_kv * d_k));
  vc.resize(static_cast<size_t>(total_cmp * H_kv * d_v));
  if (saved) {
    saved->rows = p.rows;
    saved->heads = H;
    saved->kv_heads = H_kv;
    saved->top_n = top_n;
    saved->d_k = d_k;
    saved->d_v = d_v;
    saved->lse.assign(static_cast<size_t>(kNumBranches * p.rows * H), -inf);
    saved->branch_out.assign(static_cast<size_t>(kNumBranches * p.rows * H * d_v), 0.0f);
    saved->sel_blocks.assign(static_cast<size_t>(p.rows * H_kv * top_n), -1);
    saved->cmp_offsets = p.cmp_offsets;
  }
  cpu::compress_blocks(config, p, in.k_cmp, in.phi_k, kc.data(), pool);
  cpu::compress_blocks(config, p, in.v_cmp, in.phi_v, vc.data(), pool);

  // Phase 2: query tiles.
  const index_t tile_len = cpu::tile_tokens(G);
  std::vector<TileTask> tasks;
  for (index_t s = 0; s < static_cast<index_t>(p.seqs.size()); ++s)
    for (index_t h = 0; h < H_kv; ++h)
      for (index_t t0 = 0; t0 < p.seqs[s].len; t0 += tile_len)
        tasks.push_back({s, h, t0, std::min(tile_len, p.seqs[s].len - t0)});
  std::vector<cpu::Scratch> scratch(static_cast<size_t>(pool.size()));
  const float scale = static_cast<float>(p.scale);

  pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
    const TileTask& task = tasks[static_cast<size_t>(i)];
    cpu::Scratch& s = scratch[static_cast<size_t>(worker)];
    const SeqSpan& seq = p.seqs[static_cast<size_t>(task.seq)];
    const index_t h_kv = task.kv_head, b = seq.batch;
    const index_t cmp0 = p.cmp_offsets[static_cast<size_t>(task.seq)];
    const index_t num_cmp = p.cmp_offsets[static_cast<size_t>(task.seq) + 1] - cmp0;
    const cpu::KeyValues cmp{kc.data() + (cmp0 * H_kv + h_kv) * d_k, H_kv * d_k,
                             vc.data() + (cmp0 * H_kv + h_kv) * d_v, H_kv * d_v};
    const cpu::KeyValues slc{in.k_slc.ptr(b, seq.start, h_kv), in.k_slc.stride[1],
                             in.v_slc.ptr(b, seq.start, h_kv), in.v_slc.stride[1]};
    const cpu::KeyValues win{in.k_win.ptr(b, seq.start, h_kv), in.k_win.stride[1],
                             in.v_win.ptr(b, seq.start, h_kv), in.v_win.stride[1]};

    const cpu::QueryTile tile =
        cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, s);
    cpu::compression_attention(config, tile, cmp, num_cmp, s);
    cpu::select_blocks(config, tile, s);
    cpu::selection_attention(config, tile, slc, s);
    cpu::window_attention(tile, win, config.window(), s.state[kWin], s);

    // Gated combine: o = g_cmp o_cmp + g_slc o_slc + g_win o_win.
    s.out.resize(static_cast<size_t>(kNumBranches * d_v));
    for (index_t tok = 0; tok < tile.tokens; ++tok) {
      const index_t t = seq.start + task.t0 + tok, row = seq.row0 + task.t0 + tok;
      for (index_t g = 0; g < G; ++g) {
        const index_t r = tok * G + g, h = h_kv * G + g;
        float lse[kNumBranches];
        for (int br = 0; br < kNumBranches; ++br)
          lse[br] = s.state[br].finalize_row(r, s.out.data() + br * d_v);
        const float* gate = in.gates.ptr(b, t, h);
        const float *o_cmp = s.out.data(), *o_slc = o_cmp + d_v, *o_win = o_slc + d_v;
        float* o = out.ptr(b, t, h);
        for (index_t c = 0; c < d_v; ++c)
          o[c] = gate[kCmp] * o_cmp[c] + gate[kSlc] * o_slc[c] + gate[kWin] * o_win[c];
        if (saved) {
          for (int br = 0; br < kNumBranches; ++br) {
            saved->lse[(br * p.rows + row) * H + h] = lse[br];
            std::copy(s.out.data() + br * d_v, s.out.data() + (br + 1) * d_v,
                      saved->branch_out.data() + ((br * p.rows + row) * H + h) * d_v);
          }
        }
      }
      if (saved)
        std::copy(s.sel.data() + tok * top_n, s.sel.data() + (tok + 1) * top_n,
                  saved->sel_blocks.data() + (row * H_kv + h_kv) * top_n);
    }
  });
}

}  // namespace nsa
