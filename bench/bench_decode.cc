// Per-step decode latency: one new token against a cache of T tokens, NSA step
// (nsa::DecodeCache::step: phi when a block completes, compression, top-n, selection,
// window, gates) against the dense baseline (nsa::dense_decode_step over all T tokens).
// Paper shape H=16, H_kv=1, d_k=192, d_v=128, the paper's NSA config, shared K/V, mlp phi.
//
//   nsa_microbench --benchmark_filter=DecodeStep
// T: 8192, 16384, 32768, 65536 by default; NSA_DECODE_TOKENS="4096,8192" replaces them.
// Threads: NSA_DECODE_THREADS (default 1: both steps have one kv head, so this compares
// the work per step on one core).
// Counters: tokens_read (NSA: visible cmp blocks + selected tokens + window; dense: T) and
// read_ratio = T / tokens_read, the speed-up the paper's Table 4 expects from memory access.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nsa/decode.h"
#include "nsa/nsa.h"

namespace {

constexpr nsa::index_t kHeads = 16, kKvHeads = 1, kDk = 192, kDv = 128;

int decode_threads() {
  const char* env = std::getenv("NSA_DECODE_THREADS");
  return env ? std::atoi(env) : 1;
}

std::vector<nsa::index_t> decode_tokens() {
  const char* env = std::getenv("NSA_DECODE_TOKENS");
  if (env == nullptr) return {8192, 16384, 32768, 65536};
  std::vector<nsa::index_t> tokens;
  std::stringstream s(env);
  for (std::string item; std::getline(s, item, ',');) tokens.push_back(std::stoll(item));
  return tokens;
}

std::vector<float> random_vector(std::mt19937& rng, nsa::index_t n, float scale, float offset = 0) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = offset + scale * dist(rng);
  return v;
}

// The tokens shared by every benchmark: K/V of the longest cache plus a pool of new tokens.
struct Data {
  nsa::Config config;
  nsa::index_t max_tokens;
  std::vector<float> k, v;                // [max_tokens, H_kv, d]: the cached tokens
  std::vector<float> q, nk, nv, gates;    // kNew new tokens, cycled through by the steps
  std::vector<float> phi_k[5], phi_v[5];  // pe, w1, b1, w2, b2
  static constexpr nsa::index_t kNew = 64;

  explicit Data(nsa::index_t t) : max_tokens(t) {
    std::mt19937 rng(1);
    k = random_vector(rng, t * kKvHeads * kDk, 1.0f);
    v = random_vector(rng, t * kKvHeads * kDv, 1.0f);
    q = random_vector(rng, kNew * kHeads * kDk, 1.0f);
    nk = random_vector(rng, kNew * kKvHeads * kDk, 1.0f);
    nv = random_vector(rng, kNew * kKvHeads * kDv, 1.0f);
    gates = random_vector(rng, kNew * kHeads * 3, 0.1f, 0.5f);
    fill_phi(rng, kDk, phi_k);
    fill_phi(rng, kDv, phi_v);
  }
  void fill_phi(std::mt19937& rng, nsa::index_t dim, std::vector<float>* p) {
    const nsa::index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
    p[0] = random_vector(rng, l * dim, 0.5f);
    p[1] = random_vector(rng, hidden * l * dim, 1.0f / std::sqrt(static_cast<float>(l * dim)));
    p[2] = random_vector(rng, hidden, 0.1f);
    p[3] = random_vector(rng, dim * hidden, 1.0f / std::sqrt(static_cast<float>(hidden)));
    p[4] = random_vector(rng, dim, 0.1f);
  }
  static nsa::PhiWeights<float> weights(const std::vector<float>* p) {
    return {p[0].data(), p[1].data(), p[2].data(), p[3].data(), p[4].data(), nullptr};
  }
  // New token i (mod kNew) as a one-sequence step.
  nsa::DecodeTokens token(nsa::index_t i) const {
    i %= kNew;
    nsa::DecodeTokens x;
    x.q = nsa::contiguous_view(q.data() + i * kHeads * kDk, 1, 1, kHeads, kDk);
    x.k_cmp = nsa::contiguous_view(nk.data() + i * kKvHeads * kDk, 1, 1, kKvHeads, kDk);
    x.v_cmp = nsa::contiguous_view(nv.data() + i * kKvHeads * kDv, 1, 1, kKvHeads, kDv);
    x.gates = nsa::contiguous_view(gates.data() + i * kHeads * 3, 1, 1, kHeads, 3);
    return x;
  }
};

