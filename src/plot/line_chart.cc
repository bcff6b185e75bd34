#include "plot/line_chart.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "nsa/error.h"
#include "plot/font.h"
#include "plot/frame.h"

namespace nsa::plot {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The axis of one dimension: explicit bounds where given, else auto_axis around the data.
Axis make_axis(Scale scale, double lo, double hi, double data_min, double data_max, bool include_zero, int max_ticks,
               const char* which) {
  if (scale != Scale::kLinear && ((!std::isnan(lo) && lo <= 0) || (!std::isnan(hi) && hi <= 0)))
    throw Error(std::string("plot: the log ") + which + " axis needs positive bounds");
  if (include_zero && scale == Scale::kLinear && data_min <= data_max)
    data_min = std::min(data_min, 0.0), data_max = std::max(data_max, 0.0);
  double mn = std::isnan(lo) ? data_min : lo, mx = std::isnan(hi) ? data_max : hi;
  if (!(mn <= mx)) {  // no data (mn = inf, mx = -inf) or one explicit bound beyond it
    if (!std::isnan(lo) && std::isnan(hi)) mx = lo;
    if (std::isnan(lo) && !std::isnan(hi)) mn = hi;
  }
  Axis a = auto_axis(scale, mn, mx, max_ticks);
  if (!std::isnan(lo)) a.lo = lo;
  if (!std::isnan(hi)) a.hi = hi;
  if (!(a.hi > a.lo)) throw Error(std::string("plot: empty ") + which + " range");
  return a;
}

void draw_legend(Canvas& c, const Rect& plot, const LineChart& chart, const std::vector<std::vector<Point>>& pts) {
  const int s = chart.text_scale;
  std::vector<const Series*> entries;
  for (const Series& ser : chart.series)
    if (!ser.name.empty()) entries.push_back(&ser);
  if (entries.empty()) return;
  const int sample = 36, pad = 8, row = font::text_height(s) + 8;
  int text_w = 0;
  for (const Series* e : entries) text_w = std::max(text_w, font::text_width(e->name, s));
  const int w = pad + sample + 8 + text_w + pad, h = pad + row * static_cast<int>(entries.size()) - 8 + pad;
  // The corner that covers the fewest data points (ties: top right, top left, ...).
  const int m = 10;
  const std::array<Point, 4> corners = {Point{plot.x1 - m - w + 0.0, plot.y0 + m + 0.0}, {plot.x0 + m + 0.0, plot.y0 + m + 0.0},
                                        {plot.x1 - m - w + 0.0, plot.y1 - m - h + 0.0}, {plot.x0 + m + 0.0, plot.y1 - m - h + 0.0}};
  Point best = corners[0];
  double best_cost = kInf;
  for (const Point& corner : corners) {
    double cost = 0;
    for (const auto& line : pts)
      for (size_t i = 0; i < line.size(); ++i) {
        const Point& p = line[i];
        const bool in = p.x >= corner.x - 4 && p.x <= corner.x + w + 4 && p.y >= corner.y - 4 && p.y <= corner.y + h + 4;
        cost += in ? 10 : 0;
        if (i + 1 < line.size())  // sample the segment for crossings
          for (int k = 1; k < 8; ++k) {
            const double x = p.x + (line[i + 1].x - p.x) * k / 8, y = p.y + (line[i + 1].y - p.y) * k / 8;
            cost += (x >= corner.x && x <= corner.x + w && y >= corner.y && y <= corner.y + h) ? 1 : 0;
          }
      }
    if (cost < best_cost) best_cost = cost, best = corner;
  }
  c.fill_rect(best.x, best.y, best.x + w, best.y + h, colors::kWhite);
  c.rect(best.x, best.y, best.x + w, best.y + h, Rgb{200, 200, 200});
  for (size_t i = 0; i < entries.size(); ++i) {
    const Series& e = *entries[i];
    const double y = best.y + pad + row * static_cast<double>(i) + font::text_height(s) / 2.0;
    const double x0 = best.x + pad, x1 = x0 + sample;
    if (e.line) c.line({x0, y}, {x1, y}, e.color, e.line_width, e.dashed ? Dash{7, 4} : Dash{});
    c.marker({(x0 + x1) / 2, y}, e.marker, e.marker_size, e.color);
    c.text(x1 + 8, y, e.name, colors::kText, s, Align::kLeft, VAlign::kMiddle);
  }
}

}  // namespace

