// Backward of the gated combine o = sum_b gate_b o_b, and the per-row D of each branch's
// softmax backward; plus zeroing of fp32 gradient views.
//
//   dgate_b = dO . o_b                 (written into dgates [B,T,H,3])
//   D_b     = gate_b * (dO . o_b)      (= dO_b . o_b with dO_b = gate_b dO; [3, rows, H])
// Dense attention: D = dO . o (no gates).
// One warp per (row, head): lanes stride the d_v columns, then a fixed shuffle tree, so
// the sums do not depend on scheduling.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

struct GateBwdParams {
  const void* d_out;  // [B,T,H,d_v] storage type
  std::int64_t do_sb, do_st, do_sh;
  const void* gates;  // [B,T,H,3] storage type, or null (dense)
  std::int64_t g_sb, g_st, g_sh;
  const float* branch_out;  // NSA: [3, rows, H, d_v] fp32
  const void* out;          // dense: the forward's output [B,T,H,d_v] storage type
  std::int64_t o_sb, o_st, o_sh;
  float* dgates;  // [B,T,H,3] fp32 view, or null (dense)
  std::int64_t dg_sb, dg_st, dg_sh;
  float* D;       // [branches, rows, H]
  std::int64_t rows, tokens;  // rows = B * T; row = b * T + t
  int H, dv, branches;
};

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

template <class T>
__global__ void __launch_bounds__(256) gate_backward_kernel(const GateBwdParams p) {
  const std::int64_t task = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (task >= p.rows * p.H) return;
  const std::int64_t row = task / p.H;
  const int h = static_cast<int>(task % p.H);
  const std::int64_t b = row / p.tokens, t = row % p.tokens;
  const T* dO = static_cast<const T*>(p.d_out) + b * p.do_sb + t * p.do_st + h * p.do_sh;
  for (int br = 0; br < p.branches; ++br) {
    float acc = 0.f;
    if (p.branch_out != nullptr) {
      const float* o = p.branch_out + ((std::int64_t(br) * p.rows + row) * p.H + h) * p.dv;
      for (int c = lane; c < p.dv; c += 32) acc += to_f32(dO[c]) * o[c];
    } else {
      const T* o = static_cast<const T*>(p.out) + b * p.o_sb + t * p.o_st + h * p.o_sh;
      for (int c = lane; c < p.dv; c += 32) acc += to_f32(dO[c]) * to_f32(o[c]);
    }
    const float dot = warp_sum(acc);
    if (lane == 0) {
      float gate = 1.f;
      if (p.gates != nullptr) {
        gate = to_f32(static_cast<const T*>(p.gates)[b * p.g_sb + t * p.g_st + h * p.g_sh + br]);
        p.dgates[b * p.dg_sb + t * p.dg_st + h * p.dg_sh + br] = dot;
      }
      p.D[(std::int64_t(br) * p.rows + row) * p.H + h] = gate * dot;
    }
  }
}

// Zeroes a [B, T, heads, dim] fp32 view with strides (one thread per element).
struct ZeroView {
  float* data;
  std::int64_t sb, st, sh, T, heads, dim, total;
};
static __global__ void zero_view_kernel(const ZeroView z) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= z.total) return;
  const std::int64_t c = i % z.dim, h = (i / z.dim) % z.heads, t = (i / (z.dim * z.heads)) % z.T,
                     b = i / (z.dim * z.heads * z.T);
  z.data[b * z.sb + t * z.st + h * z.sh + c] = 0.f;
}

}  // namespace nsa::cuda::detail
