// The frame shared by the charts: a title block, a plot rectangle with numeric axes
// (ticks, tick labels, grid) and axis titles, and a vertical color bar.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "plot/axis.h"
#include "plot/canvas.h"

namespace nsa::plot {

struct Rect {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) x [y0, y1)
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

// `s` cut to at most max_width pixels at `scale`, ending in "..." when cut.
std::string fit_text(const std::string& s, int max_width, int scale);

// Draws `title` (scale + 1, centred) and `subtitle` (scale, grey) from the top, each cut
// to the image width; returns the y below them.
int draw_title(Canvas& c, const std::string& title, const std::string& subtitle, int scale);

// Pixel x of value v on the horizontal axis spanning r (NaN when not plottable), and
// pixel y on the vertical one (lo at the bottom): lo and hi fall on the centres of r's
// first and last pixels.
double axis_x(const Axis& a, const Rect& r, double v);
double axis_y(const Axis& a, const Rect& r, double v);

// Tick marks and labels below (x) or left of (y) r, grid lines across it when `grid`.
// x labels that would overlap their neighbour are thinned out (every 2nd, 3rd ...).
void draw_x_axis(Canvas& c, const Rect& r, const Axis& a, const std::vector<Tick>& ticks, int scale, bool grid);
void draw_y_axis(Canvas& c, const Rect& r, const Axis& a, const std::vector<Tick>& ticks, int scale, bool grid);

// Widest tick label in pixels.
int max_label_width(const std::vector<Tick>& ticks, int scale);

// A vertical color bar in r, `color(t)` for t in [0, 1] from bottom to top, labelled with
// `ticks` (values in [lo, hi]) on its right.
void draw_colorbar(Canvas& c, const Rect& r, const std::function<Rgb(double)>& color, double lo, double hi,
                   const std::vector<Tick>& ticks, int scale);

}  // namespace nsa::plot
