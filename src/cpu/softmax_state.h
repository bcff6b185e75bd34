// SoftmaxState: the online-softmax state of a block of query rows (flash attention's
// {m, l, acc}), the one state type every CPU attention kernel accumulates into.
//
// For each row r: m[r] is the running max of the scaled scores seen so far, l[r] the
// running sum of exp(score - m[r]), acc[r] the running sum of exp(score - m[r]) * v, [dim].
// After all keys: o = acc / l and lse = m + log(l). A row that saw no key keeps
// m = -inf, l = 0 and finishes with o = 0, lse = -inf (never NaN).
// States of disjoint key sets of the same rows merge into the softmax over their union
// (merge_states: flash-decoding's split-K, the decode's key splits).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "nsa/config.h"

namespace nsa::cpu {

struct SoftmaxState {
  index_t rows = 0, dim = 0;
  std::vector<float> m, l, acc;  // [rows], [rows], [rows, dim]

  void reset(index_t num_rows, index_t row_dim) {
    rows = num_rows;
    dim = row_dim;
    m.assign(static_cast<size_t>(rows), -std::numeric_limits<float>::infinity());
    l.assign(static_cast<size_t>(rows), 0.0f);
    acc.assign(static_cast<size_t>(rows * dim), 0.0f);
  }

  float* acc_row(index_t r) { return acc.data() + r * dim; }

  // Row r's normalised output into o[dim] and its log-sum-exp.
  float finalize_row(index_t r, float* o) const {
    const float* a = acc.data() + r * dim;
    if (l[r] == 0.0f) {
      for (index_t c = 0; c < dim; ++c) o[c] = 0.0f;
      return -std::numeric_limits<float>::infinity();
    }
    const float inv = 1.0f / l[r];
    for (index_t c = 0; c < dim; ++c) o[c] = a[c] * inv;
    return m[r] + std::log(l[r]);
  }
};

// o [rows, dim] = the softmax average over the keys of all n states (same rows and dim,
// disjoint key sets): row r weighs state p by w[p][r] = exp(m_p - M) / sum_q exp(m_q - M)
// l_q, M the largest m_p, so o = sum_p w[p][r] acc_p[r]. weight (may be null) [n, rows]
// receives w, the factor that turns state p's exp(score - m_p) into probabilities. A row
// no state saw (every l = 0) gets o = 0 and weights 0. The sums run over p in order.
// n >= 1 (the rows and dim are the first state's).
inline void merge_states(const SoftmaxState* const* states, index_t n, float* o, float* weight) {
  const index_t rows = n > 0 ? states[0]->rows : 0, dim = n > 0 ? states[0]->dim : 0;
  for (index_t r = 0; r < rows; ++r) {
    float* orow = o + r * dim;
    std::fill(orow, orow + dim, 0.0f);
    if (weight != nullptr)
      for (index_t p = 0; p < n; ++p) weight[p * rows + r] = 0.0f;
    float mx = -std::numeric_limits<float>::infinity();
    for (index_t p = 0; p < n; ++p)
      if (states[p]->l[r] > 0.0f) mx = std::max(mx, states[p]->m[r]);
    if (mx == -std::numeric_limits<float>::infinity()) continue;
    float total = 0.0f;
    for (index_t p = 0; p < n; ++p)
      if (states[p]->l[r] > 0.0f) total += std::exp(states[p]->m[r] - mx) * states[p]->l[r];
    const float inv = 1.0f / total;
    for (index_t p = 0; p < n; ++p) {
      if (!(states[p]->l[r] > 0.0f)) continue;
      const float w = std::exp(states[p]->m[r] - mx) * inv;
      const float* a = states[p]->acc.data() + r * dim;
      for (index_t c = 0; c < dim; ++c) orow[c] += w * a[c];
      if (weight != nullptr) weight[p * rows + r] = w;
    }
  }
}

}  // namespace nsa::cpu
