#include "model/layers/embedding.h"

#include <algorithm>

namespace nsa::model {

template <class T>
void embedding_forward(T* out, const std::int32_t* tokens, const T* embed, index_t N, index_t C) {
  for (index_t n = 0; n < N; ++n) std::copy_n(embed + tokens[n] * C, C, out + n * C);
}

// Serial on purpose: two rows with the same token add into the same row of dembed, and a
// fixed order keeps the sum reproducible. N * C adds are cheap beside the matmuls.
template <class T>
void embedding_backward(T* dembed, const T* dout, const std::int32_t* tokens, index_t N, index_t C) {
  for (index_t n = 0; n < N; ++n) {
    T* row = dembed + tokens[n] * C;
    const T* d = dout + n * C;
    for (index_t c = 0; c < C; ++c) row[c] += d[c];
  }
}

template void embedding_forward<float>(float*, const std::int32_t*, const float*, index_t, index_t);
template void embedding_forward<double>(double*, const std::int32_t*, const double*, index_t, index_t);
template void embedding_backward<float>(float*, const float*, const std::int32_t*, index_t, index_t);
template void embedding_backward<double>(double*, const double*, const std::int32_t*, index_t, index_t);

}  // namespace nsa::model
