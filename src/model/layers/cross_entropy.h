// cross_entropy: softmax over the tied LM head's logits and the loss of each target.
#pragma once

#include <cstdint>

#include "nsa/config.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// logits (N, V); targets (N) in [0, V) or -1 (ignored; checked by the caller).
// Writes probs (N, V) = softmax(logits) and losses (N) = -log probs[target] (0 where
// ignored). Returns the mean loss over the non-ignored rows (0 when there are none).
template <class T>
double crossentropy_forward(T* losses, T* probs, const T* logits, const std::int32_t* targets,
                            index_t N, index_t V, ThreadPool& pool);

// For L = dloss * sum of the non-ignored losses (the mean: dloss = 1 / count):
// dlogits (N, V) += dloss (probs - onehot(target)); ignored rows get nothing.
template <class T>
void crossentropy_backward(T* dlogits, const T* probs, const std::int32_t* targets, T dloss,
                           index_t N, index_t V, ThreadPool& pool);

}  // namespace nsa::model
