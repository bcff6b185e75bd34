// Model<T>: embed -> n_layers x [attention block, MLP block] -> rmsnorm -> tied LM head -> CE.
// Forward keeps every activation; backward walks the same steps in reverse (llm.c style),
// each layer accumulating into gradient buffers that backward() zeroes first.
#include "model/model.h"

#include <algorithm>
#include <string>

#include "model/attention_layer.h"
#include "model/data/rng.h"
#include "model/layers/cross_entropy.h"
#include "model/layers/embedding.h"
#include "model/layers/matmul.h"
#include "model/layers/rmsnorm.h"
#include "model/layers/rope.h"
#include "model/mlp_block.h"
#include "model/model_layout.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa::model {

template <class T>
struct Model<T>::State {
  explicit State(const ModelConfig& c) : config(c), layout(c), attn(c) {
    params.assign(layout.num_params(), T(0));
    grads.assign(layout.num_params(), T(0));
  }

  struct Layer {
    std::vector<T> resid;              // (N, C) the block's input
    std::vector<T> ln1, ln1_rstd;      // (N, C), (N)
    AttentionActs<T> attn;
    std::vector<T> resid2;             // (N, C) after the attention block
    std::vector<T> ln2, ln2_rstd;
    MlpActs<T> mlp;
  };

  ModelConfig config;
  ModelLayout layout;
  AttentionShape attn;
  std::vector<T> params, grads;
  RopeTable<T> rope;

  // The last forward.
  bool have_forward = false;
  index_t B = 0, Tn = 0;
  std::vector<std::int32_t> tokens, targets;
  std::vector<Layer> layers;
  std::vector<T> resid_out;            // (N, C) the last block's output
  std::vector<T> lnf, lnf_rstd;        // (N, C), (N)
  std::vector<T> logits, probs, losses;  // (N, V), (N, V), (N)
  index_t count = 0;                   // non-ignored targets
  double loss = 0;

  // Scratch.
  std::vector<T> tmp;                  // (N, C) a block's output before the residual add
  std::vector<T> dresid, dln, dlogits;
  AttentionScratch<T> attn_scratch;
  MlpScratch<T> mlp_scratch;

  void resize(index_t B_, index_t Tn_) {
    if (static_cast<index_t>(rope.positions) < Tn_)
      rope = RopeTable<T>(Tn_, config.d_k, config.rope_theta);
    if (B_ == B && Tn_ == Tn && !layers.empty()) return;
    B = B_;
    Tn = Tn_;
    const index_t N = B * Tn, C = config.d_model;
    const auto nc = static_cast<std::size_t>(N * C);
    layers.resize(static_cast<std::size_t>(config.n_layers));
    for (Layer& L : layers) {
      L.resid.resize(nc);
      L.ln1.resize(nc);
      L.ln1_rstd.resize(static_cast<std::size_t>(N));
      L.attn.resize(attn, N);
      L.resid2.resize(nc);
      L.ln2.resize(nc);
      L.ln2_rstd.resize(static_cast<std::size_t>(N));
      L.mlp.resize(N, config.mlp_hidden);
    }
    resid_out.resize(nc);
    lnf.resize(nc);
    lnf_rstd.resize(static_cast<std::size_t>(N));
    logits.resize(static_cast<std::size_t>(N * config.vocab));
    probs.resize(logits.size());
    losses.resize(static_cast<std::size_t>(N));
    tmp.resize(nc);
  }
};

template <class T>
Model<T>::Model(const ModelConfig& config) : state_(std::make_unique<State>(config)) {}

template <class T>
Model<T>::~Model() = default;
template <class T>
Model<T>::Model(Model&&) noexcept = default;
template <class T>
Model<T>& Model<T>::operator=(Model&&) noexcept = default;

template <class T>
void Model<T>::init(std::uint64_t seed) {
  State& s = *state_;
  Rng rng(seed);
  const auto& tensors = s.layout.tensors();
  const auto& inits = s.layout.inits();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    T* p = s.params.data() + tensors[i].offset;
    switch (inits[i].kind) {
      case TensorInit::zeros: std::fill_n(p, tensors[i].size, T(0)); break;
      case TensorInit::ones: std::fill_n(p, tensors[i].size, T(1)); break;
      case TensorInit::normal:
        for (std::size_t j = 0; j < tensors[i].size; ++j) p[j] = static_cast<T>(inits[i].std * rng.normal());
        break;
    }
  }
  s.have_forward = false;
}

