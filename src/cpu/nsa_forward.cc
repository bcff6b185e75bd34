// nsa::nsa_forward, CPU, fp32 or bf16 storage (fp32 compute): validation, then two
// parallel phases.
//   1. phi: compress every (block, kv head) of k_cmp / v_cmp once -> Kc, Vc (fp32; on the
//      bf16 path then rounded to bf16, the storage type of every key and value)
//   2. per (sequence, kv head, query tile) task, all G heads of the group together:
//      compression attention + importance -> top-n blocks -> selection attention ->
//      window attention -> gated combine into out (and the saved tensors)
// Each task writes only its own rows, so the result does not depend on which worker ran
// which task: bitwise identical for any thread count.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include "cpu/kernels.h"
#include "nsa/thread_pool.h"

namespace nsa {

namespace {

struct TileTask {
  index_t seq, kv_head, t0, tokens;
};

// phi's weights as fp32: the caller's own for fp32 inputs, widened copies of bf16 ones
// (only the arrays the phi form reads; validation has checked those are there).
struct Fp32Phi {
  PhiWeights<float> w;
  std::vector<float> store[6];

  Fp32Phi(const Config&, const PhiWeights<float>& phi, index_t) : w(phi) {}
  Fp32Phi(const Config& config, const PhiWeights<bf16>& phi, index_t dim) {
    const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
    auto widen = [&](const bf16* src, index_t n, int slot) -> const float* {
      store[slot].resize(static_cast<size_t>(n));
      to_float(src, store[slot].data(), static_cast<size_t>(n));
      return store[slot].data();
    };
    if (config.phi() == PhiKind::mlp) {
      w.pe = widen(phi.pe, l * dim, 0);
      w.w1 = widen(phi.w1, hidden * l * dim, 1);
      w.b1 = widen(phi.b1, hidden, 2);
      w.w2 = widen(phi.w2, dim * hidden, 3);
      w.b2 = widen(phi.b2, dim, 4);
    } else if (config.phi() == PhiKind::linear) {
      w.pe = widen(phi.pe, l * dim, 0);
      w.w = widen(phi.w, dim * l * dim, 5);
    }
  }
};

template <class T>
void forward(const Config& config, const NsaInputs<T>& in, TensorView<float> out,
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
  cpu::compress_blocks(config, p, in.k_cmp, Fp32Phi(config, in.phi_k, d_k).w, kc.data(), pool);
  cpu::compress_blocks(config, p, in.v_cmp, Fp32Phi(config, in.phi_v, d_v).w, vc.data(), pool);
  // The keys and values the compression branch attends: Kc/Vc in the storage type T.
  const T* kc_t = nullptr;
  const T* vc_t = nullptr;
  std::vector<bf16> kc16, vc16;
  bool pairs = false;
  if constexpr (std::is_same_v<T, bf16>) {
    for (auto [x, x16] : {std::pair{&kc, &kc16}, std::pair{&vc, &vc16}}) {
      x16->resize(x->size());
      to_bf16(x->data(), x16->data(), x->size());
      to_float(x16->data(), x->data(), x->size());  // saved: the values actually attended
    }
    kc_t = kc16.data();
    vc_t = vc16.data();
    pairs = cpu::bf16_dot_enabled();
  } else {
    kc_t = kc.data();
    vc_t = vc.data();
  }

  // The keys of every branch are transposed once for all query tiles: the raw keys of
  // selection and window (one copy when they are the same tensor) and Kc; fp32 keys as
  // KeyTiles, bf16 keys as KeyPairTiles when the bf16 dot product is in use (otherwise
  // they are widened per tile).
  cpu::KeyTiles slc_tiles, win_tiles, cmp_tiles;
  cpu::KeyPairTiles slc_pairs, win_pairs, cmp_pairs;
  auto transpose = [&](const std::vector<cpu::KeySpanT<T>>& spans, cpu::KeyTiles& tiles,
                       cpu::KeyPairTiles& pair_tiles) {
    if constexpr (std::is_same_v<T, float>)
      tiles = cpu::transpose_keys(spans, d_k, pool);
    else if (pairs)
      pair_tiles = cpu::transpose_key_pairs(spans, d_k, pool);
  };
  auto raw_spans = [&](const TensorView<const T>& k) {
    std::vector<cpu::KeySpanT<T>> spans;
    for (const SeqSpan& seq : p.seqs)
      for (index_t h = 0; h < H_kv; ++h) spans.push_back({k.ptr(seq.batch, seq.start, h), k.stride[1], seq.len});
    return spans;
  };
  transpose(raw_spans(in.k_slc), slc_tiles, slc_pairs);
  const bool win_own = in.k_win.data != in.k_slc.data || in.k_win.stride != in.k_slc.stride;
  if (win_own) transpose(raw_spans(in.k_win), win_tiles, win_pairs);
  std::vector<cpu::KeySpanT<T>> cmp_spans;
  for (size_t s = 0; s < p.seqs.size(); ++s)
    for (index_t h = 0; h < H_kv; ++h)
      cmp_spans.push_back({kc_t + (p.cmp_offsets[s] * H_kv + h) * d_k, H_kv * d_k,
                           p.cmp_offsets[s + 1] - p.cmp_offsets[s]});
  transpose(cmp_spans, cmp_tiles, cmp_pairs);
  const cpu::KeyTiles& win_keys = win_own ? win_tiles : slc_tiles;
  const cpu::KeyPairTiles& win_key_pairs = win_own ? win_pairs : slc_pairs;
  auto tiles_of = [](const auto& tiles, index_t span) {
    return tiles.data.empty() ? nullptr : tiles.span(span);
  };

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
    const index_t span = task.seq * H_kv + h_kv;
    const cpu::KeyValuesT<T> cmp{kc_t + (cmp0 * H_kv + h_kv) * d_k, H_kv * d_k,
                                 vc_t + (cmp0 * H_kv + h_kv) * d_v, H_kv * d_v,
                                 tiles_of(cmp_tiles, span), nullptr, tiles_of(cmp_pairs, span)};
    const cpu::KeyValuesT<T> slc{in.k_slc.ptr(b, seq.start, h_kv), in.k_slc.stride[1],
                                 in.v_slc.ptr(b, seq.start, h_kv), in.v_slc.stride[1],
                                 tiles_of(slc_tiles, span), nullptr, tiles_of(slc_pairs, span)};
    const cpu::KeyValuesT<T> win{in.k_win.ptr(b, seq.start, h_kv), in.k_win.stride[1],
                                 in.v_win.ptr(b, seq.start, h_kv), in.v_win.stride[1],
                                 tiles_of(win_keys, span), nullptr, tiles_of(win_key_pairs, span)};

    cpu::QueryTile tile;
    if constexpr (std::is_same_v<T, bf16>)
      tile = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, s, pairs);
    else
      tile = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, s);
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
        const T* gate = in.gates.ptr(b, t, h);
        const float g_cmp = gate[kCmp], g_slc = gate[kSlc], g_win = gate[kWin];
        const float *o_cmp = s.out.data(), *o_slc = o_cmp + d_v, *o_win = o_slc + d_v;
        float* o = out.ptr(b, t, h);
        for (index_t c = 0; c < d_v; ++c)
          o[c] = g_cmp * o_cmp[c] + g_slc * o_slc[c] + g_win * o_win[c];
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

}  // namespace

void nsa_forward(const Config& config, const NsaInputs<float>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool) {
  forward(config, in, out, saved, pool);
}

void nsa_forward(const Config& config, const NsaInputs<bf16>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool) {
  forward(config, in, out, saved, pool);
}

}  // namespace nsa
