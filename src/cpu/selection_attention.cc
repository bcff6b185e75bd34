// Selection branch, one query tile at a time: the G rows of token t attend to every key
// s <= t inside the blocks chosen for (t, group) (s.sel, ascending). The tile's tokens
// mostly choose the same blocks (the forced ones, and neighbours score alike), so each
// block of the union of their choices is attended once by the rows of every run of
// consecutive tokens that chose it: G * tokens rows at a time when they all did, which
// reuses each key tile for more rows than G. Every row still sees its blocks in ascending
// order.
#include <algorithm>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/selection_attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

template <class T>
void SelectionAttentionT(const Config& config, const QueryTile& tile, const KeyValuesT<T>& slc,
                         Scratch& s) {
  const index_t G = tile.group, top_n = config.top_n(), sel_len = config.sel_block();
  SoftmaxState& st = s.state[kSlc];
  st.reset(tile.rows, tile.d_v);
  s.lo.resize(static_cast<size_t>(tile.rows));
  s.hi.resize(static_cast<size_t>(tile.rows));
  union_of_choices(s.sel.data(), top_n, top_n, tile.tokens, s.blocks, s.chosen_by);
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const index_t begin = s.blocks[i] * sel_len;
    const std::uint8_t* chose = s.chosen_by.data() + i * static_cast<size_t>(tile.tokens);
    for (index_t tok = 0; tok < tile.tokens;) {
      if (!chose[tok]) {
        ++tok;
        continue;
      }
      const index_t first = tok;
      for (; tok < tile.tokens && chose[tok]; ++tok) {
        const index_t hi = std::min(begin + sel_len, tile.t0 + tok + 1);  // keys s <= t
        for (index_t g = 0; g < G; ++g) {
          s.lo[tok * G + g] = begin;
          s.hi[tok * G + g] = hi;
        }
      }
      // Rows of tokens first .. tok - 1; the last one sees the most keys of the block.
      const index_t r0 = first * G, rows = (tok - first) * G;
      AttendRange(tile, r0, rows, slc, begin, s.hi[r0 + rows - 1], s.lo.data() + r0,
                  s.hi.data() + r0, st, s);
    }
  }
}

void SelectionAttention(const Config& config, const QueryTile& tile, const KeyValues& slc,
                        Scratch& s) {
  SelectionAttentionT(config, tile, slc, s);
}

void SelectionAttentionBf16(const Config& config, const QueryTile& tile, const KeyValuesBf16& slc,
                            Scratch& s) {
  SelectionAttentionT(config, tile, slc, s);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(SelectionAttention);
HWY_EXPORT(SelectionAttentionBf16);

void selection_attention(const Config& config, const QueryTile& tile, const KeyValues& slc,
                         Scratch& s) {
  HWY_DYNAMIC_DISPATCH(SelectionAttention)(config, tile, slc, s);
}

void selection_attention(const Config& config, const QueryTile& tile, const KeyValuesBf16& slc,
                         Scratch& s) {
  HWY_DYNAMIC_DISPATCH(SelectionAttentionBf16)(config, tile, slc, s);
}
}  // namespace nsa::cpu
#endif
