// ModelLayout: the table of named parameter tensors of model.h (names, shapes, offsets
// into the flat buffer, init rule) and typed pointers to one layer's tensors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/model_config.h"

namespace nsa::model {

// How init() fills a tensor.
struct TensorInit {
  enum Kind { zeros, ones, normal } kind = zeros;
  double std = 0.0;  // normal
};

// Pointers to one compression function's parameters (null where the phi kind has none).
template <class P>
struct PhiTensors {
  P* pe = nullptr;
  P* w1 = nullptr;
  P* b1 = nullptr;
  P* w2 = nullptr;
  P* b2 = nullptr;
  P* w = nullptr;
};

// Pointers to one layer's parameters; P = const T for weights, T for gradients.
// wk/wv index the key streams (cmp, slc, win); with shared K/V all three point at the
// one wk / wv. wg, bg are null for the full kind.
template <class P>
struct LayerTensors {
  P* attn_norm = nullptr;
  P* wq = nullptr;
  P* wk[3] = {nullptr, nullptr, nullptr};
  P* wv[3] = {nullptr, nullptr, nullptr};
  P* wg = nullptr;
  P* bg = nullptr;
  PhiTensors<P> phi_k, phi_v;
  P* wo = nullptr;
  P* mlp_norm = nullptr;
  P* w_gate = nullptr;
  P* w_up = nullptr;
  P* w_down = nullptr;
};

class ModelLayout {
 public:
  // Validates the config.
  explicit ModelLayout(const ModelConfig& config);
  // The layout of a table built elsewhere (a model's tensors()); init rules are not known.
  ModelLayout(const ModelConfig& config, const std::vector<TensorInfo>& tensors);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<TensorInit>& inits() const { return inits_; }
  std::size_t num_params() const { return num_params_; }
  const TensorInfo& tensor(const std::string& name) const;  // throws nsa::Error if unknown
  const TensorInfo* find(const std::string& name) const;    // null if unknown

  template <class P>
  P* ptr(P* base, const std::string& name) const {
    const TensorInfo* t = find(name);
    return t ? base + t->offset : nullptr;
  }
  template <class P>
  LayerTensors<P> layer(P* base, int i) const;

 private:
  void add(const std::string& name, std::vector<std::int64_t> shape, bool decay, TensorInit init);

  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::vector<TensorInit> inits_;
  std::map<std::string, std::size_t> index_;
  std::size_t num_params_ = 0;
};

}  // namespace nsa::model
