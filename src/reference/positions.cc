// Which raw tokens the selection and window branches read for query t.
#include <algorithm>

#include "reference/reference.h"

namespace nsa::reference {

std::vector<index_t> selected_positions(const Config& config, const std::vector<index_t>& blocks,
                                        index_t t) {
  std::vector<index_t> positions;
  for (index_t j : blocks)
    for (index_t s = j * config.sel_block(); s < (j + 1) * config.sel_block() && s <= t; ++s)
      positions.push_back(s);
  return positions;
}

std::vector<index_t> window_positions(const Config& config, index_t t) {
  std::vector<index_t> positions;
  for (index_t s = std::max<index_t>(0, t - config.window() + 1); s <= t; ++s) positions.push_back(s);
  return positions;
}

std::vector<double> rows_at(const TensorView<const double>& x, const SeqSpan& seq, index_t h,
                            const std::vector<index_t>& positions) {
  const index_t dim = x.dim();
  std::vector<double> rows;
  rows.reserve(positions.size() * dim);
  for (index_t s : positions)
    for (index_t c = 0; c < dim; ++c) rows.push_back(x.at(seq.batch, seq.start + s, h, c));
  return rows;
}

std::vector<index_t> saved_selection(const std::int32_t* sel_blocks, const Config& config,
                                     index_t row, index_t kv_heads, index_t kvh) {
  std::vector<index_t> blocks;
  const std::int32_t* sel = sel_blocks + (row * kv_heads + kvh) * config.top_n();
  for (index_t k = 0; k < config.top_n() && sel[k] >= 0; ++k) blocks.push_back(sel[k]);
  return blocks;
}

}  // namespace nsa::reference
