// Canvas primitives and the built-in font: exact pixels where drawing snaps to pixels,
// coverage where it is anti-aliased, nothing outside the clip.
#include <gtest/gtest.h>

#include <set>
#include <string_view>

#include "plot/canvas.h"
#include "plot/font.h"
#include "plot/frame.h"

namespace nsa::plot {
namespace {

constexpr Rgb kRed{255, 0, 0}, kWhite{255, 255, 255};

int count(const Image& img, Rgb c) {
  int n = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) n += img.at(x, y) == c;
  return n;
}

// Bounding box of the pixels that are not white: {x0, y0, x1, y1} (exclusive ends).
std::array<int, 4> ink_box(const Image& img) {
  std::array<int, 4> b{img.width, img.height, -1, -1};
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (!(img.at(x, y) == kWhite)) b = {std::min(b[0], x), std::min(b[1], y), std::max(b[2], x + 1), std::max(b[3], y + 1)};
  return b;
}

TEST(Canvas, FillRectAndOutline) {
  Canvas c(20, 10);
  c.fill_rect(2, 3, 6, 5, kRed);
  EXPECT_EQ(count(c.image(), kRed), 8);
  EXPECT_EQ(c.image().at(2, 3), kRed);
  EXPECT_EQ(c.image().at(5, 4), kRed);
  EXPECT_EQ(c.image().at(6, 4), kWhite);
  Canvas d(20, 10);
  d.rect(0, 0, 20, 10, kRed);
  EXPECT_EQ(count(d.image(), kRed), 2 * 20 + 2 * 8);
  EXPECT_EQ(d.image().at(10, 5), kWhite);
}

TEST(Canvas, LinesCoverTheirWidth) {
  Canvas c(40, 20);
  c.line({5, 10.5}, {35, 10.5}, kRed, 1);  // through pixel centres of row 10
  for (int x = 6; x < 35; ++x) EXPECT_EQ(c.image().at(x, 10), kRed) << x;
  EXPECT_EQ(c.image().at(20, 9), kWhite);
  EXPECT_EQ(c.image().at(20, 11), kWhite);
  Canvas t(40, 20);
  t.line({5, 10}, {35, 10}, kRed, 4);  // rows 8..11 fully covered
  for (int y = 8; y < 12; ++y) EXPECT_EQ(t.image().at(20, y), kRed) << y;
  EXPECT_EQ(t.image().at(20, 6), kWhite);
  EXPECT_EQ(t.image().at(20, 13), kWhite);
  // A diagonal: anti-aliased, so partly covered pixels are a blend (neither white nor red).
  Canvas a(40, 40);
  a.line({2, 3}, {37, 30}, kRed, 2);
  const Image& img = a.image();
  int blended = 0;
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 40; ++x) {
      const Rgb p = img.at(x, y);
      EXPECT_EQ(p.r, 255);  // red over white keeps r = 255
      blended += !(p == kRed) && !(p == kWhite);
    }
  EXPECT_GT(blended, 20);
  EXPECT_GT(count(img, kRed), 30);
}

TEST(Canvas, DashedLineHasGaps) {
  Canvas c(100, 10);
  c.line({0, 5.5}, {100, 5.5}, kRed, 1, Dash{6, 4});
  int runs = 0;
  for (int x = 0; x < 100; ++x) runs += c.image().at(x, 5) == kRed && (x == 0 || !(c.image().at(x - 1, 5) == kRed));
  EXPECT_EQ(runs, 10);
  EXPECT_EQ(c.image().at(3, 5), kRed);
  EXPECT_EQ(c.image().at(8, 5), kWhite);
}

TEST(Canvas, PolylineJoinsDoNotDarken) {
  // Two segments overlapping along their length blend each pixel once.
  Canvas c(40, 20);
  const Rgb blue{0, 0, 255};
  c.polyline({{5, 10}, {35, 10.3}, {5, 10}}, blue, 3);
  Canvas d(40, 20);
  d.polyline({{5, 10}, {35, 10.3}}, blue, 3);
  EXPECT_EQ(c.image().pixels, d.image().pixels);
}

TEST(Canvas, ClipDropsOutsideDrawing) {
  Canvas c(30, 30);
  c.set_clip(10, 10, 20, 20);
  c.fill_rect(0, 0, 30, 30, kRed);
  c.line({0, 0}, {30, 30}, kRed, 3);
  EXPECT_EQ(count(c.image(), kRed), 100);
  EXPECT_EQ(ink_box(c.image()), (std::array<int, 4>{10, 10, 20, 20}));
  c.reset_clip();
  c.blend(0, 0, kRed, 1);
  EXPECT_EQ(c.image().at(0, 0), kRed);
  c.blend(-1, 40, kRed, 1);  // off the image: ignored
}

