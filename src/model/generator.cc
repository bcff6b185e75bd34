// Generator: the model's forward for the new tokens only, with each layer's attention
// answered from a cache of the tokens before them.
//
// One call runs N rows: a prefill's n tokens of one sequence, or a step's one token of each
// of `count` sequences. Row r is a token of sequence seq_of[r] at position pos_of[r]; the
// rows of one sequence are consecutive (a group). The projections and MLPs run on all N rows
// at once; RoPE reads each row's own position; the token shift and the attention read each
// group's own history.
#include "model/generator.h"

#include <algorithm>
#include <string>

#include "model/attention_layer.h"
#include "model/layers/embedding.h"
#include "model/layers/matmul.h"
#include "model/layers/rmsnorm.h"
#include "model/layers/rope.h"
#include "model/layers/token_shift.h"
#include "model/mlp_block.h"
#include "model/model_layout.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa::model {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

// The cache's view of the operator inputs (shared K/V: the cmp views only).
DecodeTokens decode_tokens(const NsaInputs<float>& in, int streams) {
  DecodeTokens t;
  t.q = in.q;
  t.k_cmp = in.k_cmp;
  t.v_cmp = in.v_cmp;
  if (streams == 3) {
    t.k_slc = in.k_slc;
    t.v_slc = in.v_slc;
    t.k_win = in.k_win;
    t.v_win = in.v_win;
  }
  t.gates = in.gates;
  return t;
}

}  // namespace

// What the generator holds for one sequence besides the nsa/window caches' share.
struct SequenceState {
  index_t pos = 0;
  std::vector<std::vector<float>> k, v;        // full: per layer [pos, H_kv, d_k / d_v], roped k
  std::vector<std::vector<float>> shift_rows;  // S > 0: per layer [pos, C] the normed rows
  std::vector<float> journal;                  // [rows, row_floats] ending at pos
  std::vector<LayerStep> last;                 // of the last prefill/step token; empty if none
};

