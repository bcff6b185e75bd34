// nsa::cpu_bf16_features (nsa/cpu_features.h): the bf16 dot product's state from
// cpu/kernels.h, and AMX from CPUID leaf 7 (EDX bit 22 AMX-BF16, bit 24 AMX-TILE) and the
// kernel's answer to a request for the tile-data state (arch_prctl ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA = 18; Linux 5.16+). The request is made once per process.
#include "nsa/cpu_features.h"

#include "cpu/kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace nsa {

namespace {

AmxStatus detect_amx() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return AmxStatus::not_on_cpu;
  const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
  if (!amx_bf16 || !amx_tile) return AmxStatus::not_on_cpu;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return AmxStatus::refused_by_kernel;
  return AmxStatus::available;
#else
  return AmxStatus::not_on_cpu;
#endif
}

}  // namespace

CpuBf16Features cpu_bf16_features() {
  static const AmxStatus amx = detect_amx();
  CpuBf16Features f;
  f.bf16_dot = cpu::bf16_dot_available();
  f.bf16_dot_in_forward = cpu::bf16_dot_for_forward();
  f.bf16_dot_in_decode = cpu::bf16_dot_enabled();
  f.amx = amx;
  return f;
}

const char* to_string(AmxStatus status) {
  switch (status) {
    case AmxStatus::not_on_cpu: return "not on this CPU";
    case AmxStatus::refused_by_kernel: return "on this CPU, refused by the kernel";
    case AmxStatus::available: return "available, not used (no AMX kernels yet)";
  }
  return "?";
}

}  // namespace nsa
