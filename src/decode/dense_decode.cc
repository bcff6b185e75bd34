// nsa::dense_decode_step: the dense baseline of one decode step, one new query token
// against a cache [T, H_kv, d] of T tokens, on the decode kernels (decode/kernels.h).
// Two schedules, both merging the key splits of a kv head with the usual log-sum-exp
// rescaling (merge_partials); the split count depends only on T and the pool size:
//   heads  H_kv > 1: a task is a key split of every kv head at once (attend_heads), so
//          the cache is read in memory order, chunk by chunk, each chunk copied into one
//          contiguous fp32 block per kv head (bf16 widened there). At llama3-8b's shape
//          (32 / 8 / 128) on a 2-core Zen 3 reading in memory order took the step from 24
//          to ~9 ms at T = 16384; the copy took qwen2.5-7b's (28 / 4) from 36-42 to 27-30 ms
//          and MHA's from 46-58 to 41-46 ms at T = 65536
//          (bench/results/decode_packed_zen3.txt). On an Emerald Rapids Xeon, where
//          vdpbf16ps issues at a quarter of the FMA rate, bf16 widened beat the pairs
//          kernels of the groups schedule at every preset shape
//          (bench/results/decode_heads16_intel_emr.txt, before the copy).
//   groups H_kv = 1: a task is (kv head, key split), attend_partial on one strided
//          segment.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "decode/kernels.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa {
namespace {

template <class E>  // the cache's element: float or bf16
void dense_decode(const float* q, const E* k, const E* v, index_t tokens, index_t heads,
                  index_t kv_heads, index_t d_k, index_t d_v, double scale, float* out,
                  ThreadPool& pool) {
  constexpr CacheStorage storage = std::is_same_v<E, bf16> ? CacheStorage::bf16 : CacheStorage::fp32;
  if (!q || !k || !v || !out) throw Error("dense_decode_step: null pointer argument");
  if (tokens <= 0 || heads <= 0 || kv_heads <= 0 || d_k <= 0 || d_v <= 0 || heads % kv_heads != 0)
    throw Error("dense_decode_step: need T, H, H_kv, d_k, d_v > 0 and H a multiple of H_kv, got T=" +
                std::to_string(tokens) + " H=" + std::to_string(heads) + " H_kv=" + std::to_string(kv_heads));
  const index_t G = heads / kv_heads;
  const float s = static_cast<float>(scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(d_k)));
  constexpr index_t kMinKeysPerSplit = 2048;
  const index_t splits = std::max<index_t>(1, std::min<index_t>(pool.size(), tokens / kMinKeysPerSplit));
  const index_t per_split = (tokens + splits - 1) / splits;

  std::vector<std::vector<decode::Partial>> parts(static_cast<size_t>(kv_heads),
                                                  std::vector<decode::Partial>(static_cast<size_t>(splits)));
  const bool by_heads = kv_heads > 1;
  if (by_heads) {
    std::vector<float> qs(static_cast<size_t>(heads * d_k));
    for (index_t i = 0; i < heads * d_k; ++i) qs[static_cast<size_t>(i)] = q[i] * s;
    // Task sp attends keys t0 .. t1-1 of every kv head into parts[h][sp].
    pool.parallel_tasks(splits, [&](std::int64_t sp, int) {
      const index_t t0 = sp * per_split, t1 = std::min(tokens, t0 + per_split);
      std::vector<cpu::SoftmaxState> states(static_cast<size_t>(kv_heads));
      for (cpu::SoftmaxState& st : states) st.reset(G, d_v);
      decode::attend_heads(qs.data(), kv_heads, G, d_k, d_v, storage, k, v, t0, std::max(t0, t1), states.data());
      for (index_t h = 0; h < kv_heads; ++h) {
        decode::Partial& pt = parts[static_cast<size_t>(h)][static_cast<size_t>(sp)];
        pt.keys = std::max<index_t>(0, t1 - t0);
        pt.state = std::move(states[static_cast<size_t>(h)]);
      }
    });
  } else {
    // Task (h, sp) attends keys t0 .. t1-1 of kv head h into parts[h][sp].
    const index_t tasks = kv_heads * splits;
    pool.parallel_tasks(tasks, [&](std::int64_t task, int) {
      const index_t h = task / splits, sp = task % splits;
      const index_t t0 = sp * per_split, t1 = std::min(tokens, t0 + per_split);
      // The cache is [T, H_kv, d]: kv head h's keys are one segment of stride H_kv d.
      const decode::Segment seg{k + (t0 * kv_heads + h) * d_k, v + (t0 * kv_heads + h) * d_v, t1 - t0,
                                kv_heads * d_k, kv_heads * d_v};
      decode::Partial& pt = parts[static_cast<size_t>(h)][static_cast<size_t>(sp)];
      pt.keys = std::max<index_t>(0, t1 - t0);
      decode::attend_partial(q + h * G * d_k, s, G, d_k, d_v, storage, &seg, 1, pt.state, nullptr);
    });
  }
  for (index_t h = 0; h < kv_heads; ++h)
    decode::merge_partials(parts[static_cast<size_t>(h)], out + h * G * d_v, nullptr);
}

}  // namespace

void dense_decode_step(const float* q, const float* k, const float* v, index_t tokens, index_t heads,
                       index_t kv_heads, index_t d_k, index_t d_v, double scale, float* out,
                       ThreadPool& pool) {
  dense_decode(q, k, v, tokens, heads, kv_heads, d_k, d_v, scale, out, pool);
}

void dense_decode_step(const float* q, const bf16* k, const bf16* v, index_t tokens, index_t heads,
                       index_t kv_heads, index_t d_k, index_t d_v, double scale, float* out,
                       ThreadPool& pool) {
  dense_decode(q, k, v, tokens, heads, kv_heads, d_k, d_v, scale, out, pool);
}

}  // namespace nsa
