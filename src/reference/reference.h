// The float64 reference: the spec (../shared/docs/nsa-spec.md) transcribed, one rule per
// function, written to be read and never optimized. Every other implementation is tested
// against it. The entry points are nsa::reference::nsa_forward / dense_forward
// (include/nsa/attention.h); the pieces below are exposed for tests and for the backward.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "nsa/attention.h"

namespace nsa::reference {

// Exact GELU: x * Phi(x), Phi the standard normal CDF.
double gelu(double x);

// phi applied to one block. block: [l, dim] row-major. Returns [dim].
std::vector<double> phi_apply(const Config& config, const PhiWeights<double>& w, index_t dim,
                              const std::vector<double>& block);

// Rows [start, start + count) of kv head h of a [B,T,H_kv,dim] view for batch item b,
// gathered into a [count, dim] row-major matrix.
std::vector<double> gather_rows(const TensorView<const double>& x, index_t b, index_t start,
                                index_t count, index_t h);

// Compressed keys or values of one sequence and kv head: [N_cmp(len), dim] row-major,
// row i = phi(x[i*d .. i*d + l - 1]).
std::vector<double> compress_sequence(const Config& config, const PhiWeights<double>& w,
                                      const TensorView<const double>& x, const SeqSpan& seq,
                                      index_t h);

// Number of tokens shared by compressed block i ([i*d, i*d+l)) and selection block j
// ([j*l', (j+1)*l')).
index_t overlap(const Config& config, index_t i, index_t j);

// Selection-block scores of query t from the group's compressed-block scores P[i]
// (i < visible blocks): S[j] = sum_i P[i] * overlap(i, j) / d for j = 0 .. floor(t/l').
std::vector<double> selection_scores(const Config& config, const std::vector<double>& group_p,
                                     index_t t);

// The chosen selection blocks of query t given its scores S (one per candidate block):
// forced initial and local blocks, then the highest scores (ties to the lower index);
// returned sorted ascending, min(top_n, candidates) entries.
std::vector<index_t> select_blocks(const Config& config, const std::vector<double>& scores,
                                   index_t t);

// Softmax attention of one query over an explicit list of keys.
//   q [d_k]; keys [n, d_k] and values [n, d_v] row-major.
// With n = 0: out = 0, lse = -inf, probs empty.
struct AttentionRow {
  std::vector<double> out;    // [d_v]
  double lse = 0.0;           // log sum_j exp(scale * q . k_j)
  std::vector<double> probs;  // [n]
};
AttentionRow softmax_attention(const double* q, index_t d_k, const std::vector<double>& keys,
                               const std::vector<double>& values, index_t d_v, double scale);

}  // namespace nsa::reference
