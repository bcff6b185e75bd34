// bf16_dot_enabled: whether the bf16 kernels use vdpbf16ps (AVX512_BF16) for this call.
// Highway 1.0.3 knows no target with AVX512_BF16, so this asks two things: is the target
// Highway dispatches to an AVX-512 one (the one whose kernels carry the vdpbf16ps code,
// attention_tile-inl.h), and does the CPU have AVX512_BF16 (CPUID leaf 7, sub-leaf 1,
// EAX bit 5; the OS saves AVX-512 state, or Highway would not have chosen AVX-512).
// bf16_dot_for_forward adds a policy for the forward (prefill), by measurement: on AMD
// (Zen 4/5) vdpbf16ps beat two fp32 FMAs and is used; on Intel it did not (a bf16 dense
// forward at T = 4096, H = 16 / 1, d = 128, on an Emerald Rapids Xeon: 553 ms with
// vdpbf16ps, 498 widening per tile, 370 in fp32), so there the bf16 forward widens its
// inputs once and runs the fp32 kernels. NSA_BF16_DOT=1 or 0 in the environment overrides
// that policy. The decode kernels, which read a bf16 cache once per step, use vdpbf16ps
// wherever it is available (on the same Xeon the paper shape's dense step at T = 65536:
// 7.8 ms with it, 10.5-17.5 ms widening). Tests force either path for both.
#include <atomic>
#include <cstdlib>
#include <cstring>

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

// -1: the policy (vendor, NSA_BF16_DOT); 0 / 1: forced by set_bf16_dot_allowed.
std::atomic<int> g_bf16_dot_forced{-1};

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
  return (eax >> 5) & 1u;
#else
  return false;
#endif
}

bool cpu_is_intel() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  return ebx == 0x756e6547 && edx == 0x49656e69 && ecx == 0x6c65746e;  // "GenuineIntel"
#else
  return false;
#endif
}

bool policy_prefers_bf16_dot() {
  if (const char* env = std::getenv("NSA_BF16_DOT"); env != nullptr && *env != '\0')
    return std::strcmp(env, "0") != 0;
  return !cpu_is_intel();
}

}  // namespace

bool bf16_dot_available() {
  static const bool cpu = cpu_has_avx512_bf16();
  return cpu && HWY_DYNAMIC_DISPATCH(TargetHasBf16Dot)();
}

bool bf16_dot_enabled() {
  return bf16_dot_available() && g_bf16_dot_forced.load(std::memory_order_relaxed) != 0;
}

bool bf16_dot_for_forward() {
  static const bool preferred = policy_prefers_bf16_dot();
  const int forced = g_bf16_dot_forced.load(std::memory_order_relaxed);
  return bf16_dot_available() && (forced < 0 ? preferred : forced == 1);
}

void set_bf16_dot_allowed(bool allowed) { g_bf16_dot_forced.store(allowed ? 1 : 0); }

}  // namespace nsa::cpu
#endif
