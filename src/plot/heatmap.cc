#include "plot/heatmap.h"

#include <algorithm>
#include <cmath>

#include "nsa/error.h"
#include "plot/axis.h"
#include "plot/font.h"
#include "plot/frame.h"

namespace nsa::plot {

Image render_heatmap(const Heatmap& h) {
  if (h.rows < 1 || h.cols < 1) throw Error("plot: a heatmap needs at least one row and one column");
  if (h.values.size() != static_cast<size_t>(h.rows) * static_cast<size_t>(h.cols))
    throw Error("plot: heatmap values hold " + std::to_string(h.values.size()) + " entries, expected rows x cols = " +
                std::to_string(h.rows * h.cols));
  if (!h.row_labels.empty() && h.row_labels.size() != static_cast<size_t>(h.rows))
    throw Error("plot: heatmap has " + std::to_string(h.row_labels.size()) + " row labels for " + std::to_string(h.rows) + " rows");
  if (!h.col_labels.empty() && h.col_labels.size() != static_cast<size_t>(h.cols))
    throw Error("plot: heatmap has " + std::to_string(h.col_labels.size()) + " column labels for " + std::to_string(h.cols) + " columns");
  if (!(h.hi > h.lo)) throw Error("plot: heatmap color range needs hi > lo");
  const int s = std::max(1, h.text_scale), th = font::text_height(s);

  // Cell size: room for the value text and the column label, at least 44 x 30.
  int label_w = 0, row_label_w = 0;
  for (const auto& l : h.col_labels) label_w = std::max(label_w, font::text_width(l, s));
  for (const auto& l : h.row_labels) row_label_w = std::max(row_label_w, font::text_width(l, s));
  const int value_w = h.show_values ? font::text_width(format_fixed(-h.hi, h.value_decimals), s) : 0;
  const int cw = h.cell_width > 0 ? h.cell_width : std::max({44, value_w + 12, label_w + 10});
  const int ch = h.cell_height > 0 ? h.cell_height : std::max(30, th + 14);

  const std::vector<Tick> bar_ticks = axis_ticks({Scale::kLinear, h.lo, h.hi}, 5);
  const int left = 14 + (h.y_label.empty() ? 0 : th + 14) + row_label_w + 10;
  const int bar_w = 22;
  const int right = 24 + bar_w + 8 + max_label_width(bar_ticks, s) + (h.colorbar_label.empty() ? 0 : th + 16) + 14;
  const int title_h = (h.title.empty() ? 0 : font::text_height(s + 1) + 8) + (h.subtitle.empty() ? 0 : th + 8) + 12 + 10;
  const int bottom = 10 + th + 12 + (h.x_label.empty() ? 0 : th + 12);
  const int width = std::max(left + cw * h.cols + right, font::text_width(h.title, s + 1) + 40);
  const int bar_h = std::max(ch * h.rows, 5 * (th + 8));  // room for the color bar's labels
  const int height = title_h + std::max(ch * h.rows, bar_h) + bottom;

  Canvas c(width, height);
  const int top = draw_title(c, h.title, h.subtitle, s) + 10;
  const Rect grid{left, top, left + cw * h.cols, top + ch * h.rows};
  for (int r = 0; r < h.rows; ++r)
    for (int k = 0; k < h.cols; ++k) {
      const double v = h.values[static_cast<size_t>(r) * h.cols + k];
      const int x0 = grid.x0 + k * cw, y0 = grid.y0 + r * ch;
      const Rgb color = std::isfinite(v) ? h.colormap(std::clamp((v - h.lo) / (h.hi - h.lo), 0.0, 1.0)) : colors::kMissing;
      c.fill_rect(x0, y0, x0 + cw, y0 + ch, color);
      if (h.show_values && std::isfinite(v)) {
        const Rgb ink = luminance(color) > 0.5 ? colors::kText : colors::kWhite;
        c.text(x0 + cw / 2.0, y0 + ch / 2.0, format_fixed(v, h.value_decimals), ink, s, Align::kCenter, VAlign::kMiddle);
      }
    }
  // Thin white separators between cells, then the frame.
  for (int k = 1; k < h.cols; ++k) c.fill_rect(grid.x0 + k * cw, grid.y0, grid.x0 + k * cw + 1, grid.y1, colors::kWhite);
  for (int r = 1; r < h.rows; ++r) c.fill_rect(grid.x0, grid.y0 + r * ch, grid.x1, grid.y0 + r * ch + 1, colors::kWhite);
  c.rect(grid.x0, grid.y0, grid.x1, grid.y1, colors::kAxis);

  for (int r = 0; r < static_cast<int>(h.row_labels.size()); ++r)
    c.text(grid.x0 - 8, grid.y0 + r * ch + ch / 2.0, h.row_labels[r], colors::kText, s, Align::kRight, VAlign::kMiddle);
  for (int k = 0; k < static_cast<int>(h.col_labels.size()); ++k)
    c.text(grid.x0 + k * cw + cw / 2.0, grid.y1 + 8, h.col_labels[k], colors::kText, s, Align::kCenter);
  if (!h.x_label.empty()) c.text((grid.x0 + grid.x1) / 2.0, grid.y1 + 8 + th + 12, h.x_label, colors::kText, s, Align::kCenter);
  if (!h.y_label.empty()) c.text_vertical(14 + th / 2.0, (grid.y0 + grid.y1) / 2.0, h.y_label, colors::kText, s);

  const Rect bar{grid.x1 + 24, grid.y0, grid.x1 + 24 + bar_w, grid.y0 + bar_h};
  draw_colorbar(c, bar, h.colormap, h.lo, h.hi, bar_ticks, s);
  if (!h.colorbar_label.empty())
    c.text_vertical(bar.x1 + 8 + max_label_width(bar_ticks, s) + 12 + th / 2.0, (bar.y0 + bar.y1) / 2.0, h.colorbar_label,
                    colors::kText, s);
  return c.image();
}

}  // namespace nsa::plot
