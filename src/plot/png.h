// PNG encoding of an 8-bit RGB image by libpng (Debian libpng-dev; zlib's deflate behind
// it): 8-bit truecolor, no interlace, libpng's default filters and compression.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plot/image.h"

namespace nsa::plot {

// The bytes of a PNG file showing `image`. Throws nsa::Error on an empty image.
std::vector<std::uint8_t> encode_png(const Image& image);

// Writes encode_png(image) to `path` atomically: into a temporary file beside it, then
// renamed over `path`, so a reader never sees half a file. Throws nsa::Error naming the
// path and the reason when it cannot be written.
void write_png(const std::string& path, const Image& image);

}  // namespace nsa::plot
