// PNG encoder: the bytes decode, with an independent reader (png_decoder.h), to exactly the
// pixels that went in; every chunk's CRC holds; the zlib stream round-trips on inputs that
// stress the matcher; write_png is atomic and reports unwritable paths.
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
using testing::inflate_zlib;
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
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].type, "IHDR");
  EXPECT_EQ(chunks[1].type, "IDAT");
  EXPECT_EQ(chunks[2].type, "IEND");
  const std::vector<std::uint8_t> ihdr{0, 0, 0, 20, 0, 0, 0, 10, 8, 2, 0, 0, 0};
  EXPECT_EQ(chunks[0].data, ihdr);
  // The checker catches a flipped bit.
  auto bad = png;
  bad[8 + 8 + 3] ^= 1;  // inside IHDR's data
  EXPECT_THROW(parse_chunks(bad), std::runtime_error);
  // A known CRC: CRC-32 of "IEND" is AE426082.
  const std::uint8_t iend[4] = {'I', 'E', 'N', 'D'};
  EXPECT_EQ(testing::bitwise_crc32(iend, 4), 0xAE426082u);
  EXPECT_EQ(std::vector<std::uint8_t>(png.end() - 4, png.end()), (std::vector<std::uint8_t>{0xAE, 0x42, 0x60, 0x82}));
}

TEST(Png, FlatImagesCompress) {
  const Image flat(1000, 600, Rgb{250, 250, 250});
  const auto png = encode_png(flat);
  EXPECT_LT(png.size(), flat.pixels.size() / 50) << "a flat image should compress well";
  EXPECT_EQ(decode_png(png).rgb, flat.pixels);
}

TEST(Png, ZlibRoundTrips) {
  std::mt19937 rng(3);
  std::vector<std::vector<std::uint8_t>> inputs;
  inputs.push_back({});
  inputs.push_back({42});
  inputs.push_back({1, 2});
  inputs.push_back(std::vector<std::uint8_t>(1000, 7));             // one long run: matches of 258
  std::vector<std::uint8_t> noise(100000);
  for (auto& b : noise) b = static_cast<std::uint8_t>(rng());
  inputs.push_back(noise);                                           // incompressible
  std::vector<std::uint8_t> far(noise.begin(), noise.begin() + 32760);
  far.insert(far.end(), noise.begin(), noise.begin() + 5000);        // repeats 32760 bytes back
  inputs.push_back(far);
  std::vector<std::uint8_t> small_alphabet(70000);
  for (auto& b : small_alphabet) b = static_cast<std::uint8_t>(rng() % 3 + 250);  // short matches, 9-bit literals
  inputs.push_back(small_alphabet);
  for (const auto& in : inputs) {
    const auto z = zlib_compress(in.data(), in.size());
    EXPECT_EQ(inflate_zlib(z), in) << "input of " << in.size() << " bytes";
  }
  // The repeat far back is found: far compresses to much less than its size.
  EXPECT_LT(zlib_compress(far.data(), far.size()).size(), 32760u * 9 / 8 + 2000);
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
