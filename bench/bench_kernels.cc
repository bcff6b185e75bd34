// Micro-benchmarks of the NSA forward's kernels one by one (fp32, one thread), paper shape
// and config, shared K/V: each benchmark runs the whole forward pipeline of one sequence
// tile by tile (nsa_forward's phase 2, without the gated combine) and times only its own
// kernel with manual timing, so the kernels it depends on produce real inputs:
//   KernelPhi          phi of every (block, kv head), K and V (cpu::compress_blocks)
//   KernelKeyTiles     the raw keys and Kc transposed once (cpu::transpose_keys)
//   KernelCompression  compression attention + selection-block importance
//   KernelTopN         top-n block choice (cpu::select_blocks)
//   KernelSelection    attention over the chosen blocks
//   KernelWindow       sliding-window attention
// The forward's own time is NsaForward (bench_forward.cc), with threads.
//
//   nsa_microbench --benchmark_filter=Kernel
// Sequence lengths: 1024 and 4096 by default; NSA_BENCH_TOKENS replaces them.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "bench_common.h"
#include "common/problem.h"
#include "cpu/kernels.h"
#include "nsa/nsa.h"

namespace nsa::bench {
namespace {

enum class Kernel { phi, key_tiles, compression, top_n, selection, window };

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One forward of `data`'s sequence on one thread; returns the seconds spent in `timed`.
double run_pipeline(const Config& config, const PaperProblem& data, Kernel timed, ThreadPool& pool,
                    std::vector<float>& kc, std::vector<float>& vc, cpu::Scratch& s) {
  const NsaInputs<float> in = data.nsa_inputs();
  std::vector<float> out_buf(data.out.size());
  const Problem p = validate_nsa(config, in, contiguous_view(out_buf.data(), 1, data.tokens, kHeads, kDv));
  const index_t num_cmp = p.cmp_offsets.back(), G = p.group;
  kc.resize(static_cast<size_t>(num_cmp * kKvHeads * kDk));
  vc.resize(static_cast<size_t>(num_cmp * kKvHeads * kDv));
  double spent = 0;
  auto t0 = Clock::now();
  cpu::compress_blocks(config, p, in.k_cmp, in.phi_k, kc.data(), pool);
  cpu::compress_blocks(config, p, in.v_cmp, in.phi_v, vc.data(), pool);
  if (timed == Kernel::phi) return seconds_since(t0);

  t0 = Clock::now();
  const SeqSpan& seq = p.seqs[0];
  const cpu::KeyTiles raw_tiles =
      cpu::transpose_keys({{in.k_slc.ptr(0, 0, 0), in.k_slc.stride[1], seq.len}}, kDk, pool);
  const cpu::KeyTiles cmp_tiles = cpu::transpose_keys({{kc.data(), kKvHeads * kDk, num_cmp}}, kDk, pool);
  if (timed == Kernel::key_tiles) return seconds_since(t0);

  const cpu::KeyValues cmp{kc.data(), kKvHeads * kDk, vc.data(), kKvHeads * kDv, cmp_tiles.span(0)};
  const cpu::KeyValues raw{in.k_slc.ptr(0, 0, 0), in.k_slc.stride[1], in.v_slc.ptr(0, 0, 0),
                           in.v_slc.stride[1], raw_tiles.span(0)};
  const index_t tile_len = cpu::tile_tokens(G);
  const float scale = static_cast<float>(p.scale);
  for (index_t t0_tok = 0; t0_tok < seq.len; t0_tok += tile_len) {
    const cpu::QueryTile tile = cpu::pack_queries(in.q, seq, 0, G, t0_tok, std::min(tile_len, seq.len - t0_tok),
                                                  kDv, scale, s);
    auto step = [&](Kernel k, auto&& call) {
      const auto c0 = Clock::now();
      call();
      if (k == timed) spent += seconds_since(c0);
    };
    step(Kernel::compression, [&] { cpu::compression_attention(config, tile, cmp, num_cmp, s); });
    step(Kernel::top_n, [&] { cpu::select_blocks(config, tile, s); });
    step(Kernel::selection, [&] { cpu::selection_attention(config, tile, raw, s); });
    step(Kernel::window, [&] { cpu::window_attention(tile, raw, config.window(), s.state[kWin], s); });
  }
  return spent;
}

template <Kernel K>
void BM_Kernel(benchmark::State& state) {
  const Config config;
  const PaperProblem data(config, state.range(0));
  ThreadPool pool(1);
  std::vector<float> kc, vc;
  cpu::Scratch s;
  for (auto _ : state) {
    state.SetIterationTime(run_pipeline(config, data, K, pool, kc, vc, s));
    benchmark::DoNotOptimize(kc.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.range(0)),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  const std::pair<const char*, BenchFn> benches[] = {
      {"KernelPhi", BM_Kernel<Kernel::phi>},
      {"KernelKeyTiles", BM_Kernel<Kernel::key_tiles>},
      {"KernelCompression", BM_Kernel<Kernel::compression>},
      {"KernelTopN", BM_Kernel<Kernel::top_n>},
      {"KernelSelection", BM_Kernel<Kernel::selection>},
      {"KernelWindow", BM_Kernel<Kernel::window>}};
  for (const index_t t : bench_tokens())
    for (const auto& [name, fn] : benches)
      benchmark::RegisterBenchmark(name, fn)
          ->Arg(t)->ArgName("T")->Unit(benchmark::kMillisecond)->UseManualTime()->MinTime(0.2);
  return true;
}();

}  // namespace
}  // namespace nsa::bench
