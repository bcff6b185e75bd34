// nsa::nsa_backward, fp32 CPU: flash-style, group-centric, deterministic.
//
// What the forward saved is enough: per branch b and query row, lse_b and o_b. With
// dO = dL/do, the gated branch output gives dgate_b = dO . o_b and dO_b = gate_b dO, and
// every probability is recomputed tile by tile as P = exp(q.k - lse_b) (GradTile); no
// T x T matrix exists. The selection is read from saved.sel_blocks and Kc/Vc from
// saved.k_cmp_blocks/v_cmp_blocks: nothing of the forward is recomputed except scores.
//
// Partition (why no floating-point atomics are needed). Every gradient element has exactly
// one task that computes it, so the result does not depend on which worker runs which task
// and is bitwise identical for any thread count (the phi parameters excepted, see below):
//   dq: query-major. One task per (sequence, kv head, query tile), all G heads of the
//       group together against the keys of all three branches (as in the forward).
//   dK, dV: key-major, one pass per branch. One task per (sequence, kv head, key tile); it
//       iterates the query rows that see its keys:
//         window     key tile [s0, s0 + 64): tokens s0 .. s0 + 63 + w - 1
//         selection  selection block j (in tiles of <= 64 keys): the tokens that chose j,
//                    from an inverse index block -> tokens built from saved.sel_blocks
//         compressed compressed keys [i0, i0 + 64): tokens t >= i0*d + l - 1
//       The scores of a (key tile, query rows) pair are computed twice, once per pass:
//       the price of dropping the atomics a single pass would need for dq (FlashAttention
//       2 uses them) or per-thread dq copies of [T, H, d_k] each (the selection branch
//       touches scattered rows, so copies would be whole-tensor sized).
//   phi: its parameters are shared by all (block, kv head) pairs: per-worker partial
//       buffers over a static partition, summed in worker order (phi_backward.cc).
// Aliased gradient views (branches sharing K/V pass the same dk/dv): all six are zeroed
// first, then the branch passes run one after another, each ADDING its tile into the
// view; within a pass no two tasks touch the same key row. So a shared view receives the
// sum of the three branches' gradients, without races.
#include <algorithm>

#include "common/validate_backward.h"
#include "cpu/backward/backward_kernels.h"
#include "nsa/thread_pool.h"

namespace nsa {
namespace {

struct KeyTask {
  index_t seq, kv_head, s0, n;
  index_t block = -1;  // selection: the selection block holding the tile
};

void zero_rows(const TensorView<float>& x, ThreadPool& pool) {
  pool.parallel_for(x.batch() * x.tokens(), [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t r = begin; r < end; ++r)
      for (index_t h = 0; h < x.heads(); ++h)
        std::fill_n(x.ptr(r / x.tokens(), r % x.tokens(), h), x.dim(), 0.0f);
  });
}

// dst rows s0 .. s0+n-1 of kv head h (sequence seq) += src [n, dim].
void add_rows(const TensorView<float>& dst, const SeqSpan& seq, index_t h, index_t s0, index_t n,
              const std::vector<float>& src) {
  const index_t dim = dst.dim();
  for (index_t j = 0; j < n; ++j) {
    float* d = dst.ptr(seq.batch, seq.start + s0 + j, h);
    const float* s = src.data() + j * dim;
    for (index_t c = 0; c < dim; ++c) d[c] += s[c];
  }
}

// Runs one key-major pass: for each task, fill_tokens(task, s.tokens) lists the query
// positions, then finish(task, s) stores s.dk / s.dv. Tasks are handed out in list order (callers
// list the longest first), results do not depend on which worker ran them.
template <class Fill, class Finish>
void key_pass(const cpu::GradProblem& gp, const cpu::BranchGrad& br, const Problem& p,
              std::vector<KeyTask>& tasks, const std::vector<cpu::KeyValues>& kvs,
              std::vector<cpu::BwdScratch>& scratch, ThreadPool& pool, Fill fill_tokens,
              Finish finish) {
  pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
    const KeyTask& task = tasks[static_cast<size_t>(i)];
    cpu::BwdScratch& s = scratch[static_cast<size_t>(worker)];
    fill_tokens(task, s.tokens);
    if (s.tokens.empty()) {
      s.dk.assign(static_cast<size_t>(task.n * gp.d_k), 0.0f);
      s.dv.assign(static_cast<size_t>(task.n * gp.d_v), 0.0f);
    } else {
      const SeqSpan& seq = p.seqs[static_cast<size_t>(task.seq)];
      cpu::key_tile_backward(gp, br, seq, task.kv_head,
                             kvs[static_cast<size_t>(task.seq * p.kv_heads + task.kv_head)], task.s0,
                             task.n, s);
    }
    finish(task, s);
  });
}

}  // namespace

