// token_shift: each position's features side by side with those of the S tokens before it,
// the token shift of recall models (RWKV, H3/Based's short convolution). The projections
// that read the result are then short causal convolutions of width S + 1 with full channel
// mixing, so one attention layer can bind a value to the key before it (an induction head
// needs two layers without it).
//
//   out[b, t, j*C + c] = x[b, t - j, c]   for j = 0..S   (out has (S+1) C columns)
// with x[b, t - j] taken from `history` (the S rows before t = 0, oldest first; one
// sequence, B = 1) when t - j < 0 and history is given, else 0.
#pragma once

#include "nsa/config.h"

namespace nsa::model {

// x (B, T, C); history (S, C) or null; out (B, T, (S+1) C) overwritten.
template <class T>
void token_shift_forward(T* out, const T* x, index_t B, index_t Tn, index_t C, int S, const T* history = nullptr);

// Accumulates dx (B, T, C) += d/dx of out = token_shift(x) without history:
//   dx[b, t, c] += sum_{j : t + j < T} dout[b, t + j, j*C + c].
template <class T>
void token_shift_backward(T* dx, const T* dout, index_t B, index_t Tn, index_t C, int S);

}  // namespace nsa::model
