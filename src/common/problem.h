// Problem: the sizes of one NSA or dense call, derived from its inputs after they have
// been validated. Shared by the reference, the CPU kernels and the CUDA launchers, so that
// every implementation accepts and rejects exactly the same inputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "nsa/attention.h"
#include "nsa/error.h"

namespace nsa {

// One sequence of the batch: tokens [start, start + len) of batch item `batch`,
// whose flattened rows are row0 .. row0 + len - 1.
struct SeqSpan {
  index_t batch = 0, start = 0, len = 0, row0 = 0;
};

struct Problem {
  index_t batch = 0, tokens = 0;      // the views' B and T
  index_t heads = 0, kv_heads = 0, group = 0;
  index_t d_k = 0, d_v = 0;
  index_t rows = 0;                   // B * T
  double scale = 0.0;
  std::vector<SeqSpan> seqs;
  std::vector<index_t> cmp_offsets;   // [seqs + 1], filled for NSA problems
};

namespace detail {

inline std::string shape_string(const std::array<index_t, 4>& s) {
  return "[" + std::to_string(s[0]) + "," + std::to_string(s[1]) + "," + std::to_string(s[2]) +
         "," + std::to_string(s[3]) + "]";
}

template <class T>
void check_view(const TensorView<T>& v, const char* name) {
  if (v.data == nullptr) throw Error(std::string(name) + ": data pointer is null");
  for (int i = 0; i < 4; ++i)
    if (v.shape[i] <= 0)
      throw Error(std::string(name) + ": every size must be positive, got shape " +
                  shape_string(v.shape));
  for (int i = 0; i < 3; ++i)
    if (v.stride[i] < 0)
      throw Error(std::string(name) + ": negative strides are not supported");
  // No two elements may share memory: order the outer axes (batch, token, head) of size > 1
  // by stride; each must step past everything the axes inside it span. Any axis order is
  // accepted, e.g. head-major [B, H, T, d] memory viewed as [B, T, H, d].
  struct Axis {
    index_t size, stride;
  };
  std::vector<Axis> axes;
  for (int i = 0; i < 3; ++i)
    if (v.shape[i] > 1) axes.push_back({v.shape[i], v.stride[i]});
  std::sort(axes.begin(), axes.end(), [](const Axis& a, const Axis& b) { return a.stride < b.stride; });
  index_t span = v.shape[3];  // elements covered by the axes inside (dim is contiguous)
  for (const Axis& a : axes) {
    if (a.stride < span)
      throw Error(std::string(name) + ": strides overlap (dim must be contiguous and rows must not alias), shape " +
                  shape_string(v.shape));
    span = a.stride * a.size;
  }
}

template <class T>
void check_shape(const TensorView<T>& v, const char* name, index_t b, index_t t, index_t h,
                 index_t d) {
  if (v.shape[0] != b || v.shape[1] != t || v.shape[2] != h || v.shape[3] != d)
    throw Error(std::string(name) + ": expected shape " + shape_string({b, t, h, d}) + ", got " +
                shape_string(v.shape));
}

// Every element finite: NaN or Inf in an input is rejected, never propagated silently.
template <class T>
void check_finite(const TensorView<T>& v, const char* name) {
  for (index_t b = 0; b < v.shape[0]; ++b)
    for (index_t t = 0; t < v.shape[1]; ++t)
      for (index_t h = 0; h < v.shape[2]; ++h) {
        const auto* p = v.ptr(b, t, h);
        for (index_t c = 0; c < v.shape[3]; ++c)
          if (!std::isfinite(static_cast<double>(p[c])))
            throw Error(std::string(name) + ": non-finite value at [" + std::to_string(b) + "," +
                        std::to_string(t) + "," + std::to_string(h) + "," + std::to_string(c) + "]");
      }
}

template <class T>
void check_finite_array(const T* p, index_t n, const char* name) {
  for (index_t i = 0; i < n; ++i)
    if (!std::isfinite(static_cast<double>(p[i])))
      throw Error(std::string(name) + ": non-finite value at index " + std::to_string(i));
}

inline void fill_sequences(Problem& p, const Sequences& seqs) {
  if (seqs.cu_seqlens == nullptr) {
    if (seqs.num_seqs != 0)
      throw Error("Sequences: num_seqs is set but cu_seqlens is null");
    for (index_t b = 0; b < p.batch; ++b) p.seqs.push_back({b, 0, p.tokens, b * p.tokens});
    return;
  }
  if (p.batch != 1)
    throw Error("cu_seqlens: a packed batch needs views with B = 1, got B = " +
                std::to_string(p.batch));
  if (seqs.num_seqs <= 0) throw Error("cu_seqlens: num_seqs must be positive");
  const std::int64_t* cu = seqs.cu_seqlens;
  if (cu[0] != 0) throw Error("cu_seqlens[0] must be 0, got " + std::to_string(cu[0]));
  for (index_t s = 0; s < seqs.num_seqs; ++s) {
    if (cu[s + 1] < cu[s])
      throw Error("cu_seqlens must be non-decreasing, but cu_seqlens[" + std::to_string(s + 1) +
                  "] = " + std::to_string(cu[s + 1]) + " < cu_seqlens[" + std::to_string(s) +
                  "] = " + std::to_string(cu[s]));
    p.seqs.push_back({0, cu[s], cu[s + 1] - cu[s], cu[s]});
  }
  if (cu[seqs.num_seqs] != p.tokens)
    throw Error("cu_seqlens: last entry " + std::to_string(cu[seqs.num_seqs]) +
                " must equal the total token count T = " + std::to_string(p.tokens));
}

template <class T>
void check_phi(const Config& config, const PhiWeights<T>& w, index_t dim, const char* name,
               bool check_values) {
  const std::string n(name);
  const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
  for (PhiField f : kPhiFields) {
    if (!phi_field_used(config.phi(), f)) continue;
    const T* p = phi_field(w, f);
    const std::string field = n + "." + phi_field_name(f);
    if (p == nullptr) throw Error(field + " is null but phi=" + phi_kind_name(config.phi()) + " needs it");
    if (check_values) check_finite_array(p, phi_field_size(f, l, dim, hidden), field.c_str());
  }
}

}  // namespace detail

// Validates an NSA call and returns its sizes. Throws nsa::Error naming the problem.
// check_values = false skips the scan for NaN/Inf (for device pointers the host cannot read).
template <class T, class Out>
Problem validate_nsa(const Config& config, const NsaInputs<T>& in, const TensorView<Out>& out,
                     bool check_values = true) {
  using detail::check_shape;
  using detail::check_view;
  check_view(in.q, "q");
  Problem p;
  p.batch = in.q.shape[0];
  p.tokens = in.q.shape[1];
  p.heads = in.q.shape[2];
  p.d_k = in.q.shape[3];
  check_view(in.k_cmp, "k_cmp");
  p.kv_heads = in.k_cmp.shape[2];
  if (p.heads % p.kv_heads != 0)
    throw Error("query heads H = " + std::to_string(p.heads) +
                " must be a multiple of key/value heads H_kv = " + std::to_string(p.kv_heads));
  p.group = p.heads / p.kv_heads;
  check_view(in.v_cmp, "v_cmp");
  p.d_v = in.v_cmp.shape[3];
  const struct {
    const TensorView<const T>& v;
    const char* name;
    index_t heads, dim;
  } views[] = {{in.k_cmp, "k_cmp", p.kv_heads, p.d_k}, {in.v_cmp, "v_cmp", p.kv_heads, p.d_v},
               {in.k_slc, "k_slc", p.kv_heads, p.d_k}, {in.v_slc, "v_slc", p.kv_heads, p.d_v},
               {in.k_win, "k_win", p.kv_heads, p.d_k}, {in.v_win, "v_win", p.kv_heads, p.d_v},
               {in.gates, "gates", p.heads, 3}};
  for (const auto& v : views) {
    check_view(v.v, v.name);
    check_shape(v.v, v.name, p.batch, p.tokens, v.heads, v.dim);
  }
  check_view(out, "out");
  check_shape(out, "out", p.batch, p.tokens, p.heads, p.d_v);
  detail::check_phi(config, in.phi_k, p.d_k, "phi_k", check_values);
  detail::check_phi(config, in.phi_v, p.d_v, "phi_v", check_values);
  detail::fill_sequences(p, in.seqs);
  if (check_values) {
    detail::check_finite(in.q, "q");
    for (const auto& v : views) detail::check_finite(v.v, v.name);
  }
  p.rows = p.batch * p.tokens;
  p.scale = config.scale_for(p.d_k);
  p.cmp_offsets.assign(1, 0);
  for (const auto& s : p.seqs) p.cmp_offsets.push_back(p.cmp_offsets.back() + config.num_cmp_blocks(s.len));
  return p;
}

template <class T, class Out>
Problem validate_dense(const DenseInputs<T>& in, const TensorView<Out>& out,
                       bool check_values = true) {
  using detail::check_shape;
  using detail::check_view;
  check_view(in.q, "q");
  check_view(in.k, "k");
  check_view(in.v, "v");
  Problem p;
  p.batch = in.q.shape[0];
  p.tokens = in.q.shape[1];
  p.heads = in.q.shape[2];
  p.d_k = in.q.shape[3];
  p.kv_heads = in.k.shape[2];
  if (p.heads % p.kv_heads != 0)
    throw Error("query heads H = " + std::to_string(p.heads) +
                " must be a multiple of key/value heads H_kv = " + std::to_string(p.kv_heads));
  p.group = p.heads / p.kv_heads;
  p.d_v = in.v.shape[3];
  check_shape(in.k, "k", p.batch, p.tokens, p.kv_heads, p.d_k);
  check_shape(in.v, "v", p.batch, p.tokens, p.kv_heads, p.d_v);
  check_view(out, "out");
  check_shape(out, "out", p.batch, p.tokens, p.heads, p.d_v);
  if (!(in.scale >= 0.0) || !std::isfinite(in.scale)) throw Error("scale must be finite and >= 0");
  detail::fill_sequences(p, in.seqs);
  if (check_values) {
    detail::check_finite(in.q, "q");
    detail::check_finite(in.k, "k");
    detail::check_finite(in.v, "v");
  }
  p.rows = p.batch * p.tokens;
  p.scale = in.scale > 0.0 ? in.scale : 1.0 / std::sqrt(static_cast<double>(p.d_k));
  return p;
}

}  // namespace nsa
