// Backward of phi for one block (see phi.cc for the forward).
#include <cmath>

#include "reference/reference.h"

namespace nsa::reference {
namespace {

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
double gelu_derivative(double x) {
  const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));
  const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  return cdf + x * pdf;
}

}  // namespace

void phi_backward(const Config& config, const PhiWeights<double>& w, index_t dim,
                  const std::vector<double>& block, const double* d_out,
                  std::vector<double>& d_block, const PhiGradients<double>& grads) {
  const index_t l = config.block_len(), in_size = l * dim;

  if (config.phi() == PhiKind::mean) {
    for (index_t r = 0; r < l; ++r)
      for (index_t c = 0; c < dim; ++c) d_block[r * dim + c] += d_out[c] / static_cast<double>(l);
    return;
  }

  std::vector<double> x(static_cast<size_t>(in_size)), dx(static_cast<size_t>(in_size), 0.0);
  for (index_t i = 0; i < in_size; ++i) x[i] = block[i] + w.pe[i];

  if (config.phi() == PhiKind::linear) {  // out = W x
    for (index_t c = 0; c < dim; ++c)
      for (index_t i = 0; i < in_size; ++i) {
        grads.w[c * in_size + i] += d_out[c] * x[i];
        dx[i] += w.w[c * in_size + i] * d_out[c];
      }
  } else {  // mlp: a = W1 x + b1; h = GELU(a); out = W2 h + b2
    const index_t hidden = config.phi_hidden_for(dim);
    std::vector<double> a(static_cast<size_t>(hidden)), h(static_cast<size_t>(hidden));
    for (index_t j = 0; j < hidden; ++j) {
      a[j] = w.b1[j];
      for (index_t i = 0; i < in_size; ++i) a[j] += w.w1[j * in_size + i] * x[i];
      h[j] = gelu(a[j]);
    }
    std::vector<double> dh(static_cast<size_t>(hidden), 0.0);
    for (index_t c = 0; c < dim; ++c) {
      grads.b2[c] += d_out[c];
      for (index_t j = 0; j < hidden; ++j) {
        grads.w2[c * hidden + j] += d_out[c] * h[j];
        dh[j] += w.w2[c * hidden + j] * d_out[c];
      }
    }
    for (index_t j = 0; j < hidden; ++j) {
      const double da = dh[j] * gelu_derivative(a[j]);
      grads.b1[j] += da;
      for (index_t i = 0; i < in_size; ++i) {
        grads.w1[j * in_size + i] += da * x[i];
        dx[i] += w.w1[j * in_size + i] * da;
      }
    }
  }
  // x = block + pe: the same gradient reaches both.
  for (index_t i = 0; i < in_size; ++i) {
    d_block[i] += dx[i];
    grads.pe[i] += dx[i];
  }
}

}  // namespace nsa::reference