template <class T>
void Model<T>::set_attention_schedule(const AttentionSchedule& schedule) {
  state_->attn.apply(state_->config, schedule);
  state_->have_forward = false;
}

template <class T>
const ModelConfig& Model<T>::config() const { return state_->config; }
template <class T>
const std::vector<TensorInfo>& Model<T>::tensors() const { return state_->layout.tensors(); }
template <class T>
const TensorInfo& Model<T>::tensor(const std::string& name) const { return state_->layout.tensor(name); }
template <class T>
std::size_t Model<T>::num_params() const { return state_->params.size(); }
template <class T>
T* Model<T>::params() { return state_->params.data(); }
template <class T>
const T* Model<T>::params() const { return state_->params.data(); }
template <class T>
T* Model<T>::grads() { return state_->grads.data(); }
template <class T>
const T* Model<T>::grads() const { return state_->grads.data(); }

template <class T>
double Model<T>::forward(const std::int32_t* tokens, const std::int32_t* targets, index_t batch,
                         index_t seq, ThreadPool& pool) {
  State& s = *state_;
  const ModelConfig& c = s.config;
  if (batch < 1) throw Error("model forward: batch must be >= 1, got " + std::to_string(batch));
  if (seq < 1) throw Error("model forward: seq must be >= 1, got " + std::to_string(seq));
  if (!tokens || !targets) throw Error("model forward: tokens and targets must not be null");
  const index_t N = batch * seq, C = c.d_model, V = c.vocab;
  for (index_t n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V)
      throw Error("model forward: token " + std::to_string(tokens[n]) + " at index " +
                  std::to_string(n) + " is outside [0, vocab=" + std::to_string(V) + ")");
    if (targets[n] < -1 || targets[n] >= V)
      throw Error("model forward: target " + std::to_string(targets[n]) + " at index " +
                  std::to_string(n) + " is neither -1 nor in [0, vocab=" + std::to_string(V) + ")");
  }
  s.have_forward = false;
  matmul_set_threads(pool.size());
  s.resize(batch, seq);
  s.tokens.assign(tokens, tokens + N);
  s.targets.assign(targets, targets + N);
  const T* P = s.params.data();
  const T* cos = s.rope.cos_at(0);
  const T* sin = s.rope.sin_at(0);

  embedding_forward(s.layers[0].resid.data(), tokens, s.layout.ptr(P, "embed"), N, C);
  for (int l = 0; l < c.n_layers; ++l) {
    typename State::Layer& L = s.layers[static_cast<std::size_t>(l)];
    const LayerTensors<const T> w = s.layout.layer(P, l);
    rmsnorm_forward(L.ln1.data(), L.ln1_rstd.data(), L.resid.data(), w.attn_norm, N, C, c.norm_eps, pool);
    attention_forward(s.attn, w, L.ln1.data(), batch, seq, cos, sin, L.attn, s.tmp.data(), pool);
    for (std::size_t i = 0; i < L.resid2.size(); ++i) L.resid2[i] = L.resid[i] + s.tmp[i];
    rmsnorm_forward(L.ln2.data(), L.ln2_rstd.data(), L.resid2.data(), w.mlp_norm, N, C, c.norm_eps, pool);
    mlp_forward(w, L.ln2.data(), N, C, c.mlp_hidden, L.mlp, s.tmp.data(), pool);
    T* next = l + 1 < c.n_layers ? s.layers[static_cast<std::size_t>(l) + 1].resid.data() : s.resid_out.data();
    for (std::size_t i = 0; i < L.resid2.size(); ++i) next[i] = L.resid2[i] + s.tmp[i];
  }
  rmsnorm_forward(s.lnf.data(), s.lnf_rstd.data(), s.resid_out.data(), s.layout.ptr(P, "final_norm"),
                  N, C, c.norm_eps, pool);
  matmul_forward(s.logits.data(), s.lnf.data(), s.layout.ptr(P, "embed"), static_cast<const T*>(nullptr),
                 N, C, V);
  s.loss = crossentropy_forward(s.losses.data(), s.probs.data(), s.logits.data(), targets, N, V, pool);
  s.count = static_cast<index_t>(std::count_if(targets, targets + N, [](std::int32_t t) { return t >= 0; }));
  s.have_forward = true;
  return s.loss;
}

