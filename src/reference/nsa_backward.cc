// The NSA backward pass in float64 (spec, "Backward"): for every query row, each branch's
// attention is recomputed and differentiated; the compression branch's gradient flows on
// through phi to the raw k_cmp/v_cmp and to phi's parameters. The selection is read from
// the saved state and carries no gradient.
#include <algorithm>

#include "common/validate_backward.h"
#include "reference/reference.h"

namespace nsa::reference {
namespace {

void zero(const TensorView<double>& x) {
  for (index_t b = 0; b < x.batch(); ++b)
    for (index_t t = 0; t < x.tokens(); ++t)
      for (index_t h = 0; h < x.heads(); ++h) std::fill_n(x.ptr(b, t, h), x.dim(), 0.0);
}

void zero_phi(const Config& config, const PhiGradients<double>& g, index_t dim) {
  const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
  if (config.phi() == PhiKind::mean) return;
  std::fill_n(g.pe, l * dim, 0.0);
  if (config.phi() == PhiKind::linear) {
    std::fill_n(g.w, dim * l * dim, 0.0);
    return;
  }
  std::fill_n(g.w1, hidden * l * dim, 0.0);
  std::fill_n(g.b1, hidden, 0.0);
  std::fill_n(g.w2, dim * hidden, 0.0);
  std::fill_n(g.b2, dim, 0.0);
}

// dx[positions[r]] += rows[r] for kv head h.
void scatter_add(const TensorView<double>& dx, const SeqSpan& seq, index_t h,
                 const std::vector<index_t>& positions, const std::vector<double>& rows) {
  const index_t dim = dx.dim();
  for (size_t r = 0; r < positions.size(); ++r)
    for (index_t c = 0; c < dim; ++c) dx.at(seq.batch, seq.start + positions[r], h, c) += rows[r * dim + c];
}

// Gradient of the compressed blocks of one sequence and kv head through phi:
// d_blocks [N, dim] -> raw dx rows and phi's parameter gradients.
void compress_backward(const Config& config, const PhiWeights<double>& w,
                       const TensorView<const double>& x, const SeqSpan& seq, index_t h,
                       const std::vector<double>& d_blocks, const TensorView<double>& dx,
                       const PhiGradients<double>& grads) {
  const index_t dim = x.dim(), l = config.block_len();
  for (index_t i = 0; i < config.num_cmp_blocks(seq.len); ++i) {
    const index_t first = i * config.stride();
    const auto raw = gather_rows(x, seq.batch, seq.start + first, l, h);
    std::vector<double> d_raw(static_cast<size_t>(l * dim), 0.0);
    phi_backward(config, w, dim, raw, &d_blocks[i * dim], d_raw, grads);
    std::vector<index_t> positions(static_cast<size_t>(l));
    for (index_t r = 0; r < l; ++r) positions[r] = first + r;
    scatter_add(dx, seq, h, positions, d_raw);
  }
}

}  // namespace

void nsa_backward(const Config& config, const NsaInputs<double>& in, const NsaSaved<double>& saved,
                  TensorView<const double> d_out, const NsaGradients<double>& g) {
  const Problem p = validate_nsa_backward(config, in, saved, d_out, g);
  const index_t G = p.group, d_k = p.d_k, d_v = p.d_v;
  for (const auto* v : {&g.dq, &g.dk_cmp, &g.dv_cmp, &g.dk_slc, &g.dv_slc, &g.dk_win, &g.dv_win, &g.dgates})
    zero(*v);
  zero_phi(config, g.phi_k, d_k);
  zero_phi(config, g.phi_v, d_v);

  for (const SeqSpan& seq : p.seqs)
    for (index_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      const auto kc = compress_sequence(config, in.phi_k, in.k_cmp, seq, kvh);  // [N, d_k]
      const auto vc = compress_sequence(config, in.phi_v, in.v_cmp, seq, kvh);  // [N, d_v]
      std::vector<double> d_kc(kc.size(), 0.0), d_vc(vc.size(), 0.0);

      for (index_t t = 0; t < seq.len; ++t) {
        const index_t row = seq.row0 + t;
        const index_t visible = config.visible_cmp_blocks(t);
        const std::vector<double> kc_vis(kc.begin(), kc.begin() + visible * d_k);
        const std::vector<double> vc_vis(vc.begin(), vc.begin() + visible * d_v);
        const auto slc_pos = selected_positions(config, saved_selection(saved.sel_blocks.data(), config, row, p.kv_heads, kvh), t);
        const auto win_pos = window_positions(config, t);
        const auto k_slc = rows_at(in.k_slc, seq, kvh, slc_pos), v_slc = rows_at(in.v_slc, seq, kvh, slc_pos);
        const auto k_win = rows_at(in.k_win, seq, kvh, win_pos), v_win = rows_at(in.v_win, seq, kvh, win_pos);
        std::vector<double> dk_slc(k_slc.size(), 0.0), dv_slc(v_slc.size(), 0.0);
        std::vector<double> dk_win(k_win.size(), 0.0), dv_win(v_win.size(), 0.0);
        std::vector<double> d_kc_vis(kc_vis.size(), 0.0), d_vc_vis(vc_vis.size(), 0.0);

        for (index_t gi = 0; gi < G; ++gi) {
          const index_t h = kvh * G + gi;
          const index_t tok = seq.start + t;
          const double* q = in.q.ptr(seq.batch, tok, h);
          const double* gate = in.gates.ptr(seq.batch, tok, h);
          const double* dO = d_out.ptr(seq.batch, tok, h);
          double* dq = g.dq.ptr(seq.batch, tok, h);

          const AttentionRow cmp = softmax_attention(q, d_k, kc_vis, vc_vis, d_v, p.scale);
          const AttentionRow slc = softmax_attention(q, d_k, k_slc, v_slc, d_v, p.scale);
          const AttentionRow win = softmax_attention(q, d_k, k_win, v_win, d_v, p.scale);

          // o = sum_b gate_b o_b: d gate_b = d_out . o_b; d o_b = gate_b d_out.
          const AttentionRow* branch[3] = {&cmp, &slc, &win};
          std::vector<double> d_branch[3];
          for (int b = 0; b < kNumBranches; ++b) {
            double dgate = 0.0;
            d_branch[b].resize(static_cast<size_t>(d_v));
            for (index_t c = 0; c < d_v; ++c) {
              dgate += dO[c] * branch[b]->out[c];
              d_branch[b][c] = gate[b] * dO[c];
            }
            g.dgates.at(seq.batch, tok, h, b) += dgate;
          }
          softmax_attention_backward(q, d_k, kc_vis, vc_vis, d_v, p.scale, cmp, d_branch[kCmp].data(), dq, d_kc_vis, d_vc_vis);
          softmax_attention_backward(q, d_k, k_slc, v_slc, d_v, p.scale, slc, d_branch[kSlc].data(), dq, dk_slc, dv_slc);
          softmax_attention_backward(q, d_k, k_win, v_win, d_v, p.scale, win, d_branch[kWin].data(), dq, dk_win, dv_win);
        }
        for (size_t i = 0; i < d_kc_vis.size(); ++i) d_kc[i] += d_kc_vis[i];
        for (size_t i = 0; i < d_vc_vis.size(); ++i) d_vc[i] += d_vc_vis[i];
        scatter_add(g.dk_slc, seq, kvh, slc_pos, dk_slc);
        scatter_add(g.dv_slc, seq, kvh, slc_pos, dv_slc);
        scatter_add(g.dk_win, seq, kvh, win_pos, dk_win);
        scatter_add(g.dv_win, seq, kvh, win_pos, dv_win);
      }
      compress_backward(config, in.phi_k, in.k_cmp, seq, kvh, d_kc, g.dk_cmp, g.phi_k);
      compress_backward(config, in.phi_v, in.v_cmp, seq, kvh, d_vc, g.dv_cmp, g.phi_v);
    }
}

void dense_backward(const DenseInputs<double>& in, TensorView<const double> d_out,
                    const DenseGradients<double>& g) {
  const Problem p = validate_dense_backward(in, d_out, g);
  for (const auto* v : {&g.dq, &g.dk, &g.dv}) zero(*v);
  for (const SeqSpan& seq : p.seqs)
    for (index_t kvh = 0; kvh < p.kv_heads; ++kvh)
      for (index_t t = 0; t < seq.len; ++t) {
        std::vector<index_t> prefix(static_cast<size_t>(t + 1));
        for (index_t s = 0; s <= t; ++s) prefix[s] = s;
        const auto keys = rows_at(in.k, seq, kvh, prefix), values = rows_at(in.v, seq, kvh, prefix);
        std::vector<double> dk(keys.size(), 0.0), dv(values.size(), 0.0);
        for (index_t gi = 0; gi < p.group; ++gi) {
          const index_t h = kvh * p.group + gi;
          const double* q = in.q.ptr(seq.batch, seq.start + t, h);
          const auto row = softmax_attention(q, p.d_k, keys, values, p.d_v, p.scale);
          softmax_attention_backward(q, p.d_k, keys, values, p.d_v, p.scale, row,
                                     d_out.ptr(seq.batch, seq.start + t, h),
                                     g.dq.ptr(seq.batch, seq.start + t, h), dk, dv);
        }
        scatter_add(g.dk, seq, kvh, prefix, dk);
        scatter_add(g.dv, seq, kvh, prefix, dv);
      }
}

}  // namespace nsa::reference
