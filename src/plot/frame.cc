#include "plot/frame.h"

#include <algorithm>
#include <cmath>

#include "plot/font.h"

namespace nsa::plot {

std::string fit_text(const std::string& s, int max_width, int scale) {
  if (font::text_width(s, scale) <= max_width) return s;
  const int chars = std::max(0, (max_width / scale + 1) / font::kAdvance - 3);
  return s.substr(0, static_cast<size_t>(chars)) + "...";
}

int draw_title(Canvas& c, const std::string& title, const std::string& subtitle, int scale) {
  int y = 12;
  if (!title.empty()) {
    c.text(c.width() / 2.0, y, fit_text(title, c.width() - 20, scale + 1), colors::kText, scale + 1, Align::kCenter);
    y += font::text_height(scale + 1) + 8;
  }
  if (!subtitle.empty()) {
    c.text(c.width() / 2.0, y, fit_text(subtitle, c.width() - 20, scale), Rgb{100, 100, 100}, scale, Align::kCenter);
    y += font::text_height(scale) + 8;
  }
  return y;
}

double axis_x(const Axis& a, const Rect& r, double v) { return r.x0 + 0.5 + a.fraction(v) * (r.width() - 1); }
double axis_y(const Axis& a, const Rect& r, double v) { return r.y1 - 0.5 - a.fraction(v) * (r.height() - 1); }

int max_label_width(const std::vector<Tick>& ticks, int scale) {
  int w = 0;
  for (const Tick& t : ticks) w = std::max(w, font::text_width(t.label, scale));
  return w;
}

void draw_x_axis(Canvas& c, const Rect& r, const Axis& a, const std::vector<Tick>& ticks, int scale, bool grid) {
  // Thin out the labels until neighbours are at least two glyphs apart.
  size_t every = 1;
  for (; every < ticks.size(); ++every) {
    bool ok = true;
    for (size_t i = every; i < ticks.size(); i += every) {
      const double gap = axis_x(a, r, ticks[i].value) - axis_x(a, r, ticks[i - every].value);
      const double need = (font::text_width(ticks[i].label, scale) + font::text_width(ticks[i - every].label, scale)) / 2.0 +
                          2 * font::kAdvance * scale;
      if (gap < need) ok = false;
    }
    if (ok) break;
  }
  for (size_t i = 0; i < ticks.size(); ++i) {
    const double x = std::floor(axis_x(a, r, ticks[i].value)) + 0.5;
    if (!std::isfinite(x)) continue;
    if (grid) c.line({x, r.y0 + 0.5}, {x, r.y1 - 0.5}, colors::kGrid);
    c.line({x, r.y1 + 0.5}, {x, r.y1 + 5.5}, colors::kAxis);
    if (i % every == 0) c.text(x, r.y1 + 9, ticks[i].label, colors::kText, scale, Align::kCenter);
  }
}

void draw_y_axis(Canvas& c, const Rect& r, const Axis& a, const std::vector<Tick>& ticks, int scale, bool grid) {
  for (const Tick& t : ticks) {
    const double y = std::floor(axis_y(a, r, t.value)) + 0.5;
    if (!std::isfinite(y)) continue;
    if (grid) c.line({r.x0 + 0.5, y}, {r.x1 - 0.5, y}, colors::kGrid);
    c.line({r.x0 - 5.5, y}, {r.x0 - 0.5, y}, colors::kAxis);
    c.text(r.x0 - 9, y, t.label, colors::kText, scale, Align::kRight, VAlign::kMiddle);
  }
}

void draw_colorbar(Canvas& c, const Rect& r, const std::function<Rgb(double)>& color, double lo, double hi,
                   const std::vector<Tick>& ticks, int scale) {
  for (int y = r.y0; y < r.y1; ++y) {
    const double t = r.height() > 1 ? static_cast<double>(r.y1 - 1 - y) / (r.height() - 1) : 0.5;
    c.fill_rect(r.x0, y, r.x1, y + 1, color(t));
  }
  c.rect(r.x0, r.y0, r.x1, r.y1, colors::kAxis);
  for (const Tick& t : ticks) {
    if (!(hi > lo)) break;
    const double y = std::floor(r.y1 - (t.value - lo) / (hi - lo) * r.height()) + 0.5;
    c.line({r.x1 + 0.5, y}, {r.x1 + 4.5, y}, colors::kAxis);
    c.text(r.x1 + 8, y, t.label, colors::kText, scale, Align::kLeft, VAlign::kMiddle);
  }
}

}  // namespace nsa::plot
