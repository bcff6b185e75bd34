// Model<T>: the decoder-only language model of model_config.h, forward and backward.
//
// T = float runs the fast CPU kernels (nsa::nsa_forward / dense_forward and their
// backward); T = double runs the float64 reference attention (nsa::reference::*), which is
// what the whole-model finite-difference gradient check uses.
//
// Parameters live in one flat buffer described by a table of named tensors (the names
// are the checkpoint's tensor names):
//   embed                  [vocab, d_model]        also the LM head (tied)
//   layers.{i}.attn_norm   [d_model]
//   layers.{i}.wq          [H*d_k, C_in]           C_in = (1 + token_shift) d_model
//   layers.{i}.wk, .wv     [H_kv*d_k, C_in], [H_kv*d_v, C_in]
//                          (independent_kv: wk_cmp, wk_slc, wk_win, wv_cmp, wv_slc, wv_win)
//   layers.{i}.wg, .bg     [H*branches, C_in], [H*branches]  (nsa: 3 branches, window: 1)
//   layers.{i}.phi_k.*     pe [l,d_k], w1, b1, w2, b2 (mlp) or w (linear); phi_v.* likewise
//   layers.{i}.wo          [d_model, H*d_v]
//   layers.{i}.mlp_norm    [d_model]
//   layers.{i}.w_gate, .w_up  [mlp_hidden, d_model];  layers.{i}.w_down [d_model, mlp_hidden]
//   final_norm             [d_model]
// RoPE (theta = rope_theta, rotate-half pairing (j, j + d_k/2)) is applied to q and to
// every key stream before the attention operator.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "nsa/attention.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  // into the flat parameter buffer, in elements
  std::size_t size = 0;    // product of shape
  bool decay = true;       // AdamW weight decay applies (matrices); false for norms, biases,
                           //   phi's positional encoding
};

template <class T>
class Model {
 public:
  explicit Model(const ModelConfig& config);  // validates; parameters zero until init()
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  // The attention operator of the following forward/backward passes, at a step of a
  // training schedule (training/schedule.h); the default schedule restores the config's.
  void set_attention_schedule(const AttentionSchedule& schedule);

  // Random init from the seed (reproducible: same seed, same parameters).
  void init(std::uint64_t seed);

  const ModelConfig& config() const;
  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo& tensor(const std::string& name) const;  // throws nsa::Error if unknown
  std::size_t num_params() const;
  T* params();               // [num_params]
  const T* params() const;
  T* grads();                // [num_params], written by backward()
  const T* grads() const;

  // tokens, targets: [batch, seq] row-major; tokens in [0, vocab); targets in [0, vocab)
  // or -1 (ignored). Returns the mean cross-entropy (nats) over the non-ignored targets
  // (0 when there are none) and keeps the activations for backward().
  double forward(const std::int32_t* tokens, const std::int32_t* targets, index_t batch,
                 index_t seq, ThreadPool& pool);
  // Gradient of the last forward()'s loss into grads() (overwritten, not accumulated).
  void backward(ThreadPool& pool);

  // Of the last forward():
  const T* logits() const;  // [batch, seq, vocab]
  index_t batch() const;
  index_t seq() const;
  // nsa and window kinds: the attention operator's saved state of layer i (selected
  // blocks, per-branch lse) and its gates [batch*seq, H, 3] (window: cmp/slc columns 0).
  const NsaSaved<T>& attention_saved(int layer) const;
  const T* gates(int layer) const;

  struct State;  // activations and buffers (model.cc)

 private:
  std::unique_ptr<State> state_;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace nsa::model
