#include "plot/canvas.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "plot/font.h"

namespace nsa::plot {
namespace {

// Distance from p to the segment [a, b].
double segment_distance(Point p, Point a, Point b) {
  const double dx = b.x - a.x, dy = b.y - a.y;
  const double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((p.x - a.x) * dx + (p.y - a.y) * dy) / len2 : 0.0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return std::sqrt(ex * ex + ey * ey);
}

bool finite(Point p) { return std::isfinite(p.x) && std::isfinite(p.y); }

// Even-odd point-in-polygon test.
bool inside(const std::vector<Point>& poly, double x, double y) {
  bool in = false;
  for (size_t i = 0, j = poly.size() - 1; i < poly.size(); j = i++) {
    const Point& a = poly[i];
    const Point& b = poly[j];
    if ((a.y > y) != (b.y > y) && x < (b.x - a.x) * (y - a.y) / (b.y - a.y) + a.x) in = !in;
  }
  return in;
}

}  // namespace

void Canvas::set_clip(int x0, int y0, int x1, int y1) {
  clip_x0_ = std::clamp(x0, 0, width());
  clip_y0_ = std::clamp(y0, 0, height());
  clip_x1_ = std::clamp(x1, clip_x0_, width());
  clip_y1_ = std::clamp(y1, clip_y0_, height());
}

void Canvas::fill(Rgb color) { fill_rect(0, 0, width(), height(), color); }

void Canvas::blend(int x, int y, Rgb color, double alpha) {
  if (x < clip_x0_ || y < clip_y0_ || x >= clip_x1_ || y >= clip_y1_ || !(alpha > 0)) return;
  if (alpha >= 1) return image_.set(x, y, color);
  image_.set(x, y, mix(image_.at(x, y), color, alpha));
}

void Canvas::fill_rect(double x0, double y0, double x1, double y1, Rgb color) {
  if (!(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1))) return;
  const int ix0 = std::max<int>(clip_x0_, static_cast<int>(std::lround(std::max(std::min(x0, x1), -1.0))));
  const int ix1 = std::min<int>(clip_x1_, static_cast<int>(std::lround(std::min(std::max(x0, x1), 1e6))));
  const int iy0 = std::max<int>(clip_y0_, static_cast<int>(std::lround(std::max(std::min(y0, y1), -1.0))));
  const int iy1 = std::min<int>(clip_y1_, static_cast<int>(std::lround(std::min(std::max(y0, y1), 1e6))));
  for (int y = iy0; y < iy1; ++y)
    for (int x = ix0; x < ix1; ++x) image_.set(x, y, color);
}

void Canvas::rect(double x0, double y0, double x1, double y1, Rgb color, int w) {
  fill_rect(x0, y0, x1, y0 + w, color);
  fill_rect(x0, y1 - w, x1, y1, color);
  fill_rect(x0, y0, x0 + w, y1, color);
  fill_rect(x1 - w, y0, x1, y1, color);
}

