// phi: compression of [l, dim] blocks into one [dim] vector (spec, branch 1).
//
//   mlp:    Kc = W2 GELU(W1 flatten(block + pe) + b1) + b2
//   linear: Kc = W flatten(block + pe)
//   mean:   Kc = mean of the l rows
// mlp and linear are GEMMs whose A operand is gathered on the fly from the raw tokens:
// row m = compressed block i (of the whole batch) * H_kv + kv head, column k = (token j of
// the block, channel) -> x[token i*d + j][head][channel] + pe[j][channel].
// Plain fp32-FMA tiled GEMM (64x64 tiles, 4x4 per thread), fp32 accumulation.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

struct GemmParams {
  // A: either gathered from raw tokens (x != null) or a dense fp32 [M, K] matrix (a).
  const void* x;
  std::int64_t x_sb, x_st, x_sh;
  const void* pe;  // [l, dim] or null
  const float* a;
  const SeqInfo* seqs;
  int num_seqs, H_kv, dim, stride;
  const void* w;     // [N, K], storage type
  const void* bias;  // [N] or null
  std::int64_t M, N, K;
  bool gelu;
  void* c;  // [M, N]: float (c_f32) or storage type
  bool c_f32;
};

// Sequence of compressed row i (seqs sorted by cmp0).
__device__ __forceinline__ int find_seq_cmp(const SeqInfo* seqs, int num_seqs, std::int64_t i) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seqs[mid].cmp0 <= i) lo = mid; else hi = mid - 1;
  }
  return lo;  // the last sequence whose compressed rows start at or before i (it owns i)
}

__device__ __forceinline__ float gelu_exact(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }

template <class T>
__global__ void __launch_bounds__(256) phi_gemm_kernel(const GemmParams p) {
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  __shared__ std::int64_t row_base[BM];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const std::int64_t m0 = std::int64_t(blockIdx.x) * BM, n0 = std::int64_t(blockIdx.y) * BN;
  const T* x = static_cast<const T*>(p.x);
  const T* pe = static_cast<const T*>(p.pe);
  const T* w = static_cast<const T*>(p.w);
  if (x != nullptr && tid < BM) {
    const std::int64_t m = m0 + tid;
    std::int64_t base = -1;
    if (m < p.M) {
      const std::int64_t i = m / p.H_kv;
      const int hk = static_cast<int>(m % p.H_kv);
      const SeqInfo s = p.seqs[find_seq_cmp(p.seqs, p.num_seqs, i)];
      base = s.batch * p.x_sb + (s.start + (i - s.cmp0) * p.stride) * p.x_st + hk * p.x_sh;
    }
    row_base[tid] = base;
  }
  __syncthreads();
  float acc[4][4] = {};
  for (std::int64_t k0 = 0; k0 < p.K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += 256) {
      const int r = e / BK, kk = e % BK;
      const std::int64_t m = m0 + r, k = k0 + kk;
      float v = 0.f;
      if (m < p.M && k < p.K) {
        if (x != nullptr) {
          const std::int64_t j = k / p.dim, ch = k - j * p.dim;
          v = to_f32(x[row_base[r] + j * p.x_st + ch]);
          if (pe != nullptr) v += to_f32(pe[k]);
        } else {
          v = p.a[m * p.K + k];
        }
      }
      As[kk][r] = v;
    }
    for (int e = tid; e < BN * BK; e += 256) {
      const int r = e / BK, kk = e % BK;
      const std::int64_t n = n0 + r, k = k0 + kk;
      Bs[kk][r] = (n < p.N && k < p.K) ? to_f32(w[n * p.K + k]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) { av[i] = As[kk][ty * 4 + i]; bv[i] = Bs[kk][tx * 4 + i]; }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
  const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
      if (m >= p.M || n >= p.N) continue;
      float v = acc[i][j];
      if (bias != nullptr) v += to_f32(bias[n]);
      if (p.gelu) v = gelu_exact(v);
      if (p.c_f32) static_cast<float*>(p.c)[m * p.N + n] = v;
      else static_cast<T*>(p.c)[m * p.N + n] = from_f32<T>(v);
    }
}

// mean phi: c[m][ch] = mean_j x[token i*d + j][head][ch]; one thread per output.
template <class T>
__global__ void phi_mean_kernel(const GemmParams p, int block_len) {
  const std::int64_t idx = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.M * p.dim) return;
  const std::int64_t m = idx / p.dim, ch = idx % p.dim;
  const std::int64_t i = m / p.H_kv;
  const int hk = static_cast<int>(m % p.H_kv);
  const SeqInfo s = p.seqs[find_seq_cmp(p.seqs, p.num_seqs, i)];
  const T* x = static_cast<const T*>(p.x) + s.batch * p.x_sb + (s.start + (i - s.cmp0) * p.stride) * p.x_st + hk * p.x_sh + ch;
  float acc = 0.f;
  for (int j = 0; j < block_len; ++j) acc += to_f32(x[j * p.x_st]);
  static_cast<T*>(p.c)[idx] = from_f32<T>(acc / block_len);
}

// Launches phi over the g.M rows that `g` already describes (A gathered from g.x with its
// strides, sequences, H_kv, dim and stride) into dst [g.M, dim] (storage type T): the mean
// kernel, one GEMM (linear), or two GEMMs through an fp32 [g.M, hidden] buffer taken from
// workspace slot `hidden_slot` (mlp). Shared by the forward (all blocks of a batch) and the
// decode cache (the blocks a prefill / append completes).
template <class T, class Tag>
void launch_phi(const Config& config, GemmParams g, const PhiWeights<Tag>& w, index_t dim, void* dst,
                int hidden_slot, Workspace& ws, cudaStream_t stream) {
  const index_t l = config.block_len();
  auto gemm = [&](const GemmParams& gp) {
    const dim3 grid(static_cast<unsigned>((gp.M + 63) / 64), static_cast<unsigned>((gp.N + 63) / 64));
    phi_gemm_kernel<T><<<grid, 256, 0, stream>>>(gp);
    NSA_CUDA_CHECK_LAUNCH("phi_gemm_kernel");
  };
  switch (config.phi()) {
    case PhiKind::mean: {
      const std::int64_t n = g.M * dim;
      g.c = dst;
      phi_mean_kernel<T><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(g, static_cast<int>(l));
      NSA_CUDA_CHECK_LAUNCH("phi_mean_kernel");
      return;
    }
    case PhiKind::linear:
      g.pe = w.pe;
      g.w = w.w;
      g.N = dim;
      g.K = l * dim;
      g.c = dst;
      gemm(g);
      return;
    case PhiKind::mlp: {
      const index_t hidden = config.phi_hidden_for(dim);
      float* h = static_cast<float*>(ws.get(hidden_slot, std::size_t(g.M) * hidden * sizeof(float)));
      g.pe = w.pe;
      g.w = w.w1;
      g.bias = w.b1;
      g.N = hidden;
      g.K = l * dim;
      g.gelu = true;
      g.c = h;
      g.c_f32 = true;
      gemm(g);
      GemmParams g2 = g;
      g2.x = nullptr;
      g2.pe = nullptr;
      g2.a = h;
      g2.w = w.w2;
      g2.bias = w.b2;
      g2.N = dim;
      g2.K = hidden;
      g2.gelu = false;
      g2.c = dst;
      g2.c_f32 = false;
      gemm(g2);
      return;
    }
  }
}

}  // namespace nsa::cuda::detail
