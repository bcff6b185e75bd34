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
  const cpu::WidenedNsaInputs widened(config, in, pool);
  nsa_backward(config, widened.f, saved, d_out, grads, pool);
}

void dense_backward(const DenseInputs<bf16>& in, TensorView<const float> out, const float* lse,
                    TensorView<const float> d_out, const DenseGradients<float>& grads, ThreadPool& pool) {
  validate_dense(in, d_out);
  const cpu::WidenedDenseInputs widened(in, pool);
  dense_backward(widened.f, out, lse, d_out, grads, pool);
}

}  // namespace nsa