struct Generator::State {
  State(const Model<float>& m, index_t max_tokens_, index_t max_seqs_, index_t max_pages, bool journal_on_)
      : model(m),
        config(m.config()),
        layout(m.config(), m.tensors()),
        attn(m.config()),
        max_tokens(max_tokens_),
        journal_on(journal_on_),
        rope(max_tokens_, m.config().d_k, m.config().rope_theta),
        seqs(static_cast<std::size_t>(max_seqs_)) {
    const float* P = m.params();
    for (int l = 0; l < config.n_layers; ++l) weights.push_back(layout.layer(P, l));
    const auto layers = static_cast<std::size_t>(config.n_layers);
    for (SequenceState& s : seqs) {
      if (config.attention == AttentionKind::full) {
        s.k.resize(layers);
        s.v.resize(layers);
      }
      if (config.token_shift > 0) s.shift_rows.resize(layers);
    }
    if (config.attention != AttentionKind::full) {
      DecodeShape shape;
      shape.heads = attn.H;
      shape.kv_heads = attn.H_kv;
      shape.d_k = attn.d_k;
      shape.d_v = attn.d_v;
      shape.shared_kv = attn.streams == 1;
      shape.max_seqs = max_seqs_;
      shape.max_tokens = max_tokens;
      shape.max_pages = max_pages;
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
    kv_floats = attn.H_kv * (attn.d_k + attn.d_v);
    layer_floats = attn.streams * kv_floats + (config.token_shift > 0 ? config.d_model : 0);
  }

  SequenceState& sequence(index_t seq, const char* what) {
    if (seq < 0 || seq >= static_cast<index_t>(seqs.size()))
      throw Error(std::string("generator ") + what + ": sequence " + str(seq) + " is outside [0, " +
                  str(static_cast<index_t>(seqs.size())) + ")");
    return seqs[static_cast<std::size_t>(seq)];
  }
  void check_tokens(const std::int32_t* tokens, index_t n) const {
    if (!tokens) throw Error("generator: tokens must not be null");
    for (index_t i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= config.vocab)
        throw Error("generator: token " + str(tokens[i]) + " at index " + str(i) + " is outside [0, vocab=" +
                    str(config.vocab) + ")");
  }
  void check_room(const SequenceState& s, index_t seq, index_t n) const {
    if (s.pos + n > max_tokens)
      throw Error("generator: sequence " + str(seq) + " holds " + str(s.pos) + " tokens; " + str(n) +
                  " more exceed max_tokens=" + str(max_tokens));
  }

  // Runs rows through the model; the logits of the rows in `want` (indices into the rows)
  // into `logits` [want, vocab]. groups: (seq, first row, rows) in row order.
  struct Group {
    index_t seq, first, rows;
  };
  void run(const std::vector<Group>& groups, bool prefill, const std::int32_t* tokens,
           const std::vector<index_t>& want, ThreadPool& pool);
  // The last S normed rows of layer l before position pos of s, oldest first, zeros
  // before the sequence's start: the token shift's history [S, C].
  void shift_history(const SequenceState& s, std::size_t l, std::vector<float>& out) const;

  const Model<float>& model;
  ModelConfig config;
  ModelLayout layout;
  AttentionShape attn;
  index_t max_tokens;
  bool journal_on;
  RopeTable<float> rope;
  std::vector<LayerTensors<const float>> weights;
  std::vector<DecodeCache> caches;  // nsa, window: one per layer, every sequence
  std::vector<SequenceState> seqs;
  index_t kv_floats = 0;     // one stream's K and V of one token: H_kv (d_k + d_v)
  index_t layer_floats = 0;  // one layer's part of a journal row
  std::vector<float> logits;

  // Buffers of the rows (resized per call).
  std::vector<float> x, ln, rstd, tmp, cos, sin, history, final_rows;
  AttentionActs<float> acts;
  MlpActs<float> mlp;
};

void Generator::State::shift_history(const SequenceState& s, std::size_t l, std::vector<float>& out) const {
  const index_t S = config.token_shift, C = config.d_model;
  out.assign(static_cast<std::size_t>(S * C), 0.0f);
  const std::vector<float>& rows = s.shift_rows[l];
  const index_t have = std::min(S, s.pos);
  std::copy(rows.end() - have * C, rows.end(), out.end() - have * C);
}

void Generator::State::run(const std::vector<Group>& groups, bool prefill, const std::int32_t* tokens,
                           const std::vector<index_t>& want, ThreadPool& pool) {
  const index_t C = config.d_model, V = config.vocab, S = config.token_shift;
  const index_t N = groups.back().first + groups.back().rows;
  const index_t half = rope.half;
  matmul_set_threads(pool.size());
  const auto nc = static_cast<std::size_t>(N * C);
  x.resize(nc);
  ln.resize(nc);
  tmp.resize(nc);
  rstd.resize(static_cast<std::size_t>(N));
  acts.resize(attn, N);
  mlp.resize(N, config.mlp_hidden);
  // RoPE rows at each row's own position: the rows read as one sequence of N positions.
  cos.resize(static_cast<std::size_t>(N * half));
  sin.resize(cos.size());
  for (const Group& g : groups) {
    const index_t pos = seqs[static_cast<std::size_t>(g.seq)].pos;
    std::copy(rope.cos_at(pos), rope.cos_at(pos + g.rows), cos.begin() + g.first * half);
    std::copy(rope.sin_at(pos), rope.sin_at(pos + g.rows), sin.begin() + g.first * half);
  }
  // The journal row of row r of group g, layer l.
  auto journal_at = [&](const Group& g, index_t r, int l) {
    std::vector<float>& j = seqs[static_cast<std::size_t>(g.seq)].journal;
    const index_t row = static_cast<index_t>(j.size()) / (config.n_layers * layer_floats) - g.rows + r;
    return j.data() + (row * config.n_layers + l) * layer_floats;
  };
  // Once the first layer's attention has taken the rows (a cache may refuse them before
  // changing anything), the sequences' journals and last steps are begun.
  auto begin_rows = [&] {
    for (const Group& g : groups) {
      SequenceState& s = seqs[static_cast<std::size_t>(g.seq)];
      s.last.assign(static_cast<std::size_t>(config.n_layers), LayerStep{});
      if (journal_on) s.journal.resize(s.journal.size() + static_cast<std::size_t>(g.rows * config.n_layers * layer_floats));
    }
  };

  const float* P = model.params();
  embedding_forward(x.data(), tokens, layout.ptr(P, "embed"), N, C);
  for (int l = 0; l < config.n_layers; ++l) {
    const auto li = static_cast<std::size_t>(l);
    const LayerTensors<const float>& w = weights[li];
    rmsnorm_forward(ln.data(), rstd.data(), x.data(), w.attn_norm, N, C, config.norm_eps, pool);
    const float* attn_in = ln.data();
    if (S > 0) {
      for (const Group& g : groups) {
        SequenceState& s = seqs[static_cast<std::size_t>(g.seq)];
        shift_history(s, li, history);
        token_shift_forward(acts.xs.data() + g.first * attn.C_in, ln.data() + g.first * C, 1, g.rows, C,
                            static_cast<int>(S), history.data());
      }
      attn_in = acts.xs.data();
    }
    attention_inputs_forward(attn, w, attn_in, 1, N, cos.data(), sin.data(), acts, pool);

    if (config.attention == AttentionKind::full) {
      if (l == 0) begin_rows();
      const index_t kr = attn.H_kv * attn.d_k, vr = attn.H_kv * attn.d_v;
      for (const Group& g : groups) {
        SequenceState& s = seqs[static_cast<std::size_t>(g.seq)];
        std::vector<float>& k = s.k[li];
        std::vector<float>& v = s.v[li];
        k.insert(k.end(), acts.k[0].begin() + g.first * kr, acts.k[0].begin() + (g.first + g.rows) * kr);
        v.insert(v.end(), acts.v[0].begin() + g.first * vr, acts.v[0].begin() + (g.first + g.rows) * vr);
        for (index_t r = 0; r < g.rows; ++r) {
          const index_t row = g.first + r;
          dense_decode_step(acts.q.data() + row * attn.H * attn.d_k, k.data(), v.data(), s.pos + r + 1, attn.H,
                            attn.H_kv, attn.d_k, attn.d_v, attn.scale, acts.att.data() + row * attn.H * attn.d_v,
                            pool);
        }
        s.last[li].tokens_read = (s.pos + g.rows) * attn.H_kv;
      }
    } else {
      DecodeCache& cache = caches[li];
      if (prefill) {
        const DecodeTokens t = decode_tokens(attention_nsa_inputs(attn, w, acts, 1, N), attn.streams);
        cache.prefill(groups[0].seq, t, contiguous_view<float>(acts.att.data(), 1, N, attn.H, attn.d_v), pool);
      } else {
        // One token per sequence: the rows are [count, 1, heads, dim].
        const DecodeTokens t = decode_tokens(attention_nsa_inputs(attn, w, acts, N, 1), attn.streams);
        std::vector<index_t> ids;
        for (const Group& g : groups) ids.push_back(g.seq);
        cache.step(ids.data(), N, t, contiguous_view<float>(acts.att.data(), N, 1, attn.H, attn.d_v), pool);
      }
      if (l == 0) begin_rows();
      for (const Group& g : groups) {
        LayerStep& step = seqs[static_cast<std::size_t>(g.seq)].last[li];
        step.selected.resize(static_cast<std::size_t>(attn.H_kv));
        for (index_t h = 0; h < attn.H_kv; ++h) {
          const TokensRead r = cache.tokens_read(g.seq, h);
          // The window kind's cmp and slc branches are gated off: it reads its window only.
          step.tokens_read += config.attention == AttentionKind::window ? r.win : r.total();
          if (config.attention == AttentionKind::nsa)
            step.selected[static_cast<std::size_t>(h)] = cache.selected_blocks(g.seq, h);
        }
        const float* gates = acts.gates.data() + (g.first + g.rows - 1) * attn.H * 3;
        for (index_t h = 0; h < attn.H; ++h)
          for (int b = 0; b < 3; ++b) step.gates[b] += gates[h * 3 + b] / static_cast<float>(attn.H);
      }
    }
    // What a restore needs again: K/V of every stream, and the normed rows of the shift.
    for (const Group& g : groups) {
      SequenceState& s = seqs[static_cast<std::size_t>(g.seq)];
      if (S > 0) s.shift_rows[li].insert(s.shift_rows[li].end(), ln.begin() + g.first * C, ln.begin() + (g.first + g.rows) * C);
      if (!journal_on) continue;
      const index_t kr = attn.H_kv * attn.d_k, vr = attn.H_kv * attn.d_v;
      for (index_t r = 0; r < g.rows; ++r) {
        float* out = journal_at(g, r, l);
        const index_t row = g.first + r;
        for (int i = 0; i < attn.streams; ++i) {
          out = std::copy(acts.k[i].begin() + row * kr, acts.k[i].begin() + (row + 1) * kr, out);
          out = std::copy(acts.v[i].begin() + row * vr, acts.v[i].begin() + (row + 1) * vr, out);
        }
        if (S > 0) std::copy(ln.begin() + row * C, ln.begin() + (row + 1) * C, out);
      }
    }
    matmul_forward(tmp.data(), acts.att.data(), w.wo, static_cast<const float*>(nullptr), N, attn.H * attn.d_v, C);
    for (std::size_t i = 0; i < nc; ++i) x[i] += tmp[i];
    rmsnorm_forward(ln.data(), rstd.data(), x.data(), w.mlp_norm, N, C, config.norm_eps, pool);
    mlp_forward(w, ln.data(), N, C, config.mlp_hidden, mlp, tmp.data(), pool);
    for (std::size_t i = 0; i < nc; ++i) x[i] += tmp[i];
  }
  for (const Group& g : groups) seqs[static_cast<std::size_t>(g.seq)].pos += g.rows;
  // Only the wanted rows' logits.
  const auto M = static_cast<index_t>(want.size());
  final_rows.resize(static_cast<std::size_t>(M * C));
  for (index_t i = 0; i < M; ++i)
    std::copy(x.begin() + want[static_cast<std::size_t>(i)] * C, x.begin() + (want[static_cast<std::size_t>(i)] + 1) * C,
              final_rows.begin() + i * C);
  rmsnorm_forward(ln.data(), rstd.data(), final_rows.data(), layout.ptr(P, "final_norm"), M, C, config.norm_eps, pool);
  logits.resize(static_cast<std::size_t>(M * V));
  matmul_forward(logits.data(), ln.data(), layout.ptr(P, "embed"), static_cast<const float*>(nullptr), M, C, V);
}

Generator::Generator(const Model<float>& model, index_t max_tokens, index_t max_seqs, index_t max_pages,
                     bool journal) {
  if (max_tokens < 1) throw Error("generator: max_tokens must be >= 1, got " + str(max_tokens));
  if (max_seqs < 1) throw Error("generator: max_seqs must be >= 1, got " + str(max_seqs));
  if (max_pages < 0) throw Error("generator: max_pages must be >= 0, got " + str(max_pages));
  state_ = std::make_unique<State>(model, max_tokens, max_seqs, max_pages, journal);
}

Generator::~Generator() = default;

// A DecodeCache call that cannot get its pages throws before changing anything. Every
// layer's cache holds the same sequences with the same lengths and sharing, so when the
// first layer's call succeeds every later layer's does too: a refusal leaves all as it was.
const float* Generator::prefill(index_t seq, const std::int32_t* tokens, index_t n, ThreadPool& pool) {
  State& st = *state_;
  SequenceState& s = st.sequence(seq, "prefill");
  if (n < 1) throw Error("generator: need at least one token, got " + str(n));
  st.check_tokens(tokens, n);
  st.check_room(s, seq, n);
  st.run({{seq, 0, n}}, true, tokens, {n - 1}, pool);
  return st.logits.data();
}

const float* Generator::step(const index_t* seqs, const std::int32_t* tokens, index_t count, ThreadPool& pool) {
  State& st = *state_;
  if (count < 1) throw Error("generator: step needs at least one sequence, got " + str(count));
  if (!seqs) throw Error("generator: step's sequence ids must not be null");
  st.check_tokens(tokens, count);
  std::vector<State::Group> groups;
  std::vector<index_t> want;
  std::vector<bool> seen(st.seqs.size(), false);
  for (index_t i = 0; i < count; ++i) {
    const SequenceState& s = st.sequence(seqs[i], "step");
    if (seen[static_cast<std::size_t>(seqs[i])])
      throw Error("generator: step lists sequence " + str(seqs[i]) + " twice");
    seen[static_cast<std::size_t>(seqs[i])] = true;
    st.check_room(s, seqs[i], 1);
    // A sequence's first token has no cache to step from: it is a one-token prefill.
    if (s.pos == 0) throw Error("generator: step on the empty sequence " + str(seqs[i]) + "; prefill it first");
    groups.push_back({seqs[i], i, 1});
    want.push_back(i);
  }
  st.run(groups, false, tokens, want, pool);
  return st.logits.data();
}

void Generator::reset(index_t seq) {
  State& st = *state_;
  SequenceState& s = st.sequence(seq, "reset");
  for (DecodeCache& c : st.caches) c.reset(seq);
  for (auto& k : s.k) std::vector<float>().swap(k);
  for (auto& v : s.v) std::vector<float>().swap(v);
  for (auto& r : s.shift_rows) std::vector<float>().swap(r);
  std::vector<float>().swap(s.journal);
  s.last.clear();
  s.pos = 0;
}

void Generator::fork(index_t src, index_t dst) {
  State& st = *state_;
  const SequenceState& from = st.sequence(src, "fork");
  SequenceState& to = st.sequence(dst, "fork");
  if (src == dst) throw Error("generator fork: source and destination are the same sequence " + str(src));
  if (to.pos != 0) throw Error("generator fork: destination sequence " + str(dst) + " holds " + str(to.pos) +
                               " tokens; reset it first");
  for (DecodeCache& c : st.caches) c.fork(src, dst);
  to.k = from.k;
  to.v = from.v;
  to.shift_rows = from.shift_rows;
  to.journal.clear();
  to.last = from.last;
  to.pos = from.pos;
}

void Generator::truncate(index_t seq, index_t tokens) {
  State& st = *state_;
  SequenceState& s = st.sequence(seq, "truncate");
  if (tokens < 0 || tokens > s.pos)
    throw Error("generator truncate: sequence " + str(seq) + " holds " + str(s.pos) + " tokens, cannot keep " +
                str(tokens));
  for (DecodeCache& c : st.caches) c.truncate(seq, tokens);
  const auto keep = [&](std::vector<float>& rows, index_t floats_per_token) {
    rows.resize(static_cast<std::size_t>(tokens * floats_per_token));
  };
  for (auto& k : s.k) keep(k, st.attn.H_kv * st.attn.d_k);
  for (auto& v : s.v) keep(v, st.attn.H_kv * st.attn.d_v);
  for (auto& r : s.shift_rows) keep(r, st.config.d_model);
  // The journal ends at pos; keep its rows before `tokens`.
  const index_t row = st.config.n_layers * st.layer_floats;
  const index_t rows = static_cast<index_t>(s.journal.size()) / row;
  const index_t first = s.pos - rows;
  s.journal.resize(static_cast<std::size_t>(std::max<index_t>(0, tokens - first) * row));
  s.last.clear();
  s.pos = tokens;
}

index_t Generator::max_seqs() const { return static_cast<index_t>(state_->seqs.size()); }
index_t Generator::max_tokens() const { return state_->max_tokens; }
index_t Generator::position(index_t seq) const { return state_->sequence(seq, "position").pos; }

std::int64_t Generator::last_tokens_read(index_t seq) const {
  std::int64_t read = 0;
  for (const LayerStep& l : state_->sequence(seq, "last_tokens_read").last) read += l.tokens_read;
  return read;
}

std::vector<LayerStep> Generator::last_step(index_t seq) const { return state_->sequence(seq, "last_step").last; }

std::size_t Generator::cache_bytes() const {
  const State& st = *state_;
  std::size_t bytes = 0;
  for (const DecodeCache& c : st.caches) bytes += c.memory().bytes;
  for (const SequenceState& s : st.seqs) {
    for (const auto& k : s.k) bytes += k.size() * sizeof(float);
    for (const auto& v : s.v) bytes += v.size() * sizeof(float);
    for (const auto& r : s.shift_rows) bytes += r.size() * sizeof(float);
  }
  return bytes;
}

index_t Generator::row_floats() const { return state_->config.n_layers * state_->layer_floats; }

std::vector<float> Generator::take_journal(index_t seq) {
  std::vector<float> rows;
  rows.swap(state_->sequence(seq, "take_journal").journal);
  return rows;
}

void Generator::restore(index_t seq, const float* rows, index_t n, ThreadPool& pool) {
  State& st = *state_;
  SequenceState& s = st.sequence(seq, "restore");
  if (n < 0) throw Error("generator restore: negative row count " + str(n));
  if (n == 0) return;
  if (!rows) throw Error("generator restore: rows must not be null");
  st.check_room(s, seq, n);
  const AttentionShape& a = st.attn;
  const index_t kr = a.H_kv * a.d_k, vr = a.H_kv * a.d_v, C = st.config.d_model;
  const index_t row = row_floats();
  std::vector<float> k[3], v[3], shift;
  for (int l = 0; l < st.config.n_layers; ++l) {
    const auto li = static_cast<std::size_t>(l);
    for (int i = 0; i < a.streams; ++i) {
      k[i].resize(static_cast<std::size_t>(n * kr));
      v[i].resize(static_cast<std::size_t>(n * vr));
    }
    shift.clear();
    for (index_t t = 0; t < n; ++t) {
      const float* in = rows + t * row + l * st.layer_floats;
      for (int i = 0; i < a.streams; ++i) {
        std::copy(in, in + kr, k[i].begin() + t * kr);
        in += kr;
        std::copy(in, in + vr, v[i].begin() + t * vr);
        in += vr;
      }
      if (st.config.token_shift > 0) shift.insert(shift.end(), in, in + C);
    }
    if (st.config.attention == AttentionKind::full) {
      s.k[li].insert(s.k[li].end(), k[0].begin(), k[0].end());
      s.v[li].insert(s.v[li].end(), v[0].begin(), v[0].end());
    } else {
      // May refuse for the page budget: at the first layer, before anything changed.
      DecodeTokens t;
      t.k_cmp = contiguous_view<const float>(k[0].data(), 1, n, a.H_kv, a.d_k);
      t.v_cmp = contiguous_view<const float>(v[0].data(), 1, n, a.H_kv, a.d_v);
      if (a.streams == 3) {
        t.k_slc = contiguous_view<const float>(k[1].data(), 1, n, a.H_kv, a.d_k);
        t.v_slc = contiguous_view<const float>(v[1].data(), 1, n, a.H_kv, a.d_v);
        t.k_win = contiguous_view<const float>(k[2].data(), 1, n, a.H_kv, a.d_k);
        t.v_win = contiguous_view<const float>(v[2].data(), 1, n, a.H_kv, a.d_v);
      }
      st.caches[li].append(seq, t, pool);
    }
    if (st.config.token_shift > 0) s.shift_rows[li].insert(s.shift_rows[li].end(), shift.begin(), shift.end());
  }
  s.last.clear();
  s.pos += n;
}

}  // namespace nsa::model
