#include "decode/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/gelu.h"

namespace nsa::decode {

float dot(const float* a, const float* b, index_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  index_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  return acc[0] + tail;
}

namespace {

// y[0..n) += a * x[0..n)
inline void axpy(float a, const float* __restrict x, float* __restrict y, index_t n) {
  for (index_t c = 0; c < n; ++c) y[c] += a * x[c];
}

}  // namespace

void merge_partials(const std::vector<Partial>& parts, float* o, float* imp) {
  const index_t n = static_cast<index_t>(parts.size());
  thread_local std::vector<const cpu::SoftmaxState*> states;  // no allocation per step
  thread_local std::vector<float> weight;
  states.resize(parts.size());
  for (index_t p = 0; p < n; ++p) states[static_cast<size_t>(p)] = &parts[static_cast<size_t>(p)].state;
  if (imp == nullptr) {
    cpu::merge_states(states.data(), n, o, nullptr);
    return;
  }
  const index_t G = n > 0 ? parts[0].state.rows : 0;
  weight.resize(static_cast<size_t>(n * G));
  cpu::merge_states(states.data(), n, o, weight.data());
  for (index_t g = 0; g < G; ++g) {
    index_t key0 = 0;
    for (index_t p = 0; p < n; ++p) {
      const Partial& pt = parts[static_cast<size_t>(p)];
      const float w = weight[static_cast<size_t>(p * G + g)];
      if (w != 0.0f) {
        const float* pr = pt.probs.data() + g * pt.keys;
        for (index_t i = 0; i < pt.keys; ++i) imp[key0 + i] += w * pr[i];
      }
      key0 += pt.keys;
    }
  }
}

void phi_block(const Config& config, const PhiWeights<float>& w, index_t dim, const float* block,
               float* out, std::vector<float>& scratch) {
  const index_t l = config.block_len(), width = l * dim;
  if (config.phi() == PhiKind::mean) {
    std::fill(out, out + dim, 0.0f);
    for (index_t r = 0; r < l; ++r) axpy(1.0f, block + r * dim, out, dim);
    const float inv = 1.0f / static_cast<float>(l);
    for (index_t c = 0; c < dim; ++c) out[c] *= inv;
    return;
  }
  const index_t hidden = config.phi() == PhiKind::mlp ? config.phi_hidden_for(dim) : 0;
  scratch.resize(static_cast<size_t>(width + hidden));
  float* x = scratch.data();  // flatten(block + pe)
  for (index_t i = 0; i < width; ++i) x[i] = block[i] + w.pe[i];
  if (config.phi() == PhiKind::linear) {  // out = W x, W [dim, l*dim]
    for (index_t c = 0; c < dim; ++c) out[c] = dot(w.w + c * width, x, width);
    return;
  }
  float* h = x + width;  // GELU(W1 x + b1), W1 [hidden, l*dim]
  for (index_t j = 0; j < hidden; ++j) h[j] = gelu(dot(w.w1 + j * width, x, width) + w.b1[j]);
  for (index_t c = 0; c < dim; ++c) out[c] = dot(w.w2 + c * hidden, h, hidden) + w.b2[c];
}

}  // namespace nsa::decode
