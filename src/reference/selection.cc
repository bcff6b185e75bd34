// Top-n block selection (spec, "Branch 2: selection").
#include <algorithm>

#include "reference/reference.h"

namespace nsa::reference {

std::vector<index_t> select_blocks(const Config& config, const std::vector<double>& scores,
                                   index_t t) {
  const index_t candidates = t / config.sel_block() + 1;
  const index_t n = config.top_n();
  std::vector<index_t> chosen;
  if (candidates <= n) {  // rule 3: with n or fewer candidates, all of them
    for (index_t j = 0; j < candidates; ++j) chosen.push_back(j);
    return chosen;
  }
  std::vector<bool> taken(static_cast<size_t>(candidates), false);
  auto take = [&](index_t j) {
    if (j >= 0 && j < candidates && !taken[j]) {
      taken[j] = true;
      chosen.push_back(j);
    }
  };
  // Rule 1: forced initial blocks, then the n_local blocks ending at the current one.
  for (index_t j = 0; j < config.n_init(); ++j) take(j);
  const index_t current = t / config.sel_block();
  for (index_t k = 0; k < config.n_local(); ++k) take(current - k);
  // Rule 2: the highest-scoring remaining candidates; equal scores go to the lower index.
  std::vector<index_t> rest;
  for (index_t j = 0; j < candidates; ++j)
    if (!taken[j]) rest.push_back(j);
  std::stable_sort(rest.begin(), rest.end(),
                   [&](index_t a, index_t b) { return scores[a] > scores[b]; });
  for (index_t j : rest) {
    if (static_cast<index_t>(chosen.size()) >= n) break;
    take(j);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace nsa::reference