TEST(Canvas, MarkersAreCentred) {
  for (const Marker m : {Marker::kCircle, Marker::kSquare, Marker::kDiamond, Marker::kTriangle, Marker::kCross}) {
    Canvas c(41, 41);
    c.marker({20.5, 20.5}, m, 10, kRed);
    const auto b = ink_box(c.image());
    EXPECT_NEAR((b[0] + b[2]) / 2.0, 20.5, 1.5) << static_cast<int>(m);
    EXPECT_NEAR((b[1] + b[3]) / 2.0, 20.5, 2.5) << static_cast<int>(m);
    EXPECT_LE(b[2] - b[0], 18);
    EXPECT_GE(b[2] - b[0], 8);
    EXPECT_EQ(c.image().at(20, 20), kRed) << static_cast<int>(m);
  }
  Canvas none(10, 10);
  none.marker({5, 5}, Marker::kNone, 8, kRed);
  EXPECT_EQ(count(none.image(), kWhite), 100);
}

TEST(Font, EveryGlyphIsDistinctAndInked) {
  std::set<std::array<std::uint8_t, 5>> seen;
  for (int ch = 33; ch <= 126; ++ch) {
    std::array<std::uint8_t, 5> g{};
    int ink = 0;
    for (int c = 0; c < 5; ++c) g[c] = font::glyph_column(static_cast<char>(ch), c), ink += g[c] != 0;
    EXPECT_GT(ink, 0) << static_cast<char>(ch);
    const bool descender = std::string_view("gjpqy,;").find(static_cast<char>(ch)) != std::string_view::npos;
    int row7 = 0;
    for (int c = 0; c < 5; ++c) row7 += (g[c] & 0x80) != 0;
    EXPECT_EQ(row7 > 0, descender) << "descender row of '" << static_cast<char>(ch) << "'";
    EXPECT_TRUE(seen.insert(g).second) << "glyph of '" << static_cast<char>(ch) << "' repeats another";
  }
  for (int c = 0; c < 5; ++c) EXPECT_EQ(font::glyph_column(' ', c), 0);
  EXPECT_EQ(font::glyph_column('\x01', 2), font::glyph_column('?', 2));  // unknown bytes show as '?'
}

TEST(Canvas, TextBoxAndAnchors) {
  Canvas c(200, 50);
  c.text(10, 5, "H1", kRed, 2);
  const auto b = ink_box(c.image());
  // 'H' spans all 5 columns and 7 rows: the ink box starts at the anchor.
  EXPECT_EQ(b[0], 10);
  EXPECT_EQ(b[1], 5);
  EXPECT_EQ(b[3], 5 + 14);
  EXPECT_LE(b[2], 10 + font::text_width("H1", 2));
  EXPECT_EQ(font::text_width("H1", 2), (2 * 6 - 1) * 2);
  Canvas g(200, 50);
  g.text(10, 5, "gy", kRed, 2);  // descenders hang one (scaled) row below the box
  EXPECT_EQ(ink_box(g.image())[3], 5 + 14 + 2);
  Canvas r(200, 50);
  r.text(150, 40, "HH", kRed, 1, Align::kRight, VAlign::kBottom);
  const auto br = ink_box(r.image());
  EXPECT_EQ(br[2], 150);
  EXPECT_EQ(br[3], 40);
  Canvas m(200, 50);
  m.text(100, 25, "HHH", kRed, 3, Align::kCenter, VAlign::kMiddle);
  const auto bm = ink_box(m.image());
  EXPECT_NEAR((bm[0] + bm[2]) / 2.0, 100, 1.5);
  EXPECT_NEAR((bm[1] + bm[3]) / 2.0, 25, 1.5);
}

TEST(Font, FitTextCutsWithEllipsis) {
  EXPECT_EQ(fit_text("short", 1000, 2), "short");
  const std::string cut = fit_text(std::string(100, 'x'), 200, 2);
  EXPECT_LE(font::text_width(cut, 2), 200);
  EXPECT_GT(font::text_width(cut, 2), 200 - 3 * 12);
  EXPECT_EQ(cut.substr(cut.size() - 3), "...");
}

TEST(Canvas, VerticalTextIsTurned) {
  Canvas c(60, 200);
  c.text_vertical(30, 100, "HELLO", kRed, 2);
  const auto b = ink_box(c.image());
  EXPECT_EQ(b[2] - b[0], font::text_height(2));  // the glyph height runs across
  EXPECT_GE(b[3] - b[1], font::text_width("HELLO", 2) - 4);
  EXPECT_NEAR((b[1] + b[3]) / 2.0, 100, 2);
  // Read bottom to top: the first letter 'H' is at the bottom; its first column (bit 0..6
  // all set) becomes the bottom row of the ink box.
  int row_ink = 0;
  for (int x = b[0]; x < b[2]; ++x) row_ink += c.image().at(x, b[3] - 1) == kRed;
  EXPECT_EQ(row_ink, font::text_height(2));
}

}  // namespace
}  // namespace nsa::plot
