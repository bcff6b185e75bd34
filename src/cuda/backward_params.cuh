// Parameters shared by the attention backward kernels (dense, compression, selection,
// window), and the per-row quantities every one of them reads.
//
// Softmax backward of one branch b for a query row (t, h), with dO_b = gate_b * dO:
//   P[s]  = exp(scale q.k_s - lse_b)                (recomputed, never stored)
//   dP[s] = dO_b . v_s = gate_b * (dO . v_s)
//   dS[s] = P[s] * (dP[s] - D_b),  D_b = dO_b . o_b = gate_b * (dO . o_b)
//   dq   += scale * sum_s dS[s] k_s
//   dk_s += scale * dS[s] q,  dv_s += P[s] dO_b
// So the kernels read the unscaled dO and multiply by the row's gate (1 for dense), and
// D_b comes precomputed per row (backward_gates.cuh).
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

enum BwdMode : int { kBwdDense = 0, kBwdCmp = 1, kBwdWin = 2, kBwdSlc = 3 };

struct BwdParams {
  const void* q;
  std::int64_t q_sb, q_st, q_sh;
  const void* k;  // raw [B,T,H_kv,d_k], or Kc [total_cmp,H_kv,d_k] (cmp: k_sb = 0)
  std::int64_t k_sb, k_st, k_sh;
  const void* v;
  std::int64_t v_sb, v_st, v_sh;
  const void* d_out;  // [B,T,H,d_v] storage type
  std::int64_t do_sb, do_st, do_sh;
  const void* gates;  // [B,T,H,3] storage type, or null (dense: gate = 1)
  std::int64_t g_sb, g_st, g_sh;
  int gate_col;
  const float* lse;  // [rows, H] natural log; -inf where the branch sees nothing
  const float* D;    // [rows, H] gate_b * (dO . o_b)
  // Outputs (fp32). dq: [B,T,H,d_k] view. dk/dv: views [B,T,H_kv,dim] or, for cmp, the
  // dKc / dVc scratch [total_cmp, H_kv, dim] (sb = 0). accumulate: add instead of write.
  float* dq;
  std::int64_t dq_sb, dq_st, dq_sh;
  float* dk;
  std::int64_t dk_sb, dk_st, dk_sh;
  float* dv;
  std::int64_t dv_sb, dv_st, dv_sh;
  bool accumulate;
  const SeqInfo* seqs;
  int num_seqs;
  int H, H_kv, G, dk_dim, dv_dim;
  float scale, scale_log2;
  int mode, block_len, stride, sel_block, window;
  // dq pass of the tiled branches: the forward's query tiles and group packing.
  const void* tiles;  // TileA* (dq) or KeyTask* (key-major)
  int gh, chunks, tokens_per_tile;
  // Selection: saved choice [rows, H_kv, top_n]; inverse index (backward_sel_index.cuh).
  const std::int32_t* sel;
  int top_n, tiles_per_block;
  const std::int32_t* who;         // token lists, per (sequence, kv head, block) ascending
  const std::int64_t* who_offset;  // exclusive offsets of the lists (see SelIndex)
  // Key-major tasks split over their query rows write scaled partial dK|dV rows here:
  // [part, H_kv, 64, d_k + d_v] fp32 (see KeyTask::part); summed by key_reduce_kernel.
  float* partial;
};

// One CTA of a key-major pass: keys [s0, s0 + n) of sequence `seq` (compressed blocks
// for cmp), n <= 64, against the query tokens of index [i0, i1) (clamped to the tile's
// token count) of the tile's token sequence. Selection: the keys lie in selection block
// `block`; the token list of (sequence, kv head h, block) starts at
// who_offset[list0 + (h * nblk + block) * nchunk] and ends where the next block's list
// starts (backward_sel_index.cuh). part < 0: the CTA owns the tile's rows and writes them;
// part >= 0: one of several CTAs splitting a long tile's token range, writing partials.
struct KeyTask {
  std::int64_t seq, s0;
  int n, block;
  std::int64_t list0;
  int nblk, nchunk;
  std::int64_t i0, i1, part;
};

// The tiles that were split: partials part0 .. part0 + nparts - 1, summed in this order.
struct KeyReduce {
  std::int64_t seq, s0, part0;
  int n, nparts;
};

// What a query row contributes besides q and dO: its log-sum-exp in log2 units of the
// scaled scores (+inf when the row sees nothing or is padding, so that every P is 0),
// D and the gate.
struct RowInfo {
  float lse2, D, gate;
};

template <class T>
__device__ __forceinline__ RowInfo bwd_row_info(const BwdParams& p, const SeqInfo& seq,
                                                std::int64_t t, int head) {
  RowInfo r{INFINITY, 0.f, 0.f};
  if (t < 0) return r;
  const std::int64_t row = seq.row0 + t;
  const float l = p.lse[row * p.H + head];
  r.lse2 = l == -INFINITY ? INFINITY : l * kLog2e;
  r.D = p.D[row * p.H + head];
  r.gate = 1.f;
  if (p.gates != nullptr)
    r.gate = to_f32(static_cast<const T*>(p.gates)[seq.batch * p.g_sb + (seq.start + t) * p.g_st +
                                                     head * p.g_sh + p.gate_col]);
  return r;
}

// Writes (or adds) `n` fp32 values scaled by `mul` from a warp's fragment row into dst.
// frag: acc[DT][4] of the mma layout; half selects row g (0) or g + 8 (1).
template <int DT>
__device__ __forceinline__ void store_frag_row(float* dst, const float (&acc)[DT][4], int half,
                                               int dim, float mul, bool accumulate) {
  const int c = threadIdx.x & 3;
#pragma unroll
  for (int n = 0; n < DT; ++n)
    if (n * 8 < dim) {
      float* d = dst + n * 8 + 2 * c;
      float x0 = acc[n][2 * half] * mul, x1 = acc[n][2 * half + 1] * mul;
      if (accumulate) { x0 += d[0]; x1 += d[1]; }
      d[0] = x0;
      d[1] = x1;
    }
}

}  // namespace nsa::cuda::detail
