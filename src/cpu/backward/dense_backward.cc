// nsa::dense_backward, fp32 CPU: the backward of dense causal flash attention, the
// baseline of the paper's backward speed-up. The same two work units as NSA's window
// branch with an unbounded window (see nsa_backward.cc for why two passes and no atomics):
//   dK, dV key-major: (sequence, kv head, key tile [s0, s0 + 64)) against tokens s0 .. T-1
//   dq     query-major: (sequence, kv head, query tile) against keys 0 .. t
// Each gradient element has one task: bitwise identical for any thread count. Tasks are
// listed longest first for load balance (early key tiles and late query tiles see most).
#include <algorithm>
#include <string>

#include "common/validate_backward.h"
#include "cpu/backward/backward_kernels.h"
#include "nsa/thread_pool.h"

namespace nsa {

void dense_backward(const DenseInputs<float>& in, TensorView<const float> out, const float* lse,
                    TensorView<const float> d_out, const DenseGradients<float>& g, ThreadPool& pool) {
  // Throws before anything is written (d_out under its own name, see nsa_backward.cc).
  detail::check_view(d_out, "d_out");
  if (in.q.data != nullptr && in.v.data != nullptr)
    detail::check_shape(d_out, "d_out", in.q.shape[0], in.q.shape[1], in.q.shape[2], in.v.shape[3]);
  const Problem p = validate_dense_backward(in, d_out, g);
  detail::check_view(out, "out");
  detail::check_shape(out, "out", p.batch, p.tokens, p.heads, p.d_v);
  detail::check_finite(out, "out");
  if (lse == nullptr) throw Error("lse is null: pass the [rows, H] log-sum-exp of dense_forward");
  detail::check_finite_array(lse, p.rows * p.heads, "lse");
  const index_t H = p.heads, H_kv = p.kv_heads, G = p.group, d_k = p.d_k, d_v = p.d_v;
  const index_t num_seqs = static_cast<index_t>(p.seqs.size());

  std::vector<float> dot(static_cast<size_t>(p.rows * H));  // D = dO . o
  cpu::row_dots(p, d_out, out, dot.data(), pool);

  cpu::GradProblem gp;
  gp.q = in.q;
  gp.d_out = d_out;
  gp.heads = H, gp.kv_heads = H_kv, gp.group = G, gp.d_k = d_k, gp.d_v = d_v;
  gp.scale = static_cast<float>(p.scale);
  cpu::BranchGrad br;
  br.lse = lse;
  br.dot = dot.data();
  br.vis = {cpu::Visibility::kWindow, 0, nullptr};  // unbounded: keys 0 .. t
  std::vector<cpu::KeyValues> kv;
  for (const SeqSpan& seq : p.seqs)
    for (index_t h = 0; h < H_kv; ++h)
      kv.push_back({in.k.ptr(seq.batch, seq.start, h), in.k.stride[1], in.v.ptr(seq.batch, seq.start, h),
                    in.v.stride[1]});
  // Keys and values transposed once for every query tile of the dq pass.
  cpu::KeyTiles kt, vt;
  {
    std::vector<index_t> lens;
    for (const SeqSpan& seq : p.seqs)
      for (index_t h = 0; h < H_kv; ++h) lens.push_back(seq.len);
    cpu::attach_transposed(kv, lens, d_k, d_v, kt, vt, pool);
  }
  std::vector<cpu::BwdScratch> scratch(static_cast<size_t>(pool.size()));
  struct Task {
    index_t seq, kv_head, t0, n;
  };

  // dK, dV: every key row is written by exactly one task.
  {
    std::vector<Task> tasks;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h)
        for (index_t s0 = 0; s0 < p.seqs[si].len; s0 += cpu::kKeyTile)
          tasks.push_back({si, h, s0, std::min(cpu::kKeyTile, p.seqs[si].len - s0)});
    std::stable_sort(tasks.begin(), tasks.end(), [&](const Task& a, const Task& b) {
      return p.seqs[a.seq].len - a.t0 > p.seqs[b.seq].len - b.t0;
    });
    pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
      const Task& t = tasks[static_cast<size_t>(i)];
      cpu::BwdScratch& s = scratch[static_cast<size_t>(worker)];
      const SeqSpan& seq = p.seqs[static_cast<size_t>(t.seq)];
      s.tokens.resize(static_cast<size_t>(seq.len - t.t0));
      for (index_t x = t.t0; x < seq.len; ++x) s.tokens[x - t.t0] = x;
      cpu::key_tile_backward(gp, br, seq, t.kv_head, kv[static_cast<size_t>(t.seq * H_kv + t.kv_head)],
                             t.t0, t.n, s);
      for (index_t j = 0; j < t.n; ++j) {
        std::copy_n(s.dk.data() + j * d_k, d_k, g.dk.ptr(seq.batch, seq.start + t.t0 + j, t.kv_head));
        std::copy_n(s.dv.data() + j * d_v, d_v, g.dv.ptr(seq.batch, seq.start + t.t0 + j, t.kv_head));
      }
    });
  }

  // dq: every query row is written by exactly one task.
  {
    const index_t tile_len = cpu::tile_tokens(G);
    std::vector<Task> tasks;
    for (index_t si = 0; si < num_seqs; ++si)
      for (index_t h = 0; h < H_kv; ++h)
        for (index_t t0 = 0; t0 < p.seqs[si].len; t0 += tile_len)
          tasks.push_back({si, h, t0, std::min(tile_len, p.seqs[si].len - t0)});
    std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.t0 > b.t0; });
    pool.parallel_tasks(static_cast<std::int64_t>(tasks.size()), [&](std::int64_t i, int worker) {
      const Task& t = tasks[static_cast<size_t>(i)];
      const cpu::KeyValues& keys = kv[static_cast<size_t>(t.seq * H_kv + t.kv_head)];
      cpu::query_tile_backward(gp, &br, &keys, 1, p.seqs[static_cast<size_t>(t.seq)], t.kv_head, t.t0,
                               t.n, g.dq, scratch[static_cast<size_t>(worker)]);
    });
  }
}

}  // namespace nsa
