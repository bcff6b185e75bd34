// Kernels of one decode step: softmax attention of a group's G query rows over a few
// contiguous key ranges (attend.cc: Highway SIMD with run-time dispatch, on the forward's
// micro-kernels), and phi applied to a single block (plain loops the compiler vectorizes).
#pragma once

#include <vector>

#include "nsa/attention.h"

namespace nsa::decode {

// dot(a, b) over n floats, with 16 independent partial sums.
float dot(const float* a, const float* b, index_t n);

// Contiguous rows: keys [count, d_k] at k, values [count, d_v] at v.
struct Segment {
  const float* k = nullptr;
  const float* v = nullptr;
  index_t count = 0;
};

// The unnormalised form (flash attention's state): m [G] the max score, l [G] the sum of
// exp(score - m), acc [G, d_v] the sum of exp(score - m) v, probs [G, n] the exp(score - m).
// With no key: m = -inf, l = 0, acc = 0.
void attend_partial(const float* q, index_t group, index_t d_k, index_t d_v, const Segment* segs,
                    index_t nsegs, float* m, float* l, float* acc, std::vector<float>& probs);

// Softmax attention of G query rows q [G, d_k] (already multiplied by the softmax scale)
// over every key of segs[0..nsegs): out [G, d_v]. Leaves the softmax probabilities in
// probs [G, n] (n = total keys). With no key at all, out = 0.
void attend(const float* q, index_t group, index_t d_k, index_t d_v, const Segment* segs,
            index_t nsegs, float* out, std::vector<float>& probs);

// phi of one block: block [l, dim] (raw rows) -> out [dim]. scratch is resized as needed.
void phi_block(const Config& config, const PhiWeights<float>& w, index_t dim, const float* block,
               float* out, std::vector<float>& scratch);

}  // namespace nsa::decode
