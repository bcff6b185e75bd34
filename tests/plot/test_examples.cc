// The four charts the tool draws, with made-up data of their real shape: rendered, written
// with write_png and read back with the independent decoder. With NSA_PLOT_EXAMPLES=DIR
// set, the PNGs are kept in DIR to be looked at.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "plot/heatmap.h"
#include "plot/line_chart.h"
#include "plot/matrix_image.h"
#include "plot/png.h"
#include "png_decoder.h"

namespace nsa::plot {
namespace {

namespace fs = std::filesystem;

// Writes the image, reads it back and checks the pixels.
void write_and_check(const Image& img, const std::string& name) {
  const char* keep = std::getenv("NSA_PLOT_EXAMPLES");
  const fs::path dir = keep ? fs::path(keep) : fs::temp_directory_path() / ("nsa_plot_examples_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / name;
  write_png(file.string(), img);
  std::ifstream f(file, std::ios::binary);
  const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  const auto d = testing::decode_png(bytes);
  EXPECT_EQ(d.width, img.width);
  EXPECT_EQ(d.height, img.height);
  EXPECT_EQ(d.rgb, img.pixels);
  if (!keep) fs::remove_all(dir);
}

TEST(Examples, SpeedupVsT) {
  LineChart c;
  c.title = "NSA speed-up over full attention";
  c.subtitle = "AMD EPYC 7B13, 2 threads; H=16 H_kv=1 d_k=192 d_v=128";
  c.x_label = "sequence length T";
  c.y_label = "speed-up (full / NSA)";
  c.x_scale = Scale::kLog2;
  c.y_include_zero = true;
  const std::vector<double> T{8192, 16384, 32768, 65536};
  c.series.push_back({"forward", T, {3.1, 5.4, 8.2, 11.0}, palette(0), false, true, Marker::kCircle});
  c.series.push_back({"backward", T, {2.5, 4.1, 6.0, 7.7}, palette(1), false, true, Marker::kCircle});
  c.series.push_back({"decode", T, {4.5, 7.9, 12.8, 20.1}, palette(2), false, true, Marker::kCircle});
  c.series.push_back({"paper forward", {65536}, {9.0}, palette(0), true, true, Marker::kDiamond});
  c.series.push_back({"paper backward", {65536}, {6.0}, palette(1), true, true, Marker::kDiamond});
  c.series.push_back({"paper decode", T, {4.0, 6.4, 9.1, 11.6}, palette(2), true, true, Marker::kDiamond});
  c.rules.push_back({1.0, "break-even"});
  write_and_check(render_line_chart(c), "speedup.png");
}

TEST(Examples, LossCurves) {
  LineChart c;
  c.title = "Training loss";
  c.x_label = "step";
  c.y_label = "loss (nats / token)";
  const char* names[3] = {"full attention", "NSA", "NSA (no compression)"};
  for (int m = 0; m < 3; ++m) {
    Series s;
    s.name = names[m];
    s.color = palette(m);
    s.line_width = 2;
    for (int step = 0; step <= 2000; step += 10) {
      s.x.push_back(step);
      s.y.push_back(1.6 + 0.05 * m + 3.0 * std::exp(-step / (250.0 + 40 * m)) + 0.04 * std::sin(step * 0.37 + m));
    }
    c.series.push_back(std::move(s));
  }
  write_and_check(render_line_chart(c), "loss.png");
}

TEST(Examples, NeedleHeatmap) {
  Heatmap h;
  h.title = "Needle in a haystack: retrieval accuracy";
  h.x_label = "context length";
  h.y_label = "needle depth";
  h.colorbar_label = "accuracy";
  h.col_labels = {"1k", "2k", "4k", "8k", "16k", "32k", "64k"};
  for (int d = 0; d <= 100; d += 10) h.row_labels.push_back(std::to_string(d) + "%");
  h.rows = static_cast<int>(h.row_labels.size());
  h.cols = static_cast<int>(h.col_labels.size());
  for (int r = 0; r < h.rows; ++r)
    for (int k = 0; k < h.cols; ++k) h.values.push_back(std::clamp(1.0 - 0.05 * k * (r % 3) * (k > 3), 0.0, 1.0));
  h.values[5] = NAN;  // a missing run
  write_and_check(render_heatmap(h), "needle.png");
}

TEST(Examples, SelectionMap) {
  MatrixImage m;
  m.title = "Selected blocks, head 0";
  m.x_label = "key block (64 tokens)";
  m.y_label = "query";
  m.colorbar_label = "selected";
  m.rows = 2048, m.cols = 32;
  m.lo = 0, m.hi = 1;
  for (int t = 0; t < m.rows; ++t)
    for (int b = 0; b < m.cols; ++b) {
      const int last = t / 64;
      const bool sel = b <= last && (b == 0 || b >= last - 1 || (b * 7 + t / 128) % 5 == 0);
      m.values.push_back(sel ? 1.0f : (b <= last ? 0.1f : NAN));
    }
  write_and_check(render_matrix_image(m), "selection.png");
}

}  // namespace
}  // namespace nsa::plot
