// phi: the compression function (spec, "Branch 1: compression").
#include <cmath>

#include "reference/reference.h"

namespace nsa::reference {

double gelu(double x) { return x * 0.5 * std::erfc(-x / std::sqrt(2.0)); }

std::vector<double> phi_apply(const Config& config, const PhiWeights<double>& w, index_t dim,
                              const std::vector<double>& block) {
  const index_t l = config.block_len();
  const index_t in_size = l * dim;  // flatten(block): row-major [l, dim]
  std::vector<double> out(static_cast<size_t>(dim), 0.0);

  if (config.phi() == PhiKind::mean) {
    for (index_t r = 0; r < l; ++r)
      for (index_t c = 0; c < dim; ++c) out[c] += block[r * dim + c] / static_cast<double>(l);
    return out;
  }

  // x = flatten(block + pe)
  std::vector<double> x(static_cast<size_t>(in_size));
  for (index_t i = 0; i < in_size; ++i) x[i] = block[i] + w.pe[i];

  if (config.phi() == PhiKind::linear) {  // out = W x, W [dim, l*dim]
    for (index_t c = 0; c < dim; ++c)
      for (index_t i = 0; i < in_size; ++i) out[c] += w.w[c * in_size + i] * x[i];
    return out;
  }

  // mlp: h = GELU(W1 x + b1), W1 [hidden, l*dim]; out = W2 h + b2, W2 [dim, hidden]
  const index_t hidden = config.phi_hidden_for(dim);
  std::vector<double> h(static_cast<size_t>(hidden));
  for (index_t j = 0; j < hidden; ++j) {
    double a = w.b1[j];
    for (index_t i = 0; i < in_size; ++i) a += w.w1[j * in_size + i] * x[i];
    h[j] = gelu(a);
  }
  for (index_t c = 0; c < dim; ++c) {
    double a = w.b2[c];
    for (index_t j = 0; j < hidden; ++j) a += w.w2[c * hidden + j] * h[j];
    out[c] = a;
  }
  return out;
}

}  // namespace nsa::reference
