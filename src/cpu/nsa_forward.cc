// nsa::nsa_forward, CPU, fp32 or bf16 storage (fp32 compute): validation, then two
// parallel phases.
//   1. phi: compress every (block, kv head) of k_cmp / v_cmp once -> Kc, Vc (fp32; on the
//      bf16 path then rounded to bf16, the storage type of every key and value)
//   2. per (sequence, kv head, super-tile of up to 4096 / G tokens) task, all G heads of the
//      group together: per query tile compression attention + importance -> top-n blocks,
//      window attention; then selection attention over the super-tile; gated combine
//      into out (and the saved tensors)
// Each task writes only its own rows, so the result does not depend on which worker ran
// which task: bitwise identical for any thread count.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>

#include "cpu/kernels.h"
#include "cpu/widen.h"
#include "nsa/thread_pool.h"

namespace nsa {

namespace {

struct TileTask {
  index_t seq, kv_head, t0, tokens;
};

// Tokens per phase-2 task: a multiple of the query tile, at most kMaxSuperRows / G (the
// super-tile's packed queries and selection state, ~5 MB per worker at d_k + d_v = 320,
// stay in L3), and small enough that the longest sequence still gives every worker
// several tasks. 256 tokens at G = 16 measured best at T = 65536 (128: 7.33 s, 256:
// 7.0-7.19 s, 512: 7.22 s, 1024: 7.78-8.05 s, one query tile: 7.58-7.78 s).
constexpr index_t kMaxSuperRows = 4096;
index_t super_tile_tokens(const Problem& p, index_t tile_len, int workers) {
  index_t longest = 0;
  for (const SeqSpan& seq : p.seqs) longest = std::max(longest, seq.len);
  const index_t per_task = longest / (4 * static_cast<index_t>(workers));
  const index_t cap = kMaxSuperRows / p.group;
  return std::max(tile_len, std::min(cap, per_task) / tile_len * tile_len);
}

// T = bf16: the vdpbf16ps kernels (the caller checked bf16_dot_for_forward). T = float with
// round_compressed: the bf16 forward's widening path, these fp32 kernels on its inputs
// widened (already scanned for NaN/Inf as bf16), Kc/Vc rounded to bf16 and attended so.
template <class T>
void forward(const Config& config, const NsaInputs<T>& in, TensorView<float> out,
             NsaSaved<float>* saved, ThreadPool& pool, bool round_compressed = false) {
  // Throws before anything is written.
  const Problem p = validate_nsa(config, in, out, /*check_values=*/!round_compressed);
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
  cpu::compress_blocks(config, p, in.k_cmp, cpu::Fp32Phi(config, in.phi_k, d_k).w, kc.data(), pool);
  cpu::compress_blocks(config, p, in.v_cmp, cpu::Fp32Phi(config, in.phi_v, d_v).w, vc.data(), pool);
  // The keys and values the compression branch attends: Kc/Vc in the storage type T, or
  // rounded to bf16 as floats on the widening path; saved holds the values attended.
  std::vector<bf16> kc16, vc16;
  if (std::is_same_v<T, bf16> || round_compressed)
    for (auto [x, x16] : {std::pair{&kc, &kc16}, std::pair{&vc, &vc16}}) {
      x16->resize(x->size());
      to_bf16(x->data(), x16->data(), x->size());
      to_float(x16->data(), x->data(), x->size());
    }
  const T* kc_t = nullptr;
  const T* vc_t = nullptr;
  if constexpr (std::is_same_v<T, bf16>) {
    kc_t = kc16.data();
    vc_t = vc16.data();
  } else {
    kc_t = kc.data();
    vc_t = vc.data();
  }

  // The keys of every branch are transposed once for all query tiles: the raw keys of
  // selection and window (one copy when they are the same tensor) and Kc; fp32 keys as
  // KeyTiles, bf16 keys as KeyPairTiles (T = bf16 runs only on vdpbf16ps: nsa_forward).
  cpu::KeyTiles slc_tiles, win_tiles, cmp_tiles;
  cpu::KeyPairTiles slc_pairs, win_pairs, cmp_pairs;
  auto transpose = [&](const std::vector<cpu::KeySpanT<T>>& spans, cpu::KeyTiles& tiles,
                       cpu::KeyPairTiles& pair_tiles) {
    if constexpr (std::is_same_v<T, float>)
      tiles = cpu::transpose_keys(spans, d_k, pool);
    else
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

  // Phase 2: super-tiles of `super` tokens of one (sequence, kv head) (super_tile_tokens),
  // each task:
  //   per query tile of tile_len tokens (G * tile_len rows): compression attention, top-n,
  //     window attention; out = g_cmp o_cmp + g_win o_win;
  //   then the selection branch over the whole super-tile: every block of the union of its
  //     tokens' choices is attended by the rows of each run of tokens that chose it, one
  //     run after the other, so a block comes from memory once per super-tile instead of
  //     once per query tile (with choices spread over T / l' blocks, as with random inputs
  //     at long T, the per-tile unions hardly overlap and selection waits on DRAM);
  //     out += g_slc o_slc.
  // Every row sees the same keys in the same order whatever the super-tile size, so the
  // result does not depend on it (nor on the thread count, which it depends on).
  const index_t tile_len = cpu::tile_tokens(G);
  const index_t super = super_tile_tokens(p, tile_len, pool.size());
  std::vector<TileTask> tasks;
  for (index_t s = 0; s < static_cast<index_t>(p.seqs.size()); ++s)
    for (index_t h = 0; h < H_kv; ++h)
      for (index_t t0 = 0; t0 < p.seqs[s].len; t0 += super)
        tasks.push_back({s, h, t0, std::min(super, p.seqs[s].len - t0)});
  // Later tokens see more compressed blocks: the heaviest tasks first, for the balance.
  std::stable_sort(tasks.begin(), tasks.end(), [](const TileTask& a, const TileTask& b) { return a.t0 > b.t0; });
  std::vector<cpu::Scratch> scratch(static_cast<size_t>(pool.size())), super_scratch(scratch.size());
  const float scale = static_cast<float>(p.scale);

  pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
    const TileTask& task = tasks[static_cast<size_t>(i)];
    cpu::Scratch& s = scratch[static_cast<size_t>(worker)];
    cpu::Scratch& sup = super_scratch[static_cast<size_t>(worker)];
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

    // The super-tile's queries, packed once; each query tile is a slice of them.
    cpu::QueryTile whole;
    if constexpr (std::is_same_v<T, bf16>)
      whole = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, sup, /*pairs=*/true);
    else
      whole = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, sup);
    sup.sel.resize(static_cast<size_t>(task.tokens * top_n));

