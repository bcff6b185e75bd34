// Generator: the model's forward for the new tokens only, with each layer's attention
// answered from a cache of the tokens before them.
#include "model/generator.h"

#include <algorithm>
#include <string>

#include "model/attention_layer.h"
#include "model/layers/embedding.h"
#include "model/layers/token_shift.h"
#include "model/layers/matmul.h"
#include "model/layers/rmsnorm.h"
#include "model/layers/rope.h"
#include "model/mlp_block.h"
#include "model/model_layout.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa::model {

struct Generator::State {
  State(const Model<float>& m, index_t max_tokens_)
      : model(m),
        config(m.config()),
        layout(m.config(), m.tensors()),
        attn(m.config()),
        max_tokens(max_tokens_),
        rope(max_tokens_, m.config().d_k, m.config().rope_theta) {
    const float* P = m.params();
    for (int l = 0; l < config.n_layers; ++l) weights.push_back(layout.layer(P, l));
    if (config.attention == AttentionKind::full) {
      k.resize(static_cast<std::size_t>(config.n_layers));
      v.resize(k.size());
      for (int l = 0; l < config.n_layers; ++l) {
        k[static_cast<std::size_t>(l)].resize(static_cast<std::size_t>(max_tokens * attn.H_kv * attn.d_k));
        v[static_cast<std::size_t>(l)].resize(static_cast<std::size_t>(max_tokens * attn.H_kv * attn.d_v));
      }
    } else {
      DecodeShape shape;
      shape.heads = attn.H;
      shape.kv_heads = attn.H_kv;
      shape.d_k = attn.d_k;
      shape.d_v = attn.d_v;
      shape.shared_kv = attn.streams == 1;
      shape.max_seqs = 1;
      shape.max_tokens = max_tokens;
      for (int l = 0; l < config.n_layers; ++l) {
        const LayerTensors<const float>& w = weights[static_cast<std::size_t>(l)];
        PhiWeights<float> phi_k, phi_v;
        if (config.attention == AttentionKind::nsa) {
          phi_k = {w.phi_k.pe, w.phi_k.w1, w.phi_k.b1, w.phi_k.w2, w.phi_k.b2, w.phi_k.w};
          phi_v = {w.phi_v.pe, w.phi_v.w1, w.phi_v.b1, w.phi_v.w2, w.phi_v.b2, w.phi_v.w};
        }
        caches.emplace_back(attn.op, shape, phi_k, phi_v);
      }
    }
    if (config.token_shift > 0)
      shift_history.assign(static_cast<std::size_t>(config.n_layers),
                           std::vector<float>(static_cast<std::size_t>(config.token_shift * config.d_model), 0.0f));
    logits.resize(static_cast<std::size_t>(config.vocab));
  }

  // Runs n new tokens through the model; the logits of the last one into `logits`.
  void append(const std::int32_t* tokens, index_t n, ThreadPool& pool);

  const Model<float>& model;
  ModelConfig config;
  ModelLayout layout;
  AttentionShape attn;
  index_t max_tokens;
  RopeTable<float> rope;
  std::vector<LayerTensors<const float>> weights;
  std::vector<DecodeCache> caches;           // nsa, window: one per layer
  std::vector<std::vector<float>> k, v;      // full: per layer [max_tokens, H_kv, d_k / d_v], roped k
  std::vector<std::vector<float>> shift_history;  // token_shift S > 0: per layer the last S
                                                  //   normed rows [S, C], oldest first (0 at start)
  index_t pos = 0;
  std::int64_t tokens_read = 0;
  std::vector<float> logits;

  // Buffers of the new tokens (resized per call).
  std::vector<float> x, ln, rstd, tmp;
  AttentionActs<float> acts;
  MlpActs<float> mlp;
};

