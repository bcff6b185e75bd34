// PNG encoding of an 8-bit RGB image, without dependencies: signature, IHDR (8-bit
// truecolor, no interlace), one IDAT holding a zlib stream, IEND. The zlib stream is one
// deflate block with the fixed Huffman code and greedy LZ77 matching (32 KiB window), so
// the flat areas of a chart cost a few bytes per row; every scanline uses filter 0 (None).
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

// The zlib stream (RFC 1950/1951) of `data`: exposed for the tests.
std::vector<std::uint8_t> zlib_compress(const std::uint8_t* data, size_t size);

}  // namespace nsa::plot
