// Decode, part 2: split-K attention of one new query row per head over a branch's keys,
// writing partial softmax states (decode_common.cuh) that a merge turns into the branch
// output. Tensor cores are not used: one query row per head makes decode memory-bound.
//
// The keys of each branch are numbered k = 0 .. nkeys-1 and mapped to cache rows:
//   cmp    k -> compressed block k of Kc/Vc, k < N_cmp(t + 1)
//   slc    k -> token sel[k / l'] * l' + k % l' of the chosen blocks, if <= t
//   win    k -> token max(0, t - w + 1) + k, k < min(t + 1, w)
//   dense  k -> token k, k < t + 1
// CTA = (split, kv head and chunk of up to 16 of its query heads, item): keys
// [split * split_keys, (split + 1) * split_keys), in tiles of 64 keys loaded into shared
// memory once for all the heads of the chunk (GQA: the G heads share each K/V tile).
// Per tile: scores (thread = key x up to 4 heads, fp32 dot products), online softmax
// statistics (warp per head), P.V (thread = head x 8 value columns, fp32 accumulators).
// Two branches can share one launch (slc and win): blockIdx.x runs over the splits of
// the first, then of the second. The compression branch also stores its scores (logits)
// for the importance pass.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include "cuda/decode_common.cuh"

namespace nsa::cuda::detail {

enum DecodeKeys : int { kKeysCmp = 0, kKeysSlc = 1, kKeysWin = 2, kKeysDense = 3 };

struct DecodeBranch {
  const void* k;
  const void* v;
  std::int64_t k_ss, k_st, v_ss, v_st;  // strides between sequences and tokens; kv head stride = dim
  std::int64_t split_keys;             // keys per CTA, a multiple of the 64-key tile
  int mode, splits;
  float* part_m;    // [items, H, splits]
  float* part_l;    // [items, H, splits]
  float* part_acc;  // [items, H, splits, d_v]
};

struct DecodeAttendParams {
  DecodeBranch br[2];
  int nbr;
  const void* q;  // q of item b, head h: q + b * q_sb + h * q_sh
  std::int64_t q_sb, q_sh;
  const DecodeItem* items;  // null: one item, `single`
  DecodeItem single;
  const std::int32_t* sel;  // slc: [items, H_kv, top_n]
  float* logits;            // cmp: [items, H_kv, G, logit_stride] (s2 of every visible key), or null
  std::int64_t logit_stride;
  int H, H_kv, G, gh, head_chunks, dk, dv;
  float scale_log2;
  int sel_block, top_n, window;
};

__host__ __device__ constexpr std::size_t round_up16(std::size_t x) { return (x + 15) / 16 * 16; }

// Shared-memory layout of the attend kernel (bytes), shared by host and device.
struct DecodeAttendLayout {
  static constexpr int kKeys = 64, kThreads = 256, kMaxHeads = 16;
  std::size_t q, s, stats, pos, k, v, total;
  __host__ __device__ DecodeAttendLayout(int gh, int dk, int dv, int elem) {
    q = 0;                                                              // float [gh][dk]
    s = q + round_up16(std::size_t(gh) * dk * 4);                       // float [gh][kKeys + 1]
    stats = s + round_up16(std::size_t(gh) * (kKeys + 1) * 4);          // float m, l, alpha [3][gh]
    pos = stats + round_up16(std::size_t(3) * gh * 4);                  // int64 [kKeys]: row or -1
    k = pos + std::size_t(kKeys) * 8;                                   // T [kKeys][dk + pad]
    v = k + round_up16(std::size_t(kKeys) * (dk + 16 / elem) * elem);   // T [kKeys][dv + pad]
    total = v + round_up16(std::size_t(kKeys) * (dv + 16 / elem) * elem);
  }
};

// Number of keys of the branch for item `it` (and the first window token in *lo).
__device__ __forceinline__ std::int64_t decode_branch_keys(const DecodeAttendParams& p, int mode,
                                                           const DecodeItem& it, std::int64_t* lo) {
  *lo = 0;
  switch (mode) {
    case kKeysCmp: return it.ncmp;
    case kKeysSlc: return min64(p.top_n, it.t / p.sel_block + 1) * p.sel_block;
    case kKeysWin: *lo = max64(0, it.t - p.window + 1); return it.t - *lo + 1;
    default: return it.t + 1;
  }
}

template <class T>
__global__ void __launch_bounds__(256) decode_attend_kernel(const DecodeAttendParams p) {
  using L = DecodeAttendLayout;
  constexpr int kKeys = L::kKeys, kThreads = L::kThreads, ldsc = kKeys + 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const L lay(p.gh, p.dk, p.dv, static_cast<int>(sizeof(T)));
  float* sq = reinterpret_cast<float*>(smem_raw + lay.q);
  float* ss = reinterpret_cast<float*>(smem_raw + lay.s);
  float* sm = reinterpret_cast<float*>(smem_raw + lay.stats);
  float* sl = sm + p.gh;
  float* salpha = sl + p.gh;
  auto* spos = reinterpret_cast<std::int64_t*>(smem_raw + lay.pos);
  T* sk = reinterpret_cast<T*>(smem_raw + lay.k);
  T* sv = reinterpret_cast<T*>(smem_raw + lay.v);
  const int ldk = p.dk + kPad<T>, ldv = p.dv + kPad<T>;

  int bi = 0, split = blockIdx.x;
  if (p.nbr > 1 && split >= p.br[0].splits) {
    bi = 1;
    split -= p.br[0].splits;
  }
  const DecodeBranch br = p.br[bi];
  const int item = blockIdx.z;
  const int hk = blockIdx.y / p.head_chunks, chunk = blockIdx.y % p.head_chunks;
  const int h0 = chunk * p.gh;               // first head of the chunk, inside the group
  const int gh = min(p.gh, p.G - h0);        // heads of this CTA
  const int head0 = hk * p.G + h0;           // first query head
  const DecodeItem it = p.items != nullptr ? p.items[item] : p.single;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  std::int64_t win_lo = 0;
  const std::int64_t nkeys = decode_branch_keys(p, br.mode, it, &win_lo);
  const std::int64_t k_begin = std::int64_t(split) * br.split_keys;
  const std::int64_t k_end = min64(nkeys, k_begin + br.split_keys);

  // Queries of the chunk's heads, widened to fp32.
  const T* q = static_cast<const T*>(p.q) + std::int64_t(item) * p.q_sb;
  for (int e = tid; e < gh * p.dk; e += kThreads) {
    const int g = e / p.dk, c = e - g * p.dk;
    sq[g * p.dk + c] = to_f32(q[std::int64_t(head0 + g) * p.q_sh + c]);
  }
  for (int g = tid; g < gh; g += kThreads) {
    sm[g] = -INFINITY;
    sl[g] = 0.f;
  }

  // P.V units: (head g, 8 value columns c0..c0+7); at most 16 * 256 / 8 = 512 -> 2 per thread.
  const int col8 = p.dv / 8, units = gh * col8;
  float acc[2][8];
#pragma unroll
  for (int x = 0; x < 2; ++x)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[x][j] = 0.f;

  const T* kbase = static_cast<const T*>(br.k) + it.seq * br.k_ss + std::int64_t(hk) * p.dk;
  const T* vbase = static_cast<const T*>(br.v) + it.seq * br.v_ss + std::int64_t(hk) * p.dv;
  const std::int32_t* sel = p.sel != nullptr ? p.sel + (std::int64_t(item) * p.H_kv + hk) * p.top_n : nullptr;
  float* logits = (br.mode == kKeysCmp && p.logits != nullptr)
                      ? p.logits + (std::int64_t(item) * p.H_kv + hk) * p.G * p.logit_stride
                      : nullptr;

  for (std::int64_t kb = k_begin; kb < k_end; kb += kKeys) {
    __syncthreads();  // the previous tile is consumed (and sq, sm, sl are written)
    // 1. Cache row of each key of the tile (-1: masked).
    if (tid < kKeys) {
      const std::int64_t k = kb + tid;
      std::int64_t row = -1;
      if (k < k_end) {
        switch (br.mode) {
          case kKeysSlc: {
            const std::int32_t blk = sel[k / p.sel_block];
            const std::int64_t s = std::int64_t(blk) * p.sel_block + k % p.sel_block;
            row = (blk >= 0 && s <= it.t) ? s : -1;
            break;
          }
          case kKeysWin: row = win_lo + k; break;
          default: row = k; break;  // cmp: block k; dense: token k
        }
      }
      spos[tid] = row;
    }
    __syncthreads();
    // 2. K and V tiles (16-byte vectors; masked rows are zeros).
    load_rows<T>(sk, ldk, kKeys, p.dk, [&](int r) -> const T* {
      const std::int64_t row = spos[r];
      return row < 0 ? nullptr : kbase + row * br.k_st;
    }, tid, kThreads);
    load_rows<T>(sv, ldv, kKeys, p.dv, [&](int r) -> const T* {
      const std::int64_t row = spos[r];
      return row < 0 ? nullptr : vbase + row * br.v_st;
    }, tid, kThreads);
    __syncthreads();
    // 3. Scores s2 = scale log2(e) q.k: thread = key r x heads gset, gset + 4, ...
    {
      const int r = tid % kKeys, gset = tid / kKeys;
      float dot[4] = {0.f, 0.f, 0.f, 0.f};
      const T* krow = sk + r * ldk;
      for (int c = 0; c < p.dk; c += kVec<T>) {
        const int4 raw = *reinterpret_cast<const int4*>(krow + c);
        const T* kv = reinterpret_cast<const T*>(&raw);
        float kf[kVec<T>];
#pragma unroll
        for (int e = 0; e < kVec<T>; ++e) kf[e] = to_f32(kv[e]);
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int g = gset + 4 * x;
          if (g < gh) {
            const float* qg = sq + g * p.dk + c;
#pragma unroll
            for (int e = 0; e < kVec<T>; e += 4) {
              const float4 qv = *reinterpret_cast<const float4*>(qg + e);
              dot[x] += qv.x * kf[e] + qv.y * kf[e + 1] + qv.z * kf[e + 2] + qv.w * kf[e + 3];
            }
          }
        }
      }
      const bool valid = spos[r] >= 0;
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int g = gset + 4 * x;
        if (g < gh) {
          const float s2 = valid ? dot[x] * p.scale_log2 : -INFINITY;
          ss[g * ldsc + r] = s2;
          if (logits != nullptr && valid) logits[std::int64_t(h0 + g) * p.logit_stride + kb + r] = s2;
        }
      }
    }
    __syncthreads();
    // 4. Online softmax statistics, one warp per head; scores become probabilities.
    for (int g = warp; g < gh; g += kThreads / 32) {
      float* srow = ss + g * ldsc;
      const float s0 = srow[lane], s1 = srow[lane + 32];
      const float m_old = sm[g];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
      const float use = m_new == -INFINITY ? 0.f : m_new;
      const float p0 = exp2f(s0 - use), p1 = exp2f(s1 - use);
      srow[lane] = p0;
      srow[lane + 32] = p1;
      const float psum = warp_sum(p0 + p1);
      if (lane == 0) {
        const float alpha = exp2f(m_old - use);  // 0 when m_old = -inf
        sl[g] = sl[g] * alpha + psum;
        sm[g] = m_new;
        salpha[g] = alpha;
      }
    }
    __syncthreads();
    // 5. acc = acc * alpha + P.V
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      const int u = tid + x * kThreads;
      if (u < units) {
        const int g = u / col8, c0 = (u - g * col8) * 8;
        const float alpha = salpha[g];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[x][j] *= alpha;
        const float* prow = ss + g * ldsc;
        for (int r = 0; r < kKeys; ++r) {
          const float pr = prow[r];
          const T* vr = sv + r * ldv + c0;
          float vf[8];
          if constexpr (sizeof(T) == 2) {
            const int4 raw = *reinterpret_cast<const int4*>(vr);
            const T* vv = reinterpret_cast<const T*>(&raw);
#pragma unroll
            for (int j = 0; j < 8; ++j) vf[j] = to_f32(vv[j]);
          } else {
            const float4 a = *reinterpret_cast<const float4*>(vr);
            const float4 b = *reinterpret_cast<const float4*>(vr + 4);
            vf[0] = a.x; vf[1] = a.y; vf[2] = a.z; vf[3] = a.w;
            vf[4] = b.x; vf[5] = b.y; vf[6] = b.z; vf[7] = b.w;
          }
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[x][j] += pr * vf[j];
        }
      }
    }
  }
  __syncthreads();

  // Partial states of the chunk's heads for this split.
  for (int g = tid; g < gh; g += kThreads) {
    const std::int64_t pi = (std::int64_t(item) * p.H + head0 + g) * br.splits + split;
    br.part_m[pi] = sm[g];
    br.part_l[pi] = sl[g];
  }
#pragma unroll
  for (int x = 0; x < 2; ++x) {
    const int u = tid + x * kThreads;
    if (u < units) {
      const int g = u / col8, c0 = (u - g * col8) * 8;
      const std::int64_t pi = (std::int64_t(item) * p.H + head0 + g) * br.splits + split;
      float* dst = br.part_acc + pi * p.dv + c0;
#pragma unroll
      for (int j = 0; j < 8; ++j) dst[j] = acc[x][j];
    }
  }
}

}  // namespace nsa::cuda::detail
