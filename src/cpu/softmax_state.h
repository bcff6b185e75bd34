// SoftmaxState: the online-softmax state of a block of query rows (flash attention's
// {m, l, acc}), the one state type every CPU attention kernel accumulates into.
//
// For each row r: m[r] is the running max of the scaled scores seen so far, l[r] the
// running sum of exp(score - m[r]), acc[r] the running sum of exp(score - m[r]) * v, [dim].
// After all keys: o = acc / l and lse = m + log(l). A row that saw no key keeps
// m = -inf, l = 0 and finishes with o = 0, lse = -inf (never NaN).
#pragma once

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

}  // namespace nsa::cpu
