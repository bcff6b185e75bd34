// The roofline of one benchmark row: how close a measured time is to what the machine
// allows for its FLOPs and bytes, so that no speed-up is reported over a weak baseline.
//
// A row doing `flops` and moving `bytes` (its compulsory traffic: every input read once,
// every output written once) cannot take less than
//   max(flops / compute peak, bytes / bandwidth)
// where the bandwidth is the L3's when the bytes fit in half the L3 (the working set then
// stays there between repetitions, beside everything else; the L3 bandwidth is measured on
// a buffer of that size) and the DRAM's otherwise. The row's fraction of its roofline
// is that bound over its measured time; which term is larger names the bound ("compute",
// "L3" or "DRAM"). A fraction below kWeakRoofline flags the row: a ratio against it says
// more about the baseline than about NSA.
#pragma once

#include <string>

namespace nsa::cli {

struct MachineRoof {
  double compute_gflops = 0;  // the fp32 FMA peak, all threads (bench_peak.h)
  double dram_gbs = 0;        // DRAM read bandwidth, all threads
  double l3_gbs = 0;          // L3 read bandwidth, all threads (0: unknown, then DRAM's)
  double l3_bytes = 0;        // L3 size (0: unknown, then everything is DRAM-bound)
};

struct RowRoof {
  double fraction = 0;  // lower bound on the time / measured time, in (0, 1] for a sound row
  std::string bound;    // "compute", "L3" or "DRAM"
  bool weak = false;    // fraction < kWeakRoofline
};

inline constexpr double kWeakRoofline = 0.5;
inline constexpr double kL3Share = 0.5;

// Whether a working set of `bytes` is served by the L3 (it fits in kL3Share of it and the
// L3 was measured), else by DRAM.
bool in_l3(const MachineRoof& m, double bytes);

// ms > 0, flops >= 0, bytes >= 0. compute_scale multiplies the compute peak (2 for bf16
// rows on a CPU whose vdpbf16ps does two fp32 FMAs' work per lane, else 1).
RowRoof roofline(const MachineRoof& m, double flops, double bytes, double ms, double compute_scale = 1.0);

}  // namespace nsa::cli
