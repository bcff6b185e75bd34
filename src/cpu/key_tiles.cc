// Keys transposed once, in tiles, for the score kernels (see KeyTiles in kernels.h).
// O(keys x dim) copies against O(query tiles x keys x dim) when every query tile
// transposed the key tiles it meets.
#include <algorithm>

#include "cpu/kernels.h"
#include "nsa/thread_pool.h"

namespace nsa::cpu {

KeyTiles transpose_keys(const std::vector<KeySpan>& spans, index_t dim, ThreadPool& pool) {
  KeyTiles tiles;
  tiles.dim = dim;
  const index_t tile_floats = dim * kKeyTile;
  struct Job {
    index_t span, tile;
  };
  std::vector<Job> jobs;
  size_t total = 0;
  for (index_t i = 0; i < static_cast<index_t>(spans.size()); ++i) {
    tiles.offset.push_back(total);
    const index_t n_tiles = (spans[static_cast<size_t>(i)].len + kKeyTile - 1) / kKeyTile;
    for (index_t t = 0; t < n_tiles; ++t) jobs.push_back({i, t});
    total += static_cast<size_t>(n_tiles * tile_floats);
  }
  // kKeyTile more zeros at the end: a tile read from a column offset (ScoreTile) reads at
  // most one vector past its last row; those columns are masked, but must be memory.
  tiles.data.assign(total + static_cast<size_t>(kKeyTile), 0.0f);
  pool.parallel_for(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t begin, std::int64_t end, int) {
    for (std::int64_t j = begin; j < end; ++j) {
      const Job& job = jobs[static_cast<size_t>(j)];
      const KeySpan& sp = spans[static_cast<size_t>(job.span)];
      const index_t s0 = job.tile * kKeyTile, n = std::min(kKeyTile, sp.len - s0);
      float* out = tiles.data.data() + tiles.offset[static_cast<size_t>(job.span)] +
                   static_cast<size_t>(job.tile * tile_floats);
      for (index_t x = 0; x < n; ++x) {
        const float* row = sp.k + (s0 + x) * sp.ld;
        for (index_t c = 0; c < dim; ++c) out[c * kKeyTile + x] = row[c];
      }
    }
  });
  return tiles;
}

void attach_transposed(std::vector<KeyValues>& kvs, const std::vector<index_t>& lens,
                       index_t d_k, index_t d_v, KeyTiles& keys, KeyTiles& values, ThreadPool& pool) {
  std::vector<KeySpan> k_spans, v_spans;
  for (size_t i = 0; i < kvs.size(); ++i) {
    k_spans.push_back({kvs[i].k, kvs[i].k_stride, lens[i]});
    v_spans.push_back({kvs[i].v, kvs[i].v_stride, lens[i]});
  }
  keys = transpose_keys(k_spans, d_k, pool);
  values = transpose_keys(v_spans, d_v, pool);
  for (size_t i = 0; i < kvs.size(); ++i) {
    kvs[i].kt = keys.span(static_cast<index_t>(i));
    kvs[i].vt = values.span(static_cast<index_t>(i));
  }
}

}  // namespace nsa::cpu
