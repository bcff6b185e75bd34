// Compression of raw K/V into block keys/values, and the mapping of the compression
// branch's probabilities to selection-block scores (spec, "Branch 1" and "Branch 2").
#include <algorithm>

#include "reference/reference.h"

namespace nsa::reference {

std::vector<double> gather_rows(const TensorView<const double>& x, index_t b, index_t start,
                                index_t count, index_t h) {
  const index_t dim = x.dim();
  std::vector<double> rows(static_cast<size_t>(count * dim));
  for (index_t r = 0; r < count; ++r)
    for (index_t c = 0; c < dim; ++c) rows[r * dim + c] = x.at(b, start + r, h, c);
  return rows;
}

std::vector<double> compress_sequence(const Config& config, const PhiWeights<double>& w,
                                      const TensorView<const double>& x, const SeqSpan& seq,
                                      index_t h) {
  const index_t dim = x.dim(), n = config.num_cmp_blocks(seq.len);
  std::vector<double> blocks(static_cast<size_t>(n * dim));
  for (index_t i = 0; i < n; ++i) {
    const auto raw = gather_rows(x, seq.batch, seq.start + i * config.stride(), config.block_len(), h);
    const auto c = phi_apply(config, w, dim, raw);
    std::copy(c.begin(), c.end(), blocks.begin() + i * dim);
  }
  return blocks;
}

index_t overlap(const Config& config, index_t i, index_t j) {
  const index_t cmp_begin = i * config.stride(), cmp_end = cmp_begin + config.block_len();
  const index_t sel_begin = j * config.sel_block(), sel_end = sel_begin + config.sel_block();
  return std::max<index_t>(0, std::min(cmp_end, sel_end) - std::max(cmp_begin, sel_begin));
}

std::vector<double> selection_scores(const Config& config, const std::vector<double>& group_p,
                                     index_t t) {
  const index_t candidates = t / config.sel_block() + 1;
  std::vector<double> scores(static_cast<size_t>(candidates), 0.0);
  for (index_t j = 0; j < candidates; ++j)
    for (index_t i = 0; i < static_cast<index_t>(group_p.size()); ++i)
      scores[j] += group_p[i] * static_cast<double>(overlap(config, i, j)) / config.stride();
  return scores;
}

}  // namespace nsa::reference
