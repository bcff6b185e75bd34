// nsa::dense_forward, CPU, fp32 or bf16 storage (fp32 compute): dense causal flash attention, the baseline NSA is measured
// against. Same machinery as NSA's window branch with an unbounded window: tasks of
// (sequence, kv head, query tile) with the G heads of the group sharing every key tile.
// Tasks are listed longest first (late tiles see the most keys) for load balance.
#include <algorithm>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/widen.h"
#include "nsa/thread_pool.h"

namespace nsa {

namespace {

// T = bf16: the vdpbf16ps kernels (the caller checked bf16_dot_for_forward).
// check_values = false: inputs widened from bf16, already scanned for NaN/Inf as bf16.
template <class T>
void forward(const DenseInputs<T>& in, TensorView<float> out, float* lse, ThreadPool& pool,
             bool check_values = true) {
  const Problem p = validate_dense(in, out, check_values);  // throws before anything is written
  const index_t H = p.heads, H_kv = p.kv_heads, G = p.group, d_v = p.d_v;
  const index_t tile_len = cpu::tile_tokens(G);
  struct Task {
    index_t seq, kv_head, t0, tokens;
  };
  std::vector<Task> tasks;
  for (index_t s = 0; s < static_cast<index_t>(p.seqs.size()); ++s)
    for (index_t h = 0; h < H_kv; ++h)
      for (index_t t0 = 0; t0 < p.seqs[s].len; t0 += tile_len)
        tasks.push_back({s, h, t0, std::min(tile_len, p.seqs[s].len - t0)});
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& a, const Task& b) { return a.t0 > b.t0; });
  // Keys are transposed once for every query tile: fp32 keys, or bf16 keys as pairs.
  cpu::KeyTiles key_tiles;
  cpu::KeyPairTiles key_pairs;
  std::vector<cpu::KeySpanT<T>> spans;
  for (const SeqSpan& seq : p.seqs)
    for (index_t h = 0; h < H_kv; ++h)
      spans.push_back({in.k.ptr(seq.batch, seq.start, h), in.k.stride[1], seq.len});
  if constexpr (std::is_same_v<T, float>)
    key_tiles = cpu::transpose_keys(spans, p.d_k, pool);
  else
    key_pairs = cpu::transpose_key_pairs(spans, p.d_k, pool);
  std::vector<cpu::Scratch> scratch(static_cast<size_t>(pool.size()));
  const float scale = static_cast<float>(p.scale);

  pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
    const Task& task = tasks[static_cast<size_t>(i)];
    cpu::Scratch& s = scratch[static_cast<size_t>(worker)];
    const SeqSpan& seq = p.seqs[static_cast<size_t>(task.seq)];
    const index_t h_kv = task.kv_head, b = seq.batch;
    const index_t span = task.seq * H_kv + h_kv;
    const cpu::KeyValuesT<T> kv{in.k.ptr(b, seq.start, h_kv), in.k.stride[1],
                                in.v.ptr(b, seq.start, h_kv), in.v.stride[1],
                                key_tiles.data.empty() ? nullptr : key_tiles.span(span), nullptr,
                                key_pairs.data.empty() ? nullptr : key_pairs.span(span)};
    cpu::QueryTile tile;
    if constexpr (std::is_same_v<T, bf16>)
      tile = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, s, /*pairs=*/true);
    else
      tile = cpu::pack_queries(in.q, seq, h_kv, G, task.t0, task.tokens, d_v, scale, s);
    cpu::window_attention(tile, kv, 0, s.state[0], s);
    for (index_t tok = 0; tok < tile.tokens; ++tok) {
      const index_t t = seq.start + task.t0 + tok, row = seq.row0 + task.t0 + tok;
      for (index_t g = 0; g < G; ++g) {
        const index_t h = h_kv * G + g;
        const float row_lse = s.state[0].finalize_row(tok * G + g, out.ptr(b, t, h));
        if (lse != nullptr) lse[row * H + h] = row_lse;
      }
    }
  });
}

}  // namespace

void dense_forward(const DenseInputs<float>& in, TensorView<float> out, float* lse,
                   ThreadPool& pool) {
  forward(in, out, lse, pool);
}

// bf16: the pairs kernels where vdpbf16ps is in use; otherwise q, k, v widened once and
// the fp32 kernels (the fp32 speed and result on the same values; see nsa_forward).
void dense_forward(const DenseInputs<bf16>& in, TensorView<float> out, float* lse,
                   ThreadPool& pool) {
  if (cpu::bf16_dot_for_forward()) return forward(in, out, lse, pool);
  validate_dense(in, out);  // names the bf16 inputs, before any copy
  const cpu::WidenedDenseInputs widened(in, pool);
  forward(widened.f, out, lse, pool, /*check_values=*/false);
}

}  // namespace nsa
