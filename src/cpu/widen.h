// fp32 copies of bf16 inputs, for the CPU paths that run fp32 kernels over bf16 storage:
// phi's weights in the bf16 forward, every input of the bf16 forward where it does not
// use vdpbf16ps and of the bf16 backward. Exact: every bf16 value is a float.
#pragma once

#include <memory>
#include <vector>

#include "nsa/attention.h"
#include "nsa/thread_pool.h"

namespace nsa::cpu {

// phi's weights as fp32: the caller's own for fp32 inputs, widened copies of bf16 ones
// (only the arrays the phi form reads; validation has checked those are there).
struct Fp32Phi {
  PhiWeights<float> w;
  std::vector<float> store[6];

  Fp32Phi(const Config&, const PhiWeights<float>& phi, index_t) : w(phi) {}
  Fp32Phi(const Config& config, const PhiWeights<bf16>& phi, index_t dim) {
    const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
    auto widen = [&](const bf16* src, index_t n, int slot) -> const float* {
      store[slot].resize(static_cast<size_t>(n));
      to_float(src, store[slot].data(), static_cast<size_t>(n));
      return store[slot].data();
    };
    if (config.phi() == PhiKind::mlp) {
      w.pe = widen(phi.pe, l * dim, 0);
      w.w1 = widen(phi.w1, hidden * l * dim, 1);
      w.b1 = widen(phi.b1, hidden, 2);
      w.w2 = widen(phi.w2, dim * hidden, 3);
      w.b2 = widen(phi.b2, dim, 4);
    } else if (config.phi() == PhiKind::linear) {
      w.pe = widen(phi.pe, l * dim, 0);
      w.w = widen(phi.w, dim * l * dim, 5);
    }
  }
};

// Contiguous fp32 copies of bf16 views, made in parallel on the pool. Views of the same
// memory with the same shape and strides get one copy, so tensors the caller shares
// (K and V of the three branches) stay shared. A null view stays null. The views must
// be valid (validated) before they are widened.
class WidenedViews {
 public:
  explicit WidenedViews(ThreadPool& pool) : pool_(pool) {}

  TensorView<const float> operator()(const TensorView<const bf16>& x) {
    if (x.empty()) return {};
    for (const Copy& c : copies_)
      if (c.source.data == x.data && c.source.shape == x.shape && c.source.stride == x.stride) return c.view;
    Copy c;
    c.source = x;
    const index_t rows = x.batch() * x.tokens() * x.heads(), dim = x.dim();
    // Not zero-filled: the pages are first touched by the parallel copy (zero-filling 100 MB
    // of q in one thread took about half of the widening's 70 ms at T = 8192, H = 16, d = 192).
    c.store.reset(new float[static_cast<size_t>(rows * dim)]);
    float* dst = c.store.get();
    pool_.parallel_for(rows, [&](std::int64_t begin, std::int64_t end, int) {
      for (index_t r = begin; r < end; ++r) {
        const index_t h = r % x.heads(), t = r / x.heads() % x.tokens(), b = r / (x.heads() * x.tokens());
        to_float(x.ptr(b, t, h), dst + r * dim, static_cast<size_t>(dim));
      }
    });
    c.view = contiguous_view<const float>(dst, x.batch(), x.tokens(), x.heads(), dim);
    copies_.push_back(std::move(c));
    return copies_.back().view;
  }

 private:
  struct Copy {
    TensorView<const bf16> source;
    TensorView<const float> view;
    std::unique_ptr<float[]> store;
  };
  ThreadPool& pool_;
  std::vector<Copy> copies_;
};

// Every input of a bf16 NSA call widened (WidenedViews: shared K/V stay shared; Fp32Phi),
// as the NsaInputs<float> `f` of the fp32 kernels; it owns the copies. Validate first.
struct WidenedNsaInputs {
  WidenedViews views;
  Fp32Phi phi_k, phi_v;
  NsaInputs<float> f;

  WidenedNsaInputs(const Config& config, const NsaInputs<bf16>& in, ThreadPool& pool)
      : views(pool), phi_k(config, in.phi_k, in.k_cmp.dim()), phi_v(config, in.phi_v, in.v_cmp.dim()) {
    f.q = views(in.q);
    f.k_cmp = views(in.k_cmp);
    f.v_cmp = views(in.v_cmp);
    f.k_slc = views(in.k_slc);
    f.v_slc = views(in.v_slc);
    f.k_win = views(in.k_win);
    f.v_win = views(in.v_win);
    f.gates = views(in.gates);
    f.phi_k = phi_k.w;
    f.phi_v = phi_v.w;
    f.seqs = in.seqs;
  }
};

// The same for a dense call.
struct WidenedDenseInputs {
  WidenedViews views;
  DenseInputs<float> f;

  WidenedDenseInputs(const DenseInputs<bf16>& in, ThreadPool& pool) : views(pool) {
    f.q = views(in.q);
    f.k = views(in.k);
    f.v = views(in.v);
    f.seqs = in.seqs;
    f.scale = in.scale;
  }
};

}  // namespace nsa::cpu
