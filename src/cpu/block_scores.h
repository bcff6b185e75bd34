// BlockSpread: the importance of selection blocks from that of compressed blocks (spec,
// "Branch 2"): score[j] += P[i] * overlap(i, j) / d, where compressed block i covers the
// raw tokens [i d, i d + l) and selection block j the tokens [j l', (j + 1) l').
//
// The blocks a compressed block overlaps, and by how much, repeat every
// period = l' / gcd(d, l') compressed blocks (shifted by period d / l' selection blocks),
// so they are tabulated once per config; spreading then needs no division per block (two
// 64-bit divisions per (token, compressed block) were 7% of the forward at T = 65536).
// Every score[j] receives its terms in the order of i, each as P[i] * (overlap / d).
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "nsa/config.h"

namespace nsa::cpu {

class BlockSpread {
 public:
  explicit BlockSpread(const Config& config) {
    const index_t d = config.stride(), l = config.block_len(), lp = config.sel_block();
    period_ = lp / std::gcd(d, lp);
    j_step_ = period_ * d / lp;
    first_.push_back(0);
    for (index_t r = 0; r < period_; ++r) {
      const index_t lo = r * d, hi = lo + l;
      for (index_t j = lo / lp; j * lp < hi; ++j) {
        const index_t overlap = std::min(hi, (j + 1) * lp) - std::max(lo, j * lp);
        j_.push_back(j);
        w_.push_back(static_cast<float>(overlap) / static_cast<float>(d));
      }
      first_.push_back(static_cast<index_t>(j_.size()));
    }
  }

  // score[j] += P[x - i0] * overlap(x, j) / d for the compressed blocks x = i0 .. i0+n-1.
  // Blocks with P = 0 add nothing and are skipped.
  void add(const float* P, index_t i0, index_t n, float* score) const {
    index_t q = i0 / period_, r = i0 % period_;
    for (index_t x = 0; x < n; ++x) {
      const float p = P[x];
      if (p != 0.0f) {
        float* s = score + q * j_step_;
        for (index_t k = first_[r]; k < first_[r + 1]; ++k) s[j_[k]] += p * w_[k];
      }
      if (++r == period_) r = 0, ++q;
    }
  }

 private:
  index_t period_ = 1, j_step_ = 0;
  std::vector<index_t> first_, j_;  // per r in [0, period): its entries first_[r] .. first_[r+1]
  std::vector<float> w_;
};

}  // namespace nsa::cpu
