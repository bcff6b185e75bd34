// Decode, part 3: the compression branch's merge, the importance scores and the top-n
// selection of one new token, per (item, kv group) (spec, branches 1 and 2):
//   1. merge the cmp split partials of the group's G heads -> o_cmp (fp32) and lse2
//      (warp per head);
//   2. P[i] = sum over the G heads of p(h)[i] = exp2(s2[h][i] - lse2[h]) for every visible
//      compressed block i (thread per block; the scores were stored by the attend kernel);
//   3. S[j] = sum_i P[i] * overlap(i, j) / d for candidates j = 0 .. t / l' (thread per j);
//   4. forced blocks (0 .. n_init-1, then the n_local ending at t / l'), then the highest
//      scores, ties to the lower index (the rule of select_blocks.cuh; here each pick is a
//      block-wide arg-max), kept ascending, -1 padded.
// One CTA of 256 threads per (kv head, item). Shared memory: lse2 [G], S [candidates],
// chosen [top_n].
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <climits>

#include "cuda/decode_common.cuh"

namespace nsa::cuda::detail {

struct DecodeSelectParams {
  const DecodeItem* items;
  const float* part_m;    // cmp partials [items, H, splits]
  const float* part_l;
  const float* part_acc;  // [items, H, splits, d_v]
  int splits;
  const float* logits;    // [items, H_kv, G, logit_stride]
  std::int64_t logit_stride;
  float* imp;             // scratch [items, H_kv, logit_stride]: P[i]
  float* o_cmp;           // [items, H, d_v]
  std::int32_t* sel;      // [items, H_kv, top_n]
  int H, H_kv, G, dv;
  int top_n, n_init, n_local, sel_block, block_len, stride;
};

inline std::size_t decode_select_smem(int G, std::int64_t max_candidates, int top_n) {
  return std::size_t(G + max_candidates + top_n) * 4;
}

static __global__ void __launch_bounds__(256) decode_select_kernel(const DecodeSelectParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int hk = blockIdx.x, item = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const DecodeItem it = p.items[item];
  const std::int64_t t = it.t, ncmp = it.ncmp;
  const int cur = static_cast<int>(t / p.sel_block), nsel = cur + 1;
  float* slse = reinterpret_cast<float*>(smem_raw);
  float* sc = slse + p.G;
  int* chosen = reinterpret_cast<int*>(sc + nsel);

  // 1. o_cmp and lse2 of each head of the group.
  for (int g = warp; g < p.G; g += 8) {
    const std::int64_t pi = (std::int64_t(item) * p.H + std::int64_t(hk) * p.G + g) * p.splits;
    const MergedStats st = merge_stats(p.part_m + pi, p.part_l + pi, p.splits);
    if (lane == 0) slse[g] = st.lse2;
    // Lane owns columns lane + 32 j (d_v <= 256: j < 8); one split weight per split.
    float o[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int s = 0; s < p.splits; ++s) {
      const float w = split_weight(p.part_m[pi + s], st);
      const float* acc = p.part_acc + (pi + s) * p.dv;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (lane + 32 * j < p.dv) o[j] += acc[lane + 32 * j] * w;
    }
    float* out = p.o_cmp + (std::int64_t(item) * p.H + std::int64_t(hk) * p.G + g) * p.dv;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (lane + 32 * j < p.dv) out[lane + 32 * j] = o[j] * st.inv_l;
  }
  __syncthreads();

  // 2. Importance of each visible compressed block, summed over the group.
  const float* lg = p.logits + (std::int64_t(item) * p.H_kv + hk) * p.G * p.logit_stride;
  float* imp = p.imp + (std::int64_t(item) * p.H_kv + hk) * p.logit_stride;
  for (std::int64_t i = tid; i < ncmp; i += 256) {
    float P = 0.f;
#pragma unroll 4
    for (int g = 0; g < p.G; ++g) P += exp2f(lg[g * p.logit_stride + i] - slse[g]);
    imp[i] = P;
  }
  __syncthreads();  // also orders the global writes of imp for the block

  // 3. Selection-block scores from the overlaps.
  const float inv_stride = 1.f / p.stride;
  for (int j = tid; j < nsel; j += 256) {
    const std::int64_t js = std::int64_t(j) * p.sel_block, je = js + p.sel_block;  // [js, je)
    // compressed blocks i with [i*d, i*d + l) overlapping [js, je), visible ones only
    std::int64_t i_lo = js - p.block_len + 1 > 0 ? (js - p.block_len + 1 + p.stride - 1) / p.stride : 0;
    const std::int64_t i_hi = min64((je - 1) / p.stride, ncmp - 1);
    float acc = 0.f;
    for (std::int64_t i = i_lo; i <= i_hi; ++i) {
      const std::int64_t a = max64(i * p.stride, js), b = min64(i * p.stride + p.block_len, je);
      acc += imp[i] * (static_cast<float>(b - a) * inv_stride);
    }
    sc[j] = acc;  // >= 0; chosen blocks are marked -1 below
  }
  __syncthreads();

  // 4. Top-n: forced blocks (thread 0), then per pick a block-wide arg-max (ties to the
  //    lower index: each thread scans ascending j, reductions prefer the lower index).
  __shared__ float w_best[8];
  __shared__ int w_idx[8];
  __shared__ int s_count;
  const int want = min(p.top_n, nsel);
  if (nsel <= p.top_n) {
    for (int j = tid; j < nsel; j += 256) chosen[j] = j;
    if (tid == 0) s_count = nsel;
  } else {
    if (tid == 0) {
      int count = 0;
      for (int j = 0; j < p.n_init && j < nsel; ++j) { chosen[count++] = j; sc[j] = -1.f; }
      for (int k = 0; k < p.n_local; ++k) {
        const int j = cur - k;
        if (j >= 0 && sc[j] >= 0.f) { chosen[count++] = j; sc[j] = -1.f; }
      }
      s_count = count;
    }
    __syncthreads();
    const int forced = s_count;
    for (int count = forced; count < want; ++count) {
      float best = -0.5f;  // chosen blocks hold -1, candidates >= 0
      int bi = INT_MAX;
      for (int j = tid; j < nsel; j += 256) {
        const float v = isnan(sc[j]) ? 0.f : sc[j];  // NaN (from non-finite inputs) must not leave bi unset
        if (v > best) { best = v; bi = j; }
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, off);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
      }
      if (lane == 0) { w_best[warp] = best; w_idx[warp] = bi; }
      __syncthreads();
      if (tid == 0) {
        for (int w = 1; w < 8; ++w)
          if (w_best[w] > best || (w_best[w] == best && w_idx[w] < bi)) { best = w_best[w]; bi = w_idx[w]; }
        chosen[count] = bi;
        sc[bi] = -1.f;
      }
      __syncthreads();
    }
    if (tid == 0) {
      const int count = max(forced, want);
      for (int i = 1; i < count; ++i) {  // insertion sort, count <= top_n
        const int x = chosen[i];
        int k = i - 1;
        while (k >= 0 && chosen[k] > x) { chosen[k + 1] = chosen[k]; --k; }
        chosen[k + 1] = x;
      }
      s_count = count;
    }
  }
  __syncthreads();
  std::int32_t* out = p.sel + (std::int64_t(item) * p.H_kv + hk) * p.top_n;
  for (int i = tid; i < p.top_n; i += 256) out[i] = i < s_count ? chosen[i] : -1;
}

}  // namespace nsa::cuda::detail
