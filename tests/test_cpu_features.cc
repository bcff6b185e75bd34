// nsa::cpu_bf16_features against an independent source, the flags Linux lists in
// /proc/cpuinfo (amx_tile, amx_bf16, avx512_bf16), and its policy: vdpbf16ps in the
// forward only off Intel (or as NSA_BF16_DOT says), in the decode wherever it runs.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "cpu/kernels.h"
#include "nsa/cpu_features.h"

namespace nsa {
namespace {

// The value of the first /proc/cpuinfo line whose key is `key` ("" where there is none).
std::string cpuinfo_field(const std::string& key) {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 1);
  return {};
}

// The CPU's flags as a set; empty where /proc/cpuinfo lists none.
std::set<std::string> cpuinfo_flags() {
  std::istringstream words(cpuinfo_field("flags"));
  std::set<std::string> flags;
  for (std::string w; words >> w;) flags.insert(w);
  return flags;
}

TEST(CpuFeatures, AmxAsLinuxListsIt) {
  const std::set<std::string> flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags here";
  const CpuBf16Features f = cpu_bf16_features();
  const bool listed = flags.count("amx_tile") && flags.count("amx_bf16");
  std::printf("  amx: %s (cpuinfo: %s)\n", to_string(f.amx), listed ? "amx_tile amx_bf16" : "no amx");
  EXPECT_EQ(f.amx != AmxStatus::not_on_cpu, listed);
  EXPECT_EQ(cpu_bf16_features().amx, f.amx);  // asked once, the same answer
}

TEST(CpuFeatures, Bf16DotAndItsPolicy) {
  const std::set<std::string> flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags here";
  cpu::set_bf16_dot_allowed(true);  // forced on: what the hardware allows
  const CpuBf16Features on = cpu_bf16_features();
  // vdpbf16ps runs only where the CPU lists avx512_bf16 (the SIMD target must be AVX-512 too).
  if (!flags.count("avx512_bf16")) EXPECT_FALSE(on.bf16_dot);
  if (flags.count("avx512_bf16") && flags.count("avx512bw")) EXPECT_TRUE(on.bf16_dot);
  EXPECT_EQ(on.bf16_dot_in_forward, on.bf16_dot);
  EXPECT_EQ(on.bf16_dot_in_decode, on.bf16_dot);
  cpu::set_bf16_dot_allowed(false);
  const CpuBf16Features off = cpu_bf16_features();
  EXPECT_FALSE(off.bf16_dot_in_forward);
  EXPECT_FALSE(off.bf16_dot_in_decode);
  EXPECT_EQ(off.bf16_dot, on.bf16_dot);  // availability is the hardware's
  cpu::set_bf16_dot_allowed(true);
  std::printf("  bf16 dot: %s, vendor %s\n", on.bf16_dot ? "available" : "absent", cpuinfo_field("vendor_id").c_str());
}

}  // namespace
}  // namespace nsa
