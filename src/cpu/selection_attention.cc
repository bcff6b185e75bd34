// Selection branch, one query tile at a time: the G rows of token t attend to every key
// s <= t inside the blocks chosen for (t, group) (s.sel, ascending). Adjacent chosen blocks
// are merged into one key range, so a run of blocks is one flash-attention loop.
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
  for (index_t tok = 0; tok < tile.tokens; ++tok) {
    const index_t t = tile.t0 + tok, row0 = tok * G;
    const std::int32_t* blocks = s.sel.data() + tok * top_n;
    for (index_t k = 0; k < top_n && blocks[k] >= 0;) {
      const index_t begin = blocks[k] * sel_len;
      index_t end = begin;
      for (; k < top_n && blocks[k] >= 0 && blocks[k] * sel_len == end; ++k) end += sel_len;
      end = std::min(end, t + 1);
      AttendRange(tile, row0, G, slc, begin, end, nullptr, nullptr, st, s);
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
