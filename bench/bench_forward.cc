// Micro-benchmarks of the CPU forward kernels: nsa_forward against dense_forward (the
// causal baseline NSA is measured against), paper shape H=16, H_kv=1, d_k=192, d_v=128,
// the paper's NSA config (l=32, d=16, l'=64, n=16, w=512, mlp phi), shared K/V; each
// with fp32 inputs and with bf16 inputs (NsaForwardBf16, DenseForwardBf16: the same
// values rounded to bf16; vdpbf16ps where the CPU has AVX512_BF16).
//
//   nsa_microbench --benchmark_filter=Forward
// Sequence lengths: 1024 and 4096 by default; NSA_BENCH_TOKENS="16384,32768" replaces
// them. Threads: NSA_BENCH_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <utility>
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

// fp32 inputs of one forward call (float64 copies are not needed here), and bf16 copies.
struct BenchInputs {
  nsa::index_t tokens;
  std::vector<float> q, k, v, gates, out;
  std::vector<float> phi_k[5], phi_v[5];  // pe, w1, b1, w2, b2
  std::vector<nsa::bf16> q16, k16, v16, gates16, phi_k16[5], phi_v16[5];

  BenchInputs(const nsa::Config& config, nsa::index_t t) : tokens(t) {
    std::mt19937 rng(1);
    q = random_vector(rng, t * kHeads * kDk, 1.0f);
    k = random_vector(rng, t * kKvHeads * kDk, 1.0f);
    v = random_vector(rng, t * kKvHeads * kDv, 1.0f);
    gates = random_vector(rng, t * kHeads * 3, 0.1f, 0.5f);
    out.resize(static_cast<size_t>(t * kHeads * kDv));
    fill_phi(rng, config, kDk, phi_k);
    fill_phi(rng, config, kDv, phi_v);
  }

  static void fill_phi(std::mt19937& rng, const nsa::Config& c, nsa::index_t dim, std::vector<float>* p) {
    const nsa::index_t l = c.block_len(), hidden = c.phi_hidden_for(dim);
    p[0] = random_vector(rng, l * dim, 0.5f);
    p[1] = random_vector(rng, hidden * l * dim, 1.0f / std::sqrt(static_cast<float>(l * dim)));
    p[2] = random_vector(rng, hidden, 0.1f);
    p[3] = random_vector(rng, dim * hidden, 1.0f / std::sqrt(static_cast<float>(hidden)));
    p[4] = random_vector(rng, dim, 0.1f);
  }

  template <class T>
  nsa::TensorView<T> view(T* data, nsa::index_t heads, nsa::index_t dim) const {
    return nsa::contiguous_view(data, 1, tokens, heads, dim);
  }

  static std::vector<nsa::bf16> to_bf16(const std::vector<float>& x) {
    std::vector<nsa::bf16> y(x.size());
    nsa::to_bf16(x.data(), y.data(), x.size());
    return y;
  }

  nsa::NsaInputs<nsa::bf16> nsa_inputs_bf16() {
    q16 = to_bf16(q);
    k16 = to_bf16(k);
    v16 = to_bf16(v);
    gates16 = to_bf16(gates);
    for (int i = 0; i < 5; ++i) {
      phi_k16[i] = to_bf16(phi_k[i]);
      phi_v16[i] = to_bf16(phi_v[i]);
    }
    nsa::NsaInputs<nsa::bf16> in;
    in.q = view<const nsa::bf16>(q16.data(), kHeads, kDk);
    in.k_cmp = in.k_slc = in.k_win = view<const nsa::bf16>(k16.data(), kKvHeads, kDk);  // shared K/V
    in.v_cmp = in.v_slc = in.v_win = view<const nsa::bf16>(v16.data(), kKvHeads, kDv);
    in.gates = view<const nsa::bf16>(gates16.data(), kHeads, 3);
    const auto* pk = phi_k16;
    const auto* pv = phi_v16;
    in.phi_k = {pk[0].data(), pk[1].data(), pk[2].data(), pk[3].data(), pk[4].data(), nullptr};
    in.phi_v = {pv[0].data(), pv[1].data(), pv[2].data(), pv[3].data(), pv[4].data(), nullptr};
    return in;
  }

  nsa::NsaInputs<float> nsa_inputs() const {
    nsa::NsaInputs<float> in;
    in.q = view(q.data(), kHeads, kDk);
    in.k_cmp = in.k_slc = in.k_win = view(k.data(), kKvHeads, kDk);  // shared K/V
    in.v_cmp = in.v_slc = in.v_win = view(v.data(), kKvHeads, kDv);
    in.gates = view(gates.data(), kHeads, 3);
    in.phi_k = {phi_k[0].data(), phi_k[1].data(), phi_k[2].data(), phi_k[3].data(), phi_k[4].data(), nullptr};
    in.phi_v = {phi_v[0].data(), phi_v[1].data(), phi_v[2].data(), phi_v[3].data(), phi_v[4].data(), nullptr};
    return in;
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

void BM_NsaForward(benchmark::State& state) {
  const nsa::Config config;
  BenchInputs data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = data.nsa_inputs();
  const auto out = data.view(data.out.data(), kHeads, kDv);
  for (auto _ : state) {
    nsa::nsa_forward(config, in, out, nullptr, pool);
    benchmark::DoNotOptimize(data.out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_NsaForwardBf16(benchmark::State& state) {
  const nsa::Config config;
  BenchInputs data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = data.nsa_inputs_bf16();
  const auto out = data.view(data.out.data(), kHeads, kDv);
  for (auto _ : state) {
    nsa::nsa_forward(config, in, out, nullptr, pool);
    benchmark::DoNotOptimize(data.out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_DenseForwardBf16(benchmark::State& state) {
  const nsa::Config config;
  BenchInputs data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in16 = data.nsa_inputs_bf16();
  const nsa::DenseInputs<nsa::bf16> in{in16.q, in16.k_slc, in16.v_slc};
  const auto out = data.view(data.out.data(), kHeads, kDv);
  for (auto _ : state) {
    nsa::dense_forward(in, out, nullptr, pool);
    benchmark::DoNotOptimize(data.out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_DenseForward(benchmark::State& state) {
  const nsa::Config config;
  BenchInputs data(config, state.range(0));
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const BenchInputs& c = data;
  nsa::DenseInputs<float> in{c.view(c.q.data(), kHeads, kDk), c.view(c.k.data(), kKvHeads, kDk),
                             c.view(c.v.data(), kKvHeads, kDv)};
  const auto out = data.view(data.out.data(), kHeads, kDv);
  for (auto _ : state) {
    nsa::dense_forward(in, out, nullptr, pool);
    benchmark::DoNotOptimize(data.out.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  const int threads = bench_threads();
  for (const nsa::index_t t : bench_tokens()) {
    const std::pair<const char*, void (*)(benchmark::State&)> benches[] = {
        {"NsaForward", BM_NsaForward}, {"NsaForwardBf16", BM_NsaForwardBf16},
        {"DenseForward", BM_DenseForward}, {"DenseForwardBf16", BM_DenseForwardBf16}};
    for (const auto& [name, fn] : benches)
      benchmark::RegisterBenchmark(name, fn)
          ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(benchmark::kMillisecond)
          ->UseRealTime()->MinTime(0.2);
  }
  return true;
}();

}  // namespace
