// Backward of phi (forward: phi.cuh): from dL/dKc [total_cmp * H_kv, dim] to the raw
// tokens and to phi's parameters. Pairs p = compressed block * H_kv + kv head are the rows
// of X [np, l*dim] (X[p] = flatten(block + pe), gathered from the raw tokens on the fly),
// exactly as in the forward, so every step is a GEMM (mlp: a = X W1^T + b1, h = GELU(a)):
//   db2 = colsum(dOut)   dW2 = dOut^T h   da = (dOut W2) * GELU'(a)   db1 = colsum(da)
//   dW1 = da^T X         dX = da W1       dpe = colsum(dX)
//   (linear: dW = dOut^T X, dX = dOut W, dpe = colsum(dX); mean: dX = dOut / l per row)
// Determinism: each GEMM output element is one thread's sum over k in ascending order;
// colsum sums fixed chunks of 1024 rows in order, then the chunks in order; the raw
// token gradient is a token-major gather over the (overlapping) blocks covering the token,
// in ascending block order, ADDED into the (possibly aliased) gradient view.
// Plain fp32 FMA tiles (64x64, 4x4 per thread) like the forward's GEMM; phi is small next
// to the attention passes.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"
#include "cuda/phi.cuh"

namespace nsa::cuda::detail {

// Element offset of the first raw token of each pair's block: [np].
struct PairBaseParams {
  const SeqInfo* seqs;
  int num_seqs, H_kv, stride;
  std::int64_t x_sb, x_st, x_sh, np;
  std::int64_t* base;
};
static __global__ void pair_base_kernel(const PairBaseParams p) {
  const std::int64_t m = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m >= p.np) return;
  const std::int64_t i = m / p.H_kv;
  const int hk = static_cast<int>(m % p.H_kv);
  const SeqInfo s = p.seqs[find_seq_cmp(p.seqs, p.num_seqs, i)];
  p.base[m] = s.batch * p.x_sb + (s.start + (i - s.cmp0) * p.stride) * p.x_st + hk * p.x_sh;
}

enum BSource : int { kBFloat = 0, kBStorage = 1, kBGather = 2 };

struct BwdGemmParams {
  const float* a;  // A(m, k) = a[m * a_sm + k * a_sk]
  std::int64_t a_sm, a_sk;
  int b_kind;
  const void* b;  // kBFloat: float, kBStorage: storage type; B(k, n) = b[k * b_sk + n * b_sn]
  std::int64_t b_sk, b_sn;
  bool b_gelu;    // kBFloat only: B(k, n) = GELU(b[...])
  // kBGather: B(k = pair, n = j * dim + ch) = x[base[pair] + j * x_st + ch] + pe[n]
  const void* x;
  const void* pe;
  const std::int64_t* base;
  std::int64_t x_st;
  int dim;
  const float* gelu_grad_of;  // null, or C *= GELU'(gelu_grad_of[m * N + n])
  float* c;                   // [M, N] fp32, written
  std::int64_t M, N, K;
};

