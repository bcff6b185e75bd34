#include "model/attention_layer.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "model/layers/token_shift.h"
#include "model/layers/matmul.h"
#include "model/layers/rope.h"
#include "model/layers/sigmoid.h"
#include "nsa/thread_pool.h"

namespace nsa::model {
namespace {

ConfigOptions operator_options(const ModelConfig& c) {
  ConfigOptions o = c.nsa;
  if (c.attention == AttentionKind::window) o.phi = PhiKind::mean;  // no phi parameters
  return o;
}

// ---- the operator: fp32 kernels for float, the float64 reference for double ----------
void run_nsa_forward(const Config& c, const NsaInputs<float>& in, TensorView<float> out,
                     NsaSaved<float>* saved, ThreadPool& pool) {
  nsa_forward(c, in, out, saved, pool);
}
void run_nsa_forward(const Config& c, const NsaInputs<double>& in, TensorView<double> out,
                     NsaSaved<double>* saved, ThreadPool&) {
  reference::nsa_forward(c, in, out, saved);
}
void run_nsa_backward(const Config& c, const NsaInputs<float>& in, const NsaSaved<float>& saved,
                      TensorView<const float> d_out, const NsaGradients<float>& g, ThreadPool& pool) {
  nsa_backward(c, in, saved, d_out, g, pool);
}
void run_nsa_backward(const Config& c, const NsaInputs<double>& in, const NsaSaved<double>& saved,
                      TensorView<const double> d_out, const NsaGradients<double>& g, ThreadPool&) {
  reference::nsa_backward(c, in, saved, d_out, g);
}
void run_dense_forward(const DenseInputs<float>& in, TensorView<float> out, float* lse, ThreadPool& pool) {
  dense_forward(in, out, lse, pool);
}
void run_dense_forward(const DenseInputs<double>& in, TensorView<double> out, double* lse, ThreadPool&) {
  reference::dense_forward(in, out, lse);
}
void run_dense_backward(const DenseInputs<float>& in, TensorView<const float> out, const float* lse,
                        TensorView<const float> d_out, const DenseGradients<float>& g, ThreadPool& pool) {
  dense_backward(in, out, lse, d_out, g, pool);
}
void run_dense_backward(const DenseInputs<double>& in, TensorView<const double>, const double*,
                        TensorView<const double> d_out, const DenseGradients<double>& g, ThreadPool&) {
  reference::dense_backward(in, d_out, g);
}

// Elements of each of phi's fields (in kPhiFields order, nsa/phi_fields.h) for one dim;
// 0 for the fields the kind does not use.
std::array<std::size_t, kPhiFields.size()> phi_sizes(const Config& op, index_t dim) {
  std::array<std::size_t, kPhiFields.size()> out{};
  for (PhiField f : kPhiFields)
    if (phi_field_used(op.phi(), f))
      out[static_cast<std::size_t>(f)] =
          static_cast<std::size_t>(phi_field_size(f, op.block_len(), dim, op.phi_hidden_for(dim)));
  return out;
}

template <class T>
PhiWeights<T> phi_weights(const PhiTensors<const T>& t) {
  PhiWeights<T> p;
  for (PhiField f : kPhiFields) phi_field(p, f) = phi_field(t, f);
  return p;
}

// Gate column of parameter branch b: nsa b -> b; window 0 -> kWin.
int gate_column(const AttentionShape& s, int b) { return s.kind == AttentionKind::window ? kWin : b; }

// The schedule's factor on gate column col.
double gate_factor(const AttentionShape& s, int col) { return col == kSlc ? s.selection_gate : 1.0; }

}  // namespace

AttentionShape::AttentionShape(const ModelConfig& c)
    : kind(c.attention),
      C(c.d_model),
      H(c.n_heads),
      H_kv(c.n_kv_heads),
      d_k(c.d_k),
      d_v(c.d_v),
      branches(c.attention == AttentionKind::nsa ? 3 : c.attention == AttentionKind::window ? 1 : 0),
      streams(c.independent_kv ? 3 : 1),
      shift(c.token_shift),
      C_in((1 + c.token_shift) * c.d_model),
      op(c.attention == AttentionKind::full ? Config() : Config(operator_options(c))),
      scale(c.nsa.scale > 0 ? c.nsa.scale : 1.0 / std::sqrt(static_cast<double>(c.d_k))) {}

void AttentionShape::apply(const ModelConfig& c, const AttentionSchedule& schedule) {
  if (kind == AttentionKind::full) return;
  ConfigOptions o = operator_options(c);
  if (schedule.top_n > 0) o.top_n = schedule.top_n;
  if (schedule.window > 0) o.window = schedule.window;
  op = Config(o);
  selection_gate = kind == AttentionKind::nsa ? schedule.selection_gate : 1.0;
}

template <class T>
void AttentionActs<T>::resize(const AttentionShape& s, index_t N) {
  xs.resize(s.shift > 0 ? static_cast<std::size_t>(N * s.C_in) : 0);
  q.resize(static_cast<std::size_t>(N * s.H * s.d_k));
  for (int i = 0; i < 3; ++i) {
    k[i].resize(i < s.streams ? static_cast<std::size_t>(N * s.H_kv * s.d_k) : 0);
    v[i].resize(i < s.streams ? static_cast<std::size_t>(N * s.H_kv * s.d_v) : 0);
  }
  gates.resize(s.kind == AttentionKind::full ? 0 : static_cast<std::size_t>(N * s.H * 3));
  gate_probs.resize(static_cast<std::size_t>(N * s.H * s.branches));
  att.resize(static_cast<std::size_t>(N * s.H * s.d_v));
  lse.resize(s.kind == AttentionKind::full ? static_cast<std::size_t>(N * s.H) : 0);
}

template <class T>
void attention_inputs_forward(const AttentionShape& s, const LayerTensors<const T>& w, const T* x,
                              index_t B, index_t Tn, const T* cos, const T* sin,
                              AttentionActs<T>& acts, ThreadPool& pool) {
  const index_t N = B * Tn;
  matmul_forward(acts.q.data(), x, w.wq, static_cast<const T*>(nullptr), N, s.C_in, s.H * s.d_k);
  rope_forward(acts.q.data(), acts.q.data(), cos, sin, B, Tn, s.H, s.d_k, pool);
  for (int i = 0; i < s.streams; ++i) {
    matmul_forward(acts.k[i].data(), x, w.wk[i], static_cast<const T*>(nullptr), N, s.C_in, s.H_kv * s.d_k);
    rope_forward(acts.k[i].data(), acts.k[i].data(), cos, sin, B, Tn, s.H_kv, s.d_k, pool);
    matmul_forward(acts.v[i].data(), x, w.wv[i], static_cast<const T*>(nullptr), N, s.C_in, s.H_kv * s.d_v);
  }
  if (s.kind == AttentionKind::full) return;
  const index_t cols = s.H * s.branches;
  T* probs = acts.gate_probs.data();
  matmul_forward(probs, x, w.wg, w.bg, N, s.C_in, cols);
  sigmoid_forward(probs, probs, N * cols);
  std::fill(acts.gates.begin(), acts.gates.end(), T(0));
  for (index_t n = 0; n < N; ++n)
    for (index_t h = 0; h < s.H; ++h)
      for (int b = 0; b < s.branches; ++b) {
        const int col = gate_column(s, b);
        acts.gates[(n * s.H + h) * 3 + col] =
            probs[(n * s.H + h) * s.branches + b] * static_cast<T>(gate_factor(s, col));
      }
}

template <class T>
NsaInputs<T> attention_nsa_inputs(const AttentionShape& s, const LayerTensors<const T>& w,
                                  const AttentionActs<T>& acts, index_t B, index_t Tn) {
  NsaInputs<T> in;
  in.q = contiguous_view<const T>(acts.q.data(), B, Tn, s.H, s.d_k);
  TensorView<const T>* ks[3] = {&in.k_cmp, &in.k_slc, &in.k_win};
  TensorView<const T>* vs[3] = {&in.v_cmp, &in.v_slc, &in.v_win};
  for (int b = 0; b < 3; ++b) {
    const int i = s.streams == 3 ? b : 0;  // shared K/V: the same view for every branch
    *ks[b] = contiguous_view<const T>(acts.k[i].data(), B, Tn, s.H_kv, s.d_k);
    *vs[b] = contiguous_view<const T>(acts.v[i].data(), B, Tn, s.H_kv, s.d_v);
  }
  in.gates = contiguous_view<const T>(acts.gates.data(), B, Tn, s.H, 3);
  if (s.kind == AttentionKind::nsa) {
    in.phi_k = phi_weights(w.phi_k);
    in.phi_v = phi_weights(w.phi_v);
  }
  return in;
}

template <class T>
void attention_forward(const AttentionShape& s, const LayerTensors<const T>& w, const T* x,
                       index_t B, index_t Tn, const T* cos, const T* sin, AttentionActs<T>& acts,
                       T* out, ThreadPool& pool) {
  if (s.shift > 0) {
    token_shift_forward(acts.xs.data(), x, B, Tn, s.C, s.shift);
    x = acts.xs.data();
  }
  attention_inputs_forward(s, w, x, B, Tn, cos, sin, acts, pool);
  TensorView<T> att = contiguous_view<T>(acts.att.data(), B, Tn, s.H, s.d_v);
  if (s.kind == AttentionKind::full) {
    DenseInputs<T> in;
    in.q = contiguous_view<const T>(acts.q.data(), B, Tn, s.H, s.d_k);
    in.k = contiguous_view<const T>(acts.k[0].data(), B, Tn, s.H_kv, s.d_k);
    in.v = contiguous_view<const T>(acts.v[0].data(), B, Tn, s.H_kv, s.d_v);
    in.scale = s.scale;
    run_dense_forward(in, att, acts.lse.data(), pool);
  } else {
    run_nsa_forward(s.op, attention_nsa_inputs(s, w, acts, B, Tn), att, &acts.saved, pool);
  }
  matmul_forward(out, acts.att.data(), w.wo, static_cast<const T*>(nullptr), B * Tn, s.H * s.d_v, s.C);
}

template <class T>
void attention_backward(const AttentionShape& s, const LayerTensors<const T>& w,
                        const LayerTensors<T>& g, const T* x, index_t B, index_t Tn, const T* cos,
                        const T* sin, const AttentionActs<T>& acts, const T* dout, T* dx,
                        AttentionScratch<T>& sc, ThreadPool& pool) {
  const index_t N = B * Tn;
  // With the token shift, the projections read the shifted rows; their gradient goes to dxs.
  T* const dx_norm = dx;
  if (s.shift > 0) {
    sc.dxs.assign(static_cast<std::size_t>(N * s.C_in), T(0));
    x = acts.xs.data();
    dx = sc.dxs.data();
  }
  // out = att Wo^T
  sc.datt.assign(static_cast<std::size_t>(N * s.H * s.d_v), T(0));
  matmul_backward(sc.datt.data(), g.wo, static_cast<T*>(nullptr), dout, acts.att.data(), w.wo, N,
                  s.H * s.d_v, s.C);

  // The operator: writes (overwrites) dq, dk, dv, dgates, phi's gradients.
  sc.dq.resize(acts.q.size());
  for (int i = 0; i < s.streams; ++i) {
    sc.dk[i].resize(acts.k[i].size());
    sc.dv[i].resize(acts.v[i].size());
  }
  const TensorView<const T> d_att = contiguous_view<const T>(sc.datt.data(), B, Tn, s.H, s.d_v);
  if (s.kind == AttentionKind::full) {
    DenseInputs<T> in;
    in.q = contiguous_view<const T>(acts.q.data(), B, Tn, s.H, s.d_k);
    in.k = contiguous_view<const T>(acts.k[0].data(), B, Tn, s.H_kv, s.d_k);
    in.v = contiguous_view<const T>(acts.v[0].data(), B, Tn, s.H_kv, s.d_v);
    in.scale = s.scale;
    DenseGradients<T> dg;
    dg.dq = contiguous_view<T>(sc.dq.data(), B, Tn, s.H, s.d_k);
    dg.dk = contiguous_view<T>(sc.dk[0].data(), B, Tn, s.H_kv, s.d_k);
    dg.dv = contiguous_view<T>(sc.dv[0].data(), B, Tn, s.H_kv, s.d_v);
    run_dense_backward(in, contiguous_view<const T>(acts.att.data(), B, Tn, s.H, s.d_v),
                       acts.lse.data(), d_att, dg, pool);
  } else {
    NsaGradients<T> dg;
    dg.dq = contiguous_view<T>(sc.dq.data(), B, Tn, s.H, s.d_k);
    TensorView<T>* dks[3] = {&dg.dk_cmp, &dg.dk_slc, &dg.dk_win};
    TensorView<T>* dvs[3] = {&dg.dv_cmp, &dg.dv_slc, &dg.dv_win};
    for (int b = 0; b < 3; ++b) {
      const int i = s.streams == 3 ? b : 0;  // shared K/V: aliased views receive the sum
      *dks[b] = contiguous_view<T>(sc.dk[i].data(), B, Tn, s.H_kv, s.d_k);
      *dvs[b] = contiguous_view<T>(sc.dv[i].data(), B, Tn, s.H_kv, s.d_v);
    }
    sc.dgates.resize(acts.gates.size());
    dg.dgates = contiguous_view<T>(sc.dgates.data(), B, Tn, s.H, 3);
    // phi's gradients go to scratch first (the operator overwrites), then add into g.
    const auto size_k = phi_sizes(s.op, s.d_k), size_v = phi_sizes(s.op, s.d_v);
    std::size_t total = 0;
    for (std::size_t f = 0; f < kPhiFields.size(); ++f) total += size_k[f] + size_v[f];
    sc.dphi.assign(total, T(0));
    if (s.kind == AttentionKind::nsa) {
      T* next = sc.dphi.data();
      for (auto [grads, sizes] : {std::pair{&dg.phi_k, &size_k}, std::pair{&dg.phi_v, &size_v}}) {
        for (PhiField f : kPhiFields) {
          const std::size_t n = (*sizes)[static_cast<std::size_t>(f)];
          if (n == 0) continue;
          phi_field(*grads, f) = next;
          next += n;
        }
      }
    }
    run_nsa_backward(s.op, attention_nsa_inputs(s, w, acts, B, Tn), acts.saved, d_att, dg, pool);
    if (s.kind == AttentionKind::nsa) {
      const T* next = sc.dphi.data();
      LayerTensors<T> gm = g;
      for (auto [dst, sizes] : {std::pair{&gm.phi_k, &size_k}, std::pair{&gm.phi_v, &size_v}}) {
        for (PhiField f : kPhiFields) {
          const std::size_t n = (*sizes)[static_cast<std::size_t>(f)];
          for (std::size_t j = 0; j < n; ++j) phi_field(*dst, f)[j] += next[j];
          next += n;
        }
      }
    }
    // gates = sigmoid(x Wg^T + bg), the parameter columns only.
    const index_t cols = s.H * s.branches;
    std::vector<T> gsel(static_cast<std::size_t>(N * cols)), dgsel(gsel.size());
    for (index_t n = 0; n < N; ++n)
      for (index_t h = 0; h < s.H; ++h)
        for (int b = 0; b < s.branches; ++b) {
          const index_t src = (n * s.H + h) * 3 + gate_column(s, b);
          gsel[(n * s.H + h) * s.branches + b] = acts.gate_probs[(n * s.H + h) * s.branches + b];
          dgsel[(n * s.H + h) * s.branches + b] = sc.dgates[src] * static_cast<T>(gate_factor(s, gate_column(s, b)));
        }
    sc.dgate_logits.assign(gsel.size(), T(0));
    sigmoid_backward(sc.dgate_logits.data(), dgsel.data(), gsel.data(), N * cols);
    matmul_backward(dx, g.wg, g.bg, sc.dgate_logits.data(), x, w.wg, N, s.C_in, cols);
  }

  // q = rope(x Wq^T), k_s = rope(x Wk_s^T), v_s = x Wv_s^T
  rope_backward(sc.dq.data(), sc.dq.data(), cos, sin, B, Tn, s.H, s.d_k, pool);
  matmul_backward(dx, g.wq, static_cast<T*>(nullptr), sc.dq.data(), x, w.wq, N, s.C_in, s.H * s.d_k);
  for (int i = 0; i < s.streams; ++i) {
    rope_backward(sc.dk[i].data(), sc.dk[i].data(), cos, sin, B, Tn, s.H_kv, s.d_k, pool);
    matmul_backward(dx, g.wk[i], static_cast<T*>(nullptr), sc.dk[i].data(), x, w.wk[i], N, s.C_in,
                    s.H_kv * s.d_k);
    matmul_backward(dx, g.wv[i], static_cast<T*>(nullptr), sc.dv[i].data(), x, w.wv[i], N, s.C_in,
                    s.H_kv * s.d_v);
  }
  if (s.shift > 0) token_shift_backward(dx_norm, sc.dxs.data(), B, Tn, s.C, s.shift);
}

#define NSA_INSTANTIATE(T)                                                                       \
  template struct AttentionActs<T>;                                                              \
  template void attention_inputs_forward<T>(const AttentionShape&, const LayerTensors<const T>&, \
                                            const T*, index_t, index_t, const T*, const T*,      \
                                            AttentionActs<T>&, ThreadPool&);                     \
  template NsaInputs<T> attention_nsa_inputs<T>(const AttentionShape&,                           \
                                                const LayerTensors<const T>&,                    \
                                                const AttentionActs<T>&, index_t, index_t);      \
  template void attention_forward<T>(const AttentionShape&, const LayerTensors<const T>&,        \
                                     const T*, index_t, index_t, const T*, const T*,             \
                                     AttentionActs<T>&, T*, ThreadPool&);                        \
  template void attention_backward<T>(const AttentionShape&, const LayerTensors<const T>&,       \
                                      const LayerTensors<T>&, const T*, index_t, index_t,        \
                                      const T*, const T*, const AttentionActs<T>&, const T*, T*, \
                                      AttentionScratch<T>&, ThreadPool&);
NSA_INSTANTIATE(float)
NSA_INSTANTIATE(double)
#undef NSA_INSTANTIATE

}  // namespace nsa::model
