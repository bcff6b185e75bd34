#include "plot/png.h"

#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "nsa/error.h"

namespace nsa::plot {

std::vector<std::uint8_t> encode_png(const Image& image) {
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != 3 * static_cast<size_t>(image.width) * static_cast<size_t>(image.height))
    throw Error("plot: cannot encode an empty or inconsistent image as PNG");
  // libpng's simplified API: rows of 3 bytes per pixel, top row first (row stride 0:
  // packed). The first call sizes the file, the second writes it.
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr))
    throw Error(std::string("plot: libpng cannot encode the image: ") + png.message);
  std::vector<std::uint8_t> bytes(size);
  if (!png_image_write_to_memory(&png, bytes.data(), &size, 0, image.pixels.data(), 0, nullptr))
    throw Error(std::string("plot: libpng cannot encode the image: ") + png.message);
  bytes.resize(size);
  return bytes;
}

void write_png(const std::string& path, const Image& image) {
  const std::vector<std::uint8_t> bytes = encode_png(image);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw Error("plot: cannot write " + path + ": " + std::strerror(errno));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !written) {
    std::remove(tmp.c_str());
    throw Error("plot: cannot write " + path + ": " + std::strerror(written ? errno : err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error("plot: cannot write " + path + ": " + std::strerror(e));
  }
}

}  // namespace nsa::plot
