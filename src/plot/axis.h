// Axes of the charts: the mapping of data values onto a pixel span (linear, log2 or
// log10), automatic "nice" ranges, and tick values with their labels.
#pragma once

#include <string>
#include <vector>

namespace nsa::plot {

enum class Scale { kLinear, kLog2, kLog10 };

struct Tick {
  double value = 0;
  std::string label;
};

// A data range [lo, hi] on a scale; on log scales 0 < lo.
struct Axis {
  Scale scale = Scale::kLinear;
  double lo = 0, hi = 1;

  // Where v lies between lo (0) and hi (1) after the scale's transform; NaN when v cannot
  // be shown (not finite, or <= 0 on a log scale).
  double fraction(double v) const;
  // Whether v can be placed on this scale at all.
  bool plottable(double v) const;
};

// A range holding [min, max] with round ends: multiples of a 1-2-2.5-5 step (linear),
// whole powers of 2 or 10 (log). min == max widens to a range around the value; no
// finite value (min > max) gives [0, 1] (linear) or [1, 2] / [1, 10] (log). Throws
// nsa::Error when min <= 0 on a log scale.
Axis auto_axis(Scale scale, double min, double max, int max_ticks = 8);

// At most about `max_ticks` ticks inside [lo, hi] (both ends included when they are on the
// tick grid). Linear: multiples of a 1-2-2.5-5 step, labelled with the digits the step
// needs; log2: powers of 2, every k-th when there are many, written 512, 1k, 2k, ... for
// multiples of 1024; log10: decades (1, 10, 100, 1e3 ...), with 2 and 5 added when the
// range spans at most two decades.
std::vector<Tick> axis_ticks(const Axis& axis, int max_ticks = 8);

// v with `decimals` digits after the point; -0 printed as 0.
std::string format_fixed(double v, int decimals);

}  // namespace nsa::plot
