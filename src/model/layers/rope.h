// rope: rotary position embedding, rotate-half pairing (j, j + dim/2):
//   out[j]         = x[j] cos(a) - x[j + h] sin(a)
//   out[j + h]     = x[j + h] cos(a) + x[j] sin(a),   a = pos * theta^(-2j/dim), h = dim/2.
// RoPE is a rotation, so its backward is the inverse rotation and needs no saved input.
#pragma once

#include <vector>

#include "nsa/config.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// cos/sin of every angle, [positions, dim/2], computed in float64 and rounded to T.
template <class T>
struct RopeTable {
  index_t positions = 0, half = 0;
  std::vector<T> cos, sin;

  RopeTable() = default;
  RopeTable(index_t positions, index_t dim, double theta);
  const T* cos_at(index_t pos) const { return cos.data() + pos * half; }
  const T* sin_at(index_t pos) const { return sin.data() + pos * half; }
};

// inp, out (B, T, heads, dim) contiguous; may be the same buffer (in place). Token t of
// every batch item uses row t of cos/sin ([T, dim/2], the rows of its positions: pass
// table.cos_at(first position)).
template <class T>
void rope_forward(T* out, const T* inp, const T* cos, const T* sin, index_t B, index_t Tn,
                  index_t heads, index_t dim, ThreadPool& pool);

// dinp (B, T, heads, dim) = the inverse rotation of dout; overwritten, may alias dout.
template <class T>
void rope_backward(T* dinp, const T* dout, const T* cos, const T* sin, index_t B, index_t Tn,
                   index_t heads, index_t dim, ThreadPool& pool);

}  // namespace nsa::model
