// Keys transposed once, in tiles, for the score kernels (see KeyTiles in kernels.h).
// O(keys x dim) copies against O(query tiles x keys x dim) when every query tile
// transposed the key tiles it meets.
#include <algorithm>

#include "cpu/kernels.h"
#include "nsa/thread_pool.h"

namespace nsa::cpu {

namespace {

// Tiles of every span; store(row, x, out) writes key x's column (out = its tile, rows x
// kKeyTile). Parallel over tiles.
template <class E, class T, class Store>
TiledKeys<E> tile_spans(const std::vector<KeySpanT<T>>& spans, index_t rows, ThreadPool& pool,
                        Store store) {
  TiledKeys<E> tiles;
  tiles.rows = rows;
  const index_t tile_elems = rows * kKeyTile;
  struct Job {
    index_t span, tile;
  };
  std::vector<Job> jobs;
  size_t total = 0;
  for (index_t i = 0; i < static_cast<index_t>(spans.size()); ++i) {
    tiles.offset.push_back(total);
    const index_t n_tiles = (spans[static_cast<size_t>(i)].len + kKeyTile - 1) / kKeyTile;
    for (index_t t = 0; t < n_tiles; ++t) jobs.push_back({i, t});
    total += static_cast<size_t>(n_tiles * tile_elems);
  }
  tiles.data.assign(total + static_cast<size_t>(kKeyTile), E{0});
  pool.parallel_for(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t begin, std::int64_t end, int) {
    for (std::int64_t j = begin; j < end; ++j) {
      const Job& job = jobs[static_cast<size_t>(j)];
      const KeySpanT<T>& sp = spans[static_cast<size_t>(job.span)];
      const index_t s0 = job.tile * kKeyTile, n = std::min(kKeyTile, sp.len - s0);
      E* out = tiles.data.data() + tiles.offset[static_cast<size_t>(job.span)] +
               static_cast<size_t>(job.tile * tile_elems);
      for (index_t x = 0; x < n; ++x) store(sp.k + (s0 + x) * sp.ld, x, out);
    }
  });
  return tiles;
}

}  // namespace

KeyTiles transpose_keys(const std::vector<KeySpan>& spans, index_t dim, ThreadPool& pool) {
  return tile_spans<float>(spans, dim, pool, [dim](const float* row, index_t x, float* out) {
    for (index_t c = 0; c < dim; ++c) out[c * kKeyTile + x] = row[c];
  });
}

KeyPairTiles transpose_key_pairs(const std::vector<KeySpanT<bf16>>& spans, index_t dim,
                                 ThreadPool& pool) {
  const index_t pairs = (dim + 1) / 2;
  return tile_spans<std::uint32_t>(spans, pairs, pool, [dim, pairs](const bf16* row, index_t x,
                                                                     std::uint32_t* out) {
    for (index_t p = 0; p < pairs; ++p) {
      const std::uint32_t lo = row[2 * p].bits;
      const std::uint32_t hi = 2 * p + 1 < dim ? row[2 * p + 1].bits : 0u;  // odd dim: (x, 0)
      out[p * kKeyTile + x] = lo | (hi << 16);
    }
  });
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