void Canvas::stroke(const std::vector<Point>& seg, Rgb color, double width) {
  if (seg.empty()) return;
  const double hw = std::max(width, 0.5) / 2;
  double bx0 = 1e300, by0 = 1e300, bx1 = -1e300, by1 = -1e300;
  for (const Point& p : seg) bx0 = std::min(bx0, p.x), by0 = std::min(by0, p.y), bx1 = std::max(bx1, p.x), by1 = std::max(by1, p.y);
  const int x0 = std::max(clip_x0_, static_cast<int>(std::floor(std::max(bx0 - hw - 1, -1.0))));
  const int y0 = std::max(clip_y0_, static_cast<int>(std::floor(std::max(by0 - hw - 1, -1.0))));
  const int x1 = std::min(clip_x1_, static_cast<int>(std::ceil(std::min(bx1 + hw + 1, 1e6))));
  const int y1 = std::min(clip_y1_, static_cast<int>(std::ceil(std::min(by1 + hw + 1, 1e6))));
  if (x0 >= x1 || y0 >= y1) return;
  const int w = x1 - x0;
  std::vector<float> cover(static_cast<size_t>(w) * (y1 - y0), 0.0f);
  for (size_t s = 0; s + 1 < seg.size(); s += 2) {
    const Point a = seg[s], b = seg[s + 1];
    const int sx0 = std::max(x0, static_cast<int>(std::floor(std::min(a.x, b.x) - hw - 1)));
    const int sx1 = std::min(x1, static_cast<int>(std::ceil(std::max(a.x, b.x) + hw + 1)));
    const int sy0 = std::max(y0, static_cast<int>(std::floor(std::min(a.y, b.y) - hw - 1)));
    const int sy1 = std::min(y1, static_cast<int>(std::ceil(std::max(a.y, b.y) + hw + 1)));
    for (int y = sy0; y < sy1; ++y)
      for (int x = sx0; x < sx1; ++x) {
        const double c = std::clamp(hw + 0.5 - segment_distance({x + 0.5, y + 0.5}, a, b), 0.0, 1.0);
        float& dst = cover[static_cast<size_t>(y - y0) * w + (x - x0)];
        dst = std::max(dst, static_cast<float>(c));
      }
  }
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) blend(x, y, color, cover[static_cast<size_t>(y - y0) * w + (x - x0)]);
}

void Canvas::line(Point a, Point b, Rgb color, double width, Dash dash) { polyline({a, b}, color, width, dash); }

void Canvas::polyline(const std::vector<Point>& pts, Rgb color, double width, Dash dash) {
  std::vector<Point> seg;
  if (pts.size() == 1 && finite(pts[0])) seg = {pts[0], pts[0]};  // a dot
  double phase = 0;  // distance into the current dash period
  for (size_t i = 0; i + 1 < pts.size(); ++i) {
    const Point a = pts[i], b = pts[i + 1];
    if (!finite(a) || !finite(b)) continue;
    if (dash.solid()) {
      seg.push_back(a), seg.push_back(b);
      continue;
    }
    const double len = std::hypot(b.x - a.x, b.y - a.y);
    const double period = dash.on + dash.off;
    double t = 0;
    while (t < len) {
      const bool on = phase < dash.on;
      const double step = std::min(len - t, on ? dash.on - phase : period - phase);
      if (on) {
        const double t0 = t / len, t1 = (t + step) / len;
        seg.push_back({a.x + (b.x - a.x) * t0, a.y + (b.y - a.y) * t0});
        seg.push_back({a.x + (b.x - a.x) * t1, a.y + (b.y - a.y) * t1});
      }
      t += step;
      phase = std::fmod(phase + step, period);
    }
  }
  stroke(seg, color, width);
}

void Canvas::fill_polygon(const std::vector<Point>& poly, Rgb color) {
  if (poly.size() < 3) return;
  for (const Point& p : poly)
    if (!finite(p)) return;
  double bx0 = 1e300, by0 = 1e300, bx1 = -1e300, by1 = -1e300;
  for (const Point& p : poly) bx0 = std::min(bx0, p.x), by0 = std::min(by0, p.y), bx1 = std::max(bx1, p.x), by1 = std::max(by1, p.y);
  const int x0 = std::max(clip_x0_, static_cast<int>(std::floor(std::max(bx0, -1.0))));
  const int y0 = std::max(clip_y0_, static_cast<int>(std::floor(std::max(by0, -1.0))));
  const int x1 = std::min(clip_x1_, static_cast<int>(std::ceil(std::min(bx1, 1e6))));
  const int y1 = std::min(clip_y1_, static_cast<int>(std::ceil(std::min(by1, 1e6))));
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) {
      int hits = 0;
      for (int sy = 0; sy < 4; ++sy)
        for (int sx = 0; sx < 4; ++sx) hits += inside(poly, x + (sx + 0.5) / 4, y + (sy + 0.5) / 4);
      blend(x, y, color, hits / 16.0);
    }
}

