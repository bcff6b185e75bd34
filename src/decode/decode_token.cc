// One decode step of one (sequence, kv head): store the new token's K/V, compress the
// block it completes, then the three branches for the group's G query heads
// (spec, "Decoding with a cache").
#include "decode/decode_token.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "decode/kernels.h"

namespace nsa::decode {

namespace {

// Top-n selection for query t from scores S [candidates] (spec, "Branch 2", rules 1-3):
// writes the chosen blocks, ascending, into sel [top_n] (-1 padded); returns their number.
index_t choose_blocks(const Config& config, index_t t, const float* score, DecodeScratch& s,
                      std::int32_t* sel) {
  const index_t n = config.top_n(), candidates = t / config.sel_block() + 1;
  std::fill(sel, sel + n, -1);
  if (candidates <= n) {
    for (index_t j = 0; j < candidates; ++j) sel[j] = static_cast<std::int32_t>(j);
    return candidates;
  }
  s.taken.assign(static_cast<size_t>(candidates), 0);
  index_t chosen = 0;
  auto take = [&](index_t j) {
    if (j >= 0 && j < candidates && !s.taken[j]) {
      s.taken[j] = 1;
      sel[chosen++] = static_cast<std::int32_t>(j);
    }
  };
  for (index_t j = 0; j < config.n_init(); ++j) take(j);
  const index_t current = t / config.sel_block();
  for (index_t k = 0; k < config.n_local(); ++k) take(current - k);
  s.order.clear();
  for (index_t j = 0; j < candidates; ++j)
    if (!s.taken[j]) s.order.push_back(j);
  const index_t rest = std::min<index_t>(n - chosen, static_cast<index_t>(s.order.size()));
  // Highest score first; equal scores go to the lower index.
  std::partial_sort(s.order.begin(), s.order.begin() + rest, s.order.end(),
                    [&](index_t a, index_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); });
  for (index_t k = 0; k < rest; ++k) take(s.order[k]);
  std::sort(sel, sel + chosen);
  return chosen;
}

}  // namespace

void compress_block(const DecodeCache::State& st, const DecodeSequence& q, index_t h, index_t i,
                    DecodeScratch& s) {
  const Config& config = st.config;
  const index_t l = config.block_len(), first = i * config.stride();
  for (int kind = 0; kind < 2; ++kind) {
    const index_t dim = kind == 0 ? st.shape.d_k : st.shape.d_v;
    s.block.resize(static_cast<size_t>(l * dim));
    for (index_t r = 0; r < l; ++r)  // the block may straddle two chunks
      st.get(kind == 0 ? st.key(q, kCmp, h, first + r) : st.value(q, kCmp, h, first + r),
             s.block.data() + r * dim, dim);
    s.kc.resize(static_cast<size_t>(dim));
    phi_block(config, kind == 0 ? st.phi_k : st.phi_v, dim, s.block.data(), s.kc.data(), s.phi);
    st.put(kind == 0 ? st.kc(q, h, i) : st.vc(q, h, i), s.kc.data(), dim);
  }
}

namespace {

// Keys [k0, k1) of the branch's key list (in order) as key ranges; rows of d_k (d_v)
// elements of elem_bytes bytes, at each segment's stride.
void slice(const std::vector<Segment>& segs, index_t k0, index_t k1, std::vector<Segment>& out,
           index_t d_k, index_t d_v, index_t elem_bytes) {
  out.clear();
  index_t base = 0;
  for (const Segment& seg : segs) {
    const index_t lo = std::max(k0, base), hi = std::min(k1, base + seg.count);
    if (lo < hi)
      out.push_back({static_cast<const std::byte*>(seg.k) + (lo - base) * seg.ldk(d_k) * elem_bytes,
                     static_cast<const std::byte*>(seg.v) + (lo - base) * seg.ldv(d_v) * elem_bytes, hi - lo,
                     seg.k_stride, seg.v_stride});
    base += seg.count;
  }
}

index_t total_keys(const std::vector<Segment>& segs) {
  index_t n = 0;
  for (const Segment& seg : segs) n += seg.count;
  return n;
}

}  // namespace

void begin_token(const DecodeCache::State& st, TokenWork& w, index_t parts, DecodeScratch& s) {
  const Config& config = st.config;
  const index_t G = st.group, d_k = st.shape.d_k, d_v = st.shape.d_v;
  DecodeSequence& q = *w.q;
  const index_t t = w.t, h = w.h;

  if (w.store) {
    // 1. Store K/V of token t (the caller made its chunks writable: prepare_write).
    for (int b = 0; b < st.kv_streams; ++b) {
      st.put(st.key(q, b, h, t), w.in.k[b], d_k);
      st.put(st.value(q, b, h, t), w.in.v[b], d_v);
    }
    // 2. A compression block completes: phi runs once for it.
    const index_t l = config.block_len(), d = config.stride();
    if (t >= l - 1 && (t - l + 1) % d == 0) compress_block(st, q, h, (t - l + 1) / d, s);
  }
  const index_t visible = config.visible_cmp_blocks(t);

  w.qs.resize(static_cast<size_t>(G * d_k));
  for (index_t g = 0; g < G; ++g)
    for (index_t c = 0; c < d_k; ++c) w.qs[g * d_k + c] = st.rounded(w.in.q[g * w.in.q_head_stride + c]);
  for (int b = 0; b < kNumBranches; ++b) {
    w.parts[b].resize(static_cast<size_t>(parts));
    w.o[b].resize(static_cast<size_t>(G * d_v));
  }
  // 3. The compression branch's keys: the visible Kc/Vc (contiguous inside each chunk).
  std::vector<Segment>& cmp = w.segs[kCmp];
  cmp.clear();
  for (index_t i0 = 0; i0 < visible; i0 += st.cmp_per_chunk)
    cmp.push_back({st.kc(q, h, i0), st.vc(q, h, i0), std::min(st.cmp_per_chunk, visible - i0)});
}

