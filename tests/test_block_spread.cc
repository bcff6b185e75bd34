// BlockSpread (cpu/block_scores.h), the importance of selection blocks from compressed
// ones, against the spec's formula written out: score[j] += P[i] * overlap(i, j) / d, for
// configs where a compressed block meets one or several selection blocks, from any first
// block i0 (the forward spreads one key tile at a time), bitwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cpu/block_scores.h"
#include "nsa/config.h"

namespace nsa {
namespace {

std::vector<float> naive(const Config& c, const std::vector<float>& P, index_t i0, index_t num_sel) {
  std::vector<float> score(static_cast<size_t>(num_sel), 0.0f);
  const index_t d = c.stride(), l = c.block_len(), lp = c.sel_block();
  for (size_t x = 0; x < P.size(); ++x) {
    if (P[x] == 0.0f) continue;
    const index_t lo = (i0 + static_cast<index_t>(x)) * d, hi = lo + l;
    for (index_t j = 0; j < num_sel; ++j) {
      const index_t overlap = std::min(hi, (j + 1) * lp) - std::max(lo, j * lp);
      if (overlap > 0) score[static_cast<size_t>(j)] += P[x] * (static_cast<float>(overlap) / static_cast<float>(d));
    }
  }
  return score;
}

TEST(BlockSpread, EqualsTheOverlapFormula) {
  struct Shape { int l, d, lp; };
  // l = 2d, l' = 4d (the paper's); l = d; l = l'; l = 3d with l' = 2l (period 2 with a
  // block over two selection blocks); d = 1.
  const Shape shapes[] = {{32, 16, 64}, {8, 4, 16}, {8, 8, 16}, {16, 8, 16}, {12, 4, 24}, {6, 2, 36}, {4, 1, 8}};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (const Shape& sh : shapes) {
    ConfigOptions o;
    o.block_len = sh.l;
    o.stride = sh.d;
    o.sel_block = sh.lp;
    o.top_n = 4;
    o.n_init = 1;
    o.n_local = 2;
    const Config c(o);
    const cpu::BlockSpread spread(c);
    for (const index_t i0 : {0, 1, 3, 7, 64}) {
      for (const index_t n : {1, 5, 64, 200}) {
        std::vector<float> P(static_cast<size_t>(n));
        for (float& p : P) p = u(rng) < 0.2f ? 0.0f : u(rng);
        const index_t num_sel = ((i0 + n) * sh.d + sh.l) / sh.lp + 2;
        const std::vector<float> want = naive(c, P, i0, num_sel);
        std::vector<float> got(static_cast<size_t>(num_sel), 0.0f);
        spread.add(P.data(), i0, n, got.data());
        EXPECT_EQ(got, want) << "l=" << sh.l << " d=" << sh.d << " l'=" << sh.lp << " i0=" << i0 << " n=" << n;
      }
    }
  }
}

}  // namespace
}  // namespace nsa
