// nsa_gpu_check: the kernel lab of the CUDA backend (llm.c style).
//
//   1. correctness: every CUDA path (NSA forward in fp32 / bf16 / fp16, dense forward;
//      the backward passes, check_backward.cc; the decode cache and the dense decode
//      step, check_decode.cc) against the float64 reference on fresh random inputs, one
//      line per check:
//        OK   nsa/f32 G=4 ... out maxrel=3.1e-07 (tol 1e-05)
//      For 16-bit storage the reference runs on the same rounded inputs, so only the
//      kernels' error is measured. Selection indices must equal the reference's except
//      where the reference's scores are near-tied (checked with the reference's scores).
//   2. timing (cudaEvents, median of a few reps): NSA vs dense flash, bf16, B=1, H=64,
//      H_kv=4 (G=4), d_k=192, d_v=128, T = 8k..64k: forward (plus dense d_k=d_v=128),
//      backward (bench.cc), decode step (check_decode.cc).
//
// Exit status: 0 when every check passed (or when there is no CUDA device: prints
// "SKIPPED: no CUDA device"), 1 otherwise.
// Options: --no-bench, --no-check, --quick (fewer cases, T up to 16k), --max-t N.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "nsa/attention.h"
#include "nsa/cuda.h"
#include "nsa/error.h"
#include "reference/reference.h"
#include "check_util.h"
#include "testing/random_problem.h"

using namespace nsa::gpu_check;

// check_backward.cc: the CUDA backward vs the float64 reference.
void run_backward_checks(bool quick);
// check_decode.cc: the CUDA decode cache vs the float64 reference; decode step timings.
void run_decode_checks(bool quick);
void run_decode_bench(bool quick, nsa::index_t max_t);

