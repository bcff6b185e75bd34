// nsa version: what this binary is. Version, build type and compiler, the SIMD targets
// compiled in (Highway picks the best one the CPU supports at run time; no -march flags),
// the bf16 dot product and AMX (nsa/cpu_features.h), and whether the CUDA kernels are
// built in (and how many devices are visible).
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include "commands.h"
#include "hwy/targets.h"
#include "nsa/cpu_features.h"
#include "nsa/version.h"
#if NSA_CLI_WITH_CUDA
#include "nsa/cuda.h"
#endif

namespace nsa::cli {
namespace {

// Names of the targets whose bits are set in `mask`, best (lowest bit) first.
std::string target_names(std::int64_t mask) {
  std::string s;
  for (std::int64_t m = mask; m != 0; m &= m - 1) {
    if (!s.empty()) s += ' ';
    s += hwy::TargetName(m & -m);
  }
  return s.empty() ? "(none)" : s;
}

int run_version() {
  std::printf("nsa %s\n", kVersion);
  std::printf("build:   %s, %s, C++%ld%s\n", NSA_BUILD_TYPE,
#if defined(__clang__)
              "clang " __clang_version__,
#elif defined(__GNUC__)
              "g++ " __VERSION__,
#else
              "unknown compiler",
#endif
              static_cast<long>(__cplusplus / 100 % 100),  // 202002 -> 20
              NSA_CLI_SANITIZE ? ", ASan+UBSan" : "");
  const std::int64_t compiled = HWY_TARGETS;
  const std::int64_t usable = hwy::SupportedTargets() & compiled;
  std::printf("simd:    compiled %s; this CPU can run %s; in use %s\n",
              target_names(compiled).c_str(), target_names(usable).c_str(),
              usable != 0 ? hwy::TargetName(usable & -usable) : "(none)");
  const nsa::CpuBf16Features bf = nsa::cpu_bf16_features();
  if (!bf.bf16_dot)
    std::printf("bf16:    widened to fp32 (no vdpbf16ps on this CPU or SIMD target)\n");
  else
    std::printf("bf16:    vdpbf16ps (AVX512_BF16) in the decode %s, in the forward %s\n",
                bf.bf16_dot_in_decode ? "yes" : "no",
                bf.bf16_dot_in_forward ? "yes" : "no (inputs widened once to fp32, the default on Intel; NSA_BF16_DOT=1 to use it)");
  std::printf("amx:     %s\n", nsa::to_string(bf.amx));
  std::printf("threads: %u hardware threads\n", std::thread::hardware_concurrency());
#if NSA_CLI_WITH_CUDA
  const int devices = nsa::cuda::device_count();
  std::printf("cuda:    on (kernels unverified until nsa_gpu_check passes on a GPU); %d device(s)",
              devices);
  if (devices > 0) std::printf(": %s", nsa::cuda::device_description().c_str());
  std::printf("\n");
#else
  std::printf("cuda:    off (built without the CUDA kernels)\n");
#endif
  return 0;
}

}  // namespace

Command add_version_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("version", "Print the version, build type, SIMD targets and CUDA support");
  return {sub, run_version};
}

}  // namespace nsa::cli
