// The NSA backward pass and the dense baseline's backward: gradients of a scalar loss
// L = sum(o * d_out) (spec, "Backward").
//
// Gradients are written into caller-owned buffers shaped like the inputs (llm.c style).
// Each is overwritten, not accumulated into. Gradient views that alias one another (the
// same memory, e.g. one dk for branches that share K/V) receive the sum of their
// branches' gradients, which is the gradient of the shared tensor.
// The selected blocks are constants: the backward pass takes them from NsaSaved and never
// recomputes the selection.
#pragma once

#include "nsa/attention.h"

namespace nsa {

// Gradients of one phi's parameters; each pointer sized like the matching PhiWeights field.
// Pointers the phi kind does not use may be null (they are not written).
template <class T>
struct PhiGradients {
  T* pe = nullptr;  // [l, dim]
  T* w1 = nullptr;  // [hidden, l * dim]
  T* b1 = nullptr;  // [hidden]
  T* w2 = nullptr;  // [dim, hidden]
  T* b2 = nullptr;  // [dim]
  T* w = nullptr;   // [dim, l * dim]
};

template <class T>
struct NsaGradients {
  TensorView<T> dq;                // [B, T, H, d_k]
  TensorView<T> dk_cmp, dv_cmp;    // [B, T, H_kv, d_k] / [B, T, H_kv, d_v]
  TensorView<T> dk_slc, dv_slc;
  TensorView<T> dk_win, dv_win;
  TensorView<T> dgates;            // [B, T, H, 3]
  PhiGradients<T> phi_k, phi_v;
};

template <class T>
struct DenseGradients {
  TensorView<T> dq, dk, dv;
};

// ---- fp32 CPU kernels ---------------------------------------------------------------
// in and saved must be exactly those of the forward call; d_out [B, T, H, d_v].
void nsa_backward(const Config& config, const NsaInputs<float>& in, const NsaSaved<float>& saved,
                  TensorView<const float> d_out, const NsaGradients<float>& grads, ThreadPool& pool);

// lse: [rows, H] from dense_forward; out: the forward's output.
void dense_backward(const DenseInputs<float>& in, TensorView<const float> out, const float* lse,
                    TensorView<const float> d_out, const DenseGradients<float>& grads,
                    ThreadPool& pool);

// ---- bf16 storage, fp32 compute (CPU) -----------------------------------------------
// The inputs of the bf16 forward (attention.h) with what it returned: saved, out and lse
// are fp32, so is d_out; gradients are fp32 (round them to the inputs' dtype if wanted).
// The bf16 inputs are widened once to fp32 and the fp32 backward runs: the same
// determinism, and the gradient of the bf16 forward's function (Kc/Vc are rounded to bf16
// there; the rounding passes gradients straight through). Accuracy: the spec's bf16
// tolerance against the float64 reference on the same bf16 values.
void nsa_backward(const Config& config, const NsaInputs<bf16>& in, const NsaSaved<float>& saved,
                  TensorView<const float> d_out, const NsaGradients<float>& grads, ThreadPool& pool);

void dense_backward(const DenseInputs<bf16>& in, TensorView<const float> out, const float* lse,
                    TensorView<const float> d_out, const DenseGradients<float>& grads,
                    ThreadPool& pool);

// ---- float64 reference -----------------------------------------------------------------
namespace reference {
void nsa_backward(const Config& config, const NsaInputs<double>& in, const NsaSaved<double>& saved,
                  TensorView<const double> d_out, const NsaGradients<double>& grads);
void dense_backward(const DenseInputs<double>& in, TensorView<const double> d_out,
                    const DenseGradients<double>& grads);
}  // namespace reference

}  // namespace nsa
