// An independent PNG reader for the tests: written from the PNG and deflate
// specifications without sharing code or tables with src/plot/png.cc. It parses the
// chunks, checks every CRC with a bitwise (table-free) CRC-32, inflates the zlib stream
// (stored and fixed-Huffman blocks; the encoder writes nothing else), checks the Adler-32
// and unfilters the scanlines (filter 0; others are rejected). Failures throw
// std::runtime_error saying what is wrong.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nsa::plot::testing {

inline std::uint32_t bitwise_crc32(const std::uint8_t* p, size_t n) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

struct Chunk {
  std::string type;
  std::vector<std::uint8_t> data;
};

inline std::uint32_t read_be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// Every chunk of a PNG file, CRCs checked.
inline std::vector<Chunk> parse_chunks(const std::vector<std::uint8_t>& png) {
  static const std::uint8_t kSig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (png.size() < 8 || !std::equal(kSig, kSig + 8, png.begin())) throw std::runtime_error("bad PNG signature");
  std::vector<Chunk> chunks;
  size_t pos = 8;
  while (pos < png.size()) {
    if (pos + 12 > png.size()) throw std::runtime_error("truncated chunk header");
    const std::uint32_t len = read_be32(&png[pos]);
    if (pos + 12 + len > png.size()) throw std::runtime_error("truncated chunk body");
    Chunk c;
    c.type.assign(png.begin() + pos + 4, png.begin() + pos + 8);
    c.data.assign(png.begin() + pos + 8, png.begin() + pos + 8 + len);
    const std::uint32_t crc = read_be32(&png[pos + 8 + len]);
    if (crc != bitwise_crc32(&png[pos + 4], len + 4)) throw std::runtime_error("CRC mismatch in chunk " + c.type);
    chunks.push_back(std::move(c));
    pos += 12 + len;
  }
  return chunks;
}

class BitReader {
 public:
  BitReader(const std::uint8_t* p, size_t n) : p_(p), n_(n) {}
  int bit() {
    if (pos_ >= 8 * n_) throw std::runtime_error("deflate stream ends early");
    const int b = (p_[pos_ / 8] >> (pos_ % 8)) & 1;
    ++pos_;
    return b;
  }
  std::uint32_t bits(int count) {  // least significant bit first
    std::uint32_t v = 0;
    for (int i = 0; i < count; ++i) v |= static_cast<std::uint32_t>(bit()) << i;
    return v;
  }
  void align() { pos_ = (pos_ + 7) / 8 * 8; }
  size_t byte_pos() const { return pos_ / 8; }

 private:
  const std::uint8_t* p_;
  size_t n_, pos_ = 0;
};

// A canonical Huffman code from code lengths, decoded bit by bit (RFC 1951, 3.2.2).
class Huffman {
 public:
  explicit Huffman(const std::vector<int>& lengths) {
    for (int len : lengths) count_[len]++;
    count_[0] = 0;
    std::vector<int> offs(16, 0);
    for (int l = 1; l < 16; ++l) offs[l] = offs[l - 1] + count_[l - 1];
    symbols_.resize(lengths.size());
    for (size_t s = 0; s < lengths.size(); ++s)
      if (lengths[s]) symbols_[offs[lengths[s]]++] = static_cast<int>(s);
  }
  int decode(BitReader& br) const {
    int code = 0, first = 0, index = 0;
    for (int l = 1; l < 16; ++l) {
      code |= br.bit();
      const int count = count_[l];
      if (code - first < count) return symbols_[index + code - first];
      index += count, first = (first + count) << 1, code <<= 1;
    }
    throw std::runtime_error("invalid Huffman code");
  }

 private:
  int count_[16] = {};
  std::vector<int> symbols_;
};

