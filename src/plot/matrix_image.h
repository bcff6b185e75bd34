// MatrixImage: a [rows x cols] matrix drawn as an image (row 0 at the top), scaled to fit
// a target size, with index axes, title and a color bar. Used by `nsa inspect` for
// selection maps: query rows x key blocks, 1 where a block is selected (or an intensity).
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "plot/color.h"
#include "plot/image.h"

namespace nsa::plot {

enum class Reduce { kMax, kMean };  // how cells sharing one pixel combine

struct MatrixImage {
  int rows = 0, cols = 0;
  std::vector<float> values;  // [rows][cols]; NaN: no value (grey)
  std::string title, subtitle, x_label, y_label, colorbar_label;
  double lo = NAN, hi = NAN;  // color scale ends; NaN: the finite data's min / max
  std::function<Rgb(double)> colormap = white_blue;  // t in [0, 1]
  // The matrix area is at most max_width x max_height pixels: each cell gets a whole number
  // of pixels per side (>= 1, independently in x and y) when the matrix fits, otherwise
  // each pixel shows the cells it covers combined by `reduce` (kMax keeps a lone selected
  // block visible).
  int max_width = 800, max_height = 600;
  Reduce reduce = Reduce::kMax;
  bool colorbar = true;
  int text_scale = 2;
};

// Renders the matrix. Throws nsa::Error when rows or cols < 1, values.size() != rows *
// cols, or the explicit color range is empty.
Image render_matrix_image(const MatrixImage& m);

}  // namespace nsa::plot
