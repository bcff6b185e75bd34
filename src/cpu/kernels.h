// Internal interface of the CPU kernels: the work units the entry points
// (nsa_forward.cc, dense_attention.cc) hand to the thread pool, and the per-branch
// kernels they call. Each kernel here is compiled for every SIMD target Highway knows
// and picked at run time (HWY_DYNAMIC_DISPATCH) once per call, not per dot product.
// Keys and values are stored as float or bf16 (the bf16 path: one template, two
// instantiations); queries, scores, softmax state and outputs are always fp32.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.h"
#include "cpu/softmax_state.h"
#include "nsa/attention.h"
#include "nsa/thread_pool.h"

namespace nsa::cpu {

// Keys and values of one kv head of one sequence: key s (0-based position inside the
// sequence) at k + s * k_stride, its value at v + s * v_stride; dim contiguous.
// T: the storage type, float or bf16.
// kt (fp32 keys only, may be null): the same keys transposed up front in tiles
// (KeyTiles::span): keys i * kKeyTile .. as [dim, kKeyTile] at kt + i * dim * kKeyTile.
// Set, the score kernels read it instead of transposing each key tile per query tile.
// vt (backward only, may be null): the values transposed likewise.
// kt_pairs (bf16 keys on the pairs path only, may be null): the keys transposed up front
// as bf16 pairs (KeyPairTiles::span): [ceil(dim / 2), kKeyTile] per tile of kKeyTile keys.
template <class T>
struct KeyValuesT {
  const T* k = nullptr;
  index_t k_stride = 0;
  const T* v = nullptr;
  index_t v_stride = 0;
  const float* kt = nullptr;
  const float* vt = nullptr;
  const std::uint32_t* kt_pairs = nullptr;

