// The float64 reference: the spec (../shared/docs/nsa-spec.md) transcribed, one rule per
// function, written to be read and never optimized. Every other implementation is tested
// against it. The entry points are nsa::reference::nsa_forward / dense_forward
// (include/nsa/attention.h); the pieces below are exposed for tests and for the backward.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "nsa/attention.h"
#include "nsa/backward.h"

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

// Token positions (relative to the sequence) that each branch of query t reads.
std::vector<index_t> selected_positions(const Config& config, const std::vector<index_t>& blocks,
                                        index_t t);  // s <= t inside the chosen blocks
std::vector<index_t> window_positions(const Config& config, index_t t);  // max(0,t-w+1)..t
// Rows of kv head h at those positions: [positions, dim].
std::vector<double> rows_at(const TensorView<const double>& x, const SeqSpan& seq, index_t h,
                            const std::vector<index_t>& positions);
// The saved selection of (row, kv head) as a list of block indices.
std::vector<index_t> saved_selection(const std::int32_t* sel_blocks, const Config& config,
                                     index_t row, index_t kv_heads, index_t kvh);

// Backward of softmax_attention for one row, given its forward result and d_out [d_v].
// Adds to dq [d_k], dkeys [n, d_k], dvalues [n, d_v].
void softmax_attention_backward(const double* q, index_t d_k, const std::vector<double>& keys,
                                const std::vector<double>& values, index_t d_v, double scale,
                                const AttentionRow& row, const double* d_out, double* dq,
                                std::vector<double>& dkeys, std::vector<double>& dvalues);

// Backward of phi_apply for one block: adds d(block) to d_block [l*dim] and the parameter
// gradients to grads (whose used pointers must be valid accumulators).
void phi_backward(const Config& config, const PhiWeights<double>& w, index_t dim,
                  const std::vector<double>& block, const double* d_out,
                  std::vector<double>& d_block, const PhiGradients<double>& grads);

// The forward pass with the selection given instead of computed: sel_blocks is
// [rows, H_kv, top_n] as in NsaSaved. Used to hold the selection fixed for finite
// differences. nsa_forward is this with the spec's selection.
void nsa_forward_with_selection(const Config& config, const NsaInputs<double>& in,
                                TensorView<double> out, NsaSaved<double>* saved,
                                const std::int32_t* sel_blocks);

}  // namespace nsa::reference
