// Heatmap: a [rows x cols] grid of values in [lo, hi] (default [0, 1]) as colored cells,
// with a label per row and per column, axis titles, a color bar and optionally the value
// printed in each cell. Used for needle-in-a-haystack accuracy: context length (columns)
// x needle depth (rows), like the paper's Figure 5.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "plot/color.h"
#include "plot/image.h"

namespace nsa::plot {

struct Heatmap {
  int rows = 0, cols = 0;
  std::vector<double> values;  // [rows][cols], row 0 at the top; NaN: no value (grey cell)
  std::vector<std::string> row_labels, col_labels;  // rows / cols entries, or empty
  std::string title, subtitle, x_label, y_label, colorbar_label;
  double lo = 0, hi = 1;       // the ends of the color scale; values are clamped to them
  std::function<Rgb(double)> colormap = red_yellow_green;  // t in [0, 1]
  bool show_values = true;
  int value_decimals = 2;
  int cell_width = 0, cell_height = 0;  // 0: from the widest label / value, at least 44 x 30
  int text_scale = 2;
};

// Renders the heatmap; the image size follows from the cell size and the labels. Throws
// nsa::Error when rows or cols < 1, values.size() != rows * cols, a label list has the
// wrong length, or !(hi > lo).
Image render_heatmap(const Heatmap& heatmap);

}  // namespace nsa::plot
