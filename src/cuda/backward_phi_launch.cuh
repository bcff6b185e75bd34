// Host side of phi's backward (kernels: backward_phi.cuh): the GEMM sequence of the mlp /
// linear kinds, the column sums, the gather onto the raw tokens.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <algorithm>

#include "cuda/backward_launch.cuh"
#include "cuda/backward_phi.cuh"
#include "nsa/backward.h"

namespace nsa::cuda::detail {

// phi backward of one of K / V: d_blocks [np, dim] fp32 -> grads (written), dx (added).
template <class Tag>
void run_phi_backward(const Config& config, const Problem& p, const TensorView<const Tag>& x,
                      const PhiWeights<Tag>& w, index_t dim, const float* d_blocks,
                      const TensorView<float>& dx, const PhiGradients<float>& grads,
                      const SeqInfo* seqs, int slot0, Workspace& ws, cudaStream_t stream) {
  using T = typename DeviceType<Tag>::type;
  const index_t l = config.block_len(), width = l * dim, hidden = config.phi_hidden_for(dim);
  const index_t np = p.cmp_offsets.back() * p.kv_heads;
  const PhiKind kind = config.phi();
  auto zero = [&](float* g, index_t n) {
    if (g != nullptr) NSA_CUDA_CHECK(cudaMemsetAsync(g, 0, std::size_t(n) * sizeof(float), stream));
  };
  if (np == 0) {  // no compressed block anywhere: zero parameter gradients, nothing to add
    if (kind == PhiKind::linear) { zero(grads.pe, width); zero(grads.w, dim * width); }
    if (kind == PhiKind::mlp) {
      zero(grads.pe, width); zero(grads.w1, hidden * width); zero(grads.b1, hidden);
      zero(grads.w2, dim * hidden); zero(grads.b2, dim);
    }
    return;
  }
  PhiGatherParams gp{};
  gp.dx = dx.data;
  set_out_strides(gp.dx_sb, gp.dx_st, gp.dx_sh, dx);
  gp.seqs = seqs;
  gp.num_seqs = static_cast<int>(p.seqs.size());
  gp.H_kv = static_cast<int>(p.kv_heads);
  gp.dim = static_cast<int>(dim);
  gp.block_len = static_cast<int>(l);
  gp.stride = config.stride();
  gp.rows = p.rows;
  auto gather = [&] {
    const std::int64_t n = p.rows * p.kv_heads * dim;
    phi_gather_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(gp);
    NSA_CUDA_CHECK_LAUNCH("phi_gather_kernel");
  };
  if (kind == PhiKind::mean) {
    gp.mean = true;
    gp.d_blocks = d_blocks;
    gather();
    return;
  }

  auto* base = static_cast<std::int64_t*>(ws.get(slot0 + 0, std::size_t(np) * sizeof(std::int64_t)));
  {
    PairBaseParams pb{seqs, static_cast<int>(p.seqs.size()), static_cast<int>(p.kv_heads), config.stride(),
                      x.stride[0], x.stride[1], x.stride[2], np, base};
    pair_base_kernel<<<static_cast<unsigned>((np + 255) / 256), 256, 0, stream>>>(pb);
    NSA_CUDA_CHECK_LAUNCH("pair_base_kernel");
  }
  float* d_raw = static_cast<float*>(ws.get(slot0 + 1, std::size_t(np) * width * sizeof(float)));
  const std::int64_t col_chunks = (np + kColChunk - 1) / kColChunk;
  float* partial = static_cast<float*>(ws.get(slot0 + 2, std::size_t(col_chunks) * std::max({width, dim, hidden}) *
                                                         sizeof(float)));
  auto colsum = [&](const float* m, index_t N, float* out) {
    const dim3 g1(static_cast<unsigned>((N + 255) / 256), static_cast<unsigned>(col_chunks));
    colsum_partial_kernel<<<g1, 256, 0, stream>>>(m, np, N, partial);
    NSA_CUDA_CHECK_LAUNCH("colsum_partial_kernel");
    colsum_final_kernel<<<static_cast<unsigned>((N + 255) / 256), 256, 0, stream>>>(partial, col_chunks, N, out);
    NSA_CUDA_CHECK_LAUNCH("colsum_final_kernel");
  };
  auto gemm = [&](BwdGemmParams g) {
    const dim3 grid(static_cast<unsigned>((g.M + 63) / 64), static_cast<unsigned>((g.N + 63) / 64));
    bwd_gemm_kernel<T><<<grid, 256, 0, stream>>>(g);
    NSA_CUDA_CHECK_LAUNCH("bwd_gemm_kernel");
  };
  BwdGemmParams gather_b{};  // B = X gathered from the raw tokens (+ pe)
  gather_b.b_kind = kBGather;
  gather_b.x = x.data;
  gather_b.pe = w.pe;
  gather_b.base = base;
  gather_b.x_st = x.stride[1];
  gather_b.dim = static_cast<int>(dim);

  if (kind == PhiKind::linear) {
    BwdGemmParams g = gather_b;  // dW [dim, width] = dOut^T X
    g.a = d_blocks; g.a_sm = 1; g.a_sk = dim;
    g.c = grads.w; g.M = dim; g.N = width; g.K = np;
    gemm(g);
    BwdGemmParams h{};  // dX [np, width] = dOut W
    h.a = d_blocks; h.a_sm = dim; h.a_sk = 1;
    h.b_kind = kBStorage; h.b = w.w; h.b_sk = width; h.b_sn = 1;
    h.c = d_raw; h.M = np; h.N = width; h.K = dim;
    gemm(h);
  } else {
    // Pre-activation a = X W1^T + b1, recomputed with the forward's gather GEMM.
    float* a = static_cast<float*>(ws.get(slot0 + 3, std::size_t(np) * hidden * sizeof(float)));
    float* da = static_cast<float*>(ws.get(slot0 + 4, std::size_t(np) * hidden * sizeof(float)));
    GemmParams f{};
    f.x = x.data;
    set_strides(f.x_sb, f.x_st, f.x_sh, x);
    f.pe = w.pe;
    f.seqs = seqs;
    f.num_seqs = static_cast<int>(p.seqs.size());
    f.H_kv = static_cast<int>(p.kv_heads);
    f.dim = static_cast<int>(dim);
    f.stride = config.stride();
    f.w = w.w1;
    f.bias = w.b1;
    f.M = np; f.N = hidden; f.K = width;
    f.gelu = false;
    f.c = a;
    f.c_f32 = true;
    {
      const dim3 grid(static_cast<unsigned>((np + 63) / 64), static_cast<unsigned>((hidden + 63) / 64));
      phi_gemm_kernel<T><<<grid, 256, 0, stream>>>(f);
      NSA_CUDA_CHECK_LAUNCH("phi_gemm_kernel");
    }
    colsum(d_blocks, dim, grads.b2);                       // db2
    BwdGemmParams g2{};                                    // dW2 [dim, hidden] = dOut^T GELU(a)
    g2.a = d_blocks; g2.a_sm = 1; g2.a_sk = dim;
    g2.b_kind = kBFloat; g2.b = a; g2.b_sk = hidden; g2.b_sn = 1; g2.b_gelu = true;
    g2.c = grads.w2; g2.M = dim; g2.N = hidden; g2.K = np;
    gemm(g2);
    BwdGemmParams gh{};                                    // da [np, hidden] = (dOut W2) GELU'(a)
    gh.a = d_blocks; gh.a_sm = dim; gh.a_sk = 1;
    gh.b_kind = kBStorage; gh.b = w.w2; gh.b_sk = hidden; gh.b_sn = 1;
    gh.gelu_grad_of = a;
    gh.c = da; gh.M = np; gh.N = hidden; gh.K = dim;
    gemm(gh);
    colsum(da, hidden, grads.b1);                          // db1
    BwdGemmParams g1 = gather_b;                           // dW1 [hidden, width] = da^T X
    g1.a = da; g1.a_sm = 1; g1.a_sk = hidden;
    g1.c = grads.w1; g1.M = hidden; g1.N = width; g1.K = np;
    gemm(g1);
    BwdGemmParams gx{};                                    // dX [np, width] = da W1
    gx.a = da; gx.a_sm = hidden; gx.a_sk = 1;
    gx.b_kind = kBStorage; gx.b = w.w1; gx.b_sk = width; gx.b_sn = 1;
    gx.c = d_raw; gx.M = np; gx.N = width; gx.K = hidden;
    gemm(gx);
  }
  colsum(d_raw, width, grads.pe);  // dpe
  gp.mean = false;
  gp.d_raw = d_raw;
  gather();
}

}  // namespace nsa::cuda::detail