__device__ __forceinline__ float gelu_grad(float x) {
  const float cdf = 0.5f * (1.f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * __expf(-0.5f * x * x);
  return cdf + x * pdf;
}

template <class T>
__global__ void __launch_bounds__(256) bwd_gemm_kernel(const BwdGemmParams p) {
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const std::int64_t m0 = std::int64_t(blockIdx.x) * BM, n0 = std::int64_t(blockIdx.y) * BN;
  const bool a_k_fast = p.a_sk == 1, b_n_fast = p.b_kind == kBGather || p.b_sn == 1;
  float acc[4][4] = {};
  for (std::int64_t k0 = 0; k0 < p.K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += 256) {
      const int r = a_k_fast ? e / BK : e % BM, kk = a_k_fast ? e % BK : e / BM;
      const std::int64_t m = m0 + r, k = k0 + kk;
      As[kk][r] = (m < p.M && k < p.K) ? p.a[m * p.a_sm + k * p.a_sk] : 0.f;
    }
    for (int e = tid; e < BN * BK; e += 256) {
      const int cc = b_n_fast ? e % BN : e / BK, kk = b_n_fast ? e / BN : e % BK;
      const std::int64_t n = n0 + cc, k = k0 + kk;
      float v = 0.f;
      if (n < p.N && k < p.K) {
        if (p.b_kind == kBGather) {
          const std::int64_t j = n / p.dim, ch = n - j * p.dim;
          v = to_f32(static_cast<const T*>(p.x)[p.base[k] + j * p.x_st + ch]);
          if (p.pe != nullptr) v += to_f32(static_cast<const T*>(p.pe)[n]);
        } else if (p.b_kind == kBStorage) {
          v = to_f32(static_cast<const T*>(p.b)[k * p.b_sk + n * p.b_sn]);
        } else {
          v = static_cast<const float*>(p.b)[k * p.b_sk + n * p.b_sn];
          if (p.b_gelu) v = gelu_exact(v);
        }
      }
      Bs[kk][cc] = v;
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
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t m = m0 + ty * 4 + i, n = n0 + tx * 4 + j;
      if (m >= p.M || n >= p.N) continue;
      float v = acc[i][j];
      if (p.gelu_grad_of != nullptr) v *= gelu_grad(p.gelu_grad_of[m * p.N + n]);
      p.c[m * p.N + n] = v;
    }
}

// Column sums of x [M, N] fp32 in a fixed order. Pass 1: partial[chunk][n] over rows
// [chunk * kColChunk, ...). Pass 2: out[n] = sum over chunks in order.
constexpr int kColChunk = 1024;
static __global__ void colsum_partial_kernel(const float* x, std::int64_t M, std::int64_t N, float* partial) {
  const std::int64_t n = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const std::int64_t r0 = std::int64_t(blockIdx.y) * kColChunk, r1 = min64(M, r0 + kColChunk);
  float acc = 0.f;
  for (std::int64_t r = r0; r < r1; ++r) acc += x[r * N + n];
  partial[std::int64_t(blockIdx.y) * N + n] = acc;
}
static __global__ void colsum_final_kernel(const float* partial, std::int64_t chunks, std::int64_t N, float* out) {
  const std::int64_t n = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float acc = 0.f;
  for (std::int64_t ch = 0; ch < chunks; ++ch) acc += partial[ch * N + n];
  out[n] = acc;
}

// dx[token t, kv head h] += sum over blocks i covering t (i*d <= t < i*d + l), ascending,
// of d_raw[(cmp0 + i) * H_kv + h][(t - i*d) * dim + c]  (mean: d_blocks[...][c] / l).
struct PhiGatherParams {
  const float* d_raw;     // [np, l * dim] (mlp, linear)
  const float* d_blocks;  // [np, dim] (mean)
  bool mean;
  float* dx;
  std::int64_t dx_sb, dx_st, dx_sh;
  const SeqInfo* seqs;
  int num_seqs, H_kv, dim, block_len, stride;
  std::int64_t rows;
};
static __global__ void phi_gather_kernel(const PhiGatherParams p) {
  const std::int64_t idx = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.rows * p.H_kv * p.dim) return;
  const int c = static_cast<int>(idx % p.dim);
  const std::int64_t task = idx / p.dim, row = task / p.H_kv;
  const int h = static_cast<int>(task % p.H_kv);
  const SeqInfo seq = p.seqs[find_seq(p.seqs, p.num_seqs, row)];
  const std::int64_t t = row - seq.row0;
  if (t < 0 || t >= seq.len || seq.len < p.block_len) return;
  const std::int64_t n_cmp = (seq.len - p.block_len) / p.stride + 1;
  const std::int64_t i_lo = t >= p.block_len ? (t - p.block_len) / p.stride + 1 : 0;
  const std::int64_t i_hi = min64(n_cmp - 1, t / p.stride);
  if (i_lo > i_hi) return;
  const std::int64_t width = std::int64_t(p.block_len) * p.dim;
  float acc = 0.f;
  for (std::int64_t i = i_lo; i <= i_hi; ++i) {
    const std::int64_t pair = (seq.cmp0 + i) * p.H_kv + h;
    if (p.mean) acc += p.d_blocks[pair * p.dim + c] / static_cast<float>(p.block_len);
    else acc += p.d_raw[pair * width + (t - i * p.stride) * p.dim + c];
  }
  float* dst = p.dx + seq.batch * p.dx_sb + (seq.start + t) * p.dx_st + h * p.dx_sh + c;
  *dst += acc;
}

}  // namespace nsa::cuda::detail
