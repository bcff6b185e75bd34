// The machine's fp32 FMA ceiling, measured rather than assumed: every thread of the pool
// runs a loop of independent fused multiply-adds on registers (no memory traffic) with the
// widest vectors the CPU has (AVX-512, else AVX2+FMA, else scalar std::fma), for a fixed
// number of iterations. Used by `nsa bench` to express achieved GFLOP/s as % of peak.
#pragma once

#include <string>

namespace nsa {
class ThreadPool;
}

namespace nsa::cli {

struct FmaPeak {
  double gflops = 0.0;   // all threads together; one FMA = 2 flops
  std::string isa;       // "avx512", "avx2", "scalar"
};

// Takes well under a second.
FmaPeak measure_fma_peak(ThreadPool& pool);

// DRAM read bandwidth in GB/s (1e9 bytes/s), all threads of the pool together: each
// thread sums its share of a 512 MiB buffer (far larger than any cache) with independent
// 64-bit accumulators (256-bit vectors with AVX2); best of 3 passes after a first touch. Takes about a second. The
// bench relates the dense decode step (which reads the whole K/V cache) to it.
double measure_read_bandwidth(ThreadPool& pool);

// The size in bytes of the CPU's level-3 cache (sysfs), or 0 when the system names none.
double l3_cache_bytes();

// L3 read bandwidth in GB/s, all threads together: read_bandwidth's loop over half the L3,
// repeated to ~40 MB per timing. 0 when l3_bytes is 0. Well under a second.
double measure_l3_bandwidth(ThreadPool& pool, double l3_bytes);

// The CPU's model name (/proc/cpuinfo), or "unknown".
std::string cpu_name();

}  // namespace nsa::cli
