// CUDA backward pass of NSA and of the dense causal baseline (spec, "Backward"): the
// gradients of L = sum(o * d_out), mirroring the CPU API in nsa/backward.h.
//
// Plain C++: includable without CUDA headers. Conventions as in nsa/cuda.h: every view and
// pointer is DEVICE memory except Sequences::cu_seqlens (host); storage type T = float,
// nsa::cuda::bf16 or nsa::cuda::f16 for the inputs (q, k, v, gates, phi weights, d_out);
// d_k, d_v multiples of 16 in [16, 256]; 16-byte aligned views.
//
// Gradients are fp32 device buffers for every storage type (choice: the caller keeps fp32
// master gradients anyway, the sums over branches and over the G heads of a group stay
// in fp32, and one gradient type keeps the API small). Each gradient is overwritten, not
// accumulated into. Gradient views that alias one another (branches sharing K/V pass the
// same dk / dv) receive the sum of their branches' gradients, as on the CPU: the six
// dk/dv views are zeroed first, then the branches' key-major passes ADD into them one
// after another on the stream.
//
// Deterministic: no floating-point atomics. Every gradient element has one CTA that
// computes it, and sums over tiles, heads, branches and compressed blocks run in a fixed
// order, so two calls with the same inputs and shapes give bitwise equal gradients.
//
// Status: written on a machine without a GPU. Until nsa_gpu_check has passed on a GPU,
// treat every kernel behind this header as unverified.
#pragma once

#include "nsa/backward.h"
#include "nsa/cuda.h"

namespace nsa::cuda {

// NSA backward. `in` and `saved` must be those of the nsa_forward call (saved holds the
// per-branch lse and outputs, the selection and Kc/Vc; the selection is not recomputed).
// d_out: [B, T, H, d_v] storage type. Gradients: fp32, shaped like the inputs; the
// phi gradient pointers of the configured phi kind must be non-null (sized like
// PhiWeights). Throws nsa::Error on invalid input before launching anything.
template <class T>
void nsa_backward(const Config& config, const NsaInputs<T>& in, const NsaSavedDevice& saved,
                  TensorView<const T> d_out, const NsaGradients<float>& grads,
                  Workspace& workspace, void* stream = nullptr);

// Dense causal attention backward. out: the forward's output; lse: device float [rows, H]
// from dense_forward. Gradients fp32, shaped like q, k, v.
template <class T>
void dense_backward(const DenseInputs<T>& in, TensorView<const T> out, const float* lse,
                    TensorView<const T> d_out, const DenseGradients<float>& grads,
                    Workspace& workspace, void* stream = nullptr);

}  // namespace nsa::cuda