void attend_part(const DecodeCache::State& st, TokenWork& w, int branch, index_t part, index_t parts) {
  const index_t G = st.group, d_k = st.shape.d_k, d_v = st.shape.d_v;
  const std::vector<Segment>& segs = w.segs[branch];
  const index_t n = total_keys(segs);
  const index_t k0 = n * part / parts, k1 = n * (part + 1) / parts;
  Partial& pt = w.parts[branch][static_cast<size_t>(part)];
  std::vector<Segment> mine;
  slice(segs, k0, k1, mine, d_k, d_v, st.elem_bytes);
  pt.keys = k1 - k0;
  attend_partial(w.qs.data(), st.scale, G, d_k, d_v, st.shape.storage, mine.data(), static_cast<index_t>(mine.size()),
                 pt.state, branch == kCmp ? &pt.probs : nullptr);
}

void select_token(const DecodeCache::State& st, TokenWork& w, DecodeScratch& s) {
  const Config& config = st.config;
  const index_t C = st.chunk;
  const DecodeSequence& q = *w.q;
  const index_t t = w.t, h = w.h, lp = config.sel_block();
  const index_t visible = total_keys(w.segs[kCmp]);

  // 4. o_cmp, and the importance: P[i] = sum over the group of p[g][i];
  //    S[j] = sum_i P[i] overlap(i, j) / d.
  s.imp.assign(static_cast<size_t>(visible), 0.0f);
  merge_partials(w.parts[kCmp], w.o[kCmp].data(), s.imp.data());
  const index_t candidates = t / lp + 1;
  s.score.assign(static_cast<size_t>(candidates), 0.0f);
  st.spread.add(s.imp.data(), 0, visible, s.score.data());

  // 5. The selection branch's keys: tokens s <= t of the chosen blocks.
  w.sel.resize(static_cast<size_t>(config.top_n()));
  std::int32_t* sel = w.sel.data();
  const index_t chosen = choose_blocks(config, t, s.score.data(), s, sel);
  TokensRead read;
  read.cmp = visible;
  const int sb = kSlc < st.kv_streams ? kSlc : 0;
  std::vector<Segment>& slc = w.segs[kSlc];
  slc.clear();
  for (index_t k = 0; k < chosen; ++k) {  // a selection block never straddles two chunks
    const index_t start = sel[k] * lp, count = std::min(lp, t + 1 - start);
    slc.push_back({st.key(q, sb, h, start), st.value(q, sb, h, start), count});
    read.slc += count;
  }
  // 6. The window's keys: tokens max(0, t-w+1) .. t, split at chunk boundaries.
  const int wb = kWin < st.kv_streams ? kWin : 0;
  std::vector<Segment>& win = w.segs[kWin];
  win.clear();
  for (index_t s0 = std::max<index_t>(0, t - config.window() + 1); s0 <= t;) {
    const index_t end = std::min(t + 1, (s0 / C + 1) * C);
    win.push_back({st.key(q, wb, h, s0), st.value(q, wb, h, s0), end - s0});
    read.win += end - s0;
    s0 = end;
  }
  w.read = read;
}

void finish_token(const DecodeCache::State& st, TokenWork& w) {
  const index_t G = st.group, d_v = st.shape.d_v;
  merge_partials(w.parts[kSlc], w.o[kSlc].data(), nullptr);
  merge_partials(w.parts[kWin], w.o[kWin].data(), nullptr);
  // 7. Gated combine.
  for (index_t g = 0; g < G; ++g) {
    const float* in_gate = w.in.gates + g * w.in.gates_head_stride;
    const float gate[kNumBranches] = {st.rounded(in_gate[kCmp]), st.rounded(in_gate[kSlc]),
                                      st.rounded(in_gate[kWin])};
    const float *oc = w.o[kCmp].data() + g * d_v, *os = w.o[kSlc].data() + g * d_v,
                *ow = w.o[kWin].data() + g * d_v;
    float* o = w.out + g * w.out_head_stride;
    for (index_t c = 0; c < d_v; ++c) o[c] = gate[kCmp] * oc[c] + gate[kSlc] * os[c] + gate[kWin] * ow[c];
  }
}

}  // namespace nsa::decode