template <class T>
void Model<T>::backward(ThreadPool& pool) {
  State& s = *state_;
  if (!s.have_forward) throw Error("model backward: no forward pass to differentiate");
  const ModelConfig& c = s.config;
  const index_t N = s.B * s.Tn, C = c.d_model, V = c.vocab;
  std::fill(s.grads.begin(), s.grads.end(), T(0));
  if (s.count == 0) return;  // the loss is the constant 0
  matmul_set_threads(pool.size());
  const T* P = s.params.data();
  T* G = s.grads.data();
  const T* cos = s.rope.cos_at(0);
  const T* sin = s.rope.sin_at(0);
  const auto nc = static_cast<std::size_t>(N * C);

  // loss = mean CE(lnf embed^T)
  s.dlogits.assign(static_cast<std::size_t>(N * V), T(0));
  crossentropy_backward(s.dlogits.data(), s.probs.data(), s.targets.data(),
                        static_cast<T>(1.0 / static_cast<double>(s.count)), N, V, pool);
  s.dln.assign(nc, T(0));
  matmul_backward(s.dln.data(), s.layout.ptr(G, "embed"), static_cast<T*>(nullptr), s.dlogits.data(),
                  s.lnf.data(), s.layout.ptr(P, "embed"), N, C, V);
  s.dresid.assign(nc, T(0));
  rmsnorm_backward(s.dresid.data(), s.layout.ptr(G, "final_norm"), s.dln.data(), s.resid_out.data(),
                   s.layout.ptr(P, "final_norm"), s.lnf_rstd.data(), N, C, pool);

  // dresid holds d loss / d (the current block's output); the residual adds pass it through.
  for (int l = c.n_layers - 1; l >= 0; --l) {
    const typename State::Layer& L = s.layers[static_cast<std::size_t>(l)];
    const LayerTensors<const T> w = s.layout.layer(P, l);
    const LayerTensors<T> g = s.layout.layer(G, l);
    // out = resid2 + mlp(rmsnorm(resid2))
    std::fill(s.dln.begin(), s.dln.end(), T(0));
    mlp_backward(w, g, L.ln2.data(), N, C, c.mlp_hidden, L.mlp, s.dresid.data(), s.dln.data(),
                 s.mlp_scratch, pool);
    rmsnorm_backward(s.dresid.data(), g.mlp_norm, s.dln.data(), L.resid2.data(), w.mlp_norm,
                     L.ln2_rstd.data(), N, C, pool);
    // resid2 = resid + attention(rmsnorm(resid))
    std::fill(s.dln.begin(), s.dln.end(), T(0));
    attention_backward(s.attn, w, g, L.ln1.data(), s.B, s.Tn, cos, sin, L.attn, s.dresid.data(),
                       s.dln.data(), s.attn_scratch, pool);
    rmsnorm_backward(s.dresid.data(), g.attn_norm, s.dln.data(), L.resid.data(), w.attn_norm,
                     L.ln1_rstd.data(), N, C, pool);
  }
  embedding_backward(s.layout.ptr(G, "embed"), s.dresid.data(), s.tokens.data(), N, C);
}

template <class T>
const T* Model<T>::logits() const {
  if (!state_->have_forward) throw Error("model logits: no forward pass yet");
  return state_->logits.data();
}
template <class T>
index_t Model<T>::batch() const { return state_->have_forward ? state_->B : 0; }
template <class T>
index_t Model<T>::seq() const { return state_->have_forward ? state_->Tn : 0; }

namespace {
void check_attention_layer(const ModelConfig& c, bool have_forward, int layer, const char* what) {
  if (c.attention == AttentionKind::full)
    throw Error(std::string("model ") + what + ": the full attention kind has no NSA state or gates");
  if (layer < 0 || layer >= c.n_layers)
    throw Error(std::string("model ") + what + ": layer " + std::to_string(layer) + " is outside [0, " +
                std::to_string(c.n_layers) + ")");
  if (!have_forward) throw Error(std::string("model ") + what + ": no forward pass yet");
}
}  // namespace

template <class T>
const NsaSaved<T>& Model<T>::attention_saved(int layer) const {
  check_attention_layer(state_->config, state_->have_forward, layer, "attention_saved");
  return state_->layers[static_cast<std::size_t>(layer)].attn.saved;
}

template <class T>
const T* Model<T>::gates(int layer) const {
  check_attention_layer(state_->config, state_->have_forward, layer, "gates");
  return state_->layers[static_cast<std::size_t>(layer)].attn.gates.data();
}

template class Model<float>;
template class Model<double>;

}  // namespace nsa::model
