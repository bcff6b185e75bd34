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

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "bench_common.h"
#include "nsa/decode.h"
#include "nsa/nsa.h"

namespace nsa::bench {
namespace {

int decode_threads() { return env_int("NSA_DECODE_THREADS", 1); }

std::vector<index_t> decode_tokens() {
  return env_list("NSA_DECODE_TOKENS", {8192, 16384, 32768, 65536});
}

// The tokens shared by every benchmark: K/V of the longest cache plus a pool of new tokens.
struct Data {
  Config config;
  index_t max_tokens;
  std::vector<float> k, v;                // [max_tokens, H_kv, d]: the cached tokens
  std::vector<float> q, nk, nv, gates;    // kNew new tokens, cycled through by the steps
  std::vector<float> phi_k[kPhiFields.size()], phi_v[kPhiFields.size()];  // per PhiField (mlp)
  static constexpr index_t kNew = 64;

  explicit Data(index_t t) : max_tokens(t) {
    std::mt19937 rng(1);
    k = random_vector(rng, t * kKvHeads * kDk, 1.0f);
    v = random_vector(rng, t * kKvHeads * kDv, 1.0f);
    q = random_vector(rng, kNew * kHeads * kDk, 1.0f);
    nk = random_vector(rng, kNew * kKvHeads * kDk, 1.0f);
    nv = random_vector(rng, kNew * kKvHeads * kDv, 1.0f);
    gates = random_vector(rng, kNew * kHeads * 3, 0.1f, 0.5f);
    fill_phi(rng, config, kDk, phi_k);
    fill_phi(rng, config, kDv, phi_v);
  }
  // New token i (mod kNew) as a one-sequence step.
  DecodeTokens token(index_t i) const {
    i %= kNew;
    DecodeTokens x;
    x.q = contiguous_view(q.data() + i * kHeads * kDk, 1, 1, kHeads, kDk);
    x.k_cmp = contiguous_view(nk.data() + i * kKvHeads * kDk, 1, 1, kKvHeads, kDk);
    x.v_cmp = contiguous_view(nv.data() + i * kKvHeads * kDv, 1, 1, kKvHeads, kDv);
    x.gates = contiguous_view(gates.data() + i * kHeads * 3, 1, 1, kHeads, 3);
    return x;
  }
};

Data& data() {
  static Data d([] {
    index_t t = 0;
    for (auto x : decode_tokens()) t = std::max(t, x);
    return t;
  }());
  return d;
}

// One cache per T, filled once with append (K/V + phi, no attention outputs).
DecodeCache& cache_for(index_t tokens, ThreadPool& pool) {
  static std::map<index_t, std::unique_ptr<DecodeCache>> caches;
  auto& slot = caches[tokens];
  if (!slot) {
    caches.clear();  // keep one cache alive at a time
    Data& d = data();
    DecodeShape shape{kHeads, kKvHeads, kDk, kDv, /*shared_kv=*/true, 1};
    auto cache = std::make_unique<DecodeCache>(d.config, shape, phi_weights(d.phi_k),
                                                  phi_weights(d.phi_v));
    DecodeTokens x;
    x.k_cmp = contiguous_view(d.k.data(), 1, tokens, kKvHeads, kDk).as_const();
    x.v_cmp = contiguous_view(d.v.data(), 1, tokens, kKvHeads, kDv).as_const();
    cache->append(0, x, pool);
    caches[tokens] = std::move(cache);
  }
  return *caches[tokens];
}

void BM_DecodeStepNsa(benchmark::State& state) {
  const index_t T = state.range(0);
  ThreadPool pool(static_cast<int>(state.range(1)));
  DecodeCache& cache = cache_for(T, pool);
  const Data& d = data();
  std::vector<float> out(kHeads * kDv);
  const auto out_view = contiguous_view(out.data(), 1, 1, kHeads, kDv);
  const index_t seq = 0;
  index_t i = 0;
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
  const index_t T = state.range(0);
  ThreadPool pool(static_cast<int>(state.range(1)));
  const Data& d = data();
  std::vector<float> out(kHeads * kDv);
  index_t i = 0;
  for (auto _ : state) {
    const index_t j = i++ % Data::kNew;
    dense_decode_step(d.q.data() + j * kHeads * kDk, d.k.data(), d.v.data(), T, kHeads, kKvHeads,
                           kDk, kDv, 0.0, out.data(), pool);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["T"] = static_cast<double>(T);
  state.counters["tokens_read"] = static_cast<double>(T);
  state.counters["read_ratio"] = 1.0;
}

const bool registered = [] {
  register_benches(decode_tokens(), decode_threads(), benchmark::kMicrosecond,
                   {{"DecodeStepDense", BM_DecodeStepDense}, {"DecodeStepNsa", BM_DecodeStepNsa}});
  return true;
}();

}  // namespace
}  // namespace nsa::bench