namespace {

using nsa::testing::ProblemShape;
using nsa::testing::RandomDenseProblem;
using nsa::testing::RandomNsaProblem;

struct NsaCase {
  std::string name;
  ProblemShape shape;
  nsa::ConfigOptions opts;
};

template <class Tag>
void check_nsa(const NsaCase& c) {
  const nsa::Config config(c.opts);
  RandomNsaProblem prob(config, c.shape);
  round_problem_to<Tag>(prob);
  const std::string name = fmt("nsa/%-4s %-28s %s", tag_name<Tag>(), c.name.c_str(), prob.shape().describe().c_str());
  std::vector<double> ref;
  nsa::NsaSaved<double> saved;
  const auto t0 = std::chrono::steady_clock::now();
  nsa::reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), &saved);
  if (g_reference_only) {
    std::printf("reference %s: %.2f s\n", name.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return;
  }

  const auto in32 = prob.inputs32();
  Uploader<Tag> up;
  const index_t dk = prob.shape().d_k, dv = prob.shape().d_v;
  const nsa::NsaInputs<Tag> in = upload_inputs(up, config, in32, dk, dv);
  const auto& s = prob.shape();
  const std::size_t nout = static_cast<std::size_t>(prob.out_size());
  ncu::DeviceBuffer out_buf(nout * sizeof(Tag));
  nsa::TensorView<Tag> out = nsa::contiguous_view(out_buf.as<Tag>(), s.batch, s.tokens, s.heads, dv);
  ncu::NsaSavedDevice dsaved;
  ncu::Workspace ws;
  try {
    ncu::nsa_forward<Tag>(config, in, out, &dsaved, ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("threw: ") + e.what());
    return;
  }
  const double tol = tolerance<Tag>();
  const auto got = download<Tag>(out_buf, nout);
  const double e_out = rel_err(got, ref.data(), nout);

  // Per-branch outputs, lse, Kc/Vc (diagnostics; the output decides).
  const index_t rows = saved.rows, H = saved.heads, Hkv = saved.kv_heads, n = saved.top_n;
  const auto bo = download<float>(dsaved.branch_out, 3 * rows * H * dv);
  std::string detail = fmt("out maxrel=%.2e (tol %.0e)", e_out, tol);
  bool ok = e_out <= tol;
  const char* bnames[3] = {"cmp", "slc", "win"};
  for (int b = 0; b < 3; ++b) {
    std::vector<float> part(bo.begin() + b * rows * H * dv, bo.begin() + (b + 1) * rows * H * dv);
    const double e = rel_err(part, saved.branch_out_of(nsa::Branch(b)), part.size());
    detail += fmt(" %s=%.1e", bnames[b], e);
    ok = ok && std::isfinite(e);
  }
  const auto lse = download<float>(dsaved.lse, 3 * rows * H);
  std::vector<double> ref_lse(saved.lse.begin(), saved.lse.end());
  const double el = lse_err(lse, ref_lse);
  detail += fmt(" lse=%.1e", el);
  ok = ok && el <= (std::is_same_v<Tag, float> ? 1e-4 : 5e-2);
  const index_t total_cmp = saved.cmp_offsets.back();
  if (total_cmp > 0) {
    const auto kc = download<Tag>(dsaved.k_cmp_blocks, total_cmp * Hkv * dk);
    const auto vc = download<Tag>(dsaved.v_cmp_blocks, total_cmp * Hkv * dv);
    const double ek = rel_err(kc, saved.k_cmp_blocks.data(), kc.size());
    const double ev = rel_err(vc, saved.v_cmp_blocks.data(), vc.size());
    detail += fmt(" Kc=%.1e Vc=%.1e", ek, ev);
    ok = ok && ek <= tol && ev <= tol;
  }
  // Selection: equal, or differing only among near-tied reference scores.
  std::vector<std::int32_t> sel(static_cast<std::size_t>(rows * Hkv * n));
  dsaved.sel_blocks.copy_to_host(sel.data(), sel.size() * sizeof(std::int32_t));
  index_t mismatched = 0, ties = 0, bad = 0;
  const double tie_tol = std::is_same_v<Tag, float> ? 1e-4 : 3e-2;
  std::vector<index_t> row_seq(rows), row_t(rows);
  {
    const auto& cu = prob.shape().seqlens;
    if (cu.empty()) {
      for (index_t r = 0; r < rows; ++r) { row_seq[r] = r / s.tokens; row_t[r] = r % s.tokens; }
    } else {
      index_t r = 0;
      for (std::size_t q = 0; q < cu.size(); ++q)
        for (index_t t = 0; t < cu[q]; ++t, ++r) { row_seq[r] = q; row_t[r] = t; }
    }
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t hk = 0; hk < Hkv; ++hk) {
      const std::int32_t* a = sel.data() + (r * Hkv + hk) * n;
      const std::int32_t* b = saved.sel_blocks.data() + (r * Hkv + hk) * n;
      if (std::equal(a, a + n, b)) continue;
      ++mismatched;
      const auto S = reference_scores(config, prob.inputs64(), saved, r, hk, row_seq[r], row_t[r]);
      std::set<index_t> sa, sb;
      for (index_t i = 0; i < n; ++i) {
        if (a[i] >= 0) sa.insert(a[i]);
        if (b[i] >= 0) sb.insert(b[i]);
      }
      double smax = 0.0, kth = INFINITY;
      for (double x : S) smax = std::max(smax, x);
      for (index_t j : sb) kth = std::min(kth, S[j]);
      bool tie = sa.size() == sb.size();
      for (index_t j : sa) if (!sb.count(j) && (j >= static_cast<index_t>(S.size()) || std::abs(S[j] - kth) > tie_tol * smax)) tie = false;
      for (index_t j : sb) if (!sa.count(j) && std::abs(S[j] - kth) > tie_tol * smax) tie = false;
      if (tie) ++ties; else ++bad;
    }
  detail += fmt(" sel_mismatch=%lld(ties %lld)", static_cast<long long>(mismatched), static_cast<long long>(ties));
  // fp32: no real mismatch allowed; 16-bit: scores carry bf16 rounding, allow 0.5% of rows.
  const index_t allowed_bad = std::is_same_v<Tag, float> ? 0 : (rows * Hkv) / 200;
  ok = ok && bad <= allowed_bad;
  report(ok, name, detail);
}

