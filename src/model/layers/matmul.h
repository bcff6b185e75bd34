// matmul: the linear layer out = inp W^T + bias (CBLAS gemm), also the tied LM head
// (logits = x embed^T, no bias).
#pragma once

#include "nsa/config.h"

namespace nsa::model {

// The threads OpenBLAS may use for the products below: the model passes its pool's size
// before each pass. Left to itself OpenBLAS starts one thread per core beside the pool's,
// and the two sets spin and yield against each other (13% of a training step's samples in
// the kernel's task switch, 2 cores).
void matmul_set_threads(int threads);

// inp is (N, IC), weight (OC, IC) row-major, bias (OC) or null; out is (N, OC), overwritten.
template <class T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, index_t N, index_t IC,
                    index_t OC);

// Accumulates (+=): dinp (N, IC) += dout W; dweight (OC, IC) += dout^T inp;
// dbias (OC) += column sums of dout. dinp and dbias may be null (not wanted).
template <class T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     index_t N, index_t IC, index_t OC);

}  // namespace nsa::model
