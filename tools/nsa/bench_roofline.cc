#include "bench_roofline.h"

#include <algorithm>

namespace nsa::cli {

bool in_l3(const MachineRoof& m, double bytes) {
  return m.l3_bytes > 0 && m.l3_gbs > 0 && bytes <= kL3Share * m.l3_bytes;
}

RowRoof roofline(const MachineRoof& m, double flops, double bytes, double ms, double compute_scale) {
  RowRoof r;
  const bool l3 = in_l3(m, bytes);
  const double gbs = l3 ? m.l3_gbs : m.dram_gbs;
  const double compute_ms = m.compute_gflops > 0 ? flops / (m.compute_gflops * compute_scale * 1e6) : 0.0;
  const double memory_ms = gbs > 0 ? bytes / (gbs * 1e6) : 0.0;
  r.bound = compute_ms >= memory_ms ? "compute" : l3 ? "L3" : "DRAM";
  r.fraction = ms > 0 ? std::max(compute_ms, memory_ms) / ms : 0.0;
  r.weak = r.fraction < kWeakRoofline;
  return r;
}

}  // namespace nsa::cli
