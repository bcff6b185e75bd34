// Softmax attention of one query row over an explicit key list: the building block of
// every branch of the reference and of the dense baseline.
#include <cmath>
#include <limits>

#include "reference/reference.h"

namespace nsa::reference {

AttentionRow softmax_attention(const double* q, index_t d_k, const std::vector<double>& keys,
                               const std::vector<double>& values, index_t d_v, double scale) {
  const index_t n = static_cast<index_t>(keys.size()) / d_k;
  AttentionRow row;
  row.out.assign(static_cast<size_t>(d_v), 0.0);
  if (n == 0) {
    row.lse = -std::numeric_limits<double>::infinity();
    return row;
  }
  std::vector<double> s(static_cast<size_t>(n));
  double max_s = -std::numeric_limits<double>::infinity();
  for (index_t j = 0; j < n; ++j) {
    double dot = 0.0;
    for (index_t c = 0; c < d_k; ++c) dot += q[c] * keys[j * d_k + c];
    s[j] = scale * dot;
    max_s = std::max(max_s, s[j]);
  }
  double sum = 0.0;
  for (index_t j = 0; j < n; ++j) sum += std::exp(s[j] - max_s);
  row.lse = max_s + std::log(sum);
  row.probs.resize(static_cast<size_t>(n));
  for (index_t j = 0; j < n; ++j) {
    row.probs[j] = std::exp(s[j] - row.lse);
    for (index_t c = 0; c < d_v; ++c) row.out[c] += row.probs[j] * values[j * d_v + c];
  }
  return row;
}

}  // namespace nsa::reference

namespace nsa::reference {

// With p = probs, o = out and D = d_out . o:
//   dv_j += p_j d_out;  ds_j = p_j (d_out . v_j - D);  dq += scale sum_j ds_j k_j;
//   dk_j += scale ds_j q.
void softmax_attention_backward(const double* q, index_t d_k, const std::vector<double>& keys,
                                const std::vector<double>& values, index_t d_v, double scale,
                                const AttentionRow& row, const double* d_out, double* dq,
                                std::vector<double>& dkeys, std::vector<double>& dvalues) {
  const index_t n = static_cast<index_t>(row.probs.size());
  double D = 0.0;
  for (index_t c = 0; c < d_v; ++c) D += d_out[c] * row.out[c];
  for (index_t j = 0; j < n; ++j) {
    double dp = 0.0;
    for (index_t c = 0; c < d_v; ++c) {
      dp += d_out[c] * values[j * d_v + c];
      dvalues[j * d_v + c] += row.probs[j] * d_out[c];
    }
    const double ds = row.probs[j] * (dp - D);
    for (index_t c = 0; c < d_k; ++c) {
      dq[c] += scale * ds * keys[j * d_k + c];
      dkeys[j * d_k + c] += scale * ds * q[c];
    }
  }
}

}  // namespace nsa::reference
