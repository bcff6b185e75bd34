// bf16: the bfloat16 storage type of the bf16 CPU path (1 sign, 8 exponent, 7 mantissa
// bits: the upper half of an IEEE float32). Values are stored as bf16 and computed in fp32:
// widening is exact, narrowing rounds to nearest even.
//
//   nsa::bf16 x(3.14159f);        // rounds: x holds 3.140625
//   float y = x;                  // widens exactly
//   nsa::to_bf16(src, dst, n);    // bulk conversions
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace nsa {

// float -> bf16 bits, round to nearest, ties to even. Inf stays Inf, values beyond the
// largest bf16 round to Inf (as IEEE rounding does), NaN stays a (quiet) NaN of the same sign.
constexpr std::uint16_t bf16_bits_from_float(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and payload top, force quiet
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

constexpr float float_from_bf16_bits(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

struct bf16 {
  std::uint16_t bits = 0;

  bf16() = default;
  constexpr explicit bf16(float f) : bits(bf16_bits_from_float(f)) {}
  static constexpr bf16 from_bits(std::uint16_t b) {
    bf16 x;
    x.bits = b;
    return x;
  }
  // Widening is exact, so it is implicit.
  constexpr operator float() const { return float_from_bf16_bits(bits); }
};

static_assert(sizeof(bf16) == 2, "bf16 must be 2 bytes: arrays of it are tensors");

inline void to_bf16(const float* src, bf16* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = bf16(src[i]);
}

inline void to_float(const bf16* src, float* dst, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
}

}  // namespace nsa
