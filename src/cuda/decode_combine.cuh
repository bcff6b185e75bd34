// Decode, part 4: merge of the split partials of up to two branches and the gated sum
// (spec, "Mixing"):
//   out(h) = g_cmp * o_cmp(h) + g_slc * merge(slc partials) + g_win * merge(win partials)
// o_cmp was merged by the select kernel (fp32 [items, H, d_v]). The dense decode step uses
// the same kernel with one branch, gate 1 and no o_cmp. One CTA of 128 threads per
// (head, item); threads over the value columns.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/decode_common.cuh"

namespace nsa::cuda::detail {

struct DecodeCombineParams {
  const float* part_m[2];
  const float* part_l[2];
  const float* part_acc[2];
  int splits[2];
  int gate_index[2];  // gate of each merged branch (1 = slc, 2 = win)
  int nbr;
  const float* o_cmp;  // [items, H, d_v] with gate 0, or null
  const void* gates;   // storage type: gate (b, h, i) at gates[b * g_sb + h * g_sh + i]; null = all 1
  std::int64_t g_sb, g_sh;
  void* out;           // storage type: out[b * o_sb + h * o_sh + c]
  std::int64_t o_sb, o_sh;
  int H, dv;
};

template <class T>
__global__ void __launch_bounds__(128) decode_combine_kernel(const DecodeCombineParams p) {
  __shared__ MergedStats st[2];
  __shared__ float gate[3];
  const int h = blockIdx.x, item = blockIdx.y, tid = threadIdx.x;
  const std::int64_t row = std::int64_t(item) * p.H + h;
  if (tid < p.nbr) {
    const std::int64_t pi = row * p.splits[tid];
    st[tid] = merge_stats(p.part_m[tid] + pi, p.part_l[tid] + pi, p.splits[tid]);
  }
  if (tid < 3) {
    const T* g = static_cast<const T*>(p.gates);
    gate[tid] = g != nullptr ? to_f32(g[item * p.g_sb + h * p.g_sh + tid]) : 1.f;
  }
  __syncthreads();
  T* out = static_cast<T*>(p.out) + item * p.o_sb + h * p.o_sh;
  for (int c = tid; c < p.dv; c += blockDim.x) {
    float o = p.o_cmp != nullptr ? gate[0] * p.o_cmp[row * p.dv + c] : 0.f;
    for (int b = 0; b < p.nbr; ++b) {
      const std::int64_t pi = row * p.splits[b];
      o += gate[p.gate_index[b]] *
           merge_column(p.part_m[b] + pi, p.part_acc[b] + pi * p.dv, p.splits[b], p.dv, c, st[b]);
    }
    out[c] = from_f32<T>(o);
  }
}

}  // namespace nsa::cuda::detail