void Canvas::marker(Point p, Marker kind, double size, Rgb color) {
  if (!finite(p) || kind == Marker::kNone) return;
  const double r = size / 2;
  auto shape = [&](double rr) -> std::vector<Point> {
    switch (kind) {
      case Marker::kSquare: return {{p.x - rr, p.y - rr}, {p.x + rr, p.y - rr}, {p.x + rr, p.y + rr}, {p.x - rr, p.y + rr}};
      case Marker::kDiamond: rr *= 1.3; return {{p.x, p.y - rr}, {p.x + rr, p.y}, {p.x, p.y + rr}, {p.x - rr, p.y}};
      case Marker::kTriangle: rr *= 1.3; return {{p.x, p.y - rr}, {p.x + rr * 0.94, p.y + rr * 0.6}, {p.x - rr * 0.94, p.y + rr * 0.6}};
      default: {  // circle as a 24-gon
        std::vector<Point> c;
        for (int i = 0; i < 24; ++i) c.push_back({p.x + rr * std::cos(i * std::numbers::pi / 12), p.y + rr * std::sin(i * std::numbers::pi / 12)});
        return c;
      }
    }
  };
  if (kind == Marker::kCross) {
    const double w = std::max(1.5, size / 4);
    stroke({{p.x - r, p.y - r}, {p.x + r, p.y + r}, {p.x - r, p.y + r}, {p.x + r, p.y - r}}, color, w);
    return;
  }
  fill_polygon(shape(r + 1.5), colors::kWhite);
  fill_polygon(shape(r), color);
}

void Canvas::text(double x, double y, std::string_view s, Rgb color, int scale, Align align, VAlign valign) {
  scale = std::max(scale, 1);
  const int w = font::text_width(s, scale), h = font::text_height(scale);
  int px = static_cast<int>(std::lround(x)), py = static_cast<int>(std::lround(y));
  if (align == Align::kCenter) px -= w / 2;
  if (align == Align::kRight) px -= w;
  if (valign == VAlign::kMiddle) py -= h / 2;
  if (valign == VAlign::kBottom) py -= h;
  for (size_t i = 0; i < s.size(); ++i)
    for (int c = 0; c < font::kGlyphWidth; ++c) {
      const std::uint8_t bits = font::glyph_column(s[i], c);
      for (int r = 0; r < font::kGlyphHeight + font::kDescent; ++r)
        if (bits >> r & 1) {
          const int gx = px + (static_cast<int>(i) * font::kAdvance + c) * scale, gy = py + r * scale;
          for (int dy = 0; dy < scale; ++dy)
            for (int dx = 0; dx < scale; ++dx) blend(gx + dx, gy + dy, color, 1.0);
        }
    }
}

void Canvas::text_vertical(double x, double y, std::string_view s, Rgb color, int scale) {
  scale = std::max(scale, 1);
  const int w = font::text_width(s, scale), h = font::text_height(scale);
  // Text coordinates (u along the text, v down the glyphs) map to (x0 + v, y0 - u).
  const int x0 = static_cast<int>(std::lround(x)) - h / 2, y0 = static_cast<int>(std::lround(y)) + w / 2;
  for (size_t i = 0; i < s.size(); ++i)
    for (int c = 0; c < font::kGlyphWidth; ++c) {
      const std::uint8_t bits = font::glyph_column(s[i], c);
      for (int r = 0; r < font::kGlyphHeight + font::kDescent; ++r)
        if (bits >> r & 1) {
          const int u = (static_cast<int>(i) * font::kAdvance + c) * scale, v = r * scale;
          for (int du = 0; du < scale; ++du)
            for (int dv = 0; dv < scale; ++dv) blend(x0 + v + dv, y0 - u - du - 1, color, 1.0);
        }
    }
}

}  // namespace nsa::plot
