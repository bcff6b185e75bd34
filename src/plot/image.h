// Image: an 8-bit RGB raster, row-major from the top-left pixel, 3 bytes per pixel.
// The one type every part of nsa_plot draws into (canvas.h) or encodes (png.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nsa::plot {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;  // [height][width][3]

  Image() = default;
  // Throws nsa::Error unless 1 <= width, height <= 16384.
  Image(int width, int height, Rgb fill = {255, 255, 255});

  Rgb at(int x, int y) const {
    const std::uint8_t* p = &pixels[3 * (static_cast<std::size_t>(y) * width + x)];
    return {p[0], p[1], p[2]};
  }
  void set(int x, int y, Rgb c) {
    std::uint8_t* p = &pixels[3 * (static_cast<std::size_t>(y) * width + x)];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }
  bool contains(int x, int y) const { return x >= 0 && y >= 0 && x < width && y < height; }
};

}  // namespace nsa::plot
