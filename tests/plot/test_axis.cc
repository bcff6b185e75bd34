// Axes: automatic ranges with round ends, tick values and their labels.
#include <gtest/gtest.h>

#include <cmath>

#include "nsa/error.h"
#include "plot/axis.h"

namespace nsa::plot {
namespace {

std::vector<double> values(const std::vector<Tick>& t) {
  std::vector<double> v;
  for (const auto& k : t) v.push_back(k.value);
  return v;
}
std::vector<std::string> labels(const std::vector<Tick>& t) {
  std::vector<std::string> v;
  for (const auto& k : t) v.push_back(k.label);
  return v;
}

TEST(Axis, LinearRangeAndTicks) {
  const Axis a = auto_axis(Scale::kLinear, 2.13, 5.31, 8);
  EXPECT_DOUBLE_EQ(a.lo, 2.0);
  EXPECT_DOUBLE_EQ(a.hi, 5.5);
  EXPECT_EQ(labels(axis_ticks(a, 8)), (std::vector<std::string>{"2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0", "5.5"}));
  const Axis b = auto_axis(Scale::kLinear, 0, 1000, 5);
  EXPECT_EQ(values(axis_ticks(b, 5)), (std::vector<double>{0, 200, 400, 600, 800, 1000}));
  EXPECT_EQ(labels(axis_ticks({Scale::kLinear, 0, 1}, 4)), (std::vector<std::string>{"0.00", "0.25", "0.50", "0.75", "1.00"}));
  EXPECT_EQ(labels(axis_ticks({Scale::kLinear, -1, 1}, 4)), (std::vector<std::string>{"-1.0", "-0.5", "0.0", "0.5", "1.0"}));
}

TEST(Axis, DegenerateRanges) {
  const Axis c = auto_axis(Scale::kLinear, 3, 3);  // constant data
  EXPECT_LT(c.lo, 3);
  EXPECT_GT(c.hi, 3);
  const Axis z = auto_axis(Scale::kLinear, 0, 0);
  EXPECT_LT(z.lo, 0);
  EXPECT_GT(z.hi, 0);
  const Axis none = auto_axis(Scale::kLinear, INFINITY, -INFINITY);  // no data
  EXPECT_EQ(none.lo, 0);
  EXPECT_EQ(none.hi, 1);
  const Axis l = auto_axis(Scale::kLog2, 4096, 4096);
  EXPECT_EQ(l.lo, 2048);
  EXPECT_EQ(l.hi, 8192);
  EXPECT_THROW(auto_axis(Scale::kLog10, -1, 10), Error);
}

TEST(Axis, Log2TicksInKilo) {
  const Axis a = auto_axis(Scale::kLog2, 8192, 65536);
  EXPECT_EQ(a.lo, 8192);
  EXPECT_EQ(a.hi, 65536);
  EXPECT_EQ(labels(axis_ticks(a)), (std::vector<std::string>{"8k", "16k", "32k", "64k"}));
  const Axis b = auto_axis(Scale::kLog2, 300, 3e6);
  const auto t = axis_ticks(b, 6);
  EXPECT_LE(t.size(), 7u);
  EXPECT_EQ(t.front().label, "256");
  for (const auto& k : t) EXPECT_EQ(std::exp2(std::round(std::log2(k.value))), k.value);
  EXPECT_EQ(labels(axis_ticks({Scale::kLog2, 1 << 20, 1 << 21})), (std::vector<std::string>{"1M", "2M"}));
}

TEST(Axis, Log10Ticks) {
  EXPECT_EQ(labels(axis_ticks({Scale::kLog10, 1, 1e6}, 8)),
            (std::vector<std::string>{"1", "10", "100", "1000", "10000", "1e5", "1e6"}));
  EXPECT_EQ(labels(axis_ticks({Scale::kLog10, 1, 10}, 8)), (std::vector<std::string>{"1", "2", "5", "10"}));
  EXPECT_EQ(labels(axis_ticks({Scale::kLog10, 0.01, 1}, 8)),
            (std::vector<std::string>{"0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"}));
}

TEST(Axis, Fraction) {
  const Axis a{Scale::kLog2, 1024, 4096};
  EXPECT_DOUBLE_EQ(a.fraction(2048), 0.5);
  EXPECT_TRUE(std::isnan(a.fraction(0)));
  EXPECT_TRUE(std::isnan(a.fraction(NAN)));
  const Axis b{Scale::kLinear, -2, 2};
  EXPECT_DOUBLE_EQ(b.fraction(1), 0.75);
  EXPECT_EQ(format_fixed(-0.0001, 2), "0.00");
}

}  // namespace
}  // namespace nsa::plot
