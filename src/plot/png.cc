#include "plot/png.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "nsa/error.h"

namespace nsa::plot {
namespace {

// ---- checksums --------------------------------------------------------------------

std::uint32_t crc32(const std::uint8_t* p, size_t n, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::uint32_t adler32(const std::uint8_t* p, size_t n) {
  std::uint32_t a = 1, b = 0;
  while (n > 0) {
    const size_t chunk = n < 5552 ? n : 5552;  // the largest run without overflow of b
    for (size_t i = 0; i < chunk; ++i) a += p[i], b += a;
    a %= 65521, b %= 65521, p += chunk, n -= chunk;
  }
  return b << 16 | a;
}

// ---- deflate: one final block, fixed Huffman code ---------------------------------

class BitWriter {
 public:
  explicit BitWriter(std::vector<std::uint8_t>& out) : out_(out) {}
  // `count` bits of `value`, least significant first (header fields, extra bits).
  void bits(std::uint32_t value, int count) {
    acc_ |= static_cast<std::uint64_t>(value) << n_;
    n_ += count;
    while (n_ >= 8) out_.push_back(static_cast<std::uint8_t>(acc_)), acc_ >>= 8, n_ -= 8;
  }
  // A Huffman code of `len` bits: sent most significant bit first.
  void code(std::uint32_t code, int len) {
    std::uint32_t rev = 0;
    for (int i = 0; i < len; ++i) rev = rev << 1 | ((code >> i) & 1);
    bits(rev, len);
  }
  void flush() {
    if (n_ > 0) out_.push_back(static_cast<std::uint8_t>(acc_));
    acc_ = 0, n_ = 0;
  }

 private:
  std::vector<std::uint8_t>& out_;
  std::uint64_t acc_ = 0;
  int n_ = 0;
};

// The fixed literal/length code (RFC 1951, 3.2.6).
void put_symbol(BitWriter& w, int sym) {
  if (sym < 144) w.code(0x30 + sym, 8);
  else if (sym < 256) w.code(0x190 + sym - 144, 9);
  else if (sym < 280) w.code(sym - 256, 7);
  else w.code(0xC0 + sym - 280, 8);
}

constexpr int kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr int kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr int kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                               193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr int kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

void put_match(BitWriter& w, int length, int distance) {
  int li = 28;
  while (kLengthBase[li] > length) --li;
  put_symbol(w, 257 + li);
  w.bits(static_cast<std::uint32_t>(length - kLengthBase[li]), kLengthExtra[li]);
  int di = 29;
  while (kDistBase[di] > distance) --di;
  w.code(static_cast<std::uint32_t>(di), 5);
  w.bits(static_cast<std::uint32_t>(distance - kDistBase[di]), kDistExtra[di]);
}

void deflate_fixed(const std::uint8_t* data, size_t size, std::vector<std::uint8_t>& out) {
  constexpr int kWindow = 32768, kMinMatch = 3, kMaxMatch = 258, kChain = 16;
  constexpr int kHashBits = 15;
  BitWriter w(out);
  w.bits(1, 1);  // BFINAL
  w.bits(1, 2);  // BTYPE = 01, fixed Huffman
  std::vector<std::int64_t> head(1 << kHashBits, -1), prev(kWindow, -1);
  auto hash = [&](size_t i) {
    const std::uint32_t v = data[i] | data[i + 1] << 8 | data[i + 2] << 16;
    return (v * 2654435761u) >> (32 - kHashBits);
  };
  auto insert = [&](size_t i) {
    if (i + kMinMatch > size) return;
    const std::uint32_t h = hash(i);
    prev[i % kWindow] = head[h];
    head[h] = static_cast<std::int64_t>(i);
  };
  size_t i = 0;
  while (i < size) {
    int best_len = 0, best_dist = 0;
    if (i + kMinMatch <= size) {
      const size_t max_len = std::min<size_t>(kMaxMatch, size - i);
      std::int64_t cand = head[hash(i)];
      for (int step = 0; step < kChain && cand >= 0 && i - static_cast<size_t>(cand) <= kWindow - 1; ++step) {
        const std::uint8_t* a = data + cand;
        const std::uint8_t* b = data + i;
        size_t len = 0;
        while (len < max_len && a[len] == b[len]) ++len;
        if (static_cast<int>(len) > best_len) {
          best_len = static_cast<int>(len), best_dist = static_cast<int>(i - static_cast<size_t>(cand));
          if (len == max_len) break;
        }
        const std::int64_t next = prev[cand % kWindow];
        if (next >= cand) break;  // the slot was overwritten by a newer position
        cand = next;
      }
    }
    if (best_len >= kMinMatch) {
      put_match(w, best_len, best_dist);
      for (int k = 0; k < best_len; ++k) insert(i + k);
      i += best_len;
    } else {
      put_symbol(w, data[i]);
      insert(i);
      ++i;
    }
  }
  put_symbol(w, 256);  // end of block
  w.flush();
}

// ---- PNG chunks --------------------------------------------------------------------

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(v >> s));
}

void put_chunk(std::vector<std::uint8_t>& out, const char type[4], const std::vector<std::uint8_t>& body) {
  put_u32(out, static_cast<std::uint32_t>(body.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), body.begin(), body.end());
  put_u32(out, crc32(out.data() + start, out.size() - start));
}

}  // namespace

std::vector<std::uint8_t> zlib_compress(const std::uint8_t* data, size_t size) {
  std::vector<std::uint8_t> out{0x78, 0x01};  // deflate, 32 KiB window, no dictionary; (0x7801 % 31 == 0)
  deflate_fixed(data, size, out);
  put_u32(out, adler32(data, size));
  return out;
}

std::vector<std::uint8_t> encode_png(const Image& image) {
  if (image.width < 1 || image.height < 1 ||
      image.pixels.size() != 3 * static_cast<size_t>(image.width) * static_cast<size_t>(image.height))
    throw Error("plot: cannot encode an empty or inconsistent image as PNG");
  const size_t stride = 3 * static_cast<size_t>(image.width);
  std::vector<std::uint8_t> raw;  // every scanline prefixed by its filter type, 0 (None)
  raw.reserve((stride + 1) * image.height);
  for (int y = 0; y < image.height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), image.pixels.begin() + y * stride, image.pixels.begin() + (y + 1) * stride);
  }
  std::vector<std::uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<std::uint8_t> ihdr;
  put_u32(ihdr, static_cast<std::uint32_t>(image.width));
  put_u32(ihdr, static_cast<std::uint32_t>(image.height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // bit depth 8, truecolor, deflate, filter 0, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", zlib_compress(raw.data(), raw.size()));
  put_chunk(png, "IEND", {});
  return png;
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