void nsa_backward(const Config& config, const NsaInputs<float>& in, const NsaSaved<float>& saved,
                  TensorView<const float> d_out, const NsaGradients<float>& g, ThreadPool& pool) {
  // Throws before anything is written. d_out is checked under its own name first (the
  // shared validation calls it "out").
  detail::check_view(d_out, "d_out");
  if (in.q.data != nullptr && in.v_cmp.data != nullptr)
    detail::check_shape(d_out, "d_out", in.q.shape[0], in.q.shape[1], in.q.shape[2], in.v_cmp.shape[3]);
  const Problem p = validate_nsa_backward(config, in, saved, d_out, g);
  const index_t H = p.heads, H_kv = p.kv_heads, G = p.group, d_k = p.d_k, d_v = p.d_v;
  const index_t rows = p.rows, num_seqs = static_cast<index_t>(p.seqs.size());
  const index_t total_cmp = p.cmp_offsets.back();

  // dgate_b = dO . o_b, also the D of each branch's softmax backward (times its gate).
  std::vector<float> dot(static_cast<size_t>(kNumBranches * rows * H));
  for (int b = 0; b < kNumBranches; ++b)
    cpu::row_dots(p, d_out,
                  contiguous_view<const float>(saved.branch_out_of(static_cast<Branch>(b)), p.batch,
                                               p.tokens, H, d_v),
                  dot.data() + b * rows * H, pool);
  pool.parallel_for(rows, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t r = begin; r < end; ++r)
      for (index_t h = 0; h < H; ++h)
        for (int b = 0; b < kNumBranches; ++b)
          g.dgates.at(r / p.tokens, r % p.tokens, h, b) = dot[(b * rows + r) * H + h];
  });
  for (const auto* v : {&g.dk_cmp, &g.dv_cmp, &g.dk_slc, &g.dv_slc, &g.dk_win, &g.dv_win})
    zero_rows(*v, pool);

  cpu::GradProblem gp;
  gp.q = in.q;
  gp.d_out = d_out;
  gp.gates = in.gates;
  gp.heads = H, gp.kv_heads = H_kv, gp.group = G, gp.d_k = d_k, gp.d_v = d_v;
  gp.scale = static_cast<float>(p.scale);
  cpu::BranchGrad br[kNumBranches];
  for (int b = 0; b < kNumBranches; ++b) {
    br[b].gate_column = b;
    br[b].lse = saved.lse_of(static_cast<Branch>(b));
    br[b].dot = dot.data() + b * rows * H;
  }
  br[kCmp].vis = {cpu::Visibility::kCompressed, 0, &config};
  br[kSlc].vis = {cpu::Visibility::kWindow, 0, &config};  // inside a chosen block: s <= t
  br[kSlc].sel = saved.sel_blocks.data();
  br[kSlc].top_n = config.top_n();
  br[kSlc].sel_len = config.sel_block();
  br[kWin].vis = {cpu::Visibility::kWindow, config.window(), &config};

  // Keys of every (sequence, kv head) per branch, indexed by position in the sequence.
  std::vector<cpu::KeyValues> kv[kNumBranches];
  for (index_t si = 0; si < num_seqs; ++si)
    for (index_t h = 0; h < H_kv; ++h) {
      const SeqSpan& seq = p.seqs[static_cast<size_t>(si)];
      const index_t cmp0 = p.cmp_offsets[static_cast<size_t>(si)];
      kv[kCmp].push_back({saved.k_cmp_blocks.data() + (cmp0 * H_kv + h) * d_k, H_kv * d_k,
                          saved.v_cmp_blocks.data() + (cmp0 * H_kv + h) * d_v, H_kv * d_v});
      kv[kSlc].push_back({in.k_slc.ptr(seq.batch, seq.start, h), in.k_slc.stride[1],
                          in.v_slc.ptr(seq.batch, seq.start, h), in.v_slc.stride[1]});
      kv[kWin].push_back({in.k_win.ptr(seq.batch, seq.start, h), in.k_win.stride[1],
                          in.v_win.ptr(seq.batch, seq.start, h), in.v_win.stride[1]});
    }
  // Keys and values transposed once for every query tile of the dq pass (the key passes
  // transpose each key tile once anyway). Selection and window share them when they are
  // the same tensors.
  cpu::KeyTiles kt[kNumBranches], vt[kNumBranches];
  {
    std::vector<index_t> cmp_lens, raw_lens;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h) {
        cmp_lens.push_back(p.cmp_offsets[si + 1] - p.cmp_offsets[si]);
        raw_lens.push_back(p.seqs[si].len);
      }
    cpu::attach_transposed(kv[kCmp], cmp_lens, d_k, d_v, kt[kCmp], vt[kCmp], pool);
    cpu::attach_transposed(kv[kSlc], raw_lens, d_k, d_v, kt[kSlc], vt[kSlc], pool);
    const bool shared = in.k_win.data == in.k_slc.data && in.k_win.stride == in.k_slc.stride &&
                        in.v_win.data == in.v_slc.data && in.v_win.stride == in.v_slc.stride;
    if (shared) {
      for (size_t i = 0; i < kv[kWin].size(); ++i) {
        kv[kWin][i].kt = kv[kSlc][i].kt;
        kv[kWin][i].vt = kv[kSlc][i].vt;
      }
    } else {
      cpu::attach_transposed(kv[kWin], raw_lens, d_k, d_v, kt[kWin], vt[kWin], pool);
    }
  }
  std::vector<cpu::BwdScratch> scratch(static_cast<size_t>(pool.size()));

  // ---- dq: query-major, the three branches summed inside each task --------------------
  {
    const index_t tile_len = cpu::tile_tokens(G);
    std::vector<KeyTask> tasks;  // (seq, kv head, t0, tokens)
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h)
        for (index_t t0 = 0; t0 < p.seqs[si].len; t0 += tile_len)
          tasks.push_back({si, h, t0, std::min(tile_len, p.seqs[si].len - t0)});
    pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
      const KeyTask& t = tasks[static_cast<size_t>(i)];
      const size_t k = static_cast<size_t>(t.seq * H_kv + t.kv_head);
      const cpu::KeyValues kvs[kNumBranches] = {kv[kCmp][k], kv[kSlc][k], kv[kWin][k]};
      cpu::query_tile_backward(gp, br, kvs, kNumBranches, p.seqs[static_cast<size_t>(t.seq)],
                               t.kv_head, t.s0, t.n, g.dq, scratch[static_cast<size_t>(worker)]);
    });
  }

  // ---- window dK/dV: key tiles against the tokens whose window reaches them ------------
  {
    std::vector<KeyTask> tasks;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h)
        for (index_t s0 = 0; s0 < p.seqs[si].len; s0 += cpu::kKeyTile)
          tasks.push_back({si, h, s0, std::min(cpu::kKeyTile, p.seqs[si].len - s0)});
    const index_t w = config.window();
    key_pass(
        gp, br[kWin], p, tasks, kv[kWin], scratch, pool,
        [&](const KeyTask& t, std::vector<index_t>& tokens) {
          const index_t len = p.seqs[static_cast<size_t>(t.seq)].len;
          const index_t end = w > 0 ? std::min(len, t.s0 + t.n - 1 + w) : len;
          tokens.resize(static_cast<size_t>(end - t.s0));
          for (index_t x = t.s0; x < end; ++x) tokens[x - t.s0] = x;
        },
        [&](const KeyTask& t, cpu::BwdScratch& s) {
          const SeqSpan& seq = p.seqs[static_cast<size_t>(t.seq)];
          add_rows(g.dk_win, seq, t.kv_head, t.s0, t.n, s.dk);
          add_rows(g.dv_win, seq, t.kv_head, t.s0, t.n, s.dv);
        });
  }

  // ---- selection dK/dV: each selection block against the tokens that chose it ----------
  {
    // Inverse index per (sequence, kv head): CSR over selection blocks, tokens ascending.
    const index_t top_n = config.top_n(), sel_len = config.sel_block();
    const size_t pairs = static_cast<size_t>(num_seqs * H_kv);
    std::vector<std::vector<index_t>> offsets(pairs), users(pairs);
    pool.parallel_tasks(static_cast<std::int64_t>(pairs), [&](std::int64_t k, int) {
      const SeqSpan& seq = p.seqs[static_cast<size_t>(k / H_kv)];
      const index_t h = k % H_kv, n_sel = config.num_sel_blocks(seq.len);
      std::vector<index_t>& off = offsets[static_cast<size_t>(k)];
      std::vector<index_t>& who = users[static_cast<size_t>(k)];
      off.assign(static_cast<size_t>(n_sel + 1), 0);
      auto blocks_of = [&](index_t t) { return saved.sel_blocks.data() + ((seq.row0 + t) * H_kv + h) * top_n; };
      for (index_t t = 0; t < seq.len; ++t)
        for (index_t x = 0; x < top_n && blocks_of(t)[x] >= 0; ++x) ++off[blocks_of(t)[x] + 1];
      for (index_t j = 0; j < n_sel; ++j) off[j + 1] += off[j];
      who.resize(static_cast<size_t>(off[n_sel]));
      std::vector<index_t> fill(off.begin(), off.end() - 1);
      for (index_t t = 0; t < seq.len; ++t)
        for (index_t x = 0; x < top_n && blocks_of(t)[x] >= 0; ++x) who[fill[blocks_of(t)[x]]++] = t;
    });
    std::vector<KeyTask> tasks;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h) {
        const index_t len = p.seqs[si].len;
        for (index_t j = 0; j < config.num_sel_blocks(len); ++j)
          for (index_t s0 = j * sel_len; s0 < std::min(len, (j + 1) * sel_len); s0 += cpu::kKeyTile)
            tasks.push_back({si, h, s0, std::min({cpu::kKeyTile, len - s0, (j + 1) * sel_len - s0}), j});
      }
    key_pass(
        gp, br[kSlc], p, tasks, kv[kSlc], scratch, pool,
        [&](const KeyTask& t, std::vector<index_t>& tokens) {
          const size_t k = static_cast<size_t>(t.seq * H_kv + t.kv_head);
          const index_t* first = users[k].data() + offsets[k][t.block];
          const index_t* last = users[k].data() + offsets[k][t.block + 1];
          first = std::lower_bound(first, last, t.s0);  // tokens before the tile see none of it
          tokens.assign(first, last);
        },
        [&](const KeyTask& t, cpu::BwdScratch& s) {
          const SeqSpan& seq = p.seqs[static_cast<size_t>(t.seq)];
          add_rows(g.dk_slc, seq, t.kv_head, t.s0, t.n, s.dk);
          add_rows(g.dv_slc, seq, t.kv_head, t.s0, t.n, s.dv);
        });
  }

  // ---- compression: dKc/dVc key-major, then through phi to k_cmp/v_cmp -----------------
  {
    std::vector<float> d_kc(static_cast<size_t>(total_cmp * H_kv * d_k), 0.0f);
    std::vector<float> d_vc(static_cast<size_t>(total_cmp * H_kv * d_v), 0.0f);
    std::vector<KeyTask> tasks;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h) {
        const index_t n_cmp = p.cmp_offsets[si + 1] - p.cmp_offsets[si];
        for (index_t i0 = 0; i0 < n_cmp; i0 += cpu::kKeyTile)
          tasks.push_back({si, h, i0, std::min(cpu::kKeyTile, n_cmp - i0)});
      }
    const index_t l = config.block_len(), stride = config.stride();
    key_pass(
        gp, br[kCmp], p, tasks, kv[kCmp], scratch, pool,
        [&](const KeyTask& t, std::vector<index_t>& tokens) {
          const index_t len = p.seqs[static_cast<size_t>(t.seq)].len;
          const index_t first = t.s0 * stride + l - 1;  // the first token that sees block s0
          tokens.resize(static_cast<size_t>(std::max<index_t>(0, len - first)));
          for (index_t x = first; x < len; ++x) tokens[x - first] = x;
        },
        [&](const KeyTask& t, cpu::BwdScratch& s) {
          const index_t cmp0 = p.cmp_offsets[static_cast<size_t>(t.seq)];
          for (index_t j = 0; j < t.n; ++j) {
            const index_t at = (cmp0 + t.s0 + j) * H_kv + t.kv_head;
            std::copy_n(s.dk.data() + j * d_k, d_k, d_kc.data() + at * d_k);
            std::copy_n(s.dv.data() + j * d_v, d_v, d_vc.data() + at * d_v);
          }
        });
    cpu::phi_backward(config, p, in.k_cmp, in.phi_k, d_kc.data(), g.dk_cmp, g.phi_k, pool);
    cpu::phi_backward(config, p, in.v_cmp, in.phi_v, d_vc.data(), g.dv_cmp, g.phi_v, pool);
  }
}

}  // namespace nsa
