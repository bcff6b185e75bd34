#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace nsa::model {

std::int32_t sample_token(const float* logits, int vocab, double temperature, int top_k, Rng& rng) {
  if (temperature <= 0) return static_cast<std::int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<int> order(static_cast<std::size_t>(vocab));
  for (int i = 0; i < vocab; ++i) order[static_cast<std::size_t>(i)] = i;
  const int keep = top_k > 0 ? std::min(top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<double> p(static_cast<std::size_t>(keep));
  const double top = logits[order[0]];
  double sum = 0;
  for (int i = 0; i < keep; ++i)
    sum += p[static_cast<std::size_t>(i)] = std::exp((logits[order[static_cast<std::size_t>(i)]] - top) / temperature);
  double u = rng.uniform() * sum;
  for (int i = 0; i < keep; ++i) {
    u -= p[static_cast<std::size_t>(i)];
    if (u <= 0) return order[static_cast<std::size_t>(i)];
  }
  return order[static_cast<std::size_t>(keep - 1)];
}

}  // namespace nsa::model
