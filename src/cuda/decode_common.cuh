// Shared pieces of the decode kernels: one step's items, and the layout and merge of the
// split-K partial softmax states (FlashInfer's state {o, m, d}; here m, l, acc).
//
// A partial of one (item, query head, split) over a range of keys, in log2 units of the
// scaled scores s2 = scale * log2(e) * q.k:
//   m = max s2 (-inf when the range saw no key), l = sum exp2(s2 - m),
//   acc[d_v] = sum exp2(s2 - m) v          (unnormalised)
// Layout: m, l [items, H, splits]; acc [items, H, splits, d_v] (fp32).
// Merged over splits: M = max m, L = sum l exp2(m - M), o = sum acc exp2(m - M) / L,
// lse2 = M + log2 L (-inf and o = 0 when no split saw a key).
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/common.cuh"

namespace nsa::cuda::detail {

// One sequence of a decode step, as the kernels see it.
struct DecodeItem {
  std::int64_t seq;   // cache sequence id
  std::int64_t t;     // position of the new token (keys 0..t are visible); for append: first position written
  std::int64_t ncmp;  // compressed blocks visible to the new token: N_cmp(t + 1)
};

// Merged statistics of `splits` partials starting at m[0], l[0] (one thread).
struct MergedStats {
  float m, inv_l, lse2;
};
__device__ __forceinline__ MergedStats merge_stats(const float* m, const float* l, int splits) {
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, m[s]);
  float sum = 0.f;
  if (mx != -INFINITY)
    for (int s = 0; s < splits; ++s)
      if (m[s] != -INFINITY) sum += l[s] * exp2f(m[s] - mx);
  MergedStats r;
  r.m = mx;
  r.inv_l = sum > 0.f ? 1.f / sum : 0.f;
  r.lse2 = sum > 0.f ? mx + log2f(sum) : -INFINITY;
  return r;
}

// Weight of split s in the merge (0 for an empty split).
__device__ __forceinline__ float split_weight(float m_split, const MergedStats& st) {
  return m_split == -INFINITY ? 0.f : exp2f(m_split - st.m);
}

// Column c of the merged output: sum_s acc[s][c] * weight(s) / L.
__device__ __forceinline__ float merge_column(const float* m, const float* acc, int splits, int dv, int c,
                                              const MergedStats& st) {
  float o = 0.f;
  for (int s = 0; s < splits; ++s) o += acc[std::int64_t(s) * dv + c] * split_weight(m[s], st);
  return o * st.inv_l;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

}  // namespace nsa::cuda::detail
