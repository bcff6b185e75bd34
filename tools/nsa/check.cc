// nsa check: the fp32 CPU kernels (nsa::nsa_forward, nsa::dense_forward) against the
// float64 reference (nsa::reference::...) on random inputs, never zeros, at a handful of
// shapes that cover the awkward cases: G = 3 and 16, d_k != d_v, T not a multiple of the
// block sizes, a packed varlen batch, shared K/V, B > 1, the three phi forms, and the
// paper's defaults. One line per check with the max relative error ||x - ref|| / ||ref||
// over the output and (NSA) each branch's output; OK when it is below the spec's fp32
// forward tolerance 1e-5 and nothing is NaN/Inf. Exit status 1 when any check FAILs.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "nsa/nsa.h"
#include "testing/random_problem.h"

namespace nsa::cli {
namespace {

using testing::ProblemShape;
using testing::RandomDenseProblem;
using testing::RandomNsaProblem;
using testing::relative_error;

constexpr double kTolerance = 1e-5;  // spec, "Tolerances": fp32 forward

struct CheckOptions {
  int threads = 0;          // 0: every hardware thread
  std::uint64_t seed = 1;
  double tolerance = kTolerance;
  std::string filter;       // run only checks whose name contains this
  bool list = false;
};

struct CheckCase {
  std::string name;
  bool dense = false;
  ConfigOptions options;    // NSA only
  ProblemShape shape;
};

// A small configuration whose blocks are short enough that T = 100 crosses every rule
// (several compressed blocks, more candidates than top_n, a window shorter than T).
ConfigOptions small_options(PhiKind phi) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = 4;
  o.n_init = 1;
  o.n_local = 2;
  o.window = 32;
  o.phi = phi;
  return o;
}

ProblemShape shape(index_t batch, index_t tokens, index_t heads, index_t kv_heads, index_t d_k,
                   index_t d_v, bool shared_kv, std::vector<std::int64_t> seqlens = {}) {
  ProblemShape s;
  s.batch = batch;
  s.tokens = tokens;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.d_k = d_k;
  s.d_v = d_v;
  s.shared_kv = shared_kv;
  s.seqlens = std::move(seqlens);
  if (!s.seqlens.empty()) {  // a packed batch: B = 1, T = the total
    s.batch = 1;
    s.tokens = 0;
    for (auto n : s.seqlens) s.tokens += n;
  }
  return s;
}

std::vector<CheckCase> all_cases() {
  std::vector<CheckCase> c;
  // name, dense, config, shape(B, T, H, H_kv, d_k, d_v, shared, varlen)
  c.push_back({"nsa.paper_defaults_g3", false, ConfigOptions{},
               shape(1, 1000, 3, 1, 192, 128, false)});
  c.push_back({"nsa.paper_defaults_t4097", false, ConfigOptions{},
               shape(1, 4097, 2, 1, 64, 64, true)});
  c.push_back({"nsa.g1_batch2_shared_kv", false, small_options(PhiKind::mlp),
               shape(2, 100, 2, 2, 64, 64, true)});
  c.push_back({"nsa.g3_t37_linear_phi", false, small_options(PhiKind::linear),
               shape(1, 37, 6, 2, 32, 16, false)});
  c.push_back({"nsa.g16_t257_dk_ne_dv", false, small_options(PhiKind::mlp),
               shape(1, 257, 16, 1, 48, 32, false)});
  c.push_back({"nsa.varlen_mean_phi", false, small_options(PhiKind::mean),
               shape(1, 0, 4, 2, 32, 32, false, {1, 7, 8, 0, 33, 90})});
  c.push_back({"nsa.varlen_g2_shared_kv", false, small_options(PhiKind::mlp),
               shape(1, 0, 4, 2, 64, 32, true, {50, 3, 129})});
  c.push_back({"dense.g3_dk192_dv128", true, {}, shape(1, 1000, 3, 1, 192, 128, false)});
  c.push_back({"dense.g1_batch2_t33", true, {}, shape(2, 33, 2, 2, 64, 64, false)});
  c.push_back({"dense.varlen_g4", true, {}, shape(1, 0, 8, 2, 64, 32, false, {5, 0, 100, 257})});
  return c;
}

struct Result {
  double error = 0.0;       // max relative error over the compared tensors
  std::string detail;
};

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

Result run_nsa(const CheckCase& c, ThreadPool& pool) {
  const Config config(c.options);
  RandomNsaProblem prob(config, c.shape);
  std::vector<double> ref;
  NsaSaved<double> ref_saved;
  reference::nsa_forward(config, prob.inputs64(), prob.out_view(ref), &ref_saved);
  std::vector<float> out;
  NsaSaved<float> saved;
  nsa_forward(config, prob.inputs32(), prob.out_view(out), &saved, pool);

  Result r;
  r.error = relative_error(out, ref);
  r.detail = "out " + fmt("%.1e", r.error);
  static const char* const kNames[] = {"cmp", "slc", "win"};
  const index_t n = static_cast<index_t>(ref.size());
  for (int b = 0; b < kNumBranches; ++b) {
    const double e = relative_error(saved.branch_out_of(Branch(b)), ref_saved.branch_out_of(Branch(b)), n);
    r.error = std::max(r.error, e);
    r.detail += std::string(", ") + kNames[b] + " " + fmt("%.1e", e);
  }
  const bool same_blocks = saved.sel_blocks == ref_saved.sel_blocks;
  r.detail += same_blocks ? ", blocks same" : ", blocks DIFFER";
  return r;
}

Result run_dense(const CheckCase& c, ThreadPool& pool) {
  RandomDenseProblem prob(c.shape);
  std::vector<double> ref;
  reference::dense_forward(prob.inputs64(), prob.out_view(ref), nullptr);
  std::vector<float> out;
  dense_forward(prob.inputs32(), prob.out_view(out), nullptr, pool);
  Result r;
  r.error = relative_error(out, ref);
  r.detail = "out " + fmt("%.1e", r.error);
  return r;
}

int run_check(const CheckOptions& opt) {
  ThreadPool pool(opt.threads);
  std::vector<CheckCase> cases;
  for (auto& c : all_cases())
    if (c.name.find(opt.filter) != std::string::npos) cases.push_back(std::move(c));
  if (cases.empty()) {
    std::fprintf(stderr, "nsa check: no check matches --filter '%s'\n", opt.filter.c_str());
    return 1;
  }
  if (opt.list) {
    for (const auto& c : cases)
      std::printf("%-26s %s%s\n", c.name.c_str(),
                  c.dense ? "" : (Config(c.options).describe() + "  ").c_str(),
                  c.shape.describe().c_str());
    return 0;
  }
  std::printf("nsa check: fp32 CPU kernels vs the float64 reference, %d thread(s), seed %llu, "
              "tolerance %.0e (max relative error)\n",
              pool.size(), static_cast<unsigned long long>(opt.seed), opt.tolerance);
  int passed = 0, failed = 0;
  for (auto& c : cases) {
    c.shape.seed = opt.seed;
    const auto start = std::chrono::steady_clock::now();
    Result r;
    bool ok = false;
    try {
      r = c.dense ? run_dense(c, pool) : run_nsa(c, pool);
      ok = r.error < opt.tolerance;  // false for NaN and +inf (relative_error's non-finite mark)
    } catch (const Error& e) {
      r.error = -1.0;
      r.detail = e.what();
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-4s  %-26s max rel err %-9s  %s  (%s)  %.0f ms\n", ok ? "OK" : "FAIL",
                c.name.c_str(), r.error < 0 ? "error" : fmt("%.2e", r.error).c_str(),
                c.shape.describe().c_str(), r.detail.c_str(), ms);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  std::printf("nsa check: %d of %zu checks OK%s\n", passed, cases.size(),
              failed ? ", FAILED" : "");
  return failed == 0 ? 0 : 1;
}

}  // namespace

Command add_check_command(CLI::App& app) {
  auto opt = std::make_shared<CheckOptions>();
  CLI::App* sub = app.add_subcommand(
      "check", "Run the fp32 CPU kernels against the float64 reference on random inputs; "
               "exit status 1 if any check exceeds the fp32 tolerance (1e-5)");
  sub->add_option("-t,--threads", opt->threads, "Worker threads (0: all hardware threads)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  sub->add_option("-s,--seed", opt->seed, "Seed of the random inputs")->capture_default_str();
  sub->add_option("--tolerance", opt->tolerance,
                  "Max relative error for OK (default: the spec's fp32 forward tolerance)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("-f,--filter", opt->filter, "Run only the checks whose name contains this");
  sub->add_flag("-l,--list", opt->list, "List the checks and their shapes, run nothing");
  return {sub, [opt] { return run_check(*opt); }};
}

}  // namespace nsa::cli
