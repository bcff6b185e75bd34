// See bench_peak.h. The loops keep kAcc independent accumulators so that FMA latency
// (4 cycles on current x86) times the number of FMA pipes (2) is covered; each kernel is
// compiled for its instruction set with a target attribute and picked at run time, so
// the binary needs no -march flag.
#include "bench_peak.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <fstream>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NSA_BENCH_X86 1
#endif

#include "nsa/thread_pool.h"

namespace nsa::cli {
namespace {

constexpr int kAcc = 12;

#ifdef NSA_BENCH_X86
// Returns a value that depends on every accumulator, so nothing is optimised away.
__attribute__((target("avx512f"))) float fma_loop_avx512(std::int64_t iters, float seed) {
  __m512 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_set1_ps(seed + 0.01f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float r = 0;
  for (float x : lanes) r += x;
  return r;
}

__attribute__((target("avx2,fma"))) float fma_loop_avx2(std::int64_t iters, float seed) {
  __m256 acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_set1_ps(seed + 0.01f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float r = 0;
  for (float x : lanes) r += x;
  return r;
}
#endif

float fma_loop_scalar(std::int64_t iters, float seed) {
  float acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = seed + 0.01f * static_cast<float>(i);
  for (std::int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kAcc; ++i) acc[i] = std::fma(acc[i], 0.999999f, 1e-7f);
  float r = 0;
  for (float x : acc) r += x;
  return r;
}

}  // namespace

namespace {

// The sum of words [a, b): with AVX2, four 256-bit accumulators (a scalar loop tops out near
// one 8-byte load per cycle, ~25 GB/s per core: below an L3's bandwidth); else eight
// scalar ones.
#ifdef NSA_BENCH_X86
__attribute__((target("avx2"))) std::uint64_t sum_words_avx2(const std::uint64_t* w, std::size_t a, std::size_t b) {
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  std::size_t i = a;
  for (; i + 16 <= b; i += 16)
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm256_add_epi64(acc[j], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 4 * j)));
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]),
                                                                          _mm256_add_epi64(acc[2], acc[3])));
  std::uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < b; ++i) sum += w[i];
  return sum;
}
#endif

std::uint64_t sum_words(const std::uint64_t* w, std::size_t a, std::size_t b) {
#ifdef NSA_BENCH_X86
  if (__builtin_cpu_supports("avx2")) return sum_words_avx2(w, a, b);
#endif
  std::uint64_t acc[8] = {};
  std::size_t i = a;
  for (; i + 8 <= b; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += w[i + j];
  for (; i < b; ++i) acc[0] += w[i];
  std::uint64_t sum = 0;
  for (std::uint64_t x : acc) sum += x;
  return sum;
}

// Read bandwidth in GB/s over a buffer of `bytes`, all threads: each thread sums its share
// (sum_words), `passes` times per timing; best of 3 timings after
// a first touch (which also brings a cache-sized buffer into the cache).
double read_bandwidth(ThreadPool& pool, std::size_t bytes, int passes) {
  const std::size_t words = bytes / sizeof(std::uint64_t);
  std::vector<std::uint64_t> buf(words);
  const int threads = pool.size();
  std::vector<std::uint64_t> sink(static_cast<size_t>(threads) * 8);
  // The same split for the touch and the reads, so each thread reads what it touched.
  auto range = [&](std::int64_t part, std::size_t& a, std::size_t& b) {
    a = words * static_cast<std::size_t>(part) / threads;
    b = words * static_cast<std::size_t>(part + 1) / threads;
  };
  pool.parallel_for(threads, [&](std::int64_t begin, std::int64_t, int) {
    std::size_t a, b;
    range(begin, a, b);
    for (std::size_t i = a; i < b; ++i) buf[i] = i;
  });
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(threads, [&](std::int64_t begin, std::int64_t, int worker) {
      std::size_t a, b;
      range(begin, a, b);
      std::uint64_t acc = 0;
      for (int p = 0; p < passes; ++p) acc += sum_words(buf.data(), a, b);
      sink[static_cast<size_t>(worker) * 8] += acc;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(words * sizeof(std::uint64_t)) * passes / s * 1e-9);
  }
  volatile std::uint64_t keep = sink[0];
  (void)keep;
  return best;
}

}  // namespace

double measure_read_bandwidth(ThreadPool& pool) { return read_bandwidth(pool, std::size_t{512} << 20, 1); }

double l3_cache_bytes() {
  // sysfs names the size of cpu0's level-3 cache as e.g. "32768K"; a VM may not have one.
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || level != 3 || !(size_file >> size) || size.empty()) continue;
    double bytes = std::atof(size.c_str());
    if (size.back() == 'K') bytes *= 1024.0;
    if (size.back() == 'M') bytes *= 1024.0 * 1024.0;
    return bytes;
  }
  return 0.0;
}

double measure_l3_bandwidth(ThreadPool& pool, double l3_bytes) {
  if (l3_bytes <= 0) return 0.0;
  // Half the L3, so that the buffer stays there beside everything else; ~40 MB per timing.
  const auto bytes = static_cast<std::size_t>(l3_bytes / 2);
  return read_bandwidth(pool, bytes, std::max(1, static_cast<int>(40e6 / static_cast<double>(bytes))));
}

FmaPeak measure_fma_peak(ThreadPool& pool) {
  using Fn = float (*)(std::int64_t, float);
  Fn fn = fma_loop_scalar;
  int lanes = 1;
  FmaPeak peak;
  peak.isa = "scalar";
#ifdef NSA_BENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    fn = fma_loop_avx512, lanes = 16, peak.isa = "avx512";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    fn = fma_loop_avx2, lanes = 8, peak.isa = "avx2";
  }
#endif
  const int threads = pool.size();
  std::vector<float> sink(static_cast<size_t>(threads) * 16);
  // Calibrate on one thread (~20 ms), then size the timed run to ~150 ms per thread.
  std::int64_t iters = 1 << 16;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink[0] += fn(iters, 1.0f);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.02 || iters > (std::int64_t{1} << 34)) {
      iters = std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(iters) * 0.15 / s));
      break;
    }
    iters *= 4;
  }
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(threads, [&](std::int64_t begin, std::int64_t end, int worker) {
      for (std::int64_t i = begin; i < end; ++i) sink[static_cast<size_t>(worker) * 16] += fn(iters / 3, 1.0f + static_cast<float>(i));
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double flops = 2.0 * kAcc * lanes * static_cast<double>(iters / 3) * threads;
    best = std::max(best, flops / s * 1e-9);
  }
  volatile float keep = sink[0];
  (void)keep;
  peak.gflops = best;
  return peak;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(" \t"));
        return name;
      }
    }
  }
  return "unknown";
}

}  // namespace nsa::cli