template <class Tag>
void check_dense(const std::string& cname, const ProblemShape& shape) {
  RandomDenseProblem prob(shape);
  // 16-bit: RandomDenseProblem has no mutable buffers, so the reference sees the fp32
  // values; the input rounding (2^-9 relative) is part of the measured error here.
  const auto in32 = prob.inputs32();
  std::vector<double> ref;
  std::vector<double> ref_lse(static_cast<std::size_t>(in32.q.shape[0] * in32.q.shape[1] * in32.q.shape[2]));
  const auto t0 = std::chrono::steady_clock::now();
  nsa::reference::dense_forward(prob.inputs64(), prob.out_view(ref), ref_lse.data());
  if (g_reference_only) {
    std::printf("reference dense %s: %.2f s\n", cname.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return;
  }
  Uploader<Tag> up;
  nsa::DenseInputs<Tag> in;
  in.q = up.view(in32.q);
  in.k = up.view(in32.k);
  in.v = up.view(in32.v);
  in.seqs = in32.seqs;
  const auto& qs = in32.q.shape;
  const index_t dv = in32.v.shape[3];
  const std::size_t nout = static_cast<std::size_t>(qs[0] * qs[1] * qs[2] * dv);
  ncu::DeviceBuffer out_buf(nout * sizeof(Tag)), lse_buf(ref_lse.size() * sizeof(float));
  auto out = nsa::contiguous_view(out_buf.as<Tag>(), qs[0], qs[1], qs[2], dv);
  ncu::Workspace ws;
  const std::string name = fmt("dense/%-4s %-26s G=%lld d_k=%lld d_v=%lld T=%lld", tag_name<Tag>(), cname.c_str(),
                               static_cast<long long>(qs[2] / in32.k.shape[2]), static_cast<long long>(qs[3]),
                               static_cast<long long>(dv), static_cast<long long>(qs[1]));
  try {
    ncu::dense_forward<Tag>(in, out, lse_buf.as<float>(), ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("threw: ") + e.what());
    return;
  }
  const double tol = std::is_same_v<Tag, float> ? 1e-5 : 1.5e-2;
  const double e = rel_err(download<Tag>(out_buf, nout), ref.data(), nout);
  const double el = lse_err(download<float>(lse_buf, ref_lse.size()), ref_lse);
  report(e <= tol && el <= (std::is_same_v<Tag, float> ? 1e-4 : 5e-2), name,
         fmt("out maxrel=%.2e (tol %.1e) lse maxabs=%.1e", e, tol, el));
}

void check_errors() {
  // Invalid input must throw nsa::Error before launching anything.
  if (g_reference_only) return;
  ncu::Workspace ws;
  nsa::DenseInputs<ncu::bf16> in;
  ncu::DeviceBuffer q(64 * 24 * 2);
  in.q = nsa::contiguous_view<const ncu::bf16>(q.as<const ncu::bf16>(), 1, 4, 2, 24);  // d_k = 24
  in.k = nsa::contiguous_view<const ncu::bf16>(q.as<const ncu::bf16>(), 1, 4, 1, 24);
  in.v = in.k;
  auto out = nsa::contiguous_view(q.as<ncu::bf16>(), 1, 4, 2, 24);
  std::string what;
  try { ncu::dense_forward<ncu::bf16>(in, out, nullptr, ws, nullptr); } catch (const nsa::Error& e) { what = e.what(); }
  report(what.find("multiple of 16") != std::string::npos, "errors/d_k=24 is rejected", "\"" + what + "\"");
}

void run_checks(bool quick) {
  std::printf("== correctness vs float64 reference ==\n");
  nsa::ConfigOptions def;  // paper defaults: l=32 d=16 l'=64 n=16 w=512, mlp phi
  nsa::ConfigOptions small;  // exercises other block sizes, l' < kKeys, odd G
  small.block_len = 16; small.stride = 8; small.sel_block = 32; small.top_n = 4; small.window = 64;
  nsa::ConfigOptions lin = def; lin.phi = nsa::PhiKind::linear;
  nsa::ConfigOptions mean = small; mean.phi = nsa::PhiKind::mean; mean.n_init = 0; mean.n_local = 1; mean.top_n = 3;
  auto shape = [](index_t B, index_t T, index_t H, index_t Hkv, index_t dk, index_t dv, bool shared,
                  std::uint64_t seed, std::vector<std::int64_t> seqlens = {}) {
    ProblemShape s;
    s.batch = B; s.tokens = T; s.heads = H; s.kv_heads = Hkv; s.d_k = dk; s.d_v = dv;
    s.shared_kv = shared; s.seed = seed; s.seqlens = std::move(seqlens);
    return s;
  };
  std::vector<NsaCase> cases = {
      {"G=1 T=1000 128/128", shape(1, 1000, 2, 2, 128, 128, false, 11), def},
      {"G=4 T=1000 192/128", shape(1, 1000, 8, 2, 192, 128, false, 12), def},
      {"G=16 B=2 T=333 shared", shape(2, 333, 16, 1, 128, 128, true, 13), def},
      {"T<l B=2 T=20", shape(2, 20, 4, 1, 64, 64, false, 14), def},
      {"varlen G=4 192/128 shared", shape(1, 0, 4, 1, 192, 128, true, 15, {700, 5, 1300, 64}), def},
      {"G=2 T=2000 linear 64/64", shape(1, 2000, 2, 1, 64, 64, false, 16), lin},
      {"G=3 small-cfg 64/32", shape(1, 333, 6, 2, 64, 32, false, 17), small},
      {"G=20 small-cfg 32/256", shape(1, 200, 20, 1, 32, 256, false, 18), small},
      {"G=80 mean 16/16", shape(1, 150, 80, 1, 16, 16, true, 19), mean},
  };
  if (quick) cases.resize(4);
  for (const auto& c : cases) check_nsa<float>(c);
  for (const auto& c : cases) check_nsa<ncu::bf16>(c);
  for (std::size_t i = 0; i < cases.size(); i += 2) check_nsa<ncu::f16>(cases[i]);

  const std::vector<std::pair<std::string, ProblemShape>> dense = {
      {"G=1 T=1000", shape(1, 1000, 2, 2, 128, 128, false, 21)},
      {"G=4 T=333 B=2", shape(2, 333, 8, 2, 192, 128, false, 22)},
      {"G=16 T=1000", shape(1, 1000, 16, 1, 128, 128, false, 23)},
      {"varlen G=4", shape(1, 0, 4, 1, 64, 64, false, 24, {300, 1, 517})},
  };
  for (const auto& [n, s] : dense) check_dense<float>(n, s);
  for (const auto& [n, s] : dense) check_dense<ncu::bf16>(n, s);
  check_dense<ncu::f16>(dense[1].first, dense[1].second);
  check_errors();
  run_backward_checks(quick);
  run_decode_checks(quick);
}

}  // namespace

