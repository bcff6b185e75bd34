// embedding: token ids to vectors, out[n] = embed[tokens[n]].
#pragma once

#include <cstdint>

#include "nsa/config.h"

namespace nsa::model {

// tokens (N) in [0, V) (checked by the caller); embed (V, C); out (N, C), overwritten.
template <class T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* embed, index_t N, index_t C);

// dembed (V, C) += scatter of dout (N, C) into the rows of the tokens.
template <class T>
void embedding_backward(T* dembed, const T* dout, const std::int32_t* tokens, index_t N, index_t C);

}  // namespace nsa::model
