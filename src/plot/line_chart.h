// LineChart: named (x, y) series as lines and/or markers on linear or log axes, with
// nice ticks, grid, axis titles and a legend. Used for `nsa bench --plot` (speed-up vs T,
// ours solid, the paper's dashed) and training loss curves (loss vs step).
//
//   LineChart chart;
//   chart.title = "NSA speed-up"; chart.x_label = "T"; chart.x_scale = Scale::kLog2;
//   chart.series.push_back({"forward", {8192, 16384}, {3.1, 5.2}, palette(0)});
//   write_png("speedup.png", render_line_chart(chart));
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "plot/axis.h"
#include "plot/canvas.h"

namespace nsa::plot {

struct Series {
  std::string name;           // legend entry; empty: not in the legend
  std::vector<double> x, y;   // same length; points with a NaN/Inf coordinate (or <= 0 on a
                              // log axis) are skipped and break the line there
  Rgb color = palette(0);
  bool dashed = false;
  bool line = true;           // false: markers only
  Marker marker = Marker::kNone;
  double line_width = 2.5;
  double marker_size = 9;
};

// A horizontal reference line across the plot (e.g. speed-up 1 = break-even).
struct HRule {
  double y = 0;
  std::string label;          // drawn at the right end, above the line
};

struct LineChart {
  int width = 1000, height = 620;
  int text_scale = 2;         // the built-in 5x7 font times this (title: one more)
  std::string title, subtitle, x_label, y_label;
  Scale x_scale = Scale::kLinear, y_scale = Scale::kLinear;
  // Axis ranges; NaN: automatic (nice round ends around the finite data, rules included).
  double x_min = NAN, x_max = NAN, y_min = NAN, y_max = NAN;
  bool y_include_zero = false;  // automatic linear y range reaches down (or up) to 0
  bool legend = true;           // placed in the plot corner that hides the fewest points
  std::vector<Series> series;
  std::vector<HRule> rules;
};

// Renders the chart. Throws nsa::Error when a series' x and y differ in length, the size
// is too small (< 200 x 150) or a log axis gets a non-positive explicit bound. A chart
// without any plottable point renders its frame with "no data" in the plot area.
Image render_line_chart(const LineChart& chart);

}  // namespace nsa::plot
