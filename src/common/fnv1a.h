// FNV-1a 64: the checksum of the project's file formats (decode cache files, conversation
// logs). Not cryptographic: it catches truncation and corruption, not tampering.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nsa {

inline constexpr std::uint64_t kFnv1a64Basis = 14695981039346656037ull;

// Continues `hash` over the bytes (start from kFnv1a64Basis).
inline std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t hash = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

}  // namespace nsa
