// Kernels of one decode step: a group's G query rows against a few contiguous key ranges
// (attend.cc: Highway SIMD with run-time dispatch, on the forward's micro-kernels; the
// parts of a split step are merged in decode_token.cc), and phi applied to a single block
// (plain loops the compiler vectorizes).
#pragma once

#include <vector>

#include "cpu/softmax_state.h"
#include "nsa/attention.h"
#include "nsa/decode.h"

namespace nsa::decode {

// dot(a, b) over n floats, with 16 independent partial sums.
float dot(const float* a, const float* b, index_t n);

// Bytes of one stored element.
inline index_t element_bytes(CacheStorage storage) { return storage == CacheStorage::bf16 ? 2 : 4; }

// Rows in the cache's storage type (float or bf16, said by the caller): `count` keys of
// d_k elements from k, one every ldk(d_k) elements, and values of d_v from v, one every
// ldv(d_v). The decode cache's rows are contiguous (stride 0: the row length); a
// [T, H_kv, d] cache such as dense_decode_step's has stride H_kv d, so one kv head's keys
// are one segment however many kv heads there are.
struct Segment {
  const void* k = nullptr;
  const void* v = nullptr;
  index_t count = 0;
  index_t k_stride = 0;  // elements from one key row to the next; 0: d_k
  index_t v_stride = 0;  // elements from one value row to the next; 0: d_v
  index_t ldk(index_t d_k) const { return k_stride ? k_stride : d_k; }
  index_t ldv(index_t d_v) const { return v_stride ? v_stride : d_v; }
};

// The online-softmax state (cpu::SoftmaxState, reset here to G rows of d_v) of the G rows
// q [G, d_k] (fp32, not yet scaled) against the keys of the segments, scores scale * q.k:
// m [G] the max score, l [G] the sum of exp(score - m), acc [G, d_v] the sum of
// exp(score - m) v, and when probs is not null *probs [G, n] the exp(score - m). With no
// key: m = -inf, l = 0, acc = 0 (the reset state). Keys
// and values are `storage` elements; bf16 ones go through vdpbf16ps where the CPU has it
// (q, and on the row kernel the probabilities of P V, rounded to bf16, as in the bf16
// forward), else are widened to fp32. The kernel is chosen by attend_path().
void attend_partial(const float* q, float scale, index_t group, index_t d_k, index_t d_v,
                    CacheStorage storage, const Segment* segs, index_t nsegs, cpu::SoftmaxState& state,
                    std::vector<float>* probs);

// The two kernels of attend_partial (its arguments, the state as m, l, acc; probs [G, n] or
// null):
//   rows   attend.cc: each chunk of keys transposed, the G rows against it (any G);
//   lanes  attend_lanes.cc: the heads as vector lanes, keys not transposed (G >= 8).
void attend_rows(const float* q, float scale, index_t group, index_t d_k, index_t d_v, CacheStorage storage,
                 const Segment* segs, index_t nsegs, float* m, float* l, float* acc, float* probs, index_t n);
void attend_lanes(const float* q, float scale, index_t group, index_t d_k, index_t d_v, CacheStorage storage,
                  const Segment* segs, index_t nsegs, float* m, float* l, float* acc, float* probs, index_t n);

// Every kv head of a [T, H_kv, d] cache (key t of head h at k + (t H_kv + h) d_k, its value
// likewise) against its G query rows q [H_kv G, d_k] (fp32, already scaled), keys
// [t0, t1), in memory order (attend_heads.cc): states[h] (reset to G rows of d_v) gains
// head h's keys by the online softmax. Keys and values are `storage` elements, bf16
// widened to fp32 as read.
void attend_heads(const float* q, index_t kv_heads, index_t group, index_t d_k, index_t d_v,
                  CacheStorage storage, const void* k, const void* v, index_t t0, index_t t1,
                  cpu::SoftmaxState* states);

// automatic: lanes for groups of at least kLanesMinGroup heads, rows below. Tests and
// benchmarks force one (process-wide).
enum class AttendPath { automatic, rows, lanes };
inline constexpr index_t kLanesMinGroup = 8;
void set_attend_path(AttendPath path);
AttendPath attend_path();

// attend_partial's result for one slice of a longer key list: its online-softmax state
// (G rows of d_v) and, for the compression branch, probs [G, keys] = exp(score - m).
struct Partial {
  index_t keys = 0;
  cpu::SoftmaxState state;
  std::vector<float> probs;
};

// Merges the partial states of consecutive slices of one key list (cpu::merge_states)
// into o [G, d_v], the softmax average over all their keys. imp (may be null) [total
// keys]: += the normalised probabilities summed over the G rows, in key order.
void merge_partials(const std::vector<Partial>& parts, float* o, float* imp);

// phi of one block: block [l, dim] (raw rows) -> out [dim]. scratch is resized as needed.
void phi_block(const Config& config, const PhiWeights<float>& w, index_t dim, const float* block,
               float* out, std::vector<float>& scratch);

}  // namespace nsa::decode
