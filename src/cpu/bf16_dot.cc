// bf16_dot_enabled: whether the bf16 kernels use vdpbf16ps (AVX512_BF16) for this call.
// Highway 1.0.3 knows no target with AVX512_BF16, so this asks two things: is the target
// Highway dispatches to an AVX-512 one (the one whose kernels carry the vdpbf16ps code,
// attention_tile-inl.h), and does the CPU have AVX512_BF16 (CPUID leaf 7, sub-leaf 1,
// EAX bit 5; the OS saves AVX-512 state, or Highway would not have chosen AVX-512).
#include <atomic>

#include "cpu/kernels.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/bf16_dot.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#if HWY_ONCE
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#endif

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

bool TargetHasBf16Dot() { return HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL; }

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(TargetHasBf16Dot);

namespace {

std::atomic<bool> g_bf16_dot_allowed{true};

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return (eax >> 5) & 1u;
#else
  return false;
#endif
}

}  // namespace

bool bf16_dot_enabled() {
  static const bool cpu = cpu_has_avx512_bf16();
  return cpu && g_bf16_dot_allowed.load(std::memory_order_relaxed) &&
         HWY_DYNAMIC_DISPATCH(TargetHasBf16Dot)();
}

void set_bf16_dot_allowed(bool allowed) { g_bf16_dot_allowed.store(allowed); }

}  // namespace nsa::cpu
#endif
