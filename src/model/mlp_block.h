// The MLP of one block: out = w_down (silu(x w_gate^T) * (x w_up^T)), SwiGLU.
//   x (N, C) normed input; h_gate, h_up, h (N, mlp_hidden) kept for backward; out (N, C).
#pragma once

#include <vector>

#include "model/model_layout.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

template <class T>
struct MlpActs {
  std::vector<T> h_gate, h_up, h;  // (N, mlp_hidden)
  void resize(index_t N, index_t hidden) {
    h_gate.resize(static_cast<std::size_t>(N * hidden));
    h_up.resize(h_gate.size());
    h.resize(h_gate.size());
  }
};

template <class T>
struct MlpScratch {
  std::vector<T> dh_gate, dh_up, dh;
};

// out (N, C) overwritten.
template <class T>
void mlp_forward(const LayerTensors<const T>& w, const T* x, index_t N, index_t C, index_t hidden,
                 MlpActs<T>& acts, T* out, ThreadPool& pool);

// Accumulates dx (N, C) and the gradients of w_gate, w_up, w_down.
template <class T>
void mlp_backward(const LayerTensors<const T>& w, const LayerTensors<T>& g, const T* x, index_t N,
                  index_t C, index_t hidden, const MlpActs<T>& acts, const T* dout, T* dx,
                  MlpScratch<T>& scratch, ThreadPool& pool);

}  // namespace nsa::model