inline std::vector<std::uint8_t> inflate_zlib(const std::vector<std::uint8_t>& z) {
  if (z.size() < 6) throw std::runtime_error("zlib stream too short");
  if ((z[0] & 0x0F) != 8 || (z[0] >> 4) > 7) throw std::runtime_error("zlib: not deflate with a <= 32K window");
  if ((z[0] * 256 + z[1]) % 31 != 0) throw std::runtime_error("zlib: bad header check");
  if (z[1] & 0x20) throw std::runtime_error("zlib: preset dictionary");
  static const int kLenBase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static const int kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  std::vector<int> lit_len(288), dist_len(30, 5);
  for (int i = 0; i < 288; ++i) lit_len[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
  const Huffman lit(lit_len), dist(dist_len);
  std::vector<std::uint8_t> out;
  BitReader br(z.data() + 2, z.size() - 2);
  for (bool last = false; !last;) {
    last = br.bit();
    const std::uint32_t type = br.bits(2);
    if (type == 0) {  // stored: byte-aligned LEN, NLEN, then LEN raw bytes
      br.align();
      const std::uint32_t len = br.bits(16), nlen = br.bits(16);
      if ((len ^ 0xFFFFu) != nlen) throw std::runtime_error("stored block: LEN != ~NLEN");
      for (std::uint32_t i = 0; i < len; ++i) out.push_back(static_cast<std::uint8_t>(br.bits(8)));
      continue;
    }
    if (type != 1) throw std::runtime_error("deflate block type " + std::to_string(type) + " not supported by the test decoder");
    for (;;) {
      const int sym = lit.decode(br);
      if (sym < 256) {
        out.push_back(static_cast<std::uint8_t>(sym));
      } else if (sym == 256) {
        break;
      } else {
        if (sym > 285) throw std::runtime_error("invalid length symbol");
        const int len = kLenBase[sym - 257] + static_cast<int>(br.bits(kLenExtra[sym - 257]));
        const int dsym = dist.decode(br);
        if (dsym > 29) throw std::runtime_error("invalid distance symbol");
        // Distance base and extra bits computed from the symbol (RFC 1951 table, by formula).
        const int extra = dsym < 4 ? 0 : dsym / 2 - 1;
        const int base = dsym < 4 ? dsym + 1 : ((2 + (dsym & 1)) << extra) + 1;
        const int d = base + static_cast<int>(br.bits(extra));
        if (d > static_cast<int>(out.size()) || d > 32768) throw std::runtime_error("distance too far back");
        for (int i = 0; i < len; ++i) out.push_back(out[out.size() - d]);
      }
    }
  }
  br.align();
  const size_t p = 2 + br.byte_pos();
  if (p + 4 != z.size()) throw std::runtime_error("zlib: " + std::to_string(z.size() - p) + " bytes after the deflate data, expected 4");
  std::uint32_t a = 1, b = 0;
  for (std::uint8_t x : out) a = (a + x) % 65521, b = (b + a) % 65521;
  if ((b << 16 | a) != read_be32(&z[p])) throw std::runtime_error("Adler-32 mismatch");
  return out;
}

struct Decoded {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // [height][width][3]
};

// Decodes an 8-bit RGB, non-interlaced PNG written by the encoder.
inline Decoded decode_png(const std::vector<std::uint8_t>& png) {
  const std::vector<Chunk> chunks = parse_chunks(png);
  if (chunks.empty() || chunks.front().type != "IHDR" || chunks.back().type != "IEND")
    throw std::runtime_error("chunks must start with IHDR and end with IEND");
  const Chunk& ihdr = chunks.front();
  if (ihdr.data.size() != 13) throw std::runtime_error("IHDR length");
  Decoded d;
  d.width = static_cast<int>(read_be32(&ihdr.data[0]));
  d.height = static_cast<int>(read_be32(&ihdr.data[4]));
  if (ihdr.data[8] != 8 || ihdr.data[9] != 2 || ihdr.data[10] != 0 || ihdr.data[11] != 0 || ihdr.data[12] != 0)
    throw std::runtime_error("IHDR: expected 8-bit truecolor, deflate, filter 0, no interlace");
  if (!chunks.back().data.empty()) throw std::runtime_error("IEND not empty");
  std::vector<std::uint8_t> z;
  for (const Chunk& c : chunks)
    if (c.type == "IDAT") z.insert(z.end(), c.data.begin(), c.data.end());
  const std::vector<std::uint8_t> raw = inflate_zlib(z);
  const size_t stride = 3 * static_cast<size_t>(d.width);
  if (raw.size() != (stride + 1) * d.height) throw std::runtime_error("image data has the wrong size");
  for (int y = 0; y < d.height; ++y) {
    if (raw[y * (stride + 1)] != 0) throw std::runtime_error("scanline filter other than 0");
    d.rgb.insert(d.rgb.end(), raw.begin() + y * (stride + 1) + 1, raw.begin() + (y + 1) * (stride + 1));
  }
  return d;
}

}  // namespace nsa::plot::testing
