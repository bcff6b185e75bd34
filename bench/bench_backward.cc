// Micro-benchmarks of the fp32 CPU backward kernels: nsa_backward against dense_backward
// (the baseline of the paper's backward speed-up), paper shape H=16, H_kv=1, d_k=192,
// d_v=128, the paper's NSA config (l=32, d=16, l'=64, n=16, w=512, mlp phi), shared K/V.
// The forward runs once outside the timed loop to produce the saved state / lse.
//
//   nsa_microbench --benchmark_filter=Backward
// Sequence lengths: 1024 and 4096 by default; NSA_BENCH_TOKENS="16384" replaces them.
// Threads: NSA_BENCH_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nsa/nsa.h"

namespace {

constexpr nsa::index_t kHeads = 16, kKvHeads = 1, kDk = 192, kDv = 128;

std::vector<float> random_vector(std::mt19937& rng, nsa::index_t n, float scale, float offset = 0) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = offset + scale * dist(rng);
  return v;
}

// Inputs, d_out and gradient buffers of one backward call (shared K/V: one dk, one dv).
struct BenchData {
  nsa::index_t tokens;
  std::vector<float> q, k, v, gates, out, d_out, lse;
  std::vector<float> dq, dk, dv, dgates;
  std::vector<float> phi_k[5], phi_v[5], grad_k[5], grad_v[5];  // pe, w1, b1, w2, b2

  BenchData(const nsa::Config& config, nsa::index_t t) : tokens(t) {
    std::mt19937 rng(1);
    q = random_vector(rng, t * kHeads * kDk, 1.0f);
    k = random_vector(rng, t * kKvHeads * kDk, 1.0f);
    v = random_vector(rng, t * kKvHeads * kDv, 1.0f);
    gates = random_vector(rng, t * kHeads * 3, 0.1f, 0.5f);
    d_out = random_vector(rng, t * kHeads * kDv, 1.0f);
    out.resize(static_cast<size_t>(t * kHeads * kDv));
    lse.resize(static_cast<size_t>(t * kHeads));
    dq.resize(q.size());
    dk.resize(k.size());
    dv.resize(v.size());
    dgates.resize(gates.size());
    fill_phi(rng, config, kDk, phi_k, grad_k);
    fill_phi(rng, config, kDv, phi_v, grad_v);
  }

  static void fill_phi(std::mt19937& rng, const nsa::Config& c, nsa::index_t dim, std::vector<float>* p,
                       std::vector<float>* g) {
    const nsa::index_t l = c.block_len(), hidden = c.phi_hidden_for(dim);
    p[0] = random_vector(rng, l * dim, 0.5f);
    p[1] = random_vector(rng, hidden * l * dim, 1.0f / std::sqrt(static_cast<float>(l * dim)));
    p[2] = random_vector(rng, hidden, 0.1f);
    p[3] = random_vector(rng, dim * hidden, 1.0f / std::sqrt(static_cast<float>(hidden)));
    p[4] = random_vector(rng, dim, 0.1f);
    for (int i = 0; i < 5; ++i) g[i].resize(p[i].size());
  }

  template <class T>
  nsa::TensorView<T> view(T* data, nsa::index_t heads, nsa::index_t dim) const {
    return nsa::contiguous_view(data, 1, tokens, heads, dim);
  }

  nsa::NsaInputs<float> nsa_inputs() const {
    nsa::NsaInputs<float> in;
    in.q = view(q.data(), kHeads, kDk);
    in.k_cmp = in.k_slc = in.k_win = view(k.data(), kKvHeads, kDk);
    in.v_cmp = in.v_slc = in.v_win = view(v.data(), kKvHeads, kDv);
    in.gates = view(gates.data(), kHeads, 3);
    in.phi_k = {phi_k[0].data(), phi_k[1].data(), phi_k[2].data(), phi_k[3].data(), phi_k[4].data(), nullptr};
    in.phi_v = {phi_v[0].data(), phi_v[1].data(), phi_v[2].data(), phi_v[3].data(), phi_v[4].data(), nullptr};
    return in;
  }

  nsa::NsaGradients<float> nsa_grads() {
    nsa::NsaGradients<float> g;
    g.dq = view(dq.data(), kHeads, kDk);
    g.dk_cmp = g.dk_slc = g.dk_win = view(dk.data(), kKvHeads, kDk);  // shared K/V: summed
    g.dv_cmp = g.dv_slc = g.dv_win = view(dv.data(), kKvHeads, kDv);
    g.dgates = view(dgates.data(), kHeads, 3);
    g.phi_k = {grad_k[0].data(), grad_k[1].data(), grad_k[2].data(), grad_k[3].data(), grad_k[4].data(), nullptr};
    g.phi_v = {grad_v[0].data(), grad_v[1].data(), grad_v[2].data(), grad_v[3].data(), grad_v[4].data(), nullptr};
    return g;
  }
};

int bench_threads() {
  const char* env = std::getenv("NSA_BENCH_THREADS");
  return env ? std::atoi(env) : 2;
}

std::vector<nsa::index_t> bench_tokens() {
  const char* env = std::getenv("NSA_BENCH_TOKENS");
  if (env == nullptr) return {1024, 4096};
  std::vector<nsa::index_t> tokens;
  std::stringstream s(env);
  for (std::string item; std::getline(s, item, ',');) tokens.push_back(std::stoll(item));
  return tokens;
}

void BM_NsaBackward(benchmark::State& state) {
  const nsa::Config config;
  BenchData data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = data.nsa_inputs();
  nsa::NsaSaved<float> saved;
  nsa::nsa_forward(config, in, data.view(data.out.data(), kHeads, kDv), &saved, pool);
  const auto d_out = data.view<const float>(data.d_out.data(), kHeads, kDv);
  const auto grads = data.nsa_grads();
  for (auto _ : state) {
    nsa::nsa_backward(config, in, saved, d_out, grads, pool);
    benchmark::DoNotOptimize(data.dq.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_DenseBackward(benchmark::State& state) {
  const nsa::Config config;
  BenchData data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const BenchData& c = data;
  const nsa::DenseInputs<float> in{c.view(c.q.data(), kHeads, kDk), c.view(c.k.data(), kKvHeads, kDk),
                                   c.view(c.v.data(), kKvHeads, kDv)};
  const auto out = data.view(data.out.data(), kHeads, kDv);
  nsa::dense_forward(in, out, data.lse.data(), pool);
  const auto d_out = data.view<const float>(data.d_out.data(), kHeads, kDv);
  const nsa::DenseGradients<float> grads{data.view(data.dq.data(), kHeads, kDk),
                                         data.view(data.dk.data(), kKvHeads, kDk),
                                         data.view(data.dv.data(), kKvHeads, kDv)};
  for (auto _ : state) {
    nsa::dense_backward(in, out.as_const(), data.lse.data(), d_out, grads, pool);
    benchmark::DoNotOptimize(data.dq.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  const int threads = bench_threads();
  for (const nsa::index_t t : bench_tokens()) {
    benchmark::RegisterBenchmark("NsaBackward", BM_NsaBackward)
        ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(benchmark::kMillisecond)
        ->UseRealTime()->MinTime(0.2);
    benchmark::RegisterBenchmark("DenseBackward", BM_DenseBackward)
        ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(benchmark::kMillisecond)
        ->UseRealTime()->MinTime(0.2);
  }
  return true;
}();

}  // namespace
