// Timing part of nsa_gpu_check: NSA forward vs the dense flash forward, bf16 storage,
// cudaEvent timings, median of a few reps (each measurement bounded in time); then the
// same for the backward passes (bench_backward).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "nsa/attention.h"
#include "nsa/cuda.h"
#include "nsa/cuda_backward.h"
#include "nsa/error.h"
#include "device_fill.h"

using nsa::gpu_check::cuda_ok;
using nsa::gpu_check::fill_random;

namespace {

using nsa::index_t;
namespace ncu = nsa::cuda;
using Tag = ncu::bf16;



// Median ms of fn() over reps (cudaEvents); the first call is a warm-up that sizes the
// reps to about budget_s. Returns -1 when the warm-up alone exceeds `give_up_s`.
double median_ms(const std::function<void()>& fn, double budget_s, int max_reps, double give_up_s, int* reps_out) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  ncu::synchronize(nullptr);
  const double first = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (first > give_up_s) { *reps_out = 0; return -1.0; }
  const int reps = static_cast<int>(std::clamp(budget_s / std::max(first, 1e-6), 1.0, double(max_reps)));
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "cudaEventCreate");
  cuda_ok(cudaEventCreate(&b), "cudaEventCreate");
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cuda_ok(cudaEventRecord(a), "cudaEventRecord");
    fn();
    cuda_ok(cudaEventRecord(b), "cudaEventRecord");
    cuda_ok(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0.f;
    cuda_ok(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  *reps_out = reps;
  return t[t.size() / 2];
}

struct Bufs {
  ncu::DeviceBuffer q, k[3], v[3], gates, out, lse;
  ncu::DeviceBuffer pe_k, w1_k, b1_k, w2_k, b2_k, pe_v, w1_v, b1_v, w2_v, b2_v;
};

double dense_flops(index_t T, index_t H, index_t dk, index_t dv) {
  return 2.0 * H * double(dk + dv) * double(T) * double(T + 1) / 2.0;
}

// Attention FLOPs of the three branches (keys each query reads; phi excluded).
double nsa_flops(const nsa::Config& c, index_t T, index_t H, index_t dk, index_t dv) {
  double keys = 0;
  const index_t sel = index_t(c.top_n()) * c.sel_block();
  for (index_t t = 0; t < T; ++t)
    keys += double(c.visible_cmp_blocks(t)) + double(std::min(t + 1, sel)) + double(std::min<index_t>(t + 1, c.window()));
  return 2.0 * H * double(dk + dv) * keys;
}

// Backward timing: NSA backward vs the dense flash backward, same shapes as the forward
// table (bf16 inputs, fp32 gradients). Each backward is timed after one forward call that
// leaves the saved state (NSA) or the output and lse (dense) it needs.
template <class RunNsa, class RunDense, class NsaIn, class DenseIn>
void bench_backward(const nsa::Config& config, const std::vector<index_t>& Ts, double budget, double give_up, Bufs& b,
                    ncu::Workspace& ws, ncu::Workspace& ws_dense, ncu::NsaSavedDevice& saved, RunNsa run_nsa, RunDense run_dense,
                    NsaIn nsa_inputs, DenseIn dense_inputs, int& checks, int& failures) {
  const index_t Hkv = 4, dk = 192, dv = 128, H = 64, Tmax = Ts.back(), l = config.block_len();
  std::printf("\n== backward timing: bf16 inputs, fp32 gradients, B=1, H=64 H_kv=4 d_k=192 d_v=128 ==\n");
  ncu::DeviceBuffer dout, dq, dk_b[3], dv_b[3], dgates;
  fill_random(dout, std::size_t(Tmax) * H * dv, 7, 1.f);
  dq.reserve(std::size_t(Tmax) * H * dk * sizeof(float));
  for (int i = 0; i < 3; ++i) {
    dk_b[i].reserve(std::size_t(Tmax) * Hkv * dk * sizeof(float));
    dv_b[i].reserve(std::size_t(Tmax) * Hkv * dv * sizeof(float));
  }
  dgates.reserve(std::size_t(Tmax) * H * 3 * sizeof(float));
  // phi (mlp) parameter gradients, hidden = dim.
  std::vector<ncu::DeviceBuffer> pg;
  auto phi_grads = [&](index_t dim) {
    nsa::PhiGradients<float> g;
    float** fields[] = {&g.pe, &g.w1, &g.b1, &g.w2, &g.b2};
    const index_t sizes[] = {l * dim, dim * l * dim, dim, dim * dim, dim};
    for (int i = 0; i < 5; ++i) {
      pg.emplace_back(std::size_t(sizes[i]) * sizeof(float));
      *fields[i] = pg.back().as<float>();
    }
    return g;
  };
  pg.reserve(10);
  const auto gk = phi_grads(dk), gv = phi_grads(dv);
  auto grads = [&](index_t T) {
    nsa::NsaGradients<float> g;
    g.dq = nsa::contiguous_view(dq.as<float>(), 1, T, H, dk);
    g.dk_cmp = nsa::contiguous_view(dk_b[0].as<float>(), 1, T, Hkv, dk);
    g.dk_slc = nsa::contiguous_view(dk_b[1].as<float>(), 1, T, Hkv, dk);
    g.dk_win = nsa::contiguous_view(dk_b[2].as<float>(), 1, T, Hkv, dk);
    g.dv_cmp = nsa::contiguous_view(dv_b[0].as<float>(), 1, T, Hkv, dv);
    g.dv_slc = nsa::contiguous_view(dv_b[1].as<float>(), 1, T, Hkv, dv);
    g.dv_win = nsa::contiguous_view(dv_b[2].as<float>(), 1, T, Hkv, dv);
    g.dgates = nsa::contiguous_view(dgates.as<float>(), 1, T, H, 3);
    g.phi_k = gk;
    g.phi_v = gv;
    return g;
  };
  auto finite = [&](const std::string& name, index_t T) {
    std::vector<float> h(static_cast<std::size_t>(std::min<index_t>(T * H * dk, 1 << 20)));
    dq.copy_to_host(h.data(), h.size() * sizeof(float));
    bool ok = true;
    for (float x : h) ok = ok && std::isfinite(x);
    ++checks;
    if (!ok) {
      ++failures;
      std::printf("FAIL %s: non-finite dq\n", name.c_str());
    }
  };
  std::printf("%7s | %11s | %11s %8s\n", "T", "nsa bwd ms", "dense bwd ms", "speedup");
  for (index_t T : Ts) {
    int r1 = 0, r2 = 0;
    run_nsa(T, H);  // saved state of this T
    const auto dview = nsa::contiguous_view<const Tag>(dout.as<const Tag>(), 1, T, H, dv);
    const double t_nsa = median_ms([&] { ncu::nsa_backward<Tag>(config, nsa_inputs(T, H), saved, dview, grads(T), ws, nullptr); },
                                   budget, 3, give_up, &r1);
    finite("bench nsa backward T=" + std::to_string(T), T);
    run_dense(T, H, dk, dv);  // output and lse of this T
    const auto out = nsa::contiguous_view<const Tag>(b.out.as<const Tag>(), 1, T, H, dv);
    nsa::DenseGradients<float> dg{nsa::contiguous_view(dq.as<float>(), 1, T, H, dk),
                                  nsa::contiguous_view(dk_b[0].as<float>(), 1, T, Hkv, dk),
                                  nsa::contiguous_view(dv_b[0].as<float>(), 1, T, Hkv, dv)};
    const double t_dense = median_ms([&] {
      ncu::dense_backward<Tag>(dense_inputs(T, H, dk, dv), out, b.lse.as<const float>(), dview, dg, ws_dense, nullptr);
    }, budget, 3, give_up, &r2);
    finite("bench dense backward T=" + std::to_string(T), T);
    std::printf("%7lld | %11.3f | %11.3f %7.2fx   (reps %d/%d)\n", static_cast<long long>(T), t_nsa, t_dense,
                t_nsa > 0 ? t_dense / t_nsa : 0.0, r1, r2);
    std::fflush(stdout);
  }
}

}  // namespace

