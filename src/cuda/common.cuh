// Shared pieces of the CUDA kernels: error checks, storage-type traits, mma.sync /
// ldmatrix wrappers, and the warp-level "fragment GEMMs" that every attention kernel uses.
//
// Fragment layout (mma.sync m16n8k16, the same for every backend): a warp owns 16 rows;
// lane = 4*g + c holds, for each 8-column tile j, acc[j][0..1] = (row g, cols 2c, 2c+1)
// and acc[j][2..3] = (row g+8, cols 2c, 2c+1). The fp32 backend computes the very same
// fragments with scalar FMA from shared memory, so softmax and masking code is shared.
//
// UNVERIFIED until nsa_gpu_check has passed on a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "nsa/cuda.h"
#include "nsa/error.h"

namespace nsa::cuda::detail {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line);
inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, call, file, line);
}
#define NSA_CUDA_CHECK(call) ::nsa::cuda::detail::check_cuda((call), #call, __FILE__, __LINE__)
// After a launch: reports configuration errors (bad grid, too much shared memory).
#define NSA_CUDA_CHECK_LAUNCH(name) \
  ::nsa::cuda::detail::check_cuda(cudaGetLastError(), name, __FILE__, __LINE__)

// Host tag type -> device storage type.
template <class Tag> struct DeviceType;
template <> struct DeviceType<float> { using type = float; };
template <> struct DeviceType<bf16> { using type = __nv_bfloat16; };
template <> struct DeviceType<f16> { using type = __half; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
template <class T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// Elements per 16-byte vector.
template <class T> constexpr int kVec = 16 / sizeof(T);
// Shared-memory row padding (elements): keeps ldmatrix rows 16-byte aligned and spreads banks.
template <class T> constexpr int kPad = 16 / sizeof(T);

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
}

template <class T>
__device__ __forceinline__ void mma_16816(float c[4], const std::uint32_t a[4], std::uint32_t b0,
                                          std::uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const std::uint32_t a[4],
                                                         std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float c[4], const std::uint32_t a[4],
                                                  std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <class T> __device__ __forceinline__ std::uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}
template <> __device__ __forceinline__ std::uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}

// ---- warp fragment GEMMs ------------------------------------------------------------
// s[NT][4] += Q[16 x dk] . K[NT*8 x dk]^T, Q and K row-major in shared memory (leading
// dims ldq, ldk in elements), dk a multiple of 16.
template <class T, int NT>
struct WarpGemm {
  __device__ __forceinline__ static void qk(float (&s)[NT][4], const T* sq, int ldq, const T* sk,
                                            int ldk, int dk) {
    static_assert(NT % 2 == 0, "NT must be even");
    const int lane = threadIdx.x & 31;
    for (int k0 = 0; k0 < dk; k0 += 16) {
      std::uint32_t a[4];
      ldmatrix_x4(a, sq + (lane & 15) * ldq + k0 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        std::uint32_t b[4];
        ldmatrix_x4(b, sk + (j * 8 + (lane & 7) + (lane >> 4) * 8) * ldk + k0 + ((lane >> 3) & 1) * 8);
        mma_16816<T>(s[j], a, b[0], b[1]);
        mma_16816<T>(s[j + 1], a, b[2], b[3]);
      }
    }
  }
  // o[DT][4] += P[16 x NT*8] . V[NT*8 x dv]; P given as the probabilities in the s
  // fragment layout; only the first dv/8 column tiles of o are touched (dv % 16 == 0).
  template <int DT>
  __device__ __forceinline__ static void pv(float (&o)[DT][4], const float (&p)[NT][4],
                                            const T* sv, int ldv, int dv) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      std::uint32_t a[4];
      a[0] = pack2<T>(p[2 * kk][0], p[2 * kk][1]);
      a[1] = pack2<T>(p[2 * kk][2], p[2 * kk][3]);
      a[2] = pack2<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
      a[3] = pack2<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
      const T* vrow = sv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ldv + (lane >> 4) * 8;
#pragma unroll
      for (int n = 0; n < DT; n += 2) {
        if (n * 8 < dv) {
          std::uint32_t b[4];
          ldmatrix_x4_trans(b, vrow + n * 8);
          mma_16816<T>(o[n], a, b[0], b[1]);
          mma_16816<T>(o[n + 1], a, b[2], b[3]);
        }
      }
    }
  }
};

