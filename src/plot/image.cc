#include "plot/image.h"

#include <string>

#include "nsa/error.h"

namespace nsa::plot {

Image::Image(int w, int h, Rgb fill) : width(w), height(h) {
  if (w < 1 || h < 1 || w > 16384 || h > 16384)
    throw Error("plot: image size " + std::to_string(w) + "x" + std::to_string(h) + " outside 1..16384");
  pixels.resize(3 * static_cast<size_t>(w) * static_cast<size_t>(h));
  for (size_t i = 0; i < pixels.size(); i += 3) pixels[i] = fill.r, pixels[i + 1] = fill.g, pixels[i + 2] = fill.b;
}

}  // namespace nsa::plot
