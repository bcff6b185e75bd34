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

#include <type_traits>

#include "bench_common.h"
#include "nsa/nsa.h"

namespace nsa::bench {
namespace {

// The problem's inputs in element type T: float, or bf16 (the same values rounded).
template <class T>
NsaInputs<T> inputs_of(PaperProblem& data) {
  if constexpr (std::is_same_v<T, bf16>)
    return data.nsa_inputs_bf16();
  else
    return data.nsa_inputs();
}

template <class T>
void BM_NsaForward(benchmark::State& state) {
  const Config config;
  PaperProblem data(config, state.range(0));
  ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = inputs_of<T>(data);
  const auto out = data.out_view();
  time_calls(state, data.out.data(), [&] { nsa_forward(config, in, out, nullptr, pool); });
}

template <class T>
void BM_DenseForward(benchmark::State& state) {
  const Config config;
  PaperProblem data(config, state.range(0));
  ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = dense_inputs(inputs_of<T>(data));
  const auto out = data.out_view();
  time_calls(state, data.out.data(), [&] { dense_forward(in, out, nullptr, pool); });
}

const bool registered = [] {
  register_benches(bench_tokens(), bench_threads(), benchmark::kMillisecond,
                   {{"NsaForward", BM_NsaForward<float>},
                    {"NsaForwardBf16", BM_NsaForward<bf16>},
                    {"DenseForward", BM_DenseForward<float>},
                    {"DenseForwardBf16", BM_DenseForward<bf16>}});
  return true;
}();

}  // namespace
}  // namespace nsa::bench
