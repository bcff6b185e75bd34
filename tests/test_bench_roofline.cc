// The bench's roofline (tools/nsa/bench_roofline.h): which bound applies and the fraction.
#include <gtest/gtest.h>

#include "../tools/nsa/bench_roofline.h"

namespace nsa::cli {
namespace {

const MachineRoof kMachine{/*compute_gflops=*/200, /*dram_gbs=*/25, /*l3_gbs=*/100, /*l3_bytes=*/32e6};

TEST(BenchRoofline, MemoryBoundRowBeyondTheL3UsesTheDramBandwidth) {
  // 134 MB (a llama3-8b decode step at T = 16384) and 0.27 GFLOP: 5.37 ms at 25 GB/s.
  const RowRoof r = roofline(kMachine, 0.268e9, 134.2e6, 10.0);
  EXPECT_EQ(r.bound, "DRAM");
  EXPECT_NEAR(r.fraction, 134.2e6 / 25e9 / 10e-3, 1e-9);
  EXPECT_FALSE(r.weak);
  EXPECT_TRUE(roofline(kMachine, 0.268e9, 134.2e6, 11.0).weak);  // 0.49 of its bound
}

TEST(BenchRoofline, WorkingSetInsideHalfTheL3UsesTheL3Bandwidth) {
  const RowRoof r = roofline(kMachine, 1e6, 16e6, 1.0);
  EXPECT_EQ(r.bound, "L3");
  EXPECT_NEAR(r.fraction, 16e6 / 100e9 / 1e-3, 1e-9);
  EXPECT_EQ(roofline(kMachine, 1e6, 17e6, 1.0).bound, "DRAM");  // over half the 32 MB
}

TEST(BenchRoofline, ComputeBoundRowUsesThePeakAndItsScale) {
  const RowRoof r = roofline(kMachine, 100e9, 1e6, 1000.0);  // 0.5 s at 200 GFLOP/s
  EXPECT_EQ(r.bound, "compute");
  EXPECT_NEAR(r.fraction, 0.5, 1e-12);
  EXPECT_NEAR(roofline(kMachine, 100e9, 1e6, 1000.0, 2.0).fraction, 0.25, 1e-12);
}

TEST(BenchRoofline, UnknownL3FallsBackToDram) {
  const MachineRoof m{200, 25, 0, 0};
  EXPECT_EQ(roofline(m, 1e6, 16e6, 1.0).bound, "DRAM");
}

}  // namespace
}  // namespace nsa::cli
