// Backward of phi (see ../phi.cc for the forward): dL/dKc of every (compressed block,
// kv head) pair -> dL/d(raw tokens) and dL/d(phi's parameters).
//
// Pairs are batched into X [pairs, l*dim] exactly as in the forward, so each step is a
// matrix product (mlp: a = X W1^T + b1, h = GELU(a), out = h W2^T + b2):
//   db2 += sum_p dOut      dW2 += dOut^T h      dh = dOut W2      da = dh * GELU'(a)
//   db1 += sum_p da        dW1 += da^T X        dX = da W1        dpe += sum_p dX
// (linear: dW += dOut^T X, dX = dOut W; mean: dX = dOut / l on every row).
//
// Determinism without atomics: the parameters are shared by every pair, so each worker of
// ThreadPool::parallel_for (a static partition of the pair chunks: which chunks a worker
// gets depends only on their count and the thread count) accumulates into its own partial
// buffer, and the partials are summed in worker order. Bitwise reproducible at a fixed
// thread count; a different thread count only regroups the sum.
// Raw tokens: compressed blocks overlap when stride < l, so token s receives the rows of
// every block covering it. dX is kept per pair, then each token sums its blocks in
// ascending block order (a token-major gather, again no two writers of one element).
#include <algorithm>
#include <cmath>

#include "common/gelu.h"
#include "nsa/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/backward/phi_backward.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/backward/backward_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {
namespace {

constexpr index_t kPairsPerChunk = 32;

// Offsets of each parameter gradient inside one flat partial buffer.
struct ParamLayout {
  index_t pe = 0, w1 = 0, b1 = 0, w2 = 0, b2 = 0, w = 0, total = 0;
  ParamLayout(const Config& config, index_t dim) {
    const index_t width = config.block_len() * dim, hidden = config.phi_hidden_for(dim);
    auto take = [&](index_t n) { const index_t o = total; total += n; return o; };
    switch (config.phi()) {
      case PhiKind::mlp:
        pe = take(width), w1 = take(hidden * width), b1 = take(hidden), w2 = take(dim * hidden),
        b2 = take(dim);
        break;
      case PhiKind::linear:
        pe = take(width), w = take(dim * width);
        break;
      case PhiKind::mean:
        break;
    }
  }
};

inline void AddColumnSums(const float* x, index_t rows, index_t cols, float* out) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) out[c] += x[r * cols + c];
}

// Pairs [p0, p1): dX into d_raw + p0 * width (zeroed here), parameter gradients added to
// `part` (layout L).
void BackwardPairs(const Config& config, const Problem& p, const TensorView<const float>& raw,
                   const PhiWeights<float>& phi, const float* d_blocks, index_t p0, index_t p1,
                   const ParamLayout& L, float* part, float* d_raw) {
  const index_t l = config.block_len(), stride = config.stride(), dim = raw.dim();
  const index_t H_kv = p.kv_heads, np = p1 - p0, width = l * dim;
  const PhiKind kind = config.phi();
  const float* d_out = d_blocks + p0 * dim;  // [np, dim]
  float* dx = d_raw + p0 * width;            // [np, width]
  if (kind == PhiKind::mean) {
    const float inv = 1.0f / static_cast<float>(l);
    for (index_t pi = 0; pi < np; ++pi)
      for (index_t r = 0; r < l; ++r)
        for (index_t c = 0; c < dim; ++c) dx[pi * width + r * dim + c] = d_out[pi * dim + c] * inv;
    return;
  }
  std::vector<float> x(static_cast<size_t>(np * width));
  for (index_t pi = 0; pi < np; ++pi) {
    const index_t pair = p0 + pi, block = pair / H_kv, h = pair % H_kv;
    const index_t s = std::upper_bound(p.cmp_offsets.begin(), p.cmp_offsets.end(), block) -
                      p.cmp_offsets.begin() - 1;
    const SeqSpan& seq = p.seqs[static_cast<size_t>(s)];
    const index_t first = seq.start + (block - p.cmp_offsets[static_cast<size_t>(s)]) * stride;
    float* xr = x.data() + pi * width;
    for (index_t r = 0; r < l; ++r) {
      const float* src = raw.ptr(seq.batch, first + r, h);
      const float* pe = phi.pe + r * dim;
      for (index_t c = 0; c < dim; ++c) xr[r * dim + c] = src[c] + pe[c];
    }
  }
  std::fill(dx, dx + np * width, 0.0f);
  if (kind == PhiKind::linear) {
    GemmAcc(d_out, 1, dim, x.data(), width, dim, np, width, part + L.w, width);  // dW += dOut^T X
    GemmAcc(d_out, dim, 1, phi.w, width, np, dim, width, dx, width);             // dX = dOut W
  } else {
    const index_t hidden = config.phi_hidden_for(dim);
    std::vector<float> a(static_cast<size_t>(np * hidden)), h(a.size()), dh(a.size(), 0.0f);
    MatMulABt(x.data(), width, np, phi.w1, width, hidden, width, a.data(), hidden);
    for (index_t pi = 0; pi < np; ++pi)
      for (index_t j = 0; j < hidden; ++j) {
        float& v = a[pi * hidden + j];
        v += phi.b1[j];
        h[pi * hidden + j] = nsa::gelu(v);
      }
    AddColumnSums(d_out, np, dim, part + L.b2);
    GemmAcc(d_out, 1, dim, h.data(), hidden, dim, np, hidden, part + L.w2, hidden);  // dW2 += dOut^T h
    GemmAcc(d_out, dim, 1, phi.w2, hidden, np, dim, hidden, dh.data(), hidden);      // dh = dOut W2
    for (size_t i = 0; i < dh.size(); ++i) dh[i] *= nsa::gelu_grad(a[i]);                  // da
    AddColumnSums(dh.data(), np, hidden, part + L.b1);
    GemmAcc(dh.data(), 1, hidden, x.data(), width, hidden, np, width, part + L.w1, width);  // dW1 += da^T X
    GemmAcc(dh.data(), hidden, 1, phi.w1, width, np, hidden, width, dx, width);            // dX = da W1
  }
  AddColumnSums(dx, np, width, part + L.pe);
}

}  // namespace

