// The NSA forward pass in float64: the three branches and the gated mix, token by token
// (spec, all sections). Slow on purpose: every rule is visible.
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/problem.h"
#include "reference/reference.h"

namespace nsa::reference {
namespace {

template <class T>
void allocate_saved(NsaSaved<T>& saved, const Problem& p, const Config& config) {
  saved.rows = p.rows;
  saved.heads = p.heads;
  saved.kv_heads = p.kv_heads;
  saved.top_n = config.top_n();
  saved.d_k = p.d_k;
  saved.d_v = p.d_v;
  saved.lse.assign(3 * p.rows * p.heads, -std::numeric_limits<T>::infinity());
  saved.branch_out.assign(3 * p.rows * p.heads * p.d_v, T(0));
  saved.sel_blocks.assign(p.rows * p.kv_heads * config.top_n(), -1);
  saved.cmp_offsets = p.cmp_offsets;
  saved.k_cmp_blocks.assign(p.cmp_offsets.back() * p.kv_heads * p.d_k, T(0));
  saved.v_cmp_blocks.assign(p.cmp_offsets.back() * p.kv_heads * p.d_v, T(0));
}

}  // namespace

void nsa_forward(const Config& config, const NsaInputs<double>& in, TensorView<double> out,
                 NsaSaved<double>* saved) {
  nsa_forward_with_selection(config, in, out, saved, nullptr);
}

void nsa_forward_with_selection(const Config& config, const NsaInputs<double>& in,
                                TensorView<double> out, NsaSaved<double>* saved,
                                const std::int32_t* fixed_selection) {
  const Problem p = validate_nsa(config, in, out);
  if (saved) allocate_saved(*saved, p, config);
  const index_t G = p.group, d_k = p.d_k, d_v = p.d_v;

  for (size_t si = 0; si < p.seqs.size(); ++si) {
    const SeqSpan& seq = p.seqs[si];
    for (index_t kvh = 0; kvh < p.kv_heads; ++kvh) {
      // Branch 1 inputs: phi applied once per compressed block.
      const auto kc = compress_sequence(config, in.phi_k, in.k_cmp, seq, kvh);  // [N, d_k]
      const auto vc = compress_sequence(config, in.phi_v, in.v_cmp, seq, kvh);  // [N, d_v]
      if (saved) {
        const index_t n = config.num_cmp_blocks(seq.len), base = p.cmp_offsets[si];
        for (index_t i = 0; i < n; ++i) {
          std::copy_n(kc.begin() + i * d_k, d_k,
                      saved->k_cmp_blocks.begin() + ((base + i) * p.kv_heads + kvh) * d_k);
          std::copy_n(vc.begin() + i * d_v, d_v,
                      saved->v_cmp_blocks.begin() + ((base + i) * p.kv_heads + kvh) * d_v);
        }
      }

      for (index_t t = 0; t < seq.len; ++t) {
        const index_t row = seq.row0 + t;
        // Compressed blocks visible to t: i*d + l - 1 <= t.
        const index_t visible = config.visible_cmp_blocks(t);
        const std::vector<double> kc_vis(kc.begin(), kc.begin() + visible * d_k);
        const std::vector<double> vc_vis(vc.begin(), vc.begin() + visible * d_v);

        // Branch 1 for each head of the group, and the group's importance P = sum_h p.
        std::vector<AttentionRow> cmp(static_cast<size_t>(G));
        std::vector<double> group_p(static_cast<size_t>(visible), 0.0);
        for (index_t g = 0; g < G; ++g) {
          const double* q = in.q.ptr(seq.batch, seq.start + t, kvh * G + g);
          cmp[g] = softmax_attention(q, d_k, kc_vis, vc_vis, d_v, p.scale);
          for (index_t i = 0; i < visible; ++i) group_p[i] += cmp[g].probs[i];
        }

        // Branch 2: blocks chosen once for the whole group.
        const auto blocks = fixed_selection
                                ? saved_selection(fixed_selection, config, row, p.kv_heads, kvh)
                                : select_blocks(config, selection_scores(config, group_p, t), t);
        const auto slc_pos = selected_positions(config, blocks, t);
        const auto k_slc = rows_at(in.k_slc, seq, kvh, slc_pos);
        const auto v_slc = rows_at(in.v_slc, seq, kvh, slc_pos);

        // Branch 3: the sliding window.
        const auto win_pos = window_positions(config, t);
        const auto k_win = rows_at(in.k_win, seq, kvh, win_pos);
        const auto v_win = rows_at(in.v_win, seq, kvh, win_pos);

        for (index_t g = 0; g < G; ++g) {
          const index_t h = kvh * G + g;
          const double* q = in.q.ptr(seq.batch, seq.start + t, h);
          const AttentionRow slc = softmax_attention(q, d_k, k_slc, v_slc, d_v, p.scale);
          const AttentionRow win = softmax_attention(q, d_k, k_win, v_win, d_v, p.scale);
          const double* gate = in.gates.ptr(seq.batch, seq.start + t, h);
          double* o = out.ptr(seq.batch, seq.start + t, h);
          for (index_t c = 0; c < d_v; ++c)
            o[c] = gate[kCmp] * cmp[g].out[c] + gate[kSlc] * slc.out[c] + gate[kWin] * win.out[c];

          if (saved) {
            const AttentionRow* branch[3] = {&cmp[g], &slc, &win};
            for (int br = 0; br < kNumBranches; ++br) {
              saved->lse[(br * p.rows + row) * p.heads + h] = branch[br]->lse;
              std::copy_n(branch[br]->out.begin(), d_v,
                          saved->branch_out.begin() + ((br * p.rows + row) * p.heads + h) * d_v);
            }
          }
        }
        if (saved)
          for (size_t k = 0; k < blocks.size(); ++k)
            saved->sel_blocks[(row * p.kv_heads + kvh) * config.top_n() + k] =
                static_cast<std::int32_t>(blocks[k]);
      }
    }
  }
}

}  // namespace nsa::reference
