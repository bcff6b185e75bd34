// Canvas: drawing on an Image in pixel coordinates (x right, y down; pixel (i, j) covers
// [i, i+1) x [j, j+1), so a 1-pixel line through pixel centres uses x + 0.5). Lines,
// polygons and markers are anti-aliased from the exact distance or a 4x4 supersample;
// rectangles and text snap to whole pixels. Drawing outside the clip rectangle (the whole
// image unless set_clip) is dropped.
#pragma once

#include <string_view>
#include <vector>

#include "plot/color.h"
#include "plot/image.h"

namespace nsa::plot {

struct Point {
  double x = 0, y = 0;
};

enum class Marker { kNone, kCircle, kSquare, kDiamond, kTriangle, kCross };
enum class Align { kLeft, kCenter, kRight };     // horizontal anchor of text
enum class VAlign { kTop, kMiddle, kBottom };    // vertical anchor of text

// On/off lengths in pixels of a dashed stroke; {0, 0}: solid.
struct Dash {
  double on = 0, off = 0;
  bool solid() const { return on <= 0 || off <= 0; }
};

class Canvas {
 public:
  Canvas(int width, int height, Rgb background = colors::kWhite) : image_(width, height, background) {}

  int width() const { return image_.width; }
  int height() const { return image_.height; }
  const Image& image() const { return image_; }

  // Drawing is limited to [x0, x1) x [y0, y1) (clamped to the image) until reset_clip.
  void set_clip(int x0, int y0, int x1, int y1);
  void reset_clip() { set_clip(0, 0, width(), height()); }

  void fill(Rgb color);
  // Blends `color` over pixel (x, y) with opacity `alpha` in [0, 1]; clipped.
  void blend(int x, int y, Rgb color, double alpha);
  // The pixels [x0, x1) x [y0, y1), rounded to whole pixels.
  void fill_rect(double x0, double y0, double x1, double y1, Rgb color);
  // A `width`-pixel outline inside [x0, x1) x [y0, y1).
  void rect(double x0, double y0, double x1, double y1, Rgb color, int width = 1);

  // Anti-aliased strokes with round caps and joins, `width` pixels wide, dashed if `dash`
  // says so (the pattern runs on across the vertices of a polyline).
  void line(Point a, Point b, Rgb color, double width = 1, Dash dash = {});
  void polyline(const std::vector<Point>& points, Rgb color, double width = 1, Dash dash = {});
  // Anti-aliased filled polygon (even-odd rule).
  void fill_polygon(const std::vector<Point>& points, Rgb color);
  // A marker of diameter `size` centred on p: filled, with a white rim so it stands out
  // on a line of the same color (kCross: two strokes, no rim).
  void marker(Point p, Marker kind, double size, Rgb color);

  // Text in the built-in font (font.h) at integer `scale`, anchored at (x, y).
  void text(double x, double y, std::string_view s, Rgb color, int scale = 1, Align align = Align::kLeft,
            VAlign valign = VAlign::kTop);
  // Text turned 90 degrees counter-clockwise (read from bottom to top), centred on (x, y):
  // for the titles of vertical axes.
  void text_vertical(double x, double y, std::string_view s, Rgb color, int scale = 1);

 private:
  // Coverage-weighted stroke of segments (pairs of points), each pixel blended once with
  // its largest coverage, so joins and overlaps do not darken.
  void stroke(const std::vector<Point>& segments, Rgb color, double width);

  Image image_;
  int clip_x0_ = 0, clip_y0_ = 0, clip_x1_ = image_.width, clip_y1_ = image_.height;
};

}  // namespace nsa::plot