Data& data() {
  static Data d([] {
    nsa::index_t t = 0;
    for (auto x : decode_tokens()) t = std::max(t, x);
    return t;
  }());
  return d;
}

// One cache per T, filled once with append (K/V + phi, no attention outputs).
nsa::DecodeCache& cache_for(nsa::index_t tokens, nsa::ThreadPool& pool) {
  static std::map<nsa::index_t, std::unique_ptr<nsa::DecodeCache>> caches;
  auto& slot = caches[tokens];
  if (!slot) {
    caches.clear();  // keep one cache alive at a time
    Data& d = data();
    nsa::DecodeShape shape{kHeads, kKvHeads, kDk, kDv, /*shared_kv=*/true, 1};
    auto cache = std::make_unique<nsa::DecodeCache>(d.config, shape, Data::weights(d.phi_k), Data::weights(d.phi_v));
    nsa::DecodeTokens x;
    x.k_cmp = nsa::contiguous_view(d.k.data(), 1, tokens, kKvHeads, kDk).as_const();
    x.v_cmp = nsa::contiguous_view(d.v.data(), 1, tokens, kKvHeads, kDv).as_const();
    cache->append(0, x, pool);
    caches[tokens] = std::move(cache);
  }
  return *caches[tokens];
}

void BM_DecodeStepNsa(benchmark::State& state) {
  const nsa::index_t T = state.range(0);
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  nsa::DecodeCache& cache = cache_for(T, pool);
  const Data& d = data();
  std::vector<float> out(kHeads * kDv);
  const auto out_view = nsa::contiguous_view(out.data(), 1, 1, kHeads, kDv);
  const nsa::index_t seq = 0;
  nsa::index_t i = 0;
  for (auto _ : state) {
    cache.step(&seq, 1, d.token(i++), out_view, pool);
    benchmark::DoNotOptimize(out.data());
  }
  // Of the last step: the cache grows by one token per step, so T here is the requested T
  // plus the steps run so far (a few hundred).
  const double reads = static_cast<double>(cache.tokens_read(0, 0).total());
  const double t_now = static_cast<double>(cache.position(0));
  state.counters["T"] = t_now;
  state.counters["tokens_read"] = reads;
  state.counters["read_ratio"] = t_now / reads;
  state.counters["bytes_per_token"] = cache.memory().bytes_per_token();
}

void BM_DecodeStepDense(benchmark::State& state) {
  const nsa::index_t T = state.range(0);
  nsa::ThreadPool pool(static_cast<int>(state.range(1)));
  const Data& d = data();
  std::vector<float> out(kHeads * kDv);
  nsa::index_t i = 0;
  for (auto _ : state) {
    const nsa::index_t j = i++ % Data::kNew;
    nsa::dense_decode_step(d.q.data() + j * kHeads * kDk, d.k.data(), d.v.data(), T, kHeads, kKvHeads,
                           kDk, kDv, 0.0, out.data(), pool);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["T"] = static_cast<double>(T);
  state.counters["tokens_read"] = static_cast<double>(T);
  state.counters["read_ratio"] = 1.0;
}

const bool registered = [] {
  const int threads = decode_threads();
  for (const nsa::index_t t : decode_tokens()) {
    benchmark::RegisterBenchmark("DecodeStepDense", BM_DecodeStepDense)
        ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(benchmark::kMicrosecond)
        ->UseRealTime()->MinTime(0.2);
    benchmark::RegisterBenchmark("DecodeStepNsa", BM_DecodeStepNsa)
        ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(benchmark::kMicrosecond)
        ->UseRealTime()->MinTime(0.2);
  }
  return true;
}();

}  // namespace
