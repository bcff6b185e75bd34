// nsa::nsa_backward and nsa::dense_backward over bf16 storage (CPU): the inputs of the
// bf16 forward, widened once to fp32 (cpu::WidenedViews: one copy per distinct tensor,
// O(T d) next to the backward's O(T n d) work), then the fp32 backward. So the gradients
// are the fp32 kernels' own: deterministic for any thread count, fp32 accumulation, and
// consistent with the bf16 forward, whose saved state (lse, branch outputs, Kc/Vc rounded
// to bf16 and widened) they start from. The inputs and d_out are validated before anything
// is read, the rest (saved state, gradient buffers) by the fp32 entry points.
#include "common/problem.h"
#include "cpu/widen.h"
#include "nsa/backward.h"

namespace nsa {

void nsa_backward(const Config& config, const NsaInputs<bf16>& in, const NsaSaved<float>& saved,
                  TensorView<const float> d_out, const NsaGradients<float>& grads, ThreadPool& pool) {
  validate_nsa(config, in, d_out);
  cpu::WidenedViews widen(pool);
  NsaInputs<float> f;
  f.q = widen(in.q);
  f.k_cmp = widen(in.k_cmp);
  f.v_cmp = widen(in.v_cmp);
  f.k_slc = widen(in.k_slc);
  f.v_slc = widen(in.v_slc);
  f.k_win = widen(in.k_win);
  f.v_win = widen(in.v_win);
  f.gates = widen(in.gates);
  const cpu::Fp32Phi phi_k(config, in.phi_k, in.k_cmp.dim()), phi_v(config, in.phi_v, in.v_cmp.dim());
  f.phi_k = phi_k.w;
  f.phi_v = phi_v.w;
  f.seqs = in.seqs;
  nsa_backward(config, f, saved, d_out, grads, pool);
}

void dense_backward(const DenseInputs<bf16>& in, TensorView<const float> out, const float* lse,
                    TensorView<const float> d_out, const DenseGradients<float>& grads, ThreadPool& pool) {
  validate_dense(in, d_out);
  cpu::WidenedViews widen(pool);
  DenseInputs<float> f;
  f.q = widen(in.q);
  f.k = widen(in.k);
  f.v = widen(in.v);
  f.seqs = in.seqs;
  f.scale = in.scale;
  dense_backward(f, out, lse, d_out, grads, pool);
}

}  // namespace nsa