Image render_line_chart(const LineChart& chart) {
  if (chart.width < 200 || chart.height < 150) throw Error("plot: a line chart needs at least 200 x 150 pixels");
  const int s = std::max(1, chart.text_scale);
  double xmin = kInf, xmax = -kInf, ymin = kInf, ymax = -kInf;
  const Axis probe_x{chart.x_scale, 1, 2}, probe_y{chart.y_scale, 1, 2};
  for (const Series& ser : chart.series) {
    if (ser.x.size() != ser.y.size())
      throw Error("plot: series '" + ser.name + "' has " + std::to_string(ser.x.size()) + " x values but " +
                  std::to_string(ser.y.size()) + " y values");
    for (size_t i = 0; i < ser.x.size(); ++i)
      if (probe_x.plottable(ser.x[i]) && probe_y.plottable(ser.y[i])) {
        xmin = std::min(xmin, ser.x[i]), xmax = std::max(xmax, ser.x[i]);
        ymin = std::min(ymin, ser.y[i]), ymax = std::max(ymax, ser.y[i]);
      }
  }
  const bool has_data = xmin <= xmax;
  for (const HRule& r : chart.rules)
    if (has_data && probe_y.plottable(r.y)) ymin = std::min(ymin, r.y), ymax = std::max(ymax, r.y);

  Canvas c(chart.width, chart.height);
  const int top = draw_title(c, chart.title, chart.subtitle, s) + 6;
  // Ticks depend on the plot size only through their count: about one per 90 px (x) / 60 px (y).
  const int x_ticks_max = std::max(2, (chart.width - 160) / 90), y_ticks_max = std::max(2, (chart.height - top - 80) / 60);
  const Axis ax = make_axis(chart.x_scale, chart.x_min, chart.x_max, xmin, xmax, false, x_ticks_max, "x");
  const Axis ay = make_axis(chart.y_scale, chart.y_min, chart.y_max, ymin, ymax, chart.y_include_zero, y_ticks_max, "y");
  const std::vector<Tick> xt = axis_ticks(ax, x_ticks_max), yt = axis_ticks(ay, y_ticks_max);

  const int th = font::text_height(s);
  Rect plot;
  plot.x0 = 14 + (chart.y_label.empty() ? 0 : th + 14) + max_label_width(yt, s) + 10;
  plot.x1 = chart.width - 24 - std::max(0, font::text_width(xt.empty() ? "" : xt.back().label, s) / 2 - 14);
  plot.y0 = top;
  plot.y1 = chart.height - 12 - (chart.x_label.empty() ? 0 : th + 12) - (th + 12);
  if (plot.width() < 40 || plot.height() < 40) throw Error("plot: the line chart is too small for its labels");

  c.fill_rect(plot.x0, plot.y0, plot.x1, plot.y1, Rgb{252, 252, 252});
  draw_x_axis(c, plot, ax, xt, s, true);
  draw_y_axis(c, plot, ay, yt, s, true);
  if (!chart.x_label.empty()) c.text((plot.x0 + plot.x1) / 2.0, chart.height - 12, chart.x_label, colors::kText, s, Align::kCenter, VAlign::kBottom);
  if (!chart.y_label.empty()) c.text_vertical(14 + th / 2.0, (plot.y0 + plot.y1) / 2.0, chart.y_label, colors::kText, s);

  // Pixel polylines of every series, broken at unplottable points.
  std::vector<std::vector<Point>> lines;       // for the legend placement
  std::vector<std::vector<std::vector<Point>>> runs(chart.series.size());
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& ser = chart.series[k];
    std::vector<Point> run;
    for (size_t i = 0; i <= ser.x.size(); ++i) {
      const bool ok = i < ser.x.size() && ax.plottable(ser.x[i]) && ay.plottable(ser.y[i]);
      if (ok) run.push_back({axis_x(ax, plot, ser.x[i]), axis_y(ay, plot, ser.y[i])});
      if (!ok && !run.empty()) lines.push_back(run), runs[k].push_back(std::move(run)), run.clear();
    }
  }

  c.set_clip(plot.x0, plot.y0, plot.x1, plot.y1);
  for (const HRule& r : chart.rules) {
    if (!ay.plottable(r.y)) continue;
    const double y = std::floor(axis_y(ay, plot, r.y)) + 0.5;
    c.line({plot.x0 + 0.5, y}, {plot.x1 - 0.5, y}, Rgb{120, 120, 120}, 1.5, Dash{3, 4});
    if (!r.label.empty()) c.text(plot.x1 - 8, y - 5, r.label, Rgb{100, 100, 100}, s, Align::kRight, VAlign::kBottom);
  }
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& ser = chart.series[k];
    for (const auto& run : runs[k])
      if (ser.line) c.polyline(run, ser.color, ser.line_width, ser.dashed ? Dash{9, 6} : Dash{});
  }
  if (!has_data) c.text((plot.x0 + plot.x1) / 2.0, (plot.y0 + plot.y1) / 2.0, "no data", colors::kAxis, s, Align::kCenter, VAlign::kMiddle);
  c.reset_clip();
  c.rect(plot.x0, plot.y0, plot.x1, plot.y1, colors::kAxis);
  // Markers are not clipped, so points on the frame show whole; points outside it do not show.
  for (size_t k = 0; k < chart.series.size(); ++k)
    for (const auto& run : runs[k])
      for (const Point& p : run) {
        if (p.x < plot.x0 || p.x > plot.x1 || p.y < plot.y0 || p.y > plot.y1) continue;
        // A lone point of a line series without markers still shows, as a dot.
        const Marker m = chart.series[k].marker != Marker::kNone ? chart.series[k].marker
                         : run.size() == 1                        ? Marker::kCircle
                                                                  : Marker::kNone;
        c.marker(p, m, chart.series[k].marker_size, chart.series[k].color);
      }
  if (chart.legend) draw_legend(c, plot, chart, lines);
  return c.image();
}

}  // namespace nsa::plot
