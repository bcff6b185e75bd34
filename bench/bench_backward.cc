// Micro-benchmarks of the fp32 CPU backward kernels: nsa_backward against dense_backward
// (the baseline of the paper's backward speed-up), paper shape H=16, H_kv=1, d_k=192,
// d_v=128, the paper's NSA config (l=32, d=16, l'=64, n=16, w=512, mlp phi), shared K/V.
// The forward runs once outside the timed loop to produce the saved state / lse.
//
//   nsa_microbench --benchmark_filter=Backward
// Sequence lengths: 1024 and 4096 by default; NSA_BENCH_TOKENS="16384" replaces them.
// Threads: NSA_BENCH_THREADS (default 2).
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_common.h"
#include "nsa/nsa.h"

namespace nsa::bench {
namespace {

// Gradient buffers of one backward call (shared K/V: one dk, one dv) and the forward's lse.
struct Grads {
  std::vector<float> dq, dk, dv, dgates, lse;
  std::vector<float> phi_k[kPhiFields.size()], phi_v[kPhiFields.size()];  // per PhiField (mlp)

  explicit Grads(const PaperProblem& p)
      : dq(p.q.size()), dk(p.k.size()), dv(p.v.size()), dgates(p.gates.size()),
        lse(static_cast<size_t>(p.tokens * kHeads)) {
    for (std::size_t i = 0; i < kPhiFields.size(); ++i) {
      phi_k[i].resize(p.phi_k[i].size());
      phi_v[i].resize(p.phi_v[i].size());
    }
  }

  NsaGradients<float> nsa_grads(const PaperProblem& p) {
    NsaGradients<float> g;
    g.dq = p.view(dq.data(), kHeads, kDk);
    g.dk_cmp = g.dk_slc = g.dk_win = p.view(dk.data(), kKvHeads, kDk);  // shared K/V: summed
    g.dv_cmp = g.dv_slc = g.dv_win = p.view(dv.data(), kKvHeads, kDv);
    g.dgates = p.view(dgates.data(), kHeads, 3);
    g.phi_k = phi_gradients(phi_k);
    g.phi_v = phi_gradients(phi_v);
    return g;
  }
  DenseGradients<float> dense_grads(const PaperProblem& p) {
    return {p.view(dq.data(), kHeads, kDk), p.view(dk.data(), kKvHeads, kDk),
            p.view(dv.data(), kKvHeads, kDv)};
  }
};

void BM_NsaBackward(benchmark::State& state) {
  const Config config;
  PaperProblem data(config, state.range(0), /*with_d_out=*/true);
  Grads g(data);
  ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = data.nsa_inputs();
  NsaSaved<float> saved;
  nsa_forward(config, in, data.out_view(), &saved, pool);
  const auto d_out = data.view<const float>(data.d_out.data(), kHeads, kDv);
  const auto grads = g.nsa_grads(data);
  time_calls(state, g.dq.data(), [&] { nsa_backward(config, in, saved, d_out, grads, pool); });
}

void BM_DenseBackward(benchmark::State& state) {
  const Config config;
  PaperProblem data(config, state.range(0), /*with_d_out=*/true);
  Grads g(data);
  ThreadPool pool(static_cast<int>(state.range(1)));
  const auto in = dense_inputs(data.nsa_inputs());
  const auto out = data.out_view();
  dense_forward(in, out, g.lse.data(), pool);
  const auto d_out = data.view<const float>(data.d_out.data(), kHeads, kDv);
  const auto grads = g.dense_grads(data);
  time_calls(state, g.dq.data(),
             [&] { dense_backward(in, out.as_const(), g.lse.data(), d_out, grads, pool); });
}

const bool registered = [] {
  register_benches(bench_tokens(), bench_threads(), benchmark::kMillisecond,
                   {{"NsaBackward", BM_NsaBackward}, {"DenseBackward", BM_DenseBackward}});
  return true;
}();

}  // namespace
}  // namespace nsa::bench
