// Compression branch and importance scores, one query tile at a time.
//   keys: the sequence's compressed blocks Kc/Vc [num_cmp, dim] (strided by H_kv * dim)
//   row r of token t sees blocks i < visible(t) = N_cmp(t + 1)
// Pass 1 is flash attention over the compressed keys (o_cmp, lse); it keeps each key
// tile's exp(s - m_tile) and m_tile (KeptTiles: at most 64 x T/d floats per worker, never
// a [T, N_cmp] matrix). Pass 2 turns them into probabilities p = exp(s - lse) =
// exp(s - m_tile) * exp(m_tile - lse), one exp per row and tile, sums them over the G
// heads of the group and spreads each compressed block's sum over the selection blocks it
// overlaps (weight overlap / d).
#include <algorithm>
#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/compression_attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"
#include "cpu/block_scores.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

template <class T>
void CompressionAttentionT(const Config& config, const QueryTile& tile, const KeyValuesT<T>& cmp,
                           index_t num_cmp, Scratch& s) {
  const hn::ScalableTag<float> d;
  const index_t NL = static_cast<index_t>(hn::Lanes(d));
  const index_t G = tile.group, rows = tile.rows;
  SoftmaxState& st = s.state[kCmp];
  st.reset(rows, tile.d_v);
  s.lo.assign(static_cast<size_t>(rows), 0);
  s.hi.resize(static_cast<size_t>(rows));
  for (index_t tok = 0; tok < tile.tokens; ++tok)
    for (index_t g = 0; g < G; ++g)
      s.hi[tok * G + g] = std::min(num_cmp, config.visible_cmp_blocks(tile.t0 + tok));
  const index_t key1 = s.hi[rows - 1];  // visibility grows with t
  // Pass 1 keeps its tiles' probabilities [rows, key1 rounded up to whole tiles] and their
  // running maxima [rows, tiles] for pass 2.
  const index_t tiles = (key1 + kKeyTile - 1) / kKeyTile, keep_ld = tiles * kKeyTile;
  if (s.cmp_scores.size() < static_cast<size_t>(rows * keep_ld))
    s.cmp_scores.resize(static_cast<size_t>(rows * keep_ld));
  if (s.cmp_max.size() < static_cast<size_t>(rows * tiles)) s.cmp_max.resize(static_cast<size_t>(rows * tiles));
  const KeptTiles keep{s.cmp_scores.data(), keep_ld, s.cmp_max.data(), tiles};
  AttendRange(tile, 0, rows, cmp, 0, key1, s.lo.data(), s.hi.data(), st, s, &keep);

  // Pass 2: importance of each selection block, [tokens, num_sel].
  const index_t sel_len = config.sel_block();
  const index_t num_sel = (tile.t0 + tile.tokens - 1) / sel_len + 1;
  s.sel_scores.assign(static_cast<size_t>(tile.tokens * num_sel), 0.0f);
  if (key1 == 0) return;
  const BlockSpread spread(config);
  s.lse.resize(static_cast<size_t>(rows));
  s.lse_scale.resize(static_cast<size_t>(G));
  for (index_t r = 0; r < rows; ++r)
    s.lse[r] = st.l[r] > 0.0f ? st.m[r] + std::log(st.l[r]) : kNegInf;
  float* probs = s.cmp_scores.data();  // pass 1's tiles: exp(score - m_tile), [rows, keep_ld]
  for (index_t s0 = 0; s0 < key1; s0 += kKeyTile) {
    const index_t n = std::min(kKeyTile, key1 - s0);
    const index_t n_pad = (n + NL - 1) / NL * NL, t = s0 / kKeyTile;
    // p = exp(score - lse) = P * exp(m_tile - lse) (0 where masked, and for a row that saw
    // no key at all), summed over the group into row tok * G (each vector of columns is
    // read for every g before its sum overwrites it).
    for (index_t tok = 0; tok < tile.tokens; ++tok) {
      float* sum_row = probs + tok * G * keep_ld + s0;
      for (index_t g = 0; g < G; ++g) {
        const index_t r = tok * G + g;
        s.lse_scale[g] = s.lse[r] == kNegInf ? 0.0f : std::exp(s.cmp_max[r * tiles + t] - s.lse[r]);
      }
      for (index_t j = 0; j < n_pad; j += NL) {
        auto sum = hn::Zero(d);
        for (index_t g = 0; g < G; ++g)
          sum = hn::MulAdd(hn::LoadU(d, probs + (tok * G + g) * keep_ld + s0 + j), hn::Set(d, s.lse_scale[g]), sum);
        hn::StoreU(sum, d, sum_row + j);
      }
      // Spread P[i] over the selection blocks j that compressed block i overlaps.
      spread.add(sum_row, s0, n, s.sel_scores.data() + tok * num_sel);
    }
  }
}

void CompressionAttention(const Config& config, const QueryTile& tile, const KeyValues& cmp,
                          index_t num_cmp, Scratch& s) {
  CompressionAttentionT(config, tile, cmp, num_cmp, s);
}

void CompressionAttentionBf16(const Config& config, const QueryTile& tile,
                              const KeyValuesBf16& cmp, index_t num_cmp, Scratch& s) {
  CompressionAttentionT(config, tile, cmp, num_cmp, s);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(CompressionAttention);
HWY_EXPORT(CompressionAttentionBf16);

void compression_attention(const Config& config, const QueryTile& tile, const KeyValues& cmp,
                           index_t num_cmp, Scratch& s) {
  HWY_DYNAMIC_DISPATCH(CompressionAttention)(config, tile, cmp, num_cmp, s);
}

void compression_attention(const Config& config, const QueryTile& tile, const KeyValuesBf16& cmp,
                           index_t num_cmp, Scratch& s) {
  HWY_DYNAMIC_DISPATCH(CompressionAttentionBf16)(config, tile, cmp, num_cmp, s);
}
}  // namespace nsa::cpu
#endif
