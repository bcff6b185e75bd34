// Shared helpers of the CUDA kernel lab (nsa_gpu_check): check reporting, storage-type
// tags, host <-> device copies with conversion, error measures. Each check file
// (gpu_check.cc: forward; check_decode.cc, check_backward.cc) includes this header.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "nsa/attention.h"
#include "nsa/cuda.h"
#include "reference/reference.h"
#include "testing/random_problem.h"

namespace nsa::gpu_check {

using nsa::index_t;
namespace ncu = nsa::cuda;

inline int g_checks = 0, g_failures = 0;
inline bool g_reference_only = false;  // --reference-only: time the float64 reference runs (no GPU needed)

inline void report(bool ok, const std::string& name, const std::string& detail) {
  ++g_checks;
  if (!ok) ++g_failures;
  std::printf("%-4s %s %s\n", ok ? "OK" : "FAIL", name.c_str(), detail.c_str());
  std::fflush(stdout);
}

template <class... A>
std::string fmt(const char* f, A... a) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), f, a...);
  return buf;
}

// ---- storage types -------------------------------------------------------------------
template <class Tag> const char* tag_name();
template <> inline const char* tag_name<float>() { return "f32"; }
template <> inline const char* tag_name<ncu::bf16>() { return "bf16"; }
template <> inline const char* tag_name<ncu::f16>() { return "f16"; }

template <class Tag> Tag to_tag(float x) {
  if constexpr (std::is_same_v<Tag, float>) return x; else return Tag::from_float(x);
}
template <class Tag> float from_tag(Tag x) {
  if constexpr (std::is_same_v<Tag, float>) return x; else return x.to_float();
}
template <class Tag> double tolerance() { return std::is_same_v<Tag, float> ? 1e-5 : 1e-2; }

// Rounds float64 values to what Tag can hold (the reference then runs on exactly the
// values the kernels see).
template <class Tag>
void round_to(std::vector<double>& v) {
  for (auto& x : v) x = from_tag<Tag>(to_tag<Tag>(static_cast<float>(x)));
}

// Device copies of host arrays; the same host pointer maps to the same device buffer
// (shared K/V stays shared).
template <class Tag>
class Uploader {
 public:
  const Tag* get(const float* host, std::size_t n) {
    if (host == nullptr) return nullptr;
    auto it = map_.find(host);
    if (it != map_.end()) return it->second->template as<Tag>();
    std::vector<Tag> tmp(n);
    for (std::size_t i = 0; i < n; ++i) tmp[i] = to_tag<Tag>(host[i]);
    buffers_.emplace_back(std::make_unique<ncu::DeviceBuffer>(n * sizeof(Tag)));
    buffers_.back()->copy_from_host(tmp.data(), n * sizeof(Tag));
    map_[host] = buffers_.back().get();
    return buffers_.back()->template as<Tag>();
  }
  nsa::TensorView<const Tag> view(const nsa::TensorView<const float>& v) {
    const std::size_t n = static_cast<std::size_t>(v.shape[0] * v.stride[0]);
    return {get(v.data, n), v.shape, v.stride};
  }

 private:
  std::map<const float*, ncu::DeviceBuffer*> map_;
  std::vector<std::unique_ptr<ncu::DeviceBuffer>> buffers_;
};

template <class Tag>
std::vector<float> download(const ncu::DeviceBuffer& b, std::size_t n) {
  std::vector<Tag> tmp(n);
  b.copy_to_host(tmp.data(), n * sizeof(Tag));
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = from_tag<Tag>(tmp[i]);
  return out;
}

// Rounds every input of a random problem (q, K/V of each branch, gates, phi's weights) to
// what Tag holds and refreshes its fp32 copies, so that the float64 reference runs on
// exactly the values the kernels see. No-op for float.
template <class Tag>
void round_problem_to(nsa::testing::RandomNsaProblem& prob) {
  if constexpr (!std::is_same_v<Tag, float>) {
    auto& b = prob.buffers64();
    for (auto* v : {&b.q, &b.k_cmp, &b.v_cmp, &b.k_slc, &b.v_slc, &b.k_win, &b.v_win, &b.gates,
                    &b.phi_k.pe, &b.phi_k.w1, &b.phi_k.b1, &b.phi_k.w2, &b.phi_k.b2, &b.phi_k.w,
                    &b.phi_v.pe, &b.phi_v.w1, &b.phi_v.b1, &b.phi_v.w2, &b.phi_v.b2, &b.phi_v.w})
      round_to<Tag>(*v);
    prob.sync32();
  }
}

