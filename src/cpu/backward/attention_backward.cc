// The two flash-backward work units (see backward_kernels.h), shared by every branch and
// by dense attention:
//   KeyTileBackward    one key tile against the query rows that see it -> dK, dV
//   QueryTileBackward  one query tile against every key it sees        -> dq
// Probabilities are recomputed tile by tile from the saved log-sum-exp (GradTile); at most
// a [rows, kKeyTile] tile of P and of dS exists at any time.
#include <algorithm>

#include "nsa/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/backward/attention_backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/backward/backward_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {
namespace {

// Packs q (times the scale) and d_out of `count` tokens (positions tokens[i], or first + i
// when tokens is null) and their G heads into s.q [R, d_k], s.d_o [R, d_v], row i * G + g.
void PackQueryRows(const GradProblem& gp, const SeqSpan& seq, index_t kvh, const index_t* tokens,
                   index_t first, index_t count, BwdScratch& s) {
  const index_t G = gp.group, d_k = gp.d_k, d_v = gp.d_v, R = count * G;
  if (s.q.size() < static_cast<size_t>(R * d_k)) s.q.resize(static_cast<size_t>(R * d_k));
  if (s.d_o.size() < static_cast<size_t>(R * d_v)) s.d_o.resize(static_cast<size_t>(R * d_v));
  for (index_t i = 0; i < count; ++i) {
    const index_t tok = seq.start + (tokens ? tokens[i] : first + i);
    for (index_t g = 0; g < G; ++g) {
      const index_t h = kvh * G + g, r = i * G + g;
      const float* q = gp.q.ptr(seq.batch, tok, h);
      float* qd = s.q.data() + r * d_k;
      for (index_t c = 0; c < d_k; ++c) qd[c] = q[c] * gp.scale;
      const float* d_o = gp.d_out.ptr(seq.batch, tok, h);
      std::copy(d_o, d_o + d_v, s.d_o.data() + r * d_v);
    }
  }
}

// The branch's per-row data of the same rows into gate/lse/dot/lo/hi (+ offset).
void PackBranchRows(const GradProblem& gp, const BranchGrad& br, const SeqSpan& seq, index_t kvh,
                    const index_t* tokens, index_t first, index_t count, index_t offset,
                    BwdScratch& s) {
  const index_t G = gp.group, H = gp.heads, need = offset + count * G;
  for (auto* v : {&s.gate, &s.lse, &s.dot})
    if (v->size() < static_cast<size_t>(need)) v->resize(static_cast<size_t>(need));
  for (auto* v : {&s.lo, &s.hi})
    if (v->size() < static_cast<size_t>(need)) v->resize(static_cast<size_t>(need));
  for (index_t i = 0; i < count; ++i) {
    const index_t t = tokens ? tokens[i] : first + i, row = seq.row0 + t;
    index_t lo, hi;
    br.vis.range(t, lo, hi);
    for (index_t g = 0; g < G; ++g) {
      const index_t h = kvh * G + g, r = offset + i * G + g;
      s.gate[r] = br.gate_column >= 0 ? gp.gates.at(seq.batch, seq.start + t, h, br.gate_column) : 1.0f;
      s.lse[r] = br.lse[row * H + h];
      s.dot[r] = br.dot[row * H + h];
      s.lo[r] = lo;
      s.hi[r] = hi;
    }
  }
}

}  // namespace

void KeyTileBackward(const GradProblem& gp, const BranchGrad& br, const SeqSpan& seq, index_t kvh,
                     const KeyValues& kv, index_t s0, index_t n, BwdScratch& s) {
  const index_t G = gp.group, d_k = gp.d_k, d_v = gp.d_v;
  s.dk.assign(static_cast<size_t>(n * d_k), 0.0f);
  s.dv.assign(static_cast<size_t>(n * d_v), 0.0f);
  const index_t chunk = tile_tokens(G), num_tokens = static_cast<index_t>(s.tokens.size());
  ReserveGradScratch(chunk * G, d_k, d_v, s);
  const TransposedTile kvt = TransposeKeyValues(kv, s0, n, d_k, d_v, s);  // once for every chunk
  for (index_t c0 = 0; c0 < num_tokens; c0 += chunk) {
    const index_t count = std::min(chunk, num_tokens - c0), R = count * G;
    const index_t* tokens = s.tokens.data() + c0;
    PackQueryRows(gp, seq, kvh, tokens, 0, count, s);
    PackBranchRows(gp, br, seq, kvh, tokens, 0, count, 0, s);
    const RowPack rp{s.q.data(), s.d_o.data(), s.gate.data(), s.lse.data(), s.dot.data(),
                     s.lo.data(), s.hi.data(), R, d_k, d_v};
    GradTile(rp, kvt.k, kvt.v, s0, n, s.p.data(), s.ds.data());
    // dV [n, d_v] += P^T d_o;  dK [n, d_k] += dS^T q (q already scaled).
    GemmAcc(s.p.data(), 1, kKeyTile, s.d_o.data(), d_v, n, R, d_v, s.dv.data(), d_v);
    GemmAcc(s.ds.data(), 1, kKeyTile, s.q.data(), d_k, n, R, d_k, s.dk.data(), d_k);
  }
}

