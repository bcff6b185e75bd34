// Colors of the charts: a fixed palette for series and the color scales of heatmaps and
// matrix images.
#pragma once

#include "plot/image.h"

namespace nsa::plot {

namespace colors {
inline constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kText{30, 30, 30};
inline constexpr Rgb kGrid{228, 228, 228}, kAxis{90, 90, 90}, kMissing{200, 200, 200};
}  // namespace colors

// The i-th color of a palette of 8 distinguishable colors (blue, orange, green, red,
// purple, brown, pink, grey; after matplotlib's tab10), cycled for i >= 8.
Rgb palette(int i);

// a + (b - a) t, t clamped to [0, 1].
Rgb mix(Rgb a, Rgb b, double t);

// Diverging red -> yellow -> green for t in [0, 1] (accuracy: 0 red, 1 green).
Rgb red_yellow_green(double t);

// Sequential white -> dark blue for t in [0, 1] (intensity maps).
Rgb white_blue(double t);

// Relative luminance in [0, 1]: chooses black or white text on a colored cell.
double luminance(Rgb c);

}  // namespace nsa::plot