void run_bench(bool quick, index_t max_t, int& checks, int& failures) {
  std::printf("\n== timing: bf16 storage, fp32 accumulation, B=1, cudaEvents, median of reps ==\n");
  const nsa::Config config;  // paper defaults
  const index_t Hkv = 4, dk = 192, dv = 128;
  std::vector<index_t> Ts = {8192, 16384, 32768, 65536};
  Ts.erase(std::remove_if(Ts.begin(), Ts.end(), [&](index_t t) { return t > max_t; }), Ts.end());
  if (Ts.empty()) return;
  const index_t Tmax = Ts.back(), Hmax = 64, l = config.block_len();
  Bufs b;
  fill_random(b.q, std::size_t(Tmax) * Hmax * dk, 1, 1.f);
  for (int i = 0; i < 3; ++i) {
    fill_random(b.k[i], std::size_t(Tmax) * Hkv * dk, 10 + i, 1.f);
    fill_random(b.v[i], std::size_t(Tmax) * Hkv * dv, 20 + i, 1.f);
  }
  fill_random(b.gates, std::size_t(Tmax) * Hmax * 3, 3, 1.f, true, 0.05f, 0.95f);
  b.out.reserve(std::size_t(Tmax) * Hmax * dv * sizeof(Tag));
  b.lse.reserve(std::size_t(Tmax) * Hmax * sizeof(float));
  auto phi = [&](index_t dim, ncu::DeviceBuffer& pe, ncu::DeviceBuffer& w1, ncu::DeviceBuffer& b1,
                 ncu::DeviceBuffer& w2, ncu::DeviceBuffer& b2, std::uint64_t seed) {
    fill_random(pe, l * dim, seed, 0.5f);
    fill_random(w1, dim * l * dim, seed + 1, 1.f / std::sqrt(float(l * dim)));
    fill_random(b1, dim, seed + 2, 0.1f);
    fill_random(w2, dim * dim, seed + 3, 1.f / std::sqrt(float(dim)));
    fill_random(b2, dim, seed + 4, 0.1f);
    nsa::PhiWeights<Tag> w;
    w.pe = pe.as<Tag>(); w.w1 = w1.as<Tag>(); w.b1 = b1.as<Tag>(); w.w2 = w2.as<Tag>(); w.b2 = b2.as<Tag>();
    return w;
  };
  const auto phi_k = phi(dk, b.pe_k, b.w1_k, b.b1_k, b.w2_k, b.b2_k, 100);
  const auto phi_v = phi(dv, b.pe_v, b.w1_v, b.b1_v, b.w2_v, b.b2_v, 200);
  ncu::Workspace ws, ws_dense;
  ncu::NsaSavedDevice saved;

  auto nsa_inputs = [&](index_t T, index_t H) {
    nsa::NsaInputs<Tag> in;
    in.q = nsa::contiguous_view<const Tag>(b.q.as<Tag>(), 1, T, H, dk);
    in.k_cmp = nsa::contiguous_view<const Tag>(b.k[0].as<Tag>(), 1, T, Hkv, dk);
    in.v_cmp = nsa::contiguous_view<const Tag>(b.v[0].as<Tag>(), 1, T, Hkv, dv);
    in.k_slc = nsa::contiguous_view<const Tag>(b.k[1].as<Tag>(), 1, T, Hkv, dk);
    in.v_slc = nsa::contiguous_view<const Tag>(b.v[1].as<Tag>(), 1, T, Hkv, dv);
    in.k_win = nsa::contiguous_view<const Tag>(b.k[2].as<Tag>(), 1, T, Hkv, dk);
    in.v_win = nsa::contiguous_view<const Tag>(b.v[2].as<Tag>(), 1, T, Hkv, dv);
    in.gates = nsa::contiguous_view<const Tag>(b.gates.as<Tag>(), 1, T, H, 3);
    in.phi_k = phi_k;
    in.phi_v = phi_v;
    return in;
  };
  auto dense_inputs = [&](index_t T, index_t H, index_t dkk, index_t dvv) {
    nsa::DenseInputs<Tag> in;
    in.q = nsa::contiguous_view<const Tag>(b.q.as<Tag>(), 1, T, H, dkk);
    in.k = nsa::contiguous_view<const Tag>(b.k[1].as<Tag>(), 1, T, Hkv, dkk);
    in.v = nsa::contiguous_view<const Tag>(b.v[1].as<Tag>(), 1, T, Hkv, dvv);
    return in;
  };
  auto run_nsa = [&](index_t T, index_t H) {
    ncu::nsa_forward<Tag>(config, nsa_inputs(T, H), nsa::contiguous_view(b.out.as<Tag>(), 1, T, H, dv), &saved, ws, nullptr);
  };
  auto run_dense = [&](index_t T, index_t H, index_t dkk, index_t dvv) {
    ncu::dense_forward<Tag>(dense_inputs(T, H, dkk, dvv), nsa::contiguous_view(b.out.as<Tag>(), 1, T, H, dvv),
                            b.lse.as<float>(), ws_dense, nullptr);
  };
  // Output sanity (NaN/Inf is a failure) on the first values of the last run.
  auto finite_check = [&](const std::string& name, index_t n) {
    std::vector<Tag> h(static_cast<std::size_t>(n));
    b.out.copy_to_host(h.data(), h.size() * sizeof(Tag));
    bool ok = true;
    for (auto x : h) ok = ok && std::isfinite(x.to_float());
    ++checks;
    if (!ok) ++failures;
    if (!ok) std::printf("FAIL %s: non-finite output\n", name.c_str());
  };

  const double budget = quick ? 0.5 : 1.5, give_up = 20.0;
  const int max_reps = 5;
  std::printf("NSA: l=%d d=%d l'=%d n=%d w=%d phi=mlp, independent K/V per branch; H=64 H_kv=4 (G=4)\n",
              config.block_len(), config.stride(), config.sel_block(), config.top_n(), config.window());
  std::printf("%7s | %9s %9s | %9s %7s %8s | %8s | %11s %7s\n", "T", "nsa ms", "nsa TF/s*", "dense ms", "TF/s",
              "speedup", "phases", "dense128 ms", "TF/s");
  std::printf("        |   (d_k=192, d_v=128)  | (dense flash, d_k=192, d_v=128) |          | (d_k=d_v=128)\n");
  for (index_t T : Ts) {
    const index_t H = Hmax;
    int r1 = 0, r2 = 0, r3 = 0;
    const double t_nsa = median_ms([&] { run_nsa(T, H); }, budget, max_reps, give_up, &r1);
    finite_check("bench nsa T=" + std::to_string(T), std::min<index_t>(T * H * dv, 1 << 20));
    const double t_dense = median_ms([&] { run_dense(T, H, dk, dv); }, budget, max_reps, give_up, &r2);
    finite_check("bench dense T=" + std::to_string(T), std::min<index_t>(T * H * dv, 1 << 20));
    const double t_d128 = median_ms([&] { run_dense(T, H, 128, 128); }, budget, max_reps, give_up, &r3);
    // One more NSA call with per-phase events (printed by the library to stderr).
    setenv("NSA_CUDA_PHASES", "1", 1);
    run_nsa(T, H);
    ncu::synchronize(nullptr);
    unsetenv("NSA_CUDA_PHASES");
    auto tf = [](double flops, double ms) { return ms > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0; };
    std::printf("%7lld | %9.3f %9.1f | %9.3f %7.1f %7.2fx | %8s | %11.3f %7.1f   (reps %d/%d/%d)\n",
                static_cast<long long>(T), t_nsa, tf(nsa_flops(config, T, H, dk, dv), t_nsa), t_dense,
                tf(dense_flops(T, H, dk, dv), t_dense), t_nsa > 0 ? t_dense / t_nsa : 0.0, "stderr", t_d128,
                tf(dense_flops(T, H, 128, 128), t_d128), r1, r2, r3);
    std::fflush(stdout);
  }
  std::printf("* nsa TF/s counts the attention FLOPs of the three branches only (keys read per query:\n"
              "  visible compressed blocks + min(t+1, n*l') + min(t+1, w)), phi excluded.\n");

  // Group sizes: same T, H_kv = 4, G = 1, 4, 16 (H = 4, 16, 64).
  const index_t Tg = std::min<index_t>(Ts.back(), 32768);
  std::printf("\nGroup sizes at T=%lld, H_kv=4, d_k=192, d_v=128, bf16:\n", static_cast<long long>(Tg));
  std::printf("%4s %4s | %9s %9s | %9s %8s\n", "G", "H", "nsa ms", "ms/head", "dense ms", "speedup");
  for (index_t G : {1, 4, 16}) {
    const index_t H = G * Hkv;
    int r1 = 0, r2 = 0;
    const double t_nsa = median_ms([&] { run_nsa(Tg, H); }, budget / 2, 3, give_up, &r1);
    const double t_dense = median_ms([&] { run_dense(Tg, H, dk, dv); }, budget / 2, 3, give_up, &r2);
    std::printf("%4lld %4lld | %9.3f %9.4f | %9.3f %7.2fx\n", static_cast<long long>(G), static_cast<long long>(H), t_nsa,
                t_nsa / H, t_dense, t_nsa > 0 ? t_dense / t_nsa : 0.0);
    std::fflush(stdout);
  }

  bench_backward(config, Ts, budget, give_up, b, ws, ws_dense, saved, run_nsa, run_dense, nsa_inputs,
                 dense_inputs, checks, failures);
}
