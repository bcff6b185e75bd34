// Top-n selection of key blocks per (token, kv group), from the importance scores left by
// compression_attention in s.sel_scores [tokens, num_sel] into s.sel [tokens, top_n]:
//   candidates j = 0 .. t / l'; with n or fewer of them, all are chosen;
//   otherwise the forced blocks (0 .. n_init-1 and t/l', t/l' - 1, ... n_local of them),
//   then the highest-scoring others (equal scores: lower index first) up to n;
//   sorted ascending, -1 padded.
// Scalar code: a few hundred candidates per token, next to thousands of dot products.
#include <algorithm>

#include "cpu/kernels.h"

namespace nsa::cpu {

void select_blocks(const Config& config, const QueryTile& tile, Scratch& s) {
  const index_t top_n = config.top_n(), sel_len = config.sel_block();
  const index_t num_sel = (tile.t0 + tile.tokens - 1) / sel_len + 1;
  s.sel.assign(static_cast<size_t>(tile.tokens * top_n), -1);
  for (index_t tok = 0; tok < tile.tokens; ++tok) {
    const index_t t = tile.t0 + tok, current = t / sel_len, candidates = current + 1;
    std::int32_t* out = s.sel.data() + tok * top_n;
    if (candidates <= top_n) {
      for (index_t j = 0; j < candidates; ++j) out[j] = static_cast<std::int32_t>(j);
      continue;
    }
    const float* score = s.sel_scores.data() + tok * num_sel;
    auto forced = [&](index_t j) {
      return j < config.n_init() || (j <= current && j > current - config.n_local());
    };
    index_t count = 0;
    s.order.clear();
    for (index_t j = 0; j < candidates; ++j) {
      if (forced(j))
        out[count++] = static_cast<std::int32_t>(j);
      else
        s.order.push_back(j);
    }
    const index_t take = std::min<index_t>(top_n - count, static_cast<index_t>(s.order.size()));
    std::partial_sort(s.order.begin(), s.order.begin() + take, s.order.end(),
                      [&](index_t a, index_t b) {
                        return score[a] > score[b] || (score[a] == score[b] && a < b);
                      });
    for (index_t k = 0; k < take; ++k) out[count++] = static_cast<std::int32_t>(s.order[k]);
    std::sort(out, out + count);
  }
}

void union_of_choices(const std::int32_t* sel, index_t stride, index_t top_n, index_t tokens,
                      std::vector<index_t>& blocks, std::vector<std::uint8_t>& chosen_by) {
  blocks.clear();
  for (index_t i = 0; i < tokens; ++i)
    for (index_t k = 0; k < top_n && sel[i * stride + k] >= 0; ++k) blocks.push_back(sel[i * stride + k]);
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  chosen_by.assign(blocks.size() * static_cast<size_t>(tokens), 0);
  for (index_t i = 0; i < tokens; ++i)
    for (index_t k = 0; k < top_n && sel[i * stride + k] >= 0; ++k) {
      const auto at = std::lower_bound(blocks.begin(), blocks.end(), sel[i * stride + k]);
      chosen_by[static_cast<size_t>((at - blocks.begin()) * tokens + i)] = 1;
    }
}

}  // namespace nsa::cpu