// bench.cc
void run_bench(bool quick, nsa::index_t max_t, int& checks, int& failures);

int main(int argc, char** argv) {
  bool bench = true, check = true, quick = false;
  index_t max_t = 65536;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-bench") bench = false;
    else if (a == "--no-check") check = false;
    else if (a == "--quick") quick = true;
    else if (a == "--reference-only") g_reference_only = true;
    else if (a == "--max-t" && i + 1 < argc) max_t = std::atoll(argv[++i]);
    else { std::fprintf(stderr, "usage: %s [--no-bench] [--no-check] [--quick] [--max-t N]\n", argv[0]); return 2; }
  }
  std::printf("nsa_gpu_check: CUDA kernels of NSA (forward, backward, decode) and dense attention vs the float64 reference\n");
  if (g_reference_only) {
    const auto t0 = std::chrono::steady_clock::now();
    run_checks(quick);
    std::printf("reference total: %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  }
  if (ncu::device_count() == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return 0;
  }
  try {
    std::printf("device: %s\n", ncu::device_description().c_str());
    if (check) run_checks(quick);
    if (bench) run_bench(quick, quick ? std::min<index_t>(max_t, 16384) : max_t, g_checks, g_failures);
    if (bench) run_decode_bench(quick, quick ? std::min<index_t>(max_t, 16384) : max_t);
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    ++g_failures;
  }
  std::printf("nsa_gpu_check: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
