// Line charts, heatmaps and matrix images: they render at the expected size, draw their
// data in the data's colors, skip what cannot be shown, and reject inconsistent input.
#include <gtest/gtest.h>

#include <cmath>

#include "nsa/error.h"
#include "plot/heatmap.h"
#include "plot/line_chart.h"
#include "plot/matrix_image.h"

namespace nsa::plot {
namespace {

int count(const Image& img, Rgb c, int x0 = 0, int x1 = -1) {
  if (x1 < 0) x1 = img.width;
  int n = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = x0; x < x1; ++x) n += img.at(x, y) == c;
  return n;
}

// Columns holding at least one pixel of color c: first and last (-1 when none).
std::pair<int, int> column_span(const Image& img, Rgb c) {
  int first = -1, last = -1;
  for (int x = 0; x < img.width; ++x)
    if (count(img, c, x, x + 1) > 0) first = first < 0 ? x : first, last = x;
  return {first, last};
}

constexpr Rgb kSeries{200, 30, 160};  // in no other element of a chart

LineChart simple_chart() {
  LineChart c;
  c.width = 640, c.height = 400;
  c.title = "Title", c.x_label = "x", c.y_label = "y";
  Series s;
  s.name = "s", s.color = kSeries, s.x = {0, 1, 2, 3, 4}, s.y = {1, 3, 2, 5, 4};
  c.series.push_back(s);
  return c;
}

TEST(LineChart, DrawsSeriesAndText) {
  const Image img = render_line_chart(simple_chart());
  EXPECT_EQ(img.width, 640);
  EXPECT_EQ(img.height, 400);
  EXPECT_GT(count(img, kSeries), 200);
  EXPECT_GT(count(img, colors::kText), 100);  // title, labels, ticks
  LineChart untitled = simple_chart();
  untitled.title.clear();
  EXPECT_LT(count(render_line_chart(untitled), colors::kText), count(img, colors::kText));
}

TEST(LineChart, NanBreaksTheLine) {
  LineChart c = simple_chart();
  c.legend = false;
  c.series[0].y = {1, 1, NAN, 1, 1};
  const Image img = render_line_chart(c);
  const auto [first, last] = column_span(img, kSeries);
  ASSERT_GT(last - first, 100);
  const int mid = (first + last) / 2;  // x = 2: the NaN point, no line around it
  EXPECT_EQ(count(img, kSeries, mid - 20, mid + 21), 0);
  EXPECT_GT(count(img, kSeries, first, first + 20), 0);
  EXPECT_GT(count(img, kSeries, last - 20, last + 1), 0);
}

TEST(LineChart, LogAxesSkipNonPositive) {
  LineChart c = simple_chart();
  c.x_scale = Scale::kLog2;
  c.y_scale = Scale::kLog10;
  c.series[0].x = {-1, 0, 1024, 2048, 4096};
  c.series[0].y = {5, 5, 1, 10, 100};
  const Image img = render_line_chart(c);
  EXPECT_GT(count(img, kSeries), 100);
  c.y_min = -1;  // an explicit non-positive bound on a log axis is an error
  EXPECT_THROW(render_line_chart(c), Error);
}

TEST(LineChart, EdgeCases) {
  LineChart single = simple_chart();
  single.series[0].x = {3}, single.series[0].y = {7};
  EXPECT_GT(count(render_line_chart(single), kSeries), 20) << "a single point shows as a dot";

  LineChart flat = simple_chart();
  flat.series[0].y = {2, 2, 2, 2, 2};
  EXPECT_GT(count(render_line_chart(flat), kSeries), 200);

  LineChart empty = simple_chart();
  empty.series[0].x.clear(), empty.series[0].y.clear();
  const Image e = render_line_chart(empty);  // frame and "no data"
  EXPECT_EQ(e.width, 640);
  EXPECT_GT(count(e, colors::kAxis), 100);

  LineChart nan = simple_chart();
  nan.series[0].y = {NAN, NAN, INFINITY, NAN, NAN};
  EXPECT_NO_THROW(render_line_chart(nan));

  LineChart none;  // no series at all
  EXPECT_NO_THROW(render_line_chart(none));

  LineChart bad = simple_chart();
  bad.series[0].y.pop_back();
  EXPECT_THROW(render_line_chart(bad), Error);
  LineChart tiny = simple_chart();
  tiny.width = 50;
  EXPECT_THROW(render_line_chart(tiny), Error);
}

TEST(LineChart, ExplicitRangeClipsTheSeries) {
  LineChart c = simple_chart();
  c.legend = false;
  c.x_min = 0, c.x_max = 2;  // points 3 and 4 lie outside: the line stops at the frame
  const Image clipped = render_line_chart(c);
  c.x_max = 4;
  const Image full = render_line_chart(c);
  const auto a = column_span(clipped, kSeries), b = column_span(full, kSeries);
  EXPECT_LE(a.second, b.second + 1);
  EXPECT_GT(a.second - a.first, 300);  // two units spread over the whole width
}

TEST(LineChart, RulesAndDashedSeries) {
  LineChart c = simple_chart();
  c.series[0].dashed = true;
  c.series[0].marker = Marker::kSquare;
  c.rules.push_back({10, "ten"});  // extends the automatic y range to 10
  const Image img = render_line_chart(c);
  EXPECT_GT(count(img, kSeries), 100);
}

Heatmap sample_heatmap() {
  Heatmap h;
  h.rows = 2, h.cols = 3;
  h.values = {0.0, 0.5, 1.0, 0.25, NAN, 0.75};
  h.row_labels = {"a", "b"};
  h.col_labels = {"4k", "8k", "16k"};
  h.title = "needle", h.x_label = "context", h.y_label = "depth";
  h.cell_width = 60, h.cell_height = 40;
  return h;
}

TEST(Heatmap, CellsHaveTheirColors) {
  Heatmap h = sample_heatmap();
  h.show_values = false;
  const Image img = render_heatmap(h);
  EXPECT_GT(img.width, 3 * 60);
  EXPECT_GT(img.height, 2 * 40);
  for (const double v : {0.0, 0.25, 0.5, 0.75, 1.0})
    EXPECT_GE(count(img, red_yellow_green(v)), 58 * 38) << v;  // minus separators and frame
  EXPECT_GE(count(img, colors::kMissing), 58 * 38);  // minus separator and frame
}

TEST(Heatmap, ValuesArePrinted) {
  Heatmap h = sample_heatmap();
  h.show_values = false;
  const Image plain = render_heatmap(h);
  h.show_values = true;
  const Image numbered = render_heatmap(h);
  // The printed numbers take pixels away from the cell colors.
  EXPECT_LT(count(numbered, red_yellow_green(1.0)), count(plain, red_yellow_green(1.0)));
  EXPECT_LT(count(numbered, red_yellow_green(0.0)), count(plain, red_yellow_green(0.0)));
}

TEST(Heatmap, RejectsInconsistentInput) {
  Heatmap h = sample_heatmap();
  h.values.pop_back();
  EXPECT_THROW(render_heatmap(h), Error);
  h = sample_heatmap();
  h.row_labels = {"only one"};
  EXPECT_THROW(render_heatmap(h), Error);
  h = sample_heatmap();
  h.col_labels = {"1", "2"};
  EXPECT_THROW(render_heatmap(h), Error);
  h = sample_heatmap();
  h.hi = h.lo;
  EXPECT_THROW(render_heatmap(h), Error);
  EXPECT_THROW(render_heatmap(Heatmap{}), Error);
  Heatmap one;  // a single cell, no labels: fine
  one.rows = one.cols = 1, one.values = {0.5};
  EXPECT_NO_THROW(render_heatmap(one));
}

TEST(MatrixImage, UpscalesCellsToWholePixels) {
  MatrixImage m;
  m.rows = 3, m.cols = 4;
  m.values = {0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0};
  m.lo = 0, m.hi = 1;
  m.max_width = 300, m.max_height = 300;
  m.colorbar = false;
  const Image img = render_matrix_image(m);
  EXPECT_EQ(count(img, white_blue(1.0)), 4 * 75 * 100);  // 4 cells of 75 x 100 pixels
  EXPECT_EQ(count(img, white_blue(0.0)), 8 * 75 * 100);
}

TEST(MatrixImage, DownscalingKeepsLoneCellsWithMax) {
  MatrixImage m;
  m.rows = 1000, m.cols = 1500;
  m.values.assign(static_cast<size_t>(m.rows) * m.cols, 0.0f);
  m.values[static_cast<size_t>(500) * m.cols + 700] = 1.0f;
  m.max_width = 300, m.max_height = 200;
  m.colorbar = false;
  const Image img = render_matrix_image(m);
  EXPECT_LE(img.width, 300 + 200);
  EXPECT_EQ(count(img, white_blue(1.0)), 1);
  m.reduce = Reduce::kMean;
  EXPECT_EQ(count(render_matrix_image(m), white_blue(1.0)), 0);
}

TEST(MatrixImage, EdgeCases) {
  MatrixImage m;
  m.rows = 2, m.cols = 2;
  m.values = {3, 3, 3, 3};  // constant: the automatic range does not collapse
  EXPECT_NO_THROW(render_matrix_image(m));
  m.values = {NAN, NAN, NAN, NAN};
  EXPECT_GT(count(render_matrix_image(m), colors::kMissing), 100);
  m.values = {1, 2, 3};
  EXPECT_THROW(render_matrix_image(m), Error);
  m.values = {1, 2, 3, 4};
  m.lo = 1, m.hi = 1;
  EXPECT_THROW(render_matrix_image(m), Error);
  EXPECT_THROW(render_matrix_image(MatrixImage{}), Error);
}

}  // namespace
}  // namespace nsa::plot
