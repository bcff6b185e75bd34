// Sliding-window attention, one query tile at a time: row r of token t attends keys
// max(0, t - w + 1) .. t. With w <= 0 the window is unbounded and this is dense causal
// attention (the baseline reuses it). The tile's tokens share one key range
// [t0 - w + 1, t_last]; each row masks the keys outside its own window.
#include <algorithm>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/window_attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "cpu/attention_tile-inl.h"

HWY_BEFORE_NAMESPACE();
namespace nsa::cpu::HWY_NAMESPACE {

template <class T>
void WindowAttentionT(const QueryTile& tile, const KeyValuesT<T>& kv, index_t window,
                      SoftmaxState& st, Scratch& s) {
  const index_t G = tile.group, rows = tile.rows;
  st.reset(rows, tile.d_v);
  s.lo.resize(static_cast<size_t>(rows));
  s.hi.resize(static_cast<size_t>(rows));
  for (index_t tok = 0; tok < tile.tokens; ++tok) {
    const index_t t = tile.t0 + tok;
    const index_t lo = window > 0 ? std::max<index_t>(0, t - window + 1) : 0;
    for (index_t g = 0; g < G; ++g) {
      s.lo[tok * G + g] = lo;
      s.hi[tok * G + g] = t + 1;
    }
  }
  AttendRange(tile, 0, rows, kv, s.lo[0], s.hi[rows - 1], s.lo.data(), s.hi.data(), st, s);
}

void WindowAttention(const QueryTile& tile, const KeyValues& kv, index_t window,
                     SoftmaxState& st, Scratch& s) {
  WindowAttentionT(tile, kv, window, st, s);
}

void WindowAttentionBf16(const QueryTile& tile, const KeyValuesBf16& kv, index_t window,
                         SoftmaxState& st, Scratch& s) {
  WindowAttentionT(tile, kv, window, st, s);
}

}  // namespace nsa::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nsa::cpu {
HWY_EXPORT(WindowAttention);
HWY_EXPORT(WindowAttentionBf16);

void window_attention(const QueryTile& tile, const KeyValues& kv, index_t window,
                      SoftmaxState& state, Scratch& s) {
  HWY_DYNAMIC_DISPATCH(WindowAttention)(tile, kv, window, state, s);
}

void window_attention(const QueryTile& tile, const KeyValuesBf16& kv, index_t window,
                      SoftmaxState& state, Scratch& s) {
  HWY_DYNAMIC_DISPATCH(WindowAttentionBf16)(tile, kv, window, state, s);
}
}  // namespace nsa::cpu
#endif
