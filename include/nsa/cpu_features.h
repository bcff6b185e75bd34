// What the CPU offers the bf16 kernels, as `nsa version` reports it: the bf16 pair dot
// product (vdpbf16ps, AVX512_BF16) and whether the forward and the decode use it here, and
// Intel AMX (AMX-BF16 tiles): on the CPU, and granted by the kernel (Linux asks each
// process to request the tile-data state, arch_prctl ARCH_REQ_XCOMP_PERM).
#pragma once

namespace nsa {

enum class AmxStatus {
  not_on_cpu,         // CPUID has no AMX-TILE / AMX-BF16 (or not x86)
  refused_by_kernel,  // the CPU has it, the kernel did not grant the tile data
  available,          // usable; no kernel of this library uses it yet
};

struct CpuBf16Features {
  bool bf16_dot = false;             // vdpbf16ps runs on the SIMD target in use
  bool bf16_dot_in_forward = false;  // the bf16 forward uses it (policy: not on Intel)
  bool bf16_dot_in_decode = false;   // the bf16 decode kernels use it
  AmxStatus amx = AmxStatus::not_on_cpu;
};

CpuBf16Features cpu_bf16_features();
const char* to_string(AmxStatus status);

}  // namespace nsa
