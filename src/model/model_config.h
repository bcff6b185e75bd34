// ModelConfig: the shape of a small decoder-only NSA language model (issue 7).
//
//   tokens -> embed -> n_layers x [ x += attn(shift(rmsnorm(x))); x += swiglu_mlp(rmsnorm(x)) ]
//   (shift: the optional token shift, layers/token_shift.h; none when token_shift = 0)
//          -> rmsnorm -> logits = x embed^T (tied LM head)
//
// The attention kind is chosen per run so that nsa, full and window models can be
// compared at equal size:
//   nsa     the three gated branches (nsa::nsa_forward), gates = sigmoid(x Wg^T + bg) [T,H,3]
//   full    dense causal attention (nsa::dense_forward); no gate parameters
//   window  the window branch alone: nsa_forward with the cmp/slc gates held at 0 and
//           phi = mean (no phi parameters); gates = sigmoid(x Wg^T + bg) [T,H,1] for win
#pragma once

#include <cstdint>
#include <string>

#include "nsa/config.h"

namespace nsa::model {

enum class AttentionKind { nsa, full, window };
const char* attention_kind_name(AttentionKind kind);
AttentionKind parse_attention_kind(const std::string& name);  // throws nsa::Error

struct ModelConfig {
  int vocab = 256;          // byte-level tokenizer
  int d_model = 128;
  int n_layers = 4;
  int n_heads = 4;          // H
  int n_kv_heads = 1;       // H_kv (divides H)
  int d_k = 32;             // query/key head dim
  int d_v = 32;             // value head dim
  int mlp_hidden = 384;     // SwiGLU hidden size
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;   // normal init of every matrix; output projections scaled by
                            //   1/sqrt(2 n_layers); norms start at 1, biases at 0
  AttentionKind attention = AttentionKind::nsa;
  int token_shift = 0;      // S: the attention projections also read the S previous
                            //   tokens' normed rows (a short causal conv of width S + 1;
                            //   layers/token_shift.h); 0: none, at most 8
  bool independent_kv = false;  // nsa: separate k/v projections per branch (cmp, slc, win)
  ConfigOptions nsa;            // block sizes etc.; the model's default scales the paper's
                                //   down: see default_small_nsa_options()

  // Throws nsa::Error naming the first invalid field.
  void validate() const;
  std::string describe() const;
  // "key=value" pairs, one per field, for checkpoint metadata; parse inverts it.
  std::string serialize() const;
  static ModelConfig parse(const std::string& text);  // throws nsa::Error on bad text
};

// What a training schedule may change of the attention operator from step to step
// (training/schedule.h): the selection gate's scale and the sparsity (top_n, window) of
// the nsa and window kinds. The default (all 0) means the model's own config, scale 1.
struct AttentionSchedule {
  double selection_gate = 1;  // the selection branch's gate is multiplied by this (nsa)
  int top_n = 0;              // 0: config.nsa.top_n
  int window = 0;             // 0: config.nsa.window
};

// The paper's NSA shape scaled to a 1k-token context: l=16, d=8, l'=32, n=8 (1 initial,
// 2 local), w=128, phi = mlp.
ConfigOptions default_small_nsa_options();

}  // namespace nsa::model
