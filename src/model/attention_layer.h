// The attention layer of one block: projections, RoPE, gates, the attention operator of
// the model's kind, the output projection.
//
//   x (N = B*T, C) normed input; with token_shift S > 0 the projections read
//                                         x <- token_shift(x)  (B, T, C_in = (S+1) C)
//   q = rope(x Wq^T)                      (B, T, H, d_k)
//   k_s = rope(x Wk_s^T), v_s = x Wv_s^T  (B, T, H_kv, d_k / d_v) per key stream s;
//                                         one stream (cmp = slc = win) unless independent_kv
//   gates = sigmoid(x Wg^T + bg)          (B, T, H, 3); window: (0, 0, g_win); the slc
//                                         column times the schedule's selection_gate
//   att = nsa_forward | dense_forward     (B, T, H, d_v)
//   out = att Wo^T                        (N, C)
// Token t of the rows has RoPE position pos0 + t (the caller passes the cos/sin rows of
// pos0). This is the only layer that mixes information across time.
#pragma once

#include <vector>

#include "model/layers/rope.h"
#include "model/model_config.h"
#include "model/model_layout.h"
#include "nsa/attention.h"
#include "nsa/backward.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// The sizes and operator configuration of the attention layers of one model.
struct AttentionShape {
  AttentionKind kind = AttentionKind::nsa;
  index_t C = 0, H = 0, H_kv = 0, d_k = 0, d_v = 0;
  int branches = 0;   // gate columns with parameters: nsa 3, window 1 (win), full 0
  int streams = 1;    // distinct key/value projections: 3 with independent_kv, else 1
  int shift = 0;      // token_shift S (0: none)
  index_t C_in = 0;   // columns the projections read: (1 + S) C
  Config op;          // the nsa operator's config (window: phi = mean); unused by full
  double scale = 0;   // resolved softmax scale
  double selection_gate = 1;  // the slc gate's factor (a training schedule's; else 1)

  explicit AttentionShape(const ModelConfig& config);
  // The operator at a step of a training schedule (AttentionSchedule's 0 fields: the config's).
  void apply(const ModelConfig& config, const AttentionSchedule& schedule);
};

// What the forward pass keeps for the backward pass (one layer, N rows).
template <class T>
struct AttentionActs {
  std::vector<T> xs;         // (N, C_in) the token-shifted input (S > 0)
  std::vector<T> q;          // (N, H, d_k) roped
  std::vector<T> k[3], v[3]; // (N, H_kv, d_k) roped / (N, H_kv, d_v); streams used
  std::vector<T> gates;      // (N, H, 3) nsa and window
  std::vector<T> gate_probs; // (N, H, branches) the sigmoids before the schedule's factor
  std::vector<T> att;        // (N, H, d_v) the operator's output
  std::vector<T> lse;        // (N, H) full
  NsaSaved<T> saved;         // nsa and window

  void resize(const AttentionShape& shape, index_t N);
};

// Backward buffers, reused across layers.
template <class T>
struct AttentionScratch {
  std::vector<T> dq, dk[3], dv[3], dgates, dgate_logits, datt, dphi, dxs;
};

// q, k, v, gates of N = B*T rows of x (N, C_in: after the token shift, if any) into acts
// (which must be resize()d to N).
template <class T>
void attention_inputs_forward(const AttentionShape& shape, const LayerTensors<const T>& w,
                              const T* x, index_t B, index_t Tn, const T* cos, const T* sin,
                              AttentionActs<T>& acts, ThreadPool& pool);

// Views of acts for the operator: [B, T, heads, dim].
template <class T>
NsaInputs<T> attention_nsa_inputs(const AttentionShape& shape, const LayerTensors<const T>& w,
                                  const AttentionActs<T>& acts, index_t B, index_t Tn);

// The whole layer: out (N, C) overwritten. T = float runs the fp32 kernels, T = double
// the float64 reference.
template <class T>
void attention_forward(const AttentionShape& shape, const LayerTensors<const T>& w, const T* x,
                       index_t B, index_t Tn, const T* cos, const T* sin, AttentionActs<T>& acts,
                       T* out, ThreadPool& pool);

// dout (N, C). Accumulates (+=) dx (N, C) and every attention parameter gradient of g.
template <class T>
void attention_backward(const AttentionShape& shape, const LayerTensors<const T>& w,
                        const LayerTensors<T>& g, const T* x, index_t B, index_t Tn, const T* cos,
                        const T* sin, const AttentionActs<T>& acts, const T* dout, T* dx,
                        AttentionScratch<T>& scratch, ThreadPool& pool);

}  // namespace nsa::model