    // Row r (= tok * G + g of the super-tile) of branch br: o into s.out, lse; the saved
    // tensors get both. Returns o.
    auto finish_row = [&](const cpu::SoftmaxState& st, index_t r, index_t tok, int br) -> const float* {
      const index_t g = r % G, h = h_kv * G + g, row = seq.row0 + task.t0 + tok;
      float* o = s.out.data() + br * d_v;
      const float lse = st.finalize_row(r, o);
      if (saved) {
        saved->lse[(br * p.rows + row) * H + h] = lse;
        std::copy(o, o + d_v, saved->branch_out.data() + ((br * p.rows + row) * H + h) * d_v);
      }
      return o;
    };
    s.out.resize(static_cast<size_t>(kNumBranches * d_v));
    for (index_t u0 = 0; u0 < task.tokens; u0 += tile_len) {
      cpu::QueryTile tile = whole;
      tile.t0 = task.t0 + u0;
      tile.tokens = std::min(tile_len, task.tokens - u0);
      tile.rows = tile.tokens * G;
      tile.q = whole.q + u0 * G * d_k;
      if (whole.q_pairs != nullptr) tile.q_pairs = whole.q_pairs + u0 * G * ((d_k + 1) / 2);
      cpu::compression_attention(config, tile, cmp, num_cmp, s);
      cpu::select_blocks(config, tile, s);
      std::copy(s.sel.begin(), s.sel.end(), sup.sel.begin() + u0 * top_n);
      cpu::window_attention(tile, win, config.window(), s.state[kWin], s);
      for (index_t tok = 0; tok < tile.tokens; ++tok) {
        const index_t t = seq.start + tile.t0 + tok;
        for (index_t g = 0; g < G; ++g) {
          const index_t r = tok * G + g, h = h_kv * G + g;
          const float* o_cmp = finish_row(s.state[kCmp], r, u0 + tok, kCmp);
          const float* o_win = finish_row(s.state[kWin], r, u0 + tok, kWin);
          const T* gate = in.gates.ptr(b, t, h);
          const float g_cmp = gate[kCmp], g_win = gate[kWin];
          float* o = out.ptr(b, t, h);
          for (index_t c = 0; c < d_v; ++c) o[c] = g_cmp * o_cmp[c] + g_win * o_win[c];
        }
      }
    }

    // Selection over the super-tile, then out += g_slc o_slc.
    cpu::selection_attention(config, whole, slc, sup);
    for (index_t tok = 0; tok < task.tokens; ++tok) {
      const index_t t = seq.start + task.t0 + tok, row = seq.row0 + task.t0 + tok;
      for (index_t g = 0; g < G; ++g) {
        const index_t h = h_kv * G + g;
        const float* o_slc = finish_row(sup.state[kSlc], tok * G + g, tok, kSlc);
        const float g_slc = static_cast<float>(in.gates.ptr(b, t, h)[kSlc]);
        float* o = out.ptr(b, t, h);
        for (index_t c = 0; c < d_v; ++c) o[c] += g_slc * o_slc[c];
      }
      if (saved)
        std::copy(sup.sel.begin() + tok * top_n, sup.sel.begin() + (tok + 1) * top_n,
                  saved->sel_blocks.begin() + (row * H_kv + h_kv) * top_n);
    }
  });
}

}  // namespace

void nsa_forward(const Config& config, const NsaInputs<float>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool) {
  forward(config, in, out, saved, pool);
}

// bf16: the pairs kernels where vdpbf16ps is in use; otherwise the inputs widened once
// (O(T d) copies) and the fp32 kernels, with Kc/Vc rounded to bf16 as the bf16 storage
// type asks: the fp32 speed (widening keys per tile instead cost 25-35% on an Intel Xeon)
// and the fp32 forward's result on the same values, bit for bit.
void nsa_forward(const Config& config, const NsaInputs<bf16>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool) {
  if (cpu::bf16_dot_for_forward()) return forward(config, in, out, saved, pool);
  validate_nsa(config, in, out);  // names the bf16 inputs, before any copy
  const cpu::WidenedNsaInputs widened(config, in, pool);
  forward(config, widened.f, out, saved, pool, /*round_compressed=*/true);
}

}  // namespace nsa
