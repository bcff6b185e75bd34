#include "model/model_layout.h"

#include <cmath>

#include "nsa/error.h"

namespace nsa::model {

// Init (documented choice):
//   embed and every projection matrix      normal(0, init_std)
//   wo, w_down (into the residual stream)  normal(0, init_std / sqrt(2 n_layers))
//   norms                                  1
//   bg                                     0: every gate starts at sigmoid(0) = 0.5
//   phi (mlp, linear)                      pe, b1, b2 = 0; w1, w2, w normal(0, 1/sqrt(fan_in)),
//                                          so that Kc, Vc start at the scale of the keys
ModelLayout::ModelLayout(const ModelConfig& c) : config_(c) {
  c.validate();
  const std::int64_t C = c.d_model, C_in = (1 + c.token_shift) * C, H = c.n_heads, Hkv = c.n_kv_heads, dk = c.d_k, dv = c.d_v;
  const TensorInit ones{TensorInit::ones, 0.0}, zeros{TensorInit::zeros, 0.0};
  const TensorInit matrix{TensorInit::normal, c.init_std};
  const TensorInit residual{TensorInit::normal, c.init_std / std::sqrt(2.0 * c.n_layers)};
  auto fan_in = [](std::int64_t n) { return TensorInit{TensorInit::normal, 1.0 / std::sqrt(static_cast<double>(n))}; };

  add("embed", {c.vocab, C}, true, matrix);
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    add(p + "attn_norm", {C}, false, ones);
    // The projections read the token-shifted rows: C_in = (1 + token_shift) C columns.
    add(p + "wq", {H * dk, C_in}, true, matrix);
    if (c.independent_kv) {
      for (const char* s : {"cmp", "slc", "win"}) add(p + "wk_" + s, {Hkv * dk, C_in}, true, matrix);
      for (const char* s : {"cmp", "slc", "win"}) add(p + "wv_" + s, {Hkv * dv, C_in}, true, matrix);
    } else {
      add(p + "wk", {Hkv * dk, C_in}, true, matrix);
      add(p + "wv", {Hkv * dv, C_in}, true, matrix);
    }
    if (c.attention != AttentionKind::full) {
      const std::int64_t branches = c.attention == AttentionKind::nsa ? 3 : 1;
      add(p + "wg", {H * branches, C_in}, true, matrix);
      add(p + "bg", {H * branches}, false, zeros);
    }
    if (c.attention == AttentionKind::nsa && c.nsa.phi != PhiKind::mean) {
      const Config op(c.nsa);
      const std::int64_t l = c.nsa.block_len;
      for (const auto& [name, dim] : {std::pair<const char*, std::int64_t>{"phi_k.", dk}, {"phi_v.", dv}}) {
        const std::string q = p + name;
        // The kind's fields in the table's order (nsa/phi_fields.h): the matrices w1, w2, w
        // are decayed and drawn by fan-in (their shape's second size), pe and biases start at 0.
        for (PhiField f : kPhiFields) {
          if (!phi_field_used(c.nsa.phi, f)) continue;
          const std::vector<std::int64_t> shape = phi_field_shape(f, l, dim, op.phi_hidden_for(dim));
          if (phi_field_is_matrix(f))
            add(q + phi_field_name(f), shape, true, fan_in(shape[1]));
          else
            add(q + phi_field_name(f), shape, false, zeros);
        }
      }
    }
    add(p + "wo", {C, H * dv}, true, residual);
    add(p + "mlp_norm", {C}, false, ones);
    add(p + "w_gate", {c.mlp_hidden, C}, true, matrix);
    add(p + "w_up", {c.mlp_hidden, C}, true, matrix);
    add(p + "w_down", {C, c.mlp_hidden}, true, residual);
  }
  add("final_norm", {C}, false, ones);
}

ModelLayout::ModelLayout(const ModelConfig& config, const std::vector<TensorInfo>& tensors)
    : config_(config), tensors_(tensors) {
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    index_[tensors_[i].name] = i;
    num_params_ = std::max(num_params_, tensors_[i].offset + tensors_[i].size);
  }
}

void ModelLayout::add(const std::string& name, std::vector<std::int64_t> shape, bool decay,
                      TensorInit init) {
  TensorInfo t;
  t.name = name;
  t.size = 1;
  for (std::int64_t s : shape) t.size *= static_cast<std::size_t>(s);
  t.shape = std::move(shape);
  t.offset = num_params_;
  t.decay = decay;
  num_params_ += t.size;
  index_[name] = tensors_.size();
  tensors_.push_back(std::move(t));
  inits_.push_back(init);
}

const TensorInfo* ModelLayout::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& ModelLayout::tensor(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error("model: no parameter tensor named '" + name + "'");
  return *t;
}

template <class P>
LayerTensors<P> ModelLayout::layer(P* base, int i) const {
  const std::string p = "layers." + std::to_string(i) + ".";
  LayerTensors<P> L;
  L.attn_norm = ptr(base, p + "attn_norm");
  L.wq = ptr(base, p + "wq");
  if (config_.independent_kv) {
    const char* s[3] = {"cmp", "slc", "win"};
    for (int b = 0; b < 3; ++b) {
      L.wk[b] = ptr(base, p + "wk_" + s[b]);
      L.wv[b] = ptr(base, p + "wv_" + s[b]);
    }
  } else {
    for (int b = 0; b < 3; ++b) {
      L.wk[b] = ptr(base, p + "wk");
      L.wv[b] = ptr(base, p + "wv");
    }
  }
  L.wg = ptr(base, p + "wg");
  L.bg = ptr(base, p + "bg");
  for (auto [phi, name] : {std::pair<PhiTensors<P>*, const char*>{&L.phi_k, "phi_k."}, {&L.phi_v, "phi_v."}}) {
    const std::string q = p + name;
    for (PhiField f : kPhiFields) phi_field(*phi, f) = ptr(base, q + phi_field_name(f));
  }
  L.wo = ptr(base, p + "wo");
  L.mlp_norm = ptr(base, p + "mlp_norm");
  L.w_gate = ptr(base, p + "w_gate");
  L.w_up = ptr(base, p + "w_up");
  L.w_down = ptr(base, p + "w_down");
  if (!L.attn_norm || !L.wq || !L.wk[0] || !L.wv[0] || !L.wo || !L.mlp_norm || !L.w_gate ||
      !L.w_up || !L.w_down)
    throw Error("model: the parameter table lacks tensors of layer " + std::to_string(i));
  return L;
}

template LayerTensors<float> ModelLayout::layer<float>(float*, int) const;
template LayerTensors<const float> ModelLayout::layer<const float>(const float*, int) const;
template LayerTensors<double> ModelLayout::layer<double>(double*, int) const;
template LayerTensors<const double> ModelLayout::layer<const double>(const double*, int) const;

}  // namespace nsa::model