void Generator::State::append(const std::int32_t* tokens, index_t n, ThreadPool& pool) {
  const index_t C = config.d_model, V = config.vocab;
  if (n < 1) throw Error("generator: need at least one token, got " + std::to_string(n));
  if (!tokens) throw Error("generator: tokens must not be null");
  for (index_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw Error("generator: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside [0, vocab=" + std::to_string(V) + ")");
  if (pos + n > max_tokens)
    throw Error("generator: " + std::to_string(pos) + " + " + std::to_string(n) +
                " tokens exceed max_tokens=" + std::to_string(max_tokens));

  matmul_set_threads(pool.size());
  const auto nc = static_cast<std::size_t>(n * C);
  x.resize(nc);
  ln.resize(nc);
  tmp.resize(nc);
  rstd.resize(static_cast<std::size_t>(n));
  acts.resize(attn, n);
  mlp.resize(n, config.mlp_hidden);
  const float* cos = rope.cos_at(pos);
  const float* sin = rope.sin_at(pos);
  const float* P = model.params();
  std::int64_t read = 0;

  embedding_forward(x.data(), tokens, layout.ptr(P, "embed"), n, C);
  for (int l = 0; l < config.n_layers; ++l) {
    const auto li = static_cast<std::size_t>(l);
    const LayerTensors<const float>& w = weights[li];
    rmsnorm_forward(ln.data(), rstd.data(), x.data(), w.attn_norm, n, C, config.norm_eps, pool);
    const float* attn_in = ln.data();
    if (config.token_shift > 0) {
      std::vector<float>& history = shift_history[li];
      token_shift_forward(acts.xs.data(), ln.data(), 1, n, C, config.token_shift, history.data());
      // The new history: the last S rows of [history, ln].
      const index_t keep = config.token_shift;
      std::vector<float> rows(history);
      rows.insert(rows.end(), ln.begin(), ln.end());
      history.assign(rows.end() - keep * C, rows.end());
      attn_in = acts.xs.data();
    }
    attention_inputs_forward(attn, w, attn_in, 1, n, cos, sin, acts, pool);
    if (config.attention == AttentionKind::full) {
      const index_t kr = attn.H_kv * attn.d_k, vr = attn.H_kv * attn.d_v;
      std::copy(acts.k[0].begin(), acts.k[0].end(), k[li].begin() + pos * kr);
      std::copy(acts.v[0].begin(), acts.v[0].end(), v[li].begin() + pos * vr);
      for (index_t i = 0; i < n; ++i) {
        dense_decode_step(acts.q.data() + i * attn.H * attn.d_k, k[li].data(), v[li].data(), pos + i + 1,
                          attn.H, attn.H_kv, attn.d_k, attn.d_v, attn.scale,
                          acts.att.data() + i * attn.H * attn.d_v, pool);
      }
      read += (pos + n) * attn.H_kv;
    } else {
      const NsaInputs<float> in = attention_nsa_inputs(attn, w, acts, 1, n);
      DecodeTokens t;
      t.q = in.q;
      t.k_cmp = in.k_cmp;
      t.v_cmp = in.v_cmp;
      if (attn.streams == 3) {
        t.k_slc = in.k_slc;
        t.v_slc = in.v_slc;
        t.k_win = in.k_win;
        t.v_win = in.v_win;
      }
      t.gates = in.gates;
      const TensorView<float> out = contiguous_view<float>(acts.att.data(), 1, n, attn.H, attn.d_v);
      DecodeCache& cache = caches[li];
      if (n == 1 && pos > 0) {
        const index_t seq = 0;
        cache.step(&seq, 1, t, out, pool);
      } else {
        cache.prefill(0, t, out, pool);
      }
      for (index_t h = 0; h < attn.H_kv; ++h) {
        const TokensRead r = cache.tokens_read(0, h);
        // The window kind's cmp and slc branches are gated off: it reads its window only.
        read += config.attention == AttentionKind::window ? r.win : r.total();
      }
    }
    matmul_forward(tmp.data(), acts.att.data(), w.wo, static_cast<const float*>(nullptr), n,
                   attn.H * attn.d_v, C);
    for (std::size_t i = 0; i < nc; ++i) x[i] += tmp[i];
    rmsnorm_forward(ln.data(), rstd.data(), x.data(), w.mlp_norm, n, C, config.norm_eps, pool);
    mlp_forward(w, ln.data(), n, C, config.mlp_hidden, mlp, tmp.data(), pool);
    for (std::size_t i = 0; i < nc; ++i) x[i] += tmp[i];
  }
  // Only the last token's logits are wanted.
  const float* last = x.data() + (n - 1) * C;
  rmsnorm_forward(ln.data(), rstd.data(), last, layout.ptr(P, "final_norm"), 1, C, config.norm_eps, pool);
  matmul_forward(logits.data(), ln.data(), layout.ptr(P, "embed"), static_cast<const float*>(nullptr), 1, C, V);
  pos += n;
  tokens_read = read;
}

Generator::Generator(const Model<float>& model, index_t max_tokens) {
  if (max_tokens < 1) throw Error("generator: max_tokens must be >= 1, got " + std::to_string(max_tokens));
  state_ = std::make_unique<State>(model, max_tokens);
}

Generator::~Generator() = default;

const float* Generator::prefill(const std::int32_t* tokens, index_t n, ThreadPool& pool) {
  state_->append(tokens, n, pool);
  return state_->logits.data();
}

const float* Generator::step(std::int32_t token, ThreadPool& pool) {
  state_->append(&token, 1, pool);
  return state_->logits.data();
}

index_t Generator::position() const { return state_->pos; }

std::int64_t Generator::last_tokens_read() const { return state_->tokens_read; }

}  // namespace nsa::model