// fp32 backend: the same fragments with scalar FMA (exact fp32, for checking).
template <int NT>
struct WarpGemm<float, NT> {
  __device__ __forceinline__ static void qk(float (&s)[NT][4], const float* sq, int ldq,
                                            const float* sk, int ldk, int dk) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const float* q0 = sq + g * ldq;
    const float* q1 = sq + (g + 8) * ldq;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const float* k0 = sk + (j * 8 + 2 * c) * ldk;
      const float* k1 = k0 + ldk;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
      for (int d = 0; d < dk; d += 4) {
        const float4 x0 = *reinterpret_cast<const float4*>(q0 + d);
        const float4 x1 = *reinterpret_cast<const float4*>(q1 + d);
        const float4 y0 = *reinterpret_cast<const float4*>(k0 + d);
        const float4 y1 = *reinterpret_cast<const float4*>(k1 + d);
        a0 += x0.x * y0.x + x0.y * y0.y + x0.z * y0.z + x0.w * y0.w;
        a1 += x0.x * y1.x + x0.y * y1.y + x0.z * y1.z + x0.w * y1.w;
        a2 += x1.x * y0.x + x1.y * y0.y + x1.z * y0.z + x1.w * y0.w;
        a3 += x1.x * y1.x + x1.y * y1.y + x1.z * y1.z + x1.w * y1.w;
      }
      s[j][0] += a0;
      s[j][1] += a1;
      s[j][2] += a2;
      s[j][3] += a3;
    }
  }
  template <int DT>
  __device__ __forceinline__ static void pv(float (&o)[DT][4], const float (&p)[NT][4],
                                            const float* sv, int ldv, int dv) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int key = 0; key < NT * 8; ++key) {
      // P(row g, key) lives in lane 4g + (key%8)/2, tile key/8, element key%2 (+2 for row g+8).
      const int src = 4 * g + ((key & 7) >> 1);
      const float p0 = __shfl_sync(0xffffffffu, p[key >> 3][key & 1], src);
      const float p1 = __shfl_sync(0xffffffffu, p[key >> 3][2 + (key & 1)], src);
      const float* vrow = sv + key * ldv + 2 * c;
#pragma unroll
      for (int n = 0; n < DT; ++n) {
        if (n * 8 < dv) {
          const float2 v = *reinterpret_cast<const float2*>(vrow + n * 8);
          o[n][0] += p0 * v.x;
          o[n][1] += p0 * v.y;
          o[n][2] += p1 * v.x;
          o[n][3] += p1 * v.y;
        }
      }
    }
  }
};

// Copies `rows` rows of `cols` elements (cols % kVec == 0) from global (row r at
// src_row(r), nullptr = zero row) into shared memory with leading dim ld, using threads
// [tid, nthreads). 16-byte vector loads.
template <class T, class RowPtr>
__device__ __forceinline__ void load_rows(T* dst, int ld, int rows, int cols, RowPtr src_row,
                                          int tid, int nthreads) {
  const int vpr = cols / kVec<T>;
  for (int i = tid; i < rows * vpr; i += nthreads) {
    const int r = i / vpr, v = i - r * vpr;
    const T* src = src_row(r);
    int4 x = make_int4(0, 0, 0, 0);
    if (src != nullptr) x = __ldg(reinterpret_cast<const int4*>(src + v * kVec<T>));
    *reinterpret_cast<int4*>(dst + r * ld + v * kVec<T>) = x;
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// One sequence of the batch, as the kernels see it.
struct SeqInfo {
  std::int64_t batch, start, len, row0, cmp0;  // cmp0: first compressed row of this sequence
};

// Index of the sequence holding flattened row `row` (seqs sorted by row0, none empty
// in between matters: empty sequences have len 0 and are skipped by the search).
__device__ __forceinline__ int find_seq(const SeqInfo* seqs, int num_seqs, std::int64_t row) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seqs[mid].row0 <= row) lo = mid; else hi = mid - 1;
  }
  // Skip empty sequences that share row0 with the real one.
  while (lo > 0 && seqs[lo].len == 0) --lo;
  while (lo < num_seqs - 1 && row >= seqs[lo].row0 + seqs[lo].len) ++lo;
  return lo;
}

}  // namespace nsa::cuda::detail
