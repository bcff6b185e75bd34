// Internal interface of the fp32 CPU backward kernels (nsa_backward.cc, dense_backward.cc).
// The work units are those of the forward (kernels.h) turned around:
//   key tile  (sequence, kv head, <= kKeyTile keys of one branch) against every query row
//             that sees one of its keys -> that tile's dK, dV (key-major: no other task
//             touches these keys, so no reduction across tasks is needed)
//   query tile (sequence, kv head, tokens x G heads) against every key of every branch it
//             attends -> its dq rows (query-major, likewise)
// Each kernel is compiled for every SIMD target Highway knows and picked at run time.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "cpu/kernels.h"
#include "nsa/backward.h"

namespace nsa::cpu {

// Which keys query t (position in its sequence) of a branch sees: [lo, hi).
//   window: max(0, t - window + 1) .. t (window <= 0: 0 .. t, dense causal; also the
//           selection branch inside one chosen block, whose keys are s <= t)
//   compressed: compressed blocks 0 .. visible_cmp_blocks(t) - 1
struct Visibility {
  enum Kind { kWindow, kCompressed } kind = kWindow;
  index_t window = 0;
  const Config* config = nullptr;

  void range(index_t t, index_t& lo, index_t& hi) const {
    if (kind == kCompressed) {
      lo = 0;
      hi = config->visible_cmp_blocks(t);
    } else {
      lo = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
      hi = t + 1;
    }
  }
};

// What the backward of one attention branch reads besides its keys.
struct BranchGrad {
  int gate_column = -1;     // column of gates [B,T,H,3]; -1: ungated (dense attention)
  Visibility vis;
  const float* lse = nullptr;  // [rows, H]: the branch's saved log-sum-exp
  const float* dot = nullptr;  // [rows, H]: d_out . o_b
  // Selection branch only: the saved choice [rows, H_kv, top_n] (query-major pass).
  const std::int32_t* sel = nullptr;
  index_t top_n = 0, sel_len = 0;
};

// The query side shared by every branch.
struct GradProblem {
  TensorView<const float> q, d_out, gates;
  index_t heads = 0, kv_heads = 0, group = 0, d_k = 0, d_v = 0;
  float scale = 1.0f;
};

// Per-worker scratch, reused across tasks (grown on demand).
struct BwdScratch {
  std::vector<index_t> tokens;          // query positions of a key tile
  std::vector<index_t> blocks;          // selection blocks chosen by a query tile
  std::vector<std::uint8_t> chosen_by;  // [blocks, tokens]: which tokens chose each
  std::vector<float> q, d_o;            // packed rows [R, d_k] (scaled), [R, d_v]
  std::vector<float> gate, lse, dot;    // [R] (query-major: [3, R])
  std::vector<index_t> lo, hi;          // [R] (query-major: [3, R])
  std::vector<float> p, ds;             // [R, kKeyTile] probabilities, dS
  std::vector<float> ktk, ktv;          // transposed key tile [d_k, kKeyTile], values [d_v, kKeyTile]
  std::vector<float> dk, dv, dq;        // accumulators: [n, d_k], [n, d_v], [R, d_k]
};

// dK/dV of keys s0 .. s0+n-1 (n <= kKeyTile) of kv head kvh of one sequence, from the
// query tokens s.tokens (positions in the sequence, every one seeing at least one key of
// the tile through br.vis) and their G heads. Result in s.dk [n, d_k], s.dv [n, d_v].
void key_tile_backward(const GradProblem& gp, const BranchGrad& br, const SeqSpan& seq,
                       index_t kvh, const KeyValues& kv, index_t s0, index_t n, BwdScratch& s);

// dq of tokens t0 .. t0+tokens-1 of one sequence (the G heads of kv head kvh): the sum
// over `num` branches of scale * sum_j dS_j k_j, written (not added) into dq.
void query_tile_backward(const GradProblem& gp, const BranchGrad* branches, const KeyValues* kvs,
                         int num, const SeqSpan& seq, index_t kvh, index_t t0, index_t tokens,
                         const TensorView<float>& dq, BwdScratch& s);

// d_out . o for every row (b * T + t) and head: dot [rows, H]; o shaped like d_out.
void row_dots(const Problem& p, const TensorView<const float>& d_out, const TensorView<const float>& o,
              float* dot, ThreadPool& pool);

// phi backward (phi_backward.cc): from dL/dKc [total_cmp, H_kv, dim] (d_blocks) to the
// raw tokens, ADDED into dx (a [B,T,H_kv,dim] view, possibly aliased with other branches'
// gradients: call after their passes), and phi's parameter gradients, WRITTEN into grads.
void phi_backward(const Config& config, const Problem& p, const TensorView<const float>& raw,
                  const PhiWeights<float>& phi, const float* d_blocks, const TensorView<float>& dx,
                  const PhiGradients<float>& grads, ThreadPool& pool);

}  // namespace nsa::cpu
