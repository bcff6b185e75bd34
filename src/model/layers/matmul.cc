#include "model/layers/matmul.h"

#include <cblas.h>

#include <atomic>

extern "C" void openblas_set_num_threads(int num_threads);  // OpenBLAS (CMake: BLA_VENDOR)

namespace nsa::model {

void matmul_set_threads(int threads) {
  static std::atomic<int> current{0};
  if (threads < 1) threads = 1;
  if (current.exchange(threads) != threads) openblas_set_num_threads(threads);
}

namespace {

// C (M, N) = alpha op(A) op(B) + beta C, row-major.
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha, const float* A,
          index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, double alpha, const double* A,
          index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, A,
              static_cast<int>(lda), B, static_cast<int>(ldb), beta, C, static_cast<int>(ldc));
}

}  // namespace

template <class T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, index_t N, index_t IC,
                    index_t OC) {
  if (N == 0 || OC == 0) return;
  if (bias) {
    for (index_t n = 0; n < N; ++n)
      for (index_t o = 0; o < OC; ++o) out[n * OC + o] = bias[o];
  }
  gemm(false, true, N, OC, IC, T(1), inp, IC, weight, IC, bias ? T(1) : T(0), out, OC);
}

template <class T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     index_t N, index_t IC, index_t OC) {
  if (N == 0 || OC == 0) return;
  if (dinp) gemm(false, false, N, IC, OC, T(1), dout, OC, weight, IC, T(1), dinp, IC);
  gemm(true, false, OC, IC, N, T(1), dout, OC, inp, IC, T(1), dweight, IC);
  if (dbias) {
    for (index_t n = 0; n < N; ++n)
      for (index_t o = 0; o < OC; ++o) dbias[o] += dout[n * OC + o];
  }
}

template void matmul_forward<float>(float*, const float*, const float*, const float*, index_t, index_t, index_t);
template void matmul_forward<double>(double*, const double*, const double*, const double*, index_t, index_t, index_t);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*, const float*, index_t, index_t, index_t);
template void matmul_backward<double>(double*, double*, double*, const double*, const double*, const double*, index_t, index_t, index_t);

}  // namespace nsa::model