// Device copies (as Tag) of one phi's host weights for a head dim `dim`; null stays null.
template <class Tag>
nsa::PhiWeights<Tag> upload_phi(Uploader<Tag>& up, const nsa::Config& config, const nsa::PhiWeights<float>& w,
                                index_t dim) {
  const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
  nsa::PhiWeights<Tag> d;
  d.pe = up.get(w.pe, l * dim);
  d.w1 = up.get(w.w1, hidden * l * dim);
  d.b1 = up.get(w.b1, hidden);
  d.w2 = up.get(w.w2, dim * hidden);
  d.b2 = up.get(w.b2, dim);
  d.w = up.get(w.w, dim * l * dim);
  return d;
}

// Device copies (as Tag) of a problem's fp32 inputs; cu_seqlens stays on the host.
template <class Tag>
nsa::NsaInputs<Tag> upload_inputs(Uploader<Tag>& up, const nsa::Config& config, const nsa::NsaInputs<float>& in32,
                                  index_t d_k, index_t d_v) {
  nsa::NsaInputs<Tag> in;
  in.q = up.view(in32.q);
  in.k_cmp = up.view(in32.k_cmp);
  in.v_cmp = up.view(in32.v_cmp);
  in.k_slc = up.view(in32.k_slc);
  in.v_slc = up.view(in32.v_slc);
  in.k_win = up.view(in32.k_win);
  in.v_win = up.view(in32.v_win);
  in.gates = up.view(in32.gates);
  in.seqs = in32.seqs;
  in.phi_k = upload_phi(up, config, in32.phi_k, d_k);
  in.phi_v = upload_phi(up, config, in32.phi_v, d_v);
  return in;
}

inline double rel_err(const std::vector<float>& x, const double* ref, std::size_t n) {
  return nsa::testing::relative_error(x.data(), ref, static_cast<index_t>(n));
}

// lse: -inf must match exactly; finite values compared by max abs difference.
inline double lse_err(const std::vector<float>& x, const std::vector<double>& ref) {
  double worst = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(x[i])) {
      if (!(std::isinf(ref[i]) && std::isinf(x[i]) && ref[i] < 0 && x[i] < 0)) return INFINITY;
      continue;
    }
    if (!std::isfinite(x[i])) return INFINITY;
    worst = std::max(worst, std::abs(x[i] - ref[i]));
  }
  return worst;
}

// The reference's selection scores S(t, g)[j] of one row (from its Kc and lse_cmp),
// recomputed from q so that selections can be compared up to near-ties.
inline std::vector<double> reference_scores(const nsa::Config& config, const nsa::NsaInputs<double>& in,
                                            const nsa::NsaSaved<double>& saved, index_t row, index_t hk,
                                            index_t seq_index, index_t t) {
  const index_t H = saved.heads, Hkv = saved.kv_heads, G = H / Hkv, dk = saved.d_k;
  const double scale = config.scale_for(dk);
  const index_t nvis = config.visible_cmp_blocks(t), base = saved.cmp_offsets[seq_index];
  std::vector<double> P(static_cast<std::size_t>(nvis), 0.0);
  const double* lse = saved.lse_of(nsa::kCmp);
  for (index_t h = hk * G; h < (hk + 1) * G; ++h) {
    const double* q = in.q.data + row * H * dk + h * dk;  // contiguous problems, B folded into rows
    for (index_t i = 0; i < nvis; ++i) {
      const double* k = saved.k_cmp_blocks.data() + ((base + i) * Hkv + hk) * dk;
      double s = 0.0;
      for (index_t c = 0; c < dk; ++c) s += q[c] * k[c];
      P[i] += std::exp(scale * s - lse[row * H + h]);
    }
  }
  return nsa::reference::selection_scores(config, P, t);
}

}  // namespace nsa::gpu_check
