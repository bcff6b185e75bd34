// Setup shared by the micro-benchmarks: the paper shape, random inputs drawn in a fixed
// order from one seed, the environment lists of sequence lengths and threads, the timed
// loop with its tokens/s counter, and registration over every sequence length.
#pragma once

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "nsa/nsa.h"
#include "testing/random_problem.h"

namespace nsa::bench {

// The paper's shape: H=16, H_kv=1, d_k=192, d_v=128.
inline constexpr index_t kHeads = 16, kKvHeads = 1, kDk = 192, kDv = 128;

// n values offset + scale * N(0, 1).
inline std::vector<float> random_vector(std::mt19937& rng, index_t n, float scale, float offset = 0) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = offset + scale * dist(rng);
  return v;
}

// Random mlp phi weights for head dim `dim` in p[kPhiFields.size()] (one vector per PhiField;
// the fields mlp does not use stay empty).
inline void fill_phi(std::mt19937& rng, const Config& c, index_t dim, std::vector<float>* p) {
  const index_t l = c.block_len(), hidden = c.phi_hidden_for(dim);
  for (PhiField f : kPhiFields)
    if (phi_field_used(PhiKind::mlp, f))
      p[static_cast<int>(f)] = random_vector(rng, phi_field_size(f, l, dim, hidden),
                                                 static_cast<float>(testing::phi_field_scale(f, l, dim, hidden)));
}

// The phi weights (or their gradients) held in p[kPhiFields.size()]; empty fields are null.
template <class T>
PhiWeights<T> phi_weights(const std::vector<T>* p) {
  return phi_views<PhiWeights<T>>(p);
}
template <class T>
PhiGradients<T> phi_gradients(std::vector<T>* p) {
  return phi_views<PhiGradients<T>>(p);
}

// The integer in environment variable `name`, or `fallback` when it is unset.
inline int env_int(const char* name, int fallback) {
  const char* env = std::getenv(name);
  return env ? std::atoi(env) : fallback;
}

// The comma-separated integers in environment variable `name` ("4096,8192"), or `fallback`.
inline std::vector<index_t> env_list(const char* name, std::vector<index_t> fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr) return fallback;
  std::vector<index_t> values;
  std::stringstream s(env);
  for (std::string item; std::getline(s, item, ',');) values.push_back(std::stoll(item));
  return values;
}

// Sequence lengths and threads of the forward and backward benchmarks.
inline std::vector<index_t> bench_tokens() { return env_list("NSA_BENCH_TOKENS", {1024, 4096}); }
inline int bench_threads() { return env_int("NSA_BENCH_THREADS", 2); }

// Random inputs of one forward (and, with d_out, backward) call on the paper shape with
// shared K/V (one k, one v for the three branches), batch 1, fp32 and bf16 copies.
// Draw order (seed 1): q, k, v, gates, [d_out], phi_k, phi_v.
struct PaperProblem {
  index_t tokens;
  std::vector<float> q, k, v, gates, d_out, out;  // q [T, H, d_k], k [T, H_kv, d_k], ...
  std::vector<float> phi_k[kPhiFields.size()], phi_v[kPhiFields.size()];  // per PhiField (mlp)
  std::vector<bf16> q16, k16, v16, gates16, phi_k16[kPhiFields.size()], phi_v16[kPhiFields.size()];

  PaperProblem(const Config& config, index_t t, bool with_d_out = false) : tokens(t) {
    std::mt19937 rng(1);
    q = random_vector(rng, t * kHeads * kDk, 1.0f);
    k = random_vector(rng, t * kKvHeads * kDk, 1.0f);
    v = random_vector(rng, t * kKvHeads * kDv, 1.0f);
    gates = random_vector(rng, t * kHeads * 3, 0.1f, 0.5f);
    if (with_d_out) d_out = random_vector(rng, t * kHeads * kDv, 1.0f);
    out.resize(static_cast<size_t>(t * kHeads * kDv));
    fill_phi(rng, config, kDk, phi_k);
    fill_phi(rng, config, kDv, phi_v);
  }

  // A [1, T, heads, dim] view of `data`.
  template <class T>
  TensorView<T> view(T* data, index_t heads, index_t dim) const {
    return contiguous_view(data, 1, tokens, heads, dim);
  }
  TensorView<float> out_view() { return view(out.data(), kHeads, kDv); }

  NsaInputs<float> nsa_inputs() const {
    return make_inputs(q.data(), k.data(), v.data(), gates.data(), phi_k, phi_v);
  }
  // The same values rounded to bf16 (copies made here).
  NsaInputs<bf16> nsa_inputs_bf16() {
    q16 = to_bf16(q);
    k16 = to_bf16(k);
    v16 = to_bf16(v);
    gates16 = to_bf16(gates);
    for (std::size_t i = 0; i < kPhiFields.size(); ++i) {
      phi_k16[i] = to_bf16(phi_k[i]);
      phi_v16[i] = to_bf16(phi_v[i]);
    }
    return make_inputs(q16.data(), k16.data(), v16.data(), gates16.data(), phi_k16, phi_v16);
  }

 private:
  static std::vector<bf16> to_bf16(const std::vector<float>& x) {
    std::vector<bf16> y(x.size());
    nsa::to_bf16(x.data(), y.data(), x.size());
    return y;
  }
  template <class T>
  NsaInputs<T> make_inputs(const T* q_, const T* k_, const T* v_, const T* gates_, const std::vector<T>* pk,
                           const std::vector<T>* pv) const {
    NsaInputs<T> in;
    in.q = view(q_, kHeads, kDk);
    in.k_cmp = in.k_slc = in.k_win = view(k_, kKvHeads, kDk);  // shared K/V
    in.v_cmp = in.v_slc = in.v_win = view(v_, kKvHeads, kDv);
    in.gates = view(gates_, kHeads, 3);
    in.phi_k = phi_weights(pk);
    in.phi_v = phi_weights(pv);
    return in;
  }
};

// The dense causal attention over the selection branch's (shared) K/V of `in`.
template <class T>
DenseInputs<T> dense_inputs(const NsaInputs<T>& in) {
  return {in.q, in.k_slc, in.v_slc};
}

// Times `call()` once per iteration (`result`: what it writes, kept alive) and reports
// tokens/s for the state.range(0) tokens of one call.
template <class Call>
void time_calls(benchmark::State& state, const float* result, Call&& call) {
  for (auto _ : state) {
    call();
    benchmark::DoNotOptimize(result);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

using BenchFn = void (*)(benchmark::State&);

// Registers every (name, fn) of `benches` for every T of `tokens` with args {T, threads}.
inline void register_benches(const std::vector<index_t>& tokens, int threads, benchmark::TimeUnit unit,
                             std::initializer_list<std::pair<const char*, BenchFn>> benches) {
  for (const index_t t : tokens)
    for (const auto& [name, fn] : benches)
      benchmark::RegisterBenchmark(name, fn)
          ->Args({t, threads})->ArgNames({"T", "threads"})->Unit(unit)->UseRealTime()->MinTime(0.2);
}

}  // namespace nsa::bench