void PhiBackward(const Config& config, const Problem& p, const TensorView<const float>& raw,
                 const PhiWeights<float>& phi, const float* d_blocks, const TensorView<float>& dx,
                 const PhiGradients<float>& grads, ThreadPool& pool) {
  const index_t l = config.block_len(), stride = config.stride(), dim = raw.dim();
  const index_t H_kv = p.kv_heads, width = l * dim, pairs = p.cmp_offsets.back() * H_kv;
  const ParamLayout L(config, dim);
  const int workers = pool.size();
  std::vector<float> d_raw(static_cast<size_t>(pairs * width));
  std::vector<std::vector<float>> partial(static_cast<size_t>(workers));
  const index_t chunks = (pairs + kPairsPerChunk - 1) / kPairsPerChunk;
  pool.parallel_for(chunks, [&](std::int64_t begin, std::int64_t end, int worker) {
    std::vector<float>& part = partial[static_cast<size_t>(worker)];
    part.assign(static_cast<size_t>(L.total), 0.0f);
    for (index_t c = begin; c < end; ++c) {
      const index_t p0 = c * kPairsPerChunk, p1 = std::min(pairs, p0 + kPairsPerChunk);
      BackwardPairs(config, p, raw, phi, d_blocks, p0, p1, L, part.data(), d_raw.data());
    }
  });

  // Parameter gradients: the partials summed in worker order (a worker without chunks
  // left its buffer empty: it adds nothing).
  if (L.total > 0) {
    std::vector<float> sum(static_cast<size_t>(L.total), 0.0f);
    pool.parallel_for(L.total, [&](std::int64_t begin, std::int64_t end, int) {
      for (const auto& part : partial)
        if (!part.empty())
          for (index_t i = begin; i < end; ++i) sum[i] += part[i];
    });
    auto put = [&](float* g, index_t offset, index_t n) { std::copy_n(sum.data() + offset, n, g); };
    const index_t hidden = config.phi_hidden_for(dim);
    put(grads.pe, L.pe, width);
    if (config.phi() == PhiKind::linear) {
      put(grads.w, L.w, dim * width);
    } else {
      put(grads.w1, L.w1, hidden * width);
      put(grads.b1, L.b1, hidden);
      put(grads.w2, L.w2, dim * hidden);
      put(grads.b2, L.b2, dim);
    }
  }

  // Raw tokens: token t of a sequence lies in blocks i with i*d <= t < i*d + l.
  pool.parallel_for(p.rows * H_kv, [&](std::int64_t begin, std::int64_t end, int) {
    std::vector<float> acc(static_cast<size_t>(dim));
    for (index_t task = begin; task < end; ++task) {
      const index_t row = task / H_kv, h = task % H_kv;
      // The sequence holding this row: the last one starting at or before it.
      const auto it = std::upper_bound(p.seqs.begin(), p.seqs.end(), row,
                                       [](index_t r, const SeqSpan& s) { return r < s.row0; });
      const index_t si = (it - p.seqs.begin()) - 1;
      const SeqSpan& seq = p.seqs[static_cast<size_t>(si)];
      const index_t t = row - seq.row0, n_cmp = config.num_cmp_blocks(seq.len);
      if (t >= seq.len || n_cmp == 0) continue;
      const index_t i_lo = t >= l ? (t - l) / stride + 1 : 0, i_hi = std::min(n_cmp - 1, t / stride);
      if (i_lo > i_hi) continue;
      std::fill(acc.begin(), acc.end(), 0.0f);
      const index_t cmp0 = p.cmp_offsets[static_cast<size_t>(si)];
      for (index_t i = i_lo; i <= i_hi; ++i) {
        const float* src = d_raw.data() + ((cmp0 + i) * H_kv + h) * width + (t - i * stride) * dim;
        for (index_t c = 0; c < dim; ++c) acc[c] += src[c];
      }
      float* dst = dx.ptr(seq.batch, seq.start + t, h);
      for (index_t c = 0; c < dim; ++c) dst[c] += acc[c];
    }
  });
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(PhiBackward);

void phi_backward(const Config& config, const Problem& p, const TensorView<const float>& raw,
                  const PhiWeights<float>& phi, const float* d_blocks, const TensorView<float>& dx,
                  const PhiGradients<float>& grads, ThreadPool& pool) {
  HWY_DYNAMIC_DISPATCH(PhiBackward)(config, p, raw, phi, d_blocks, dx, grads, pool);
}
}  // namespace nsa::cpu
#endif
