// The tests' PNG reader: libpng's reading side (png_image_begin_read_from_memory), which
// checks the chunks' CRCs and the zlib stream, and zlib's crc32 for the chunk walk.
// Failures throw std::runtime_error saying what is wrong.
#pragma once

#include <png.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace nsa::plot::testing {

struct Chunk {
  std::string type;
  std::vector<std::uint8_t> data;
};

inline std::uint32_t read_be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// Every chunk of a PNG file, each CRC checked (zlib's crc32 over type and data).
inline std::vector<Chunk> parse_chunks(const std::vector<std::uint8_t>& png) {
  static const std::uint8_t kSig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (png.size() < 8 || std::memcmp(kSig, png.data(), 8) != 0) throw std::runtime_error("bad PNG signature");
  std::vector<Chunk> chunks;
  size_t pos = 8;
  while (pos < png.size()) {
    if (png.size() - pos < 12) throw std::runtime_error("truncated chunk at byte " + std::to_string(pos));
    const std::uint32_t len = read_be32(&png[pos]);
    if (len > png.size() - pos - 12) throw std::runtime_error("chunk length past the end at byte " + std::to_string(pos));
    const std::uint8_t* body = &png[pos + 4];
    const auto crc = static_cast<std::uint32_t>(crc32(0L, body, len + 4));
    if (crc != read_be32(body + 4 + len)) throw std::runtime_error("CRC mismatch in chunk at byte " + std::to_string(pos));
    chunks.push_back({std::string(reinterpret_cast<const char*>(body), 4), std::vector<std::uint8_t>(body + 4, body + 4 + len)});
    pos += 12 + len;
  }
  return chunks;
}

struct Decoded {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // [height][width][3]
};

inline Decoded decode_png(const std::vector<std::uint8_t>& bytes) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()))
    throw std::runtime_error(std::string("libpng: ") + png.message);
  png.format = PNG_FORMAT_RGB;
  Decoded d;
  d.width = static_cast<int>(png.width);
  d.height = static_cast<int>(png.height);
  d.rgb.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, d.rgb.data(), 0, nullptr)) {
    png_image_free(&png);
    throw std::runtime_error(std::string("libpng: ") + png.message);
  }
  return d;
}

}  // namespace nsa::plot::testing
