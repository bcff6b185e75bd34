// PNG encoder (libpng): the bytes decode (png_decoder.h: libpng's reader) to exactly the
// pixels that went in; the chunks are in order and every CRC holds; flat images compress;
// write_png is atomic and reports unwritable paths.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "nsa/error.h"
#include "plot/png.h"
#include "png_decoder.h"

namespace nsa::plot {
namespace {

namespace fs = std::filesystem;
using testing::decode_png;
using testing::parse_chunks;

// A test image: gradients, a flat block, and noise (literals the matcher cannot shorten).
Image sample_image(int w, int h) {
  Image img(w, h);
  std::mt19937 rng(7);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      Rgb c{static_cast<std::uint8_t>(x * 255 / std::max(1, w - 1)), static_cast<std::uint8_t>(y * 255 / std::max(1, h - 1)), 128};
      if (x > w / 2 && y > h / 2) c = Rgb{10, 200, 30};
      if (x < w / 4 && y > h / 2) c = Rgb{static_cast<std::uint8_t>(rng()), static_cast<std::uint8_t>(rng()), static_cast<std::uint8_t>(rng())};
      img.set(x, y, c);
    }
  return img;
}

std::vector<std::uint8_t> read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST(Png, DecodesToTheSamePixels) {
  for (const auto [w, h] : {std::pair{1, 1}, {2, 3}, {37, 19}, {300, 200}}) {
    const Image img = sample_image(w, h);
    const auto png = encode_png(img);
    const auto d = decode_png(png);
    EXPECT_EQ(d.width, w);
    EXPECT_EQ(d.height, h);
    EXPECT_EQ(d.rgb, img.pixels) << w << "x" << h;
  }
}

TEST(Png, ChunksAndCrcs) {
  const auto png = encode_png(sample_image(20, 10));
  const std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  ASSERT_GE(png.size(), 8u);
  EXPECT_TRUE(std::equal(sig, sig + 8, png.begin()));
  const auto chunks = parse_chunks(png);  // throws on any CRC mismatch
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks.front().type, "IHDR");
  EXPECT_EQ(chunks.back().type, "IEND");
  EXPECT_TRUE(chunks.back().data.empty());
  int idat = 0;
  for (const auto& c : chunks) idat += c.type == "IDAT";
  EXPECT_GE(idat, 1);
  const std::vector<std::uint8_t> ihdr{0, 0, 0, 20, 0, 0, 0, 10, 8, 2, 0, 0, 0};  // 8-bit RGB, no interlace
  EXPECT_EQ(chunks[0].data, ihdr);
  // A flipped bit is caught by the chunk walk and by libpng.
  auto bad = png;
  bad[8 + 8 + 3] ^= 1;  // inside IHDR's data
  EXPECT_THROW(parse_chunks(bad), std::runtime_error);
  EXPECT_THROW(decode_png(bad), std::runtime_error);
  // IEND's CRC is the well-known AE426082.
  EXPECT_EQ(std::vector<std::uint8_t>(png.end() - 4, png.end()), (std::vector<std::uint8_t>{0xAE, 0x42, 0x60, 0x82}));
}

TEST(Png, FlatImagesCompress) {
  const Image flat(1000, 600, Rgb{250, 250, 250});
  const auto png = encode_png(flat);
  EXPECT_LT(png.size(), flat.pixels.size() / 50) << "a flat image should compress well";
  EXPECT_EQ(decode_png(png).rgb, flat.pixels);
}

TEST(Png, WriteIsAtomicAndReadable) {
  const fs::path dir = fs::temp_directory_path() / ("nsa_plot_png_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Image img = sample_image(64, 32);
  const fs::path file = dir / "out.png";
  {
    std::ofstream old(file);
    old << "previous contents";
  }
  write_png(file.string(), img);
  EXPECT_EQ(decode_png(read_file(file)).rgb, img.pixels);
  // Nothing else is left beside it (no temporary file).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(Png, UnwritablePathThrows) {
  const std::string path = "/nonexistent-dir-for-nsa-plot/x.png";
  try {
    write_png(path, Image(4, 4));
    FAIL() << "expected nsa::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(encode_png(Image()), Error);
  EXPECT_THROW(Image(0, 5), Error);
  EXPECT_THROW(Image(5, 20000), Error);
}

}  // namespace
}  // namespace nsa::plot
