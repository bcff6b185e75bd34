#include "plot/matrix_image.h"

#include <algorithm>
#include <cmath>

#include "nsa/error.h"
#include "plot/axis.h"
#include "plot/font.h"
#include "plot/frame.h"

namespace nsa::plot {
namespace {

// Pixels of one side: n cells into at most `max` pixels, and the cell range of pixel p.
int side_pixels(int n, int max) { return n <= max ? n * std::max(1, max / n) : max; }
int cell_begin(int p, int n, int pixels) { return static_cast<int>(static_cast<long long>(p) * n / pixels); }
int cell_end(int p, int n, int pixels) {
  return std::max(cell_begin(p, n, pixels) + 1, static_cast<int>((static_cast<long long>(p + 1) * n + pixels - 1) / pixels));
}

}  // namespace

Image render_matrix_image(const MatrixImage& m) {
  if (m.rows < 1 || m.cols < 1) throw Error("plot: a matrix image needs at least one row and one column");
  if (m.values.size() != static_cast<size_t>(m.rows) * static_cast<size_t>(m.cols))
    throw Error("plot: matrix values hold " + std::to_string(m.values.size()) + " entries, expected rows x cols = " +
                std::to_string(static_cast<long long>(m.rows) * m.cols));
  if (m.max_width < 1 || m.max_height < 1) throw Error("plot: matrix image max_width and max_height must be >= 1");
  double lo = m.lo, hi = m.hi;
  if (std::isnan(lo) || std::isnan(hi)) {
    double mn = INFINITY, mx = -INFINITY;
    for (const float v : m.values)
      if (std::isfinite(v)) mn = std::min<double>(mn, v), mx = std::max<double>(mx, v);
    if (!(mn <= mx)) mn = 0, mx = 1;
    if (std::isnan(lo)) lo = mn;
    if (std::isnan(hi)) hi = mx;
    if (hi <= lo) hi = lo + 1;  // constant matrix: every cell at the low end
  }
  if (!(hi > lo)) throw Error("plot: matrix image color range needs hi > lo");
  const int s = std::max(1, m.text_scale), th = font::text_height(s);

  const int pw = side_pixels(m.cols, m.max_width), ph = side_pixels(m.rows, m.max_height);
  const Axis ax{Scale::kLinear, 0, static_cast<double>(m.cols)}, ay{Scale::kLinear, 0, static_cast<double>(m.rows)};
  auto integer_ticks = [](const Axis& a, int n) {
    std::vector<Tick> t;
    for (Tick& k : axis_ticks(a, n))
      if (k.value == std::floor(k.value)) t.push_back(std::move(k));
    return t;
  };
  const std::vector<Tick> xt = integer_ticks(ax, std::max(2, pw / 80)), yt = integer_ticks(ay, std::max(2, ph / 50));
  const std::vector<Tick> bar_ticks = axis_ticks({Scale::kLinear, lo, hi}, 5);

  const int left = 14 + (m.y_label.empty() ? 0 : th + 14) + max_label_width(yt, s) + 12;
  const int bar_w = 22;
  const int right = 24 + (m.colorbar ? bar_w + 8 + max_label_width(bar_ticks, s) + (m.colorbar_label.empty() ? 0 : th + 16) : 0) + 10;
  const int title_h = (m.title.empty() ? 0 : font::text_height(s + 1) + 8) + (m.subtitle.empty() ? 0 : th + 8) + 12 + 10;
  const int bottom = 12 + th + 12 + (m.x_label.empty() ? 0 : th + 12);
  const int bar_h = m.colorbar ? std::max(ph, 5 * (th + 8)) : ph;
  const int width = std::max(left + pw + right, font::text_width(m.title, s + 1) + 40);
  const int height = title_h + std::max(ph, bar_h) + bottom;

  Canvas c(width, height);
  const int top = draw_title(c, m.title, m.subtitle, s) + 10;
  const Rect area{left, top, left + pw, top + ph};
  for (int py = 0; py < ph; ++py) {
    const int r0 = cell_begin(py, m.rows, ph), r1 = std::min(m.rows, cell_end(py, m.rows, ph));
    for (int px = 0; px < pw; ++px) {
      const int c0 = cell_begin(px, m.cols, pw), c1 = std::min(m.cols, cell_end(px, m.cols, pw));
      double acc = m.reduce == Reduce::kMax ? -INFINITY : 0.0;
      int n = 0;
      for (int r = r0; r < r1; ++r)
        for (int k = c0; k < c1; ++k) {
          const float v = m.values[static_cast<size_t>(r) * m.cols + k];
          if (!std::isfinite(v)) continue;
          acc = m.reduce == Reduce::kMax ? std::max<double>(acc, v) : acc + v;
          ++n;
        }
      const Rgb color = n == 0 ? colors::kMissing
                               : m.colormap(std::clamp(((m.reduce == Reduce::kMax ? acc : acc / n) - lo) / (hi - lo), 0.0, 1.0));
      c.blend(area.x0 + px, area.y0 + py, color, 1.0);
    }
  }
  c.rect(area.x0 - 1, area.y0 - 1, area.x1 + 1, area.y1 + 1, colors::kAxis);
  // Index ticks at cell boundaries: tick v sits at the left / top edge of cell v.
  for (const Tick& t : xt) {
    const double x = std::floor(area.x0 + t.value / m.cols * pw) + 0.5;
    c.line({x, area.y1 + 1.5}, {x, area.y1 + 5.5}, colors::kAxis);
    c.text(x, area.y1 + 9, t.label, colors::kText, s, Align::kCenter);
  }
  for (const Tick& t : yt) {
    const double y = std::floor(area.y0 + t.value / m.rows * ph) + 0.5;
    c.line({area.x0 - 5.5, y}, {area.x0 - 1.5, y}, colors::kAxis);
    c.text(area.x0 - 9, y, t.label, colors::kText, s, Align::kRight, VAlign::kMiddle);
  }
  if (!m.x_label.empty()) c.text((area.x0 + area.x1) / 2.0, area.y1 + 9 + th + 12, m.x_label, colors::kText, s, Align::kCenter);
  if (!m.y_label.empty()) c.text_vertical(14 + th / 2.0, (area.y0 + area.y1) / 2.0, m.y_label, colors::kText, s);
  if (m.colorbar) {
    const Rect bar{area.x1 + 24, area.y0, area.x1 + 24 + bar_w, area.y0 + bar_h};
    draw_colorbar(c, bar, m.colormap, lo, hi, bar_ticks, s);
    if (!m.colorbar_label.empty())
      c.text_vertical(bar.x1 + 8 + max_label_width(bar_ticks, s) + 12 + th / 2.0, (bar.y0 + bar.y1) / 2.0,
                      m.colorbar_label, colors::kText, s);
  }
  return c.image();
}

}  // namespace nsa::plot
