// Dense causal attention in float64: query t attends to keys 0..t of its sequence.
#include <algorithm>

#include "common/problem.h"
#include "reference/reference.h"

namespace nsa::reference {

void dense_forward(const DenseInputs<double>& in, TensorView<double> out, double* lse) {
  const Problem p = validate_dense(in, out);
  for (const SeqSpan& seq : p.seqs)
    for (index_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      const auto keys = gather_rows(in.k, seq.batch, seq.start, seq.len, kvh);
      const auto values = gather_rows(in.v, seq.batch, seq.start, seq.len, kvh);
      for (index_t t = 0; t < seq.len; ++t) {
        const std::vector<double> k_vis(keys.begin(), keys.begin() + (t + 1) * p.d_k);
        const std::vector<double> v_vis(values.begin(), values.begin() + (t + 1) * p.d_v);
        for (index_t g = 0; g < p.group; ++g) {
          const index_t h = kvh * p.group + g;
          const auto row = softmax_attention(in.q.ptr(seq.batch, seq.start + t, h), p.d_k, k_vis,
                                             v_vis, p.d_v, p.scale);
          std::copy(row.out.begin(), row.out.end(), out.ptr(seq.batch, seq.start + t, h));
          if (lse) lse[(seq.row0 + t) * p.heads + h] = row.lse;
        }
      }
    }
}

}  // namespace nsa::reference
