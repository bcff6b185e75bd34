// Device-side helpers of the timing parts of nsa_gpu_check (bench.cc, check_decode.cc):
// CUDA error checks and random bf16 fills of large buffers.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nsa/cuda.h"
#include "nsa/error.h"

namespace nsa::gpu_check {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw nsa::Error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Grows b to n bf16 values and fills them with N(0, scale) (U(lo, hi) when uniform), from a
// pool of about 4M values repeated; the pool's odd size keeps its repeats from lining up
// with rows.
inline void fill_random(nsa::cuda::DeviceBuffer& b, std::size_t n, std::uint64_t seed, float scale,
                        bool uniform = false, float lo = 0.f, float hi = 1.f) {
  using BTag = nsa::cuda::bf16;
  b.reserve(n * sizeof(BTag));
  const std::size_t pool = std::min<std::size_t>(n, (std::size_t(1) << 22) + 7);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, scale);
  std::uniform_real_distribution<float> unif(lo, hi);
  std::vector<BTag> h(pool);
  for (auto& x : h) x = BTag::from_float(uniform ? unif(rng) : normal(rng));
  for (std::size_t off = 0; off < n; off += pool) {
    const std::size_t cnt = std::min(pool, n - off);
    cuda_ok(cudaMemcpy(b.as<BTag>() + off, h.data(), cnt * sizeof(BTag), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
}

}  // namespace nsa::gpu_check
