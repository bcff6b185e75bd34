// Validation of a backward call: the inputs as in the forward, d_out shaped like the
// output, saved state that matches the inputs, and gradient buffers shaped like the inputs.
#pragma once

#include <string>

#include "common/problem.h"
#include "nsa/backward.h"

namespace nsa {

namespace detail {

template <class T>
void check_grad_view(const TensorView<T>& g, const char* name, index_t b, index_t t, index_t h,
                     index_t d) {
  check_view(g, name);
  check_shape(g, name, b, t, h, d);
}

template <class T>
void check_phi_grads(const Config& config, const PhiGradients<T>& g, const char* name) {
  const std::string n(name);
  auto need = [&](const T* p, const char* field) {
    if (p == nullptr)
      throw Error(n + "." + field + " is null but phi=" + phi_kind_name(config.phi()) + " has that parameter");
  };
  if (config.phi() == PhiKind::mlp) {
    need(g.pe, "pe"), need(g.w1, "w1"), need(g.b1, "b1"), need(g.w2, "w2"), need(g.b2, "b2");
  } else if (config.phi() == PhiKind::linear) {
    need(g.pe, "pe"), need(g.w, "w");
  }
}

}  // namespace detail

template <class T, class S>
Problem validate_nsa_backward(const Config& config, const NsaInputs<T>& in, const NsaSaved<S>& saved,
                              const TensorView<const T>& d_out, const NsaGradients<T>& g,
                              bool check_values = true) {
  Problem p = validate_nsa(config, in, d_out, check_values);
  if (check_values) detail::check_finite(d_out, "d_out");
  auto mismatch = [](const char* what, index_t got, index_t want) {
    throw Error("saved state does not match the inputs: " + std::string(what) + " is " +
                std::to_string(got) + ", expected " + std::to_string(want) +
                " (pass the NsaSaved of the forward call on these inputs)");
  };
  if (saved.rows != p.rows) mismatch("rows", saved.rows, p.rows);
  if (saved.heads != p.heads) mismatch("heads", saved.heads, p.heads);
  if (saved.kv_heads != p.kv_heads) mismatch("kv_heads", saved.kv_heads, p.kv_heads);
  if (saved.top_n != config.top_n()) mismatch("top_n", saved.top_n, config.top_n());
  if (saved.d_k != p.d_k) mismatch("d_k", saved.d_k, p.d_k);
  if (saved.d_v != p.d_v) mismatch("d_v", saved.d_v, p.d_v);
  if (saved.cmp_offsets != p.cmp_offsets)
    throw Error("saved state does not match the inputs: compressed block offsets differ (other sequence lengths?)");
  const index_t total_cmp = p.cmp_offsets.back();
  auto size_check = [&](size_t got, index_t want, const char* what) {
    if (static_cast<index_t>(got) != want) mismatch(what, static_cast<index_t>(got), want);
  };
  size_check(saved.lse.size(), 3 * p.rows * p.heads, "lse size");
  size_check(saved.branch_out.size(), 3 * p.rows * p.heads * p.d_v, "branch_out size");
  size_check(saved.sel_blocks.size(), p.rows * p.kv_heads * config.top_n(), "sel_blocks size");
  size_check(saved.k_cmp_blocks.size(), total_cmp * p.kv_heads * p.d_k, "k_cmp_blocks size");
  size_check(saved.v_cmp_blocks.size(), total_cmp * p.kv_heads * p.d_v, "v_cmp_blocks size");
  for (const SeqSpan& s : p.seqs) {
    const index_t n_sel = config.num_sel_blocks(s.len);
    for (index_t i = s.row0 * p.kv_heads * config.top_n(); i < (s.row0 + s.len) * p.kv_heads * config.top_n(); ++i)
      if (saved.sel_blocks[i] < -1 || saved.sel_blocks[i] >= n_sel)
        throw Error("saved sel_blocks holds block " + std::to_string(saved.sel_blocks[i]) +
                    ", outside its sequence's " + std::to_string(n_sel) + " selection blocks");
  }
  using detail::check_grad_view;
  check_grad_view(g.dq, "dq", p.batch, p.tokens, p.heads, p.d_k);
  check_grad_view(g.dk_cmp, "dk_cmp", p.batch, p.tokens, p.kv_heads, p.d_k);
  check_grad_view(g.dv_cmp, "dv_cmp", p.batch, p.tokens, p.kv_heads, p.d_v);
  check_grad_view(g.dk_slc, "dk_slc", p.batch, p.tokens, p.kv_heads, p.d_k);
  check_grad_view(g.dv_slc, "dv_slc", p.batch, p.tokens, p.kv_heads, p.d_v);
  check_grad_view(g.dk_win, "dk_win", p.batch, p.tokens, p.kv_heads, p.d_k);
  check_grad_view(g.dv_win, "dv_win", p.batch, p.tokens, p.kv_heads, p.d_v);
  check_grad_view(g.dgates, "dgates", p.batch, p.tokens, p.heads, 3);
  detail::check_phi_grads(config, g.phi_k, "phi_k gradient");
  detail::check_phi_grads(config, g.phi_v, "phi_v gradient");
  return p;
}

template <class T>
Problem validate_dense_backward(const DenseInputs<T>& in, const TensorView<const T>& d_out,
                                const DenseGradients<T>& g, bool check_values = true) {
  Problem p = validate_dense(in, d_out, check_values);
  if (check_values) detail::check_finite(d_out, "d_out");
  detail::check_grad_view(g.dq, "dq", p.batch, p.tokens, p.heads, p.d_k);
  detail::check_grad_view(g.dk, "dk", p.batch, p.tokens, p.kv_heads, p.d_k);
  detail::check_grad_view(g.dv, "dv", p.batch, p.tokens, p.kv_heads, p.d_v);
  return p;
}

}  // namespace nsa
