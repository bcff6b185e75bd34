// phi: compresses every [l, dim] block of raw keys (or values) into one [dim] vector.
//   raw [B, T, H_kv, dim] -> out [total_cmp, H_kv, dim]
// Block i of a sequence covers its tokens i*d .. i*d + l - 1. phi's weights are shared by
// all kv heads, so (block, kv head) pairs are batched into one matrix X [pairs, l*dim] and
// the mlp / linear forms become two / one matrix products against the weight matrices.
// Always fp32: bf16 raw tokens are widened as X is gathered, the weights are fp32 (the bf16
// entry point widens bf16 weights once per call).
#include <algorithm>
#include <cmath>

#include "common/gelu.h"
#include "nsa/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/phi.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

// (block, kv head) pairs compressed together: X is pairs x l*dim floats.
constexpr index_t kPairsPerTask = 32;

// Compresses pairs [p0, p1) (pair p = global block * H_kv + kv head) into out + p * dim.
// T: float, or bf16 raw tokens (widened as X is gathered; weights and X are fp32).
template <class T>
void CompressPairs(const Config& config, const Problem& p, const TensorView<const T>& raw,
                   const PhiWeights<float>& phi, float* out, index_t p0, index_t p1) {
  const index_t l = config.block_len(), stride = config.stride(), dim = raw.dim();
  const index_t H_kv = p.kv_heads, np = p1 - p0, width = l * dim;
  const PhiKind kind = config.phi();
  std::vector<float> x(static_cast<size_t>(np * width));
  for (index_t pi = 0; pi < np; ++pi) {
    const index_t pair = p0 + pi, block = pair / H_kv, h = pair % H_kv;
    // The sequence that owns this global block.
    const index_t s = std::upper_bound(p.cmp_offsets.begin(), p.cmp_offsets.end(), block) -
                      p.cmp_offsets.begin() - 1;
    const SeqSpan& seq = p.seqs[static_cast<size_t>(s)];
    const index_t first = seq.start + (block - p.cmp_offsets[static_cast<size_t>(s)]) * stride;
    float* xr = x.data() + pi * width;
    for (index_t r = 0; r < l; ++r) {
      const T* src = raw.ptr(seq.batch, first + r, h);
      if (kind == PhiKind::mean) {
        std::copy(src, src + dim, xr + r * dim);
      } else {
        const float* pe = phi.pe + r * dim;
        for (index_t c = 0; c < dim; ++c) xr[r * dim + c] = static_cast<float>(src[c]) + pe[c];
      }
    }
  }
  float* o = out + p0 * dim;
  switch (kind) {
    case PhiKind::mean:
      for (index_t pi = 0; pi < np; ++pi) {
        const float* xr = x.data() + pi * width;
        for (index_t c = 0; c < dim; ++c) {
          float sum = 0.0f;
          for (index_t r = 0; r < l; ++r) sum += xr[r * dim + c];
          o[pi * dim + c] = sum / static_cast<float>(l);
        }
      }
      break;
    case PhiKind::linear:  // out = X W^T, W [dim, l*dim]
      MatMulABt(x.data(), width, np, phi.w, width, dim, width, o, dim);
      break;
    case PhiKind::mlp: {  // out = GELU(X W1^T + b1) W2^T + b2
      const index_t hidden = config.phi_hidden_for(dim);
      std::vector<float> hid(static_cast<size_t>(np * hidden));
      MatMulABt(x.data(), width, np, phi.w1, width, hidden, width, hid.data(), hidden);
      for (index_t pi = 0; pi < np; ++pi)
        for (index_t j = 0; j < hidden; ++j)
          hid[pi * hidden + j] = nsa::gelu(hid[pi * hidden + j] + phi.b1[j]);
      MatMulABt(hid.data(), hidden, np, phi.w2, hidden, dim, hidden, o, dim);
      for (index_t pi = 0; pi < np; ++pi)
        for (index_t c = 0; c < dim; ++c) o[pi * dim + c] += phi.b2[c];
      break;
    }
  }
}

template <class T>
void CompressBlocksT(const Config& config, const Problem& p, const TensorView<const T>& raw,
                     const PhiWeights<float>& phi, float* out, ThreadPool& pool) {
  const index_t pairs = p.cmp_offsets.back() * p.kv_heads;
  const index_t tasks = (pairs + kPairsPerTask - 1) / kPairsPerTask;
  pool.parallel_tasks(tasks, [&](std::int64_t task, int) {
    const index_t p0 = task * kPairsPerTask;
    CompressPairs(config, p, raw, phi, out, p0, std::min(pairs, p0 + kPairsPerTask));
  });
}

void CompressBlocks(const Config& config, const Problem& p, const TensorView<const float>& raw,
                    const PhiWeights<float>& phi, float* out, ThreadPool& pool) {
  CompressBlocksT(config, p, raw, phi, out, pool);
}

void CompressBlocksBf16(const Config& config, const Problem& p, const TensorView<const bf16>& raw,
                        const PhiWeights<float>& phi, float* out, ThreadPool& pool) {
  CompressBlocksT(config, p, raw, phi, out, pool);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(CompressBlocks);
HWY_EXPORT(CompressBlocksBf16);

void compress_blocks(const Config& config, const Problem& p, const TensorView<const float>& raw,
                     const PhiWeights<float>& phi, float* out, ThreadPool& pool) {
  HWY_DYNAMIC_DISPATCH(CompressBlocks)(config, p, raw, phi, out, pool);
}

void compress_blocks(const Config& config, const Problem& p, const TensorView<const bf16>& raw,
                     const PhiWeights<float>& phi, float* out, ThreadPool& pool) {
  HWY_DYNAMIC_DISPATCH(CompressBlocksBf16)(config, p, raw, phi, out, pool);
}
}  // namespace nsa::cpu
#endif
