// The NSA operator and the dense causal baseline: inputs, outputs, entry points.
//
// Shapes (spec, "Inputs of the attention operator"):
//   q                      [B, T, H,    d_k]
//   k_cmp, k_slc, k_win    [B, T, H_kv, d_k]
//   v_cmp, v_slc, v_win    [B, T, H_kv, d_v]
//   gates                  [B, T, H, 3]        order (cmp, slc, win), already in [0, 1]
//   out                    [B, T, H, d_v]
// with G = H / H_kv any integer >= 1. Branches share K/V when the caller passes the
// same view for several of them. A packed variable-length batch uses B = 1, T = total
// tokens, and Sequences::cu_seqlens.
#pragma once

#include <cstdint>
#include <vector>

#include "nsa/bf16.h"
#include "nsa/config.h"
#include "nsa/phi_fields.h"
#include "nsa/tensor.h"

namespace nsa {

class ThreadPool;

// Which tokens form which sequence.
//   cu_seqlens == nullptr: a dense batch, B sequences of T tokens (the views' batch axis).
//   otherwise: a packed batch; every view has B = 1, and sequence s covers tokens
//   cu_seqlens[s] .. cu_seqlens[s+1] (cu_seqlens[0] = 0, non-decreasing, last = T).
struct Sequences {
  const std::int64_t* cu_seqlens = nullptr;  // [num_seqs + 1]
  index_t num_seqs = 0;
};

// Parameters of one compression function phi (one for K with dim = d_k, one for V with
// dim = d_v). Shared by all key/value heads. Unused pointers stay null.
//   mlp:    x = flatten(block + pe); out = W2 GELU(W1 x + b1) + b2
//   linear: out = W flatten(block + pe)
//   mean:   out = mean of the l rows (no parameters)
template <class T>
struct PhiWeights {
  const T* pe = nullptr;  // [l, dim]            mlp, linear
  const T* w1 = nullptr;  // [hidden, l * dim]   mlp
  const T* b1 = nullptr;  // [hidden]            mlp
  const T* w2 = nullptr;  // [dim, hidden]       mlp
  const T* b2 = nullptr;  // [dim]               mlp
  const T* w = nullptr;   // [dim, l * dim]      linear
};

template <class T>
struct NsaInputs {
  TensorView<const T> q;
  TensorView<const T> k_cmp, v_cmp;  // raw tokens, compressed by phi
  TensorView<const T> k_slc, v_slc;
  TensorView<const T> k_win, v_win;
  TensorView<const T> gates;
  PhiWeights<T> phi_k, phi_v;
  Sequences seqs;
};

// Branch order used by every per-branch array.
enum Branch : int { kCmp = 0, kSlc = 1, kWin = 2, kNumBranches = 3 };

// What the forward pass leaves for the backward pass. "rows" are the flattened tokens:
// row = b * T + t for a dense batch, the packed token index for a varlen batch.
template <class T>
struct NsaSaved {
  index_t rows = 0, heads = 0, kv_heads = 0, top_n = 0, d_k = 0, d_v = 0;
  std::vector<T> lse;                  // [3, rows, H]: per-branch log-sum-exp (natural log,
                                       //   of scaled scores); -inf where a branch sees nothing
  std::vector<T> branch_out;           // [3, rows, H, d_v]: each branch's output before gating
  std::vector<std::int32_t> sel_blocks;  // [rows, H_kv, top_n]: chosen blocks, ascending, -1 padded
  std::vector<T> k_cmp_blocks;         // [total_cmp, H_kv, d_k]: Kc of every sequence, concatenated
  std::vector<T> v_cmp_blocks;         // [total_cmp, H_kv, d_v]: Vc likewise
  std::vector<index_t> cmp_offsets;    // [num_seqs + 1]: sequence s owns Kc rows cmp_offsets[s]..[s+1]

  const T* lse_of(Branch b) const { return lse.data() + b * rows * heads; }
  const T* branch_out_of(Branch b) const { return branch_out.data() + b * rows * heads * d_v; }
};

// Dense causal attention, the baseline: out[t] = softmax(scale q[t] . k[0..t]) v[0..t].
template <class T>
struct DenseInputs {
  TensorView<const T> q;  // [B, T, H, d_k]
  TensorView<const T> k;  // [B, T, H_kv, d_k]
  TensorView<const T> v;  // [B, T, H_kv, d_v]
  Sequences seqs;
  double scale = 0.0;     // 0 means 1/sqrt(d_k)
};

// ---- fp32 CPU kernels -------------------------------------------------------------
// Writes o into `out` (caller-owned, [B,T,H,d_v]); fills *saved when it is not null.
// Throws nsa::Error on invalid input, before writing anything.
void nsa_forward(const Config& config, const NsaInputs<float>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool);

// lse (may be null): [rows, H] log-sum-exp of each query row.
void dense_forward(const DenseInputs<float>& in, TensorView<float> out, float* lse,
                   ThreadPool& pool);

// ---- bf16 storage, fp32 compute (CPU) ---------------------------------------------------
// Every input is bf16: q, k, v of each branch, gates and phi's weights; outputs and saved
// tensors are fp32. Products are accumulated in fp32: with AVX512_BF16 (vdpbf16ps) the
// dot products q.k and p.v take bf16 pairs (p, the softmax probabilities, is rounded to
// bf16 for p.v, as GPU flash attention does); elsewhere bf16 is widened to fp32 and the
// fp32 kernels run. phi runs in fp32 (weights widened once per call); its outputs Kc/Vc
// are rounded to bf16 like every other key, and saved->k_cmp_blocks / v_cmp_blocks hold
// those rounded values widened to fp32. Accuracy: the spec's bf16 tolerance (1e-2
// relative) against the float64 reference run on the same bf16 values.
void nsa_forward(const Config& config, const NsaInputs<bf16>& in, TensorView<float> out,
                 NsaSaved<float>* saved, ThreadPool& pool);

void dense_forward(const DenseInputs<bf16>& in, TensorView<float> out, float* lse,
                   ThreadPool& pool);

// ---- float64 reference: the spec in code ---------------------------------------------
namespace reference {
void nsa_forward(const Config& config, const NsaInputs<double>& in, TensorView<double> out,
                 NsaSaved<double>* saved);
void dense_forward(const DenseInputs<double>& in, TensorView<double> out, double* lse);
}  // namespace reference

}  // namespace nsa
