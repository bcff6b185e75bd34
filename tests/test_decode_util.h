// Helpers shared by the decode tests: slicing packed random problems into prompt views and
// one-token step batches.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nsa/decode.h"
#include "testing/random_problem.h"

namespace nsa::decode_test {

// Views of tokens [start, start + count) of a packed [1, total, heads, dim] buffer.
inline TensorView<const float> rows_view(const std::vector<float>& buf, index_t start, index_t count,
                                         index_t heads, index_t dim) {
  return contiguous_view(buf.data() + start * heads * dim, 1, count, heads, dim).as_const();
}

// The prompt of tokens [start, start + count) of a packed problem.
inline DecodeTokens prompt_tokens(const testing::RandomNsaProblem& prob, index_t start, index_t count) {
  auto& b = const_cast<testing::RandomNsaProblem&>(prob).buffers32();
  const auto& s = prob.shape();
  DecodeTokens x;
  x.q = rows_view(b.q, start, count, s.heads, s.d_k);
  x.k_cmp = rows_view(b.k_cmp, start, count, s.kv_heads, s.d_k);
  x.v_cmp = rows_view(b.v_cmp, start, count, s.kv_heads, s.d_v);
  if (!s.shared_kv) {
    x.k_slc = rows_view(b.k_slc, start, count, s.kv_heads, s.d_k);
    x.v_slc = rows_view(b.v_slc, start, count, s.kv_heads, s.d_v);
    x.k_win = rows_view(b.k_win, start, count, s.kv_heads, s.d_k);
    x.v_win = rows_view(b.v_win, start, count, s.kv_heads, s.d_v);
  }
  x.gates = rows_view(b.gates, start, count, s.heads, 3);
  return x;
}

// One token for each of B sequences, owned: buffers [B, 1, heads, dim].
struct StepBatch {
  index_t heads = 0, kv_heads = 0, d_k = 0, d_v = 0;
  bool shared = false;
  std::vector<float> q, k[3], v[3], gates, out;
  std::vector<index_t> ids;

  StepBatch(index_t h, index_t hkv, index_t dk, index_t dv, bool sh)
      : heads(h), kv_heads(hkv), d_k(dk), d_v(dv), shared(sh) {}

  void clear() {
    ids.clear();
    q.clear();
    gates.clear();
    for (int i = 0; i < 3; ++i) k[i].clear(), v[i].clear();
  }
  // Adds token `row` of a packed problem as the token of sequence `id`.
  void add(const testing::RandomNsaProblem& prob, index_t id, index_t row) {
    auto& b = const_cast<testing::RandomNsaProblem&>(prob).buffers32();
    auto append = [&](std::vector<float>& dst, const std::vector<float>& src, index_t width) {
      dst.insert(dst.end(), src.begin() + row * width, src.begin() + (row + 1) * width);
    };
    ids.push_back(id);
    append(q, b.q, heads * d_k);
    append(gates, b.gates, heads * 3);
    const std::vector<float>* ks[3] = {&b.k_cmp, &b.k_slc, &b.k_win};
    const std::vector<float>* vs[3] = {&b.v_cmp, &b.v_slc, &b.v_win};
    for (int i = 0; i < (shared ? 1 : 3); ++i) {
      append(k[i], *ks[i], kv_heads * d_k);
      append(v[i], *vs[i], kv_heads * d_v);
    }
  }
  // Adds a random token (N(0,1) values, gates in (0.05, 0.95)).
  void add_random(std::mt19937_64& rng, index_t id) {
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.05f, 0.95f);
    ids.push_back(id);
    for (index_t i = 0; i < heads * d_k; ++i) q.push_back(n(rng));
    for (index_t i = 0; i < heads * 3; ++i) gates.push_back(u(rng));
    for (int s = 0; s < (shared ? 1 : 3); ++s) {
      for (index_t i = 0; i < kv_heads * d_k; ++i) k[s].push_back(n(rng));
      for (index_t i = 0; i < kv_heads * d_v; ++i) v[s].push_back(n(rng));
    }
  }
  index_t size() const { return static_cast<index_t>(ids.size()); }
  DecodeTokens tokens() const {
    const index_t B = size();
    DecodeTokens x;
    x.q = contiguous_view(q.data(), B, 1, heads, d_k);
    x.gates = contiguous_view(gates.data(), B, 1, heads, 3);
    x.k_cmp = contiguous_view(k[0].data(), B, 1, kv_heads, d_k);
    x.v_cmp = contiguous_view(v[0].data(), B, 1, kv_heads, d_v);
    if (!shared) {
      x.k_slc = contiguous_view(k[1].data(), B, 1, kv_heads, d_k);
      x.v_slc = contiguous_view(v[1].data(), B, 1, kv_heads, d_v);
      x.k_win = contiguous_view(k[2].data(), B, 1, kv_heads, d_k);
      x.v_win = contiguous_view(v[2].data(), B, 1, kv_heads, d_v);
    }
    return x;
  }
  TensorView<float> out_view() {
    out.assign(static_cast<size_t>(size() * heads * d_v), 0.0f);
    return contiguous_view(out.data(), size(), 1, heads, d_v);
  }
  void step(DecodeCache& cache, ThreadPool& pool) {
    cache.step(ids.data(), size(), tokens(), out_view(), pool);
  }
};

// The spec's count of tokens read by query t with the chosen blocks `sel`.
inline index_t expected_reads(const Config& c, index_t t, const std::vector<std::int32_t>& sel) {
  index_t n = c.visible_cmp_blocks(t) + std::min<index_t>(c.window(), t + 1);
  for (auto j : sel) n += std::min<index_t>(c.sel_block(), t + 1 - j * index_t{c.sel_block()});
  return n;
}

// The float64 softmax attention of H query rows q [H, d_k] against a [T, H_kv, d] cache:
// out [H, d_v]. (The reference's dense forward is O(T^2); a decode step needs one row.)
template <class E>  // the cache's element: float or bf16 (widened exactly)
inline std::vector<double> dense_last_row(const std::vector<float>& q, const std::vector<E>& k,
                                          const std::vector<E>& v, index_t T, index_t H, index_t H_kv,
                                          index_t d_k, index_t d_v) {
  const index_t G = H / H_kv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d_k));
  std::vector<double> want(static_cast<size_t>(H * d_v), 0.0);
  for (index_t h = 0; h < H; ++h) {
    const index_t g = h / G;
    std::vector<double> sc(static_cast<size_t>(T));
    double mx = -INFINITY, sum = 0.0;
    for (index_t t = 0; t < T; ++t) {
      double dot_qk = 0.0;
      for (index_t c = 0; c < d_k; ++c) dot_qk += double{q[h * d_k + c]} * static_cast<float>(k[(t * H_kv + g) * d_k + c]);
      sc[t] = dot_qk * scale;
      mx = std::max(mx, sc[t]);
    }
    for (index_t t = 0; t < T; ++t) sum += (sc[t] = std::exp(sc[t] - mx));
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < d_v; ++c) want[h * d_v + c] += sc[t] / sum * static_cast<float>(v[(t * H_kv + g) * d_v + c]);
  }
  return want;
}

}  // namespace nsa::decode_test
