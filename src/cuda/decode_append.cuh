// Decode, part 1: storing new tokens' K/V in the cache, and phi of the compression blocks
// a step completes (spec, "Decoding with a cache").
//
//   decode_append_kernel   copies token rows [H_kv, dim] from the caller's views (any
//                          strides) into the cache; one CTA per (token, item, stream).
//   phi_rows_kernel        phi's GEMMs for a handful of rows (the blocks one step
//                          completes: at most one per (sequence, kv head)), as GEMVs: one
//                          CTA per (output column n, 4 rows; grid.y capped at 65535, the
//                          CTAs then loop over row groups), threads split the reduction
//                          K = l * dim, a block reduction at the end. Layer 1 gathers its
//                          A rows from the cache's raw tokens (+ pe); layer 2 reads the fp32
//                          hidden rows. The full-sized GEMM of phi.cuh serves prefill/append.
//   phi_rows_mean_kernel   the mean phi for those rows; one CTA per row.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/decode_common.cuh"
#include "cuda/phi.cuh"

namespace nsa::cuda::detail {

// ---- append ---------------------------------------------------------------------------

// One source view and where its rows go: element (b, token, head, c) of the view is stored
// at dst[seq * dst_ss + (t0 + token) * dst_st + head * dim + c], with seq and t0 of item b.
struct AppendStream {
  const void* src;
  std::int64_t sb, st, sh;  // view strides (elements)
  void* dst;
  std::int64_t dst_ss, dst_st;
  int dim;
};

struct DecodeAppendParams {
  AppendStream s[6];  // k and v of each stored branch
  const DecodeItem* items;
  int H_kv;
};

// grid (tokens, items, streams).
template <class T>
__global__ void __launch_bounds__(128) decode_append_kernel(const DecodeAppendParams p) {
  const AppendStream a = p.s[blockIdx.z];
  const std::int64_t token = blockIdx.x, b = blockIdx.y;
  const DecodeItem it = p.items[b];
  const T* src = static_cast<const T*>(a.src) + b * a.sb + token * a.st;
  T* dst = static_cast<T*>(a.dst) + it.seq * a.dst_ss + (it.t + token) * a.dst_st;
  const int n = p.H_kv * a.dim;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const int h = e / a.dim, c = e - h * a.dim;
    dst[e] = src[h * a.sh + c];
  }
}

// ---- phi of the blocks one step completes ------------------------------------------------

// Row m of the phi GEMMs: compressed block `block` of sequence `seq`, kv head `hk`.
struct PhiRow {
  std::int64_t seq, block;
  int hk;
};

struct PhiRowsParams {
  const PhiRow* rows;
  int M;
  // A operand: gathered from raw tokens (x != null): a(m, k) = x[seq*x_ss + (block*stride +
  // k / dim)*x_st + hk*dim + k % dim] + pe[k]; otherwise dense fp32 a[m * K + k].
  const void* x;
  std::int64_t x_ss, x_st;
  const void* pe;
  const float* a;
  int dim, stride;
  const void* w;     // [N, K] storage type
  const void* bias;  // [N] or null
  std::int64_t K;
  int N;
  bool gelu;
  // Output: fp32 c_f32[m * N + n] when c_f32 is set, else the storage type at
  // c[seq * c_ss + block * c_st + hk * dim + n] (the cache's Kc/Vc).
  float* c_f32;
  void* c;
  std::int64_t c_ss, c_st;
};

constexpr int kPhiRowsPerCta = 4;

// grid (N, min(ceil(M / 4), 65535)), 256 threads. A CTA handles row groups blockIdx.y,
// blockIdx.y + gridDim.y, ...: a step of many sequences that all complete a block (equal
// lengths) has M = count * H_kv rows, more than grid.y's 65535 groups of 4 at count * H_kv
// > 262140.
template <class T>
__global__ void __launch_bounds__(256) phi_rows_kernel(const PhiRowsParams p) {
  constexpr int R = kPhiRowsPerCta;
  __shared__ float red[8][R];
  const int n = blockIdx.x, tid = threadIdx.x;
  const T* x = static_cast<const T*>(p.x);
  const T* pe = static_cast<const T*>(p.pe);
  const T* w = static_cast<const T*>(p.w) + std::int64_t(n) * p.K;
  const int group_step = static_cast<int>(gridDim.y) * R;
  for (int m0 = static_cast<int>(blockIdx.y) * R; m0 < p.M; m0 += group_step) {  // uniform over the CTA
    const int rows = min(R, p.M - m0);
    std::int64_t base[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      base[r] = 0;
      if (x != nullptr && r < rows) {
        const PhiRow row = p.rows[m0 + r];
        base[r] = row.seq * p.x_ss + row.block * p.stride * p.x_st + std::int64_t(row.hk) * p.dim;
      }
    }
    float acc[R] = {};
    for (std::int64_t k = tid; k < p.K; k += 256) {
      const float wk = to_f32(w[k]);
      if (x != nullptr) {
        const std::int64_t j = k / p.dim, ch = k - j * p.dim;
        const float pk = pe != nullptr ? to_f32(pe[k]) : 0.f;
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (r < rows) acc[r] += (to_f32(x[base[r] + j * p.x_st + ch]) + pk) * wk;
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (r < rows) acc[r] += p.a[std::int64_t(m0 + r) * p.K + k] * wk;
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s = warp_sum(acc[r]);
      if ((tid & 31) == 0) red[tid >> 5][r] = s;
    }
    __syncthreads();
    if (tid < rows) {
      float v = 0.f;
      for (int wi = 0; wi < 8; ++wi) v += red[wi][tid];
      if (p.bias != nullptr) v += to_f32(static_cast<const T*>(p.bias)[n]);
      if (p.gelu) v = gelu_exact(v);
      const int m = m0 + tid;
      if (p.c_f32 != nullptr) {
        p.c_f32[std::int64_t(m) * p.N + n] = v;
      } else {
        const PhiRow row = p.rows[m];
        static_cast<T*>(p.c)[row.seq * p.c_ss + row.block * p.c_st + std::int64_t(row.hk) * p.dim + n] = from_f32<T>(v);
      }
    }
    __syncthreads();  // red is read before the next row group overwrites it
  }
}

// Mean phi of the rows: c[...][ch] = mean over the l tokens of the block. grid (M), threads over dim.
template <class T>
__global__ void phi_rows_mean_kernel(const PhiRowsParams p, int block_len) {
  const PhiRow row = p.rows[blockIdx.x];
  const T* x = static_cast<const T*>(p.x) + row.seq * p.x_ss + row.block * p.stride * p.x_st +
               std::int64_t(row.hk) * p.dim;
  T* c = static_cast<T*>(p.c) + row.seq * p.c_ss + row.block * p.c_st + std::int64_t(row.hk) * p.dim;
  for (int ch = threadIdx.x; ch < p.dim; ch += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < block_len; ++j) acc += to_f32(x[j * p.x_st + ch]);
    c[ch] = from_f32<T>(acc / block_len);
  }
}

}  // namespace nsa::cuda::detail