  // Whether keys come transposed up front (then a score tile must not straddle two tiles).
  bool pretransposed() const { return kt != nullptr || kt_pairs != nullptr; }
};
using KeyValues = KeyValuesT<float>;
using KeyValuesBf16 = KeyValuesT<bf16>;

// Keys per score tile: a [rows, kKeyTile] block of scores is the largest thing any
// kernel materialises (besides the compressed keys themselves).
inline constexpr index_t kKeyTile = 64;
// Query rows per tile (tokens * G): tokens per tile = max(1, kRowsPerTile / G).
inline constexpr index_t kRowsPerTile = 64;

inline index_t tile_tokens(index_t group) { return group >= kRowsPerTile ? 1 : kRowsPerTile / group; }

// A query tile: tokens t0 .. t0 + tokens - 1 of one sequence (positions relative to the
// sequence start) times the G query heads of one kv group. Row r = tok * G + g.
// q is packed [rows, d_k] and already multiplied by the softmax scale.
// q_pairs is set only on the bf16 path when the CPU has a bf16 dot product (vdpbf16ps,
// see bf16_dot_enabled): the same rows as bf16 pairs [rows, ceil(d_k / 2)] (an odd d_k's
// last pair holds a zero), not scaled; the kernels multiply those scores by `scale`.
struct QueryTile {
  index_t t0 = 0, tokens = 0, group = 0, rows = 0, d_k = 0, d_v = 0;
  const float* q = nullptr;
  const std::uint32_t* q_pairs = nullptr;
  float scale = 1.0f;
};

// Per-worker scratch, reused across tasks (resized on demand, never shrunk).
struct Scratch {
  std::vector<float> q;            // packed queries [rows, d_k]
  std::vector<float> scores;       // score tile [rows, kKeyTile]
  std::vector<float> kt;           // transposed key tile [d_k, kKeyTile]
  std::vector<index_t> lo, hi;     // per-row visible key interval [lo, hi)
  std::vector<float> sel_scores;   // [tokens, num_sel] importance of selection blocks
  std::vector<float> lse;          // [rows] log-sum-exp of the compression branch
  std::vector<float> cmp_scores;   // [rows, <= num_cmp rounded up] compression probabilities
  std::vector<float> cmp_max;      // [rows, tiles] their running maxima (pass 1 -> 2)
  std::vector<float> lse_scale;    // [G] exp(m_tile - lse) of one token's rows
  std::vector<std::int32_t> sel;   // [tokens, top_n] chosen blocks
  std::vector<index_t> order;      // select_blocks candidates
  std::vector<index_t> blocks;     // selection_attention: union of the tile's chosen blocks
  std::vector<std::uint8_t> chosen_by;  // [blocks, tokens]: whether the token chose the block
  std::vector<float> out;          // [rows, d_v] one branch's normalised output
  // bf16 dot-product path only (pairs of bf16 in one uint32, the low half first):
  std::vector<std::uint32_t> q_pairs;   // [rows, ceil(d_k/2)] packed queries
  std::vector<std::uint32_t> kt_pairs;  // [ceil(d_k/2), kKeyTile] transposed key tile
  std::vector<std::uint32_t> vt_pairs;  // [kKeyTile/2, d_v] value tile, pairs of keys
  std::vector<std::uint32_t> p_pairs;   // [rows, kKeyTile/2] probabilities as bf16
  SoftmaxState state[kNumBranches];
};

// Gathers the tile's query rows from q (sequence at batch b, token offset start) into
// s.q, multiplied by scale, and returns the tile. The bf16 overload also packs
// s.q_pairs when `pairs` is true (the bf16 dot-product path).
QueryTile pack_queries(const TensorView<const float>& q, const SeqSpan& seq, index_t kv_head,
                       index_t group, index_t t0, index_t tokens, index_t d_v, float scale,
                       Scratch& s);
QueryTile pack_queries(const TensorView<const bf16>& q, const SeqSpan& seq, index_t kv_head,
                       index_t group, index_t t0, index_t tokens, index_t d_v, float scale,
                       Scratch& s, bool pairs);

// ---- keys transposed once, in tiles (key_tiles.cc) ---------------------------------------
// One run of keys (one sequence and kv head): key x at k + x * ld, dim contiguous.
template <class T>
struct KeySpanT {
  const T* k = nullptr;
  index_t ld = 0, len = 0;
};
using KeySpan = KeySpanT<float>;
// Per span, ceil(len / kKeyTile) tiles of [rows, kKeyTile] (columns past len zero), in
// span order, plus kKeyTile zero elements at the end (a tile read from a column offset
// reads at most one vector past its last row). span(i) is the kt (kt_pairs) of its
// KeyValues. Every query tile that meets a key tile reads it from here instead of
// transposing it again: dense and window attention, the selection blocks and the
// compressed keys each transpose their keys once per call.
//   KeyTiles      fp32 keys, rows = dim
//   KeyPairTiles  bf16 keys as pairs (low half the even element), rows = ceil(dim / 2)
template <class E>
struct TiledKeys {
  index_t rows = 0;
  std::vector<E> data;
  std::vector<size_t> offset;  // per span: where its tiles start in data
  const E* span(index_t i) const { return data.data() + offset[static_cast<size_t>(i)]; }
};
using KeyTiles = TiledKeys<float>;
using KeyPairTiles = TiledKeys<std::uint32_t>;
KeyTiles transpose_keys(const std::vector<KeySpan>& spans, index_t dim, ThreadPool& pool);
KeyPairTiles transpose_key_pairs(const std::vector<KeySpanT<bf16>>& spans, index_t dim, ThreadPool& pool);
// The keys and values of every kvs[i] (lens[i] keys) transposed into keys / values, and
// kvs[i].kt / .vt pointed at them (the backward's query pass reads both).
void attach_transposed(std::vector<KeyValues>& kvs, const std::vector<index_t>& lens,
                       index_t d_k, index_t d_v, KeyTiles& keys, KeyTiles& values, ThreadPool& pool);

// ---- bf16 dot product (bf16_dot.cc) -----------------------------------------------------
// Whether the CPU's bf16 pair dot product (vdpbf16ps, AVX512_BF16) can run: the SIMD
// target in use is an AVX-512 one and the CPU has AVX512_BF16.
bool bf16_dot_available();
// Whether the bf16 decode kernels use it for this call: available, and not turned off by
// tests. Otherwise bf16 is widened to fp32 as read.
bool bf16_dot_enabled();
// Whether the bf16 forward does: available, and preferred (the policy: not on Intel CPUs,
// where it measured slower than fp32 FMAs; NSA_BF16_DOT=0/1 overrides) or forced by
// tests. Otherwise the forward widens its inputs once and runs the fp32 kernels.
bool bf16_dot_for_forward();
// Tests: true forces the vdpbf16ps path wherever it is available, false the widening
// path on every target, for the forward and the decode (the policy no longer applies).
void set_bf16_dot_allowed(bool allowed);

// ---- phi: compression of raw key/value blocks (phi.cc) ---------------------------------
// raw [B,T,H_kv,dim] -> out [total_cmp, H_kv, dim]; compressed block i of sequence s is
// row p.cmp_offsets[s] + i. phi is applied once per (block, kv head).
void compress_blocks(const Config& config, const Problem& p, const TensorView<const float>& raw,
                     const PhiWeights<float>& phi, float* out, ThreadPool& pool);
// bf16 raw tokens (widened as they are gathered), fp32 weights and outputs.
void compress_blocks(const Config& config, const Problem& p, const TensorView<const bf16>& raw,
                     const PhiWeights<float>& phi, float* out, ThreadPool& pool);

// ---- the three branches, one query tile at a time ---------------------------------------
// Compression branch (compression_attention.cc): attends the tile to the compressed keys
// of its sequence (cmp: keys kc/vc, num_cmp of them) into s.state[kCmp], then writes the
// group importance of every selection block into s.sel_scores [tokens, num_sel] with
// num_sel = t_last / l' + 1 (needs the final lse, hence a second pass over the keys).
void compression_attention(const Config& config, const QueryTile& tile, const KeyValues& cmp,
                           index_t num_cmp, Scratch& s);
void compression_attention(const Config& config, const QueryTile& tile, const KeyValuesBf16& cmp,
                           index_t num_cmp, Scratch& s);

// Top-n selection for each token of the tile from s.sel_scores into s.sel [tokens, top_n]
// (select_blocks.cc). Scalar: a few hundred candidates per token.
void select_blocks(const Config& config, const QueryTile& tile, Scratch& s);

// The union of a query tile's selection choices (select_blocks.cc), shared by the forward's
// selection branch and the backward's dq pass: `tokens` consecutive tokens, token i's
// top_n chosen blocks at sel + i * stride (-1 padded). blocks = the union, ascending;
// chosen_by[b * tokens + i] = whether token i chose blocks[b]. The callers attend each block
// once with the rows of every run of consecutive tokens that chose it.
void union_of_choices(const std::int32_t* sel, index_t stride, index_t top_n, index_t tokens,
                      std::vector<index_t>& blocks, std::vector<std::uint8_t>& chosen_by);

// Selection branch (selection_attention.cc): each token's G rows attend to the tokens
// s <= t of its chosen blocks s.sel, into s.state[kSlc].
void selection_attention(const Config& config, const QueryTile& tile, const KeyValues& slc,
                         Scratch& s);
void selection_attention(const Config& config, const QueryTile& tile, const KeyValuesBf16& slc,
                         Scratch& s);

// Sliding window / causal attention (window_attention.cc): row r of token t attends keys
// max(0, t - window + 1) .. t, into `state`. window <= 0 means unbounded (dense causal).
void window_attention(const QueryTile& tile, const KeyValues& kv, index_t window,
                      SoftmaxState& state, Scratch& s);
void window_attention(const QueryTile& tile, const KeyValuesBf16& kv, index_t window,
                      SoftmaxState& state, Scratch& s);

}  // namespace nsa::cpu
