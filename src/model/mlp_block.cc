#include "model/mlp_block.h"

#include "model/layers/matmul.h"
#include "model/layers/swiglu.h"

namespace nsa::model {

template <class T>
void mlp_forward(const LayerTensors<const T>& w, const T* x, index_t N, index_t C, index_t hidden,
                 MlpActs<T>& a, T* out, ThreadPool& pool) {
  const T* none = nullptr;
  matmul_forward(a.h_gate.data(), x, w.w_gate, none, N, C, hidden);
  matmul_forward(a.h_up.data(), x, w.w_up, none, N, C, hidden);
  swiglu_forward(a.h.data(), a.h_gate.data(), a.h_up.data(), N * hidden, pool);
  matmul_forward(out, a.h.data(), w.w_down, none, N, hidden, C);
}

template <class T>
void mlp_backward(const LayerTensors<const T>& w, const LayerTensors<T>& g, const T* x, index_t N,
                  index_t C, index_t hidden, const MlpActs<T>& a, const T* dout, T* dx,
                  MlpScratch<T>& sc, ThreadPool& pool) {
  const std::size_t n = static_cast<std::size_t>(N * hidden);
  T* none = nullptr;
  sc.dh.assign(n, T(0));
  matmul_backward(sc.dh.data(), g.w_down, none, dout, a.h.data(), w.w_down, N, hidden, C);
  sc.dh_gate.assign(n, T(0));
  sc.dh_up.assign(n, T(0));
  swiglu_backward(sc.dh_gate.data(), sc.dh_up.data(), sc.dh.data(), a.h_gate.data(), a.h_up.data(),
                  N * hidden, pool);
  matmul_backward(dx, g.w_gate, none, sc.dh_gate.data(), x, w.w_gate, N, C, hidden);
  matmul_backward(dx, g.w_up, none, sc.dh_up.data(), x, w.w_up, N, C, hidden);
}

template void mlp_forward<float>(const LayerTensors<const float>&, const float*, index_t, index_t, index_t, MlpActs<float>&, float*, ThreadPool&);
template void mlp_forward<double>(const LayerTensors<const double>&, const double*, index_t, index_t, index_t, MlpActs<double>&, double*, ThreadPool&);
template void mlp_backward<float>(const LayerTensors<const float>&, const LayerTensors<float>&, const float*, index_t, index_t, index_t, const MlpActs<float>&, const float*, float*, MlpScratch<float>&, ThreadPool&);
template void mlp_backward<double>(const LayerTensors<const double>&, const LayerTensors<double>&, const double*, index_t, index_t, index_t, const MlpActs<double>&, const double*, double*, MlpScratch<double>&, ThreadPool&);

}  // namespace nsa::model