void QueryTileBackward(const GradProblem& gp, const BranchGrad* branches, const KeyValues* kvs,
                       int num, const SeqSpan& seq, index_t kvh, index_t t0, index_t tokens,
                       const TensorView<float>& dq, BwdScratch& s) {
  const index_t G = gp.group, d_k = gp.d_k, d_v = gp.d_v, R = tokens * G;
  PackQueryRows(gp, seq, kvh, nullptr, t0, tokens, s);
  s.dq.assign(static_cast<size_t>(R * d_k), 0.0f);
  ReserveGradScratch(R, d_k, d_v, s);
  for (int bi = 0; bi < num; ++bi) {
    const BranchGrad& br = branches[bi];
    const KeyValues& kv = kvs[bi];
    PackBranchRows(gp, br, seq, kvh, nullptr, t0, tokens, 0, s);
    if (br.sel != nullptr) {
      // Selection: the tile's tokens mostly choose the same blocks (the forced ones, and
      // neighbours score alike), so each block of the union of their choices is scored
      // once against the rows of every run of consecutive tokens that chose it (one run,
      // all R rows, when they all did), each row to keys s <= t of the block.
      union_of_choices(br.sel + ((seq.row0 + t0) * gp.kv_heads + kvh) * br.top_n, gp.kv_heads * br.top_n,
                       br.top_n, tokens, s.blocks, s.chosen_by);
      for (size_t i = 0; i < s.blocks.size(); ++i) {
        const index_t begin = s.blocks[i] * br.sel_len;
        const std::uint8_t* chose = s.chosen_by.data() + i * static_cast<size_t>(tokens);
        for (index_t tok = 0; tok < tokens;) {
          if (!chose[tok]) {
            ++tok;
            continue;
          }
          const index_t first = tok;
          for (; tok < tokens && chose[tok]; ++tok) {
            const index_t hi = std::min(begin + br.sel_len, t0 + tok + 1);
            for (index_t g = 0; g < G; ++g) {
              s.lo[tok * G + g] = begin;
              s.hi[tok * G + g] = hi;
            }
          }
          // Rows r0 .. r0 + rows of tokens first .. tok - 1; the last sees the most keys.
          const index_t r0 = first * G, rows = (tok - first) * G;
          const index_t end = s.hi[r0 + rows - 1];
          const RowPack rp{s.q.data() + r0 * d_k, s.d_o.data() + r0 * d_v, s.gate.data() + r0,
                           s.lse.data() + r0, s.dot.data() + r0, s.lo.data() + r0,
                           s.hi.data() + r0, rows, d_k, d_v};
          for (index_t k0 = begin, n = 0; k0 < end; k0 += n) {
            n = std::min(KeyStep(kv, k0), end - k0);
            const TransposedTile kvt = TransposeKeyValues(kv, k0, n, d_k, d_v, s);
            GradTile(rp, kvt.k, kvt.v, k0, n, s.p.data(), s.ds.data());
            GemmAcc(s.ds.data(), kKeyTile, 1, kv.k + k0 * kv.k_stride, kv.k_stride, rows, n, d_k,
                    s.dq.data() + r0 * d_k, d_k);
          }
        }
      }
      continue;
    }
    // Window / dense / compressed: one key range for the tile, each row masked to its own.
    const index_t key0 = s.lo[0], key1 = s.hi[R - 1];  // both non-decreasing in t
    const RowPack rp{s.q.data(), s.d_o.data(), s.gate.data(), s.lse.data(), s.dot.data(),
                     s.lo.data(), s.hi.data(), R, d_k, d_v};
    for (index_t k0 = key0, n = 0; k0 < key1; k0 += n) {
      n = std::min(KeyStep(kv, k0), key1 - k0);
      const TransposedTile kvt = TransposeKeyValues(kv, k0, n, d_k, d_v, s);
      GradTile(rp, kvt.k, kvt.v, k0, n, s.p.data(), s.ds.data());
      GemmAcc(s.ds.data(), kKeyTile, 1, kv.k + k0 * kv.k_stride, kv.k_stride, R, n, d_k,
              s.dq.data(), d_k);
    }
  }
  for (index_t tok = 0; tok < tokens; ++tok)
    for (index_t g = 0; g < G; ++g) {
      const float* src = s.dq.data() + (tok * G + g) * d_k;
      float* dst = dq.ptr(seq.batch, seq.start + t0 + tok, kvh * G + g);
      for (index_t c = 0; c < d_k; ++c) dst[c] = src[c] * gp.scale;
    }
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(KeyTileBackward);
HWY_EXPORT(QueryTileBackward);

void key_tile_backward(const GradProblem& gp, const BranchGrad& br, const SeqSpan& seq,
                       index_t kvh, const KeyValues& kv, index_t s0, index_t n, BwdScratch& s) {
  HWY_DYNAMIC_DISPATCH(KeyTileBackward)(gp, br, seq, kvh, kv, s0, n, s);
}

void query_tile_backward(const GradProblem& gp, const BranchGrad* branches, const KeyValues* kvs,
                         int num, const SeqSpan& seq, index_t kvh, index_t t0, index_t tokens,
                         const TensorView<float>& dq, BwdScratch& s) {
  HWY_DYNAMIC_DISPATCH(QueryTileBackward)(gp, branches, kvs, num, seq, kvh, t0, tokens, dq, s);
}

// Scalar: one dot product of d_v per row and head, next to the attention's thousands.
void row_dots(const Problem& p, const TensorView<const float>& d_out, const TensorView<const float>& o,
              float* dot, ThreadPool& pool) {
  const index_t H = p.heads, d_v = p.d_v;
  pool.parallel_for(p.rows, [&](std::int64_t begin, std::int64_t end, int) {
    for (index_t r = begin; r < end; ++r) {
      const index_t b = r / p.tokens, t = r % p.tokens;
      for (index_t h = 0; h < H; ++h) {
        const float* x = d_out.ptr(b, t, h);
        const float* y = o.ptr(b, t, h);
        float sum = 0.0f;
        for (index_t c = 0; c < d_v; ++c) sum += x[c] * y[c];
        dot[r * H + h] = sum;
      }
    }
  });
}
}  // namespace nsa::cpu
#endif
