// TensorView: a non-owning view of a [B, T, heads, dim] tensor with explicit strides.
//
// The innermost (dim) stride is always 1; the batch, token and head strides are given in
// elements and are 64-bit, so offsets never overflow at long sequence lengths.
// A packed variable-length batch is a view with B = 1 and T = total tokens, plus
// cu_seqlens (see Sequences in attention.h).
#pragma once

#include <array>
#include <cstdint>

#include "nsa/config.h"

namespace nsa {

template <class T>
struct TensorView {
  T* data = nullptr;
  std::array<index_t, 4> shape{};   // [B, T, heads, dim]
  std::array<index_t, 3> stride{};  // elements between consecutive batch items, tokens, heads

  index_t batch() const { return shape[0]; }
  index_t tokens() const { return shape[1]; }
  index_t heads() const { return shape[2]; }
  index_t dim() const { return shape[3]; }
  bool empty() const { return data == nullptr; }

  index_t offset(index_t b, index_t t, index_t h) const {
    return b * stride[0] + t * stride[1] + h * stride[2];
  }
  T* ptr(index_t b, index_t t, index_t h) const { return data + offset(b, t, h); }
  T& at(index_t b, index_t t, index_t h, index_t c) const { return data[offset(b, t, h) + c]; }

  bool is_contiguous() const {
    return stride[2] == shape[3] && stride[1] == shape[2] * shape[3] &&
           stride[0] == shape[1] * shape[2] * shape[3];
  }

  // A read-only view of the same memory.
  TensorView<const T> as_const() const { return {data, shape, stride}; }
};

// A dense, contiguous [B, T, heads, dim] view over `data`.
template <class T>
TensorView<T> contiguous_view(T* data, index_t batch, index_t tokens, index_t heads, index_t dim) {
  return {data, {batch, tokens, heads, dim}, {tokens * heads * dim, heads * dim, dim}};
}

}  // namespace nsa
