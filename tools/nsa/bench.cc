// nsa bench: NSA against full (dense causal) attention on this machine, phase by phase,
// in the paper's terms (Yuan et al., 2025, Figure 6 and Table 4).
//
//   nsa bench                         T = 16384, phases forward + decode (< 60 s on 2 cores)
//   nsa bench --paper                 T = 8k, 16k, 32k, 64k, every phase (long), then the
//                                     forward and decode at llama3-8b's shape (32 / 8 / 128)
//   nsa bench --phases backward --tokens 4096 --reps 3 --json out.json
//   nsa bench --paper --plot speedup.png  the same, and the speed-up vs T chart
//   nsa bench --bf16                  also the forward and decode with q, k, v stored as bf16
//
// --shape NAME: a released model's attention shape (kShapes) instead of the paper's.
// Shape by default: one GQA group of the paper's model, H = 16, H_kv = 1, d_k = 192,
// d_v = 128, batch 1, the paper's NSA config (l=32, d=16, l'=64, n=16, w=512, mlp phi),
// shared K/V for the three branches, fp32 CPU kernels, every hardware thread. --bf16 adds
// the forward phase again with every input rounded to bf16 (fp32 accumulation; vdpbf16ps
// where the CPU has AVX512_BF16), the decode phase again with K/V stored as bf16 (a bf16
// DecodeCache; dense_decode_step over bf16 K/V), and the bf16 / fp32 speed ratio per
// implementation.
//
// Phases, each timed for dense and NSA:
//   forward   dense_forward vs nsa_forward (without saving state);
//   backward  dense_backward vs nsa_backward; the forward that produces lse / NsaSaved runs
//             once, untimed. Not in the default phases: at T = 16384 the dense backward alone
//             takes tens of seconds on two cores. Its repetitions default to 1 (--backward-reps);
//   decode    one step against a cache of T tokens: DecodeCache::step (filled with append,
//             no outputs) vs dense_decode_step over the same T tokens; the median of
//             --decode-steps steps, each timed on its own.
// Every phase reports the median of --reps runs (min and max beside it), the speed-up
// dense / NSA, achieved GFLOP/s and its share of the fp32 FMA peak the bench measures at
// start (bench_peak.h), and the paper's speed-up where the paper gives one.
//
// FLOPs counted (one multiply-add = 2): per query and head, every key read costs
// 2 (d_k + d_v) (q.k and p.v).
//   dense forward   H 2 (d_k + d_v) T (T + 1) / 2; backward 2.5x the forward;
//   NSA forward     per query t: visible cmp blocks + min(t + 1, n l') selected tokens
//                   + min(t + 1, w) window tokens (phi and gates not counted); backward 2.5x;
//   decode step     tokens read x H 2 (d_k + d_v); NSA tokens read from
//                   DecodeCache::tokens_read, dense T.
// tokens_read: decode, tokens read per step (per kv group); forward/backward, the mean over
// queries of tokens read per query.
//
// Every row also gets its roofline (bench_roofline.h): the fraction of the bound its FLOPs
// and compulsory bytes set (compute, L3 or DRAM, from the peak and the bandwidths measured
// at start); "!" flags a row under half of it, and a speed-up over such a dense row is
// starred: the baseline, not NSA, makes that ratio.
//
// --json FILE ('-': stdout) writes
//   {"machine": {"fma_peak_gflops", "dram_read_gbs", "l3_read_gbs", "l3_bytes", "threads", "cpu"},
//    "results": [{"T", "phase", "impl", "dtype", "ms", "ms_min", "ms_max", "gflops",
//                 "tokens_read", "bytes", "roofline", "bound"}]}
// with phase forward|backward|decode, impl dense|nsa and dtype fp32|bf16 (bf16: --bf16,
// forward and decode).
// --plot FILE.png draws the speed-up (dense ms / NSA ms) against T (log2 axis) per phase,
// ours solid with circles, the paper's figures dashed with diamonds in the same color
// (src/plot, no dependency); the title names the CPU, the threads and the shape.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_peak.h"
#include "bench_roofline.h"
#include "commands.h"
#include "json_output.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/nsa.h"
#include "plot/line_chart.h"
#include "testing/random_problem.h"
#include "plot/png.h"

namespace nsa::cli {
namespace {

// Attention shapes of released models, for --shape: H, H_kv, d_k = d_v.
struct ShapePreset {
  const char* name;
  index_t heads, kv_heads, d_k, d_v;
};
constexpr ShapePreset kShapes[] = {
    {"paper", 16, 1, 192, 128},       // the NSA paper's (GQA 16 on 1, d_k 192, d_v 128)
    {"llama3-8b", 32, 8, 128, 128},   // Llama 3 8B
    {"llama3-70b", 64, 8, 128, 128},  // Llama 3 70B
    {"qwen2.5-7b", 28, 4, 128, 128},  // Qwen2.5 7B
    {"mha", 16, 16, 64, 64},          // multi-head attention, no grouping
};

struct BenchOptions {
  std::vector<index_t> tokens{16384};
  bool paper = false;
  std::string shape = "paper";  // the preset's name, or "custom" (--heads etc.)
  index_t heads = 16, kv_heads = 1, d_k = 192, d_v = 128;
  int threads = 0;  // 0: every hardware thread
  int reps = 3;
  int backward_reps = 1;
  int decode_steps = 32;
  std::vector<std::string> phases{"forward", "decode"};
  bool bf16 = false;
  std::string json;
  std::string plot;
};

const ShapePreset* find_shape(const std::string& name) {
  for (const ShapePreset& s : kShapes)
    if (name == s.name) return &s;
  return nullptr;
}

BenchOptions with_shape(BenchOptions o, const ShapePreset& s) {
  o.shape = s.name;
  o.heads = s.heads;
  o.kv_heads = s.kv_heads;
  o.d_k = s.d_k;
  o.d_v = s.d_v;
  return o;
}

// --paper's real shape beside the paper's, forward and decode (its backward at 64k would
// take hours on two cores: `--shape llama3-8b --phases backward` runs it on request).
constexpr const char* kPaperRealShape = "llama3-8b";

struct Result {
  index_t T = 0;
  std::string shape, phase, impl, dtype = "fp32";
  double ms = 0, ms_min = 0, ms_max = 0, gflops = 0, tokens_read = 0;
};

struct Timing {
  double ms = 0, ms_min = 0, ms_max = 0;
};

Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  return {median, ms.front(), ms.back()};
}

Timing time_reps(int reps, const std::function<void()>& fn) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return summarize(std::move(ms));
}

// Cheap deterministic values in [-scale, scale) + offset: generating 200M values with
// std::normal_distribution would take longer than the forward at T = 64k.
void fill(std::vector<float>& v, index_t n, float scale, std::uint64_t seed, float offset = 0.0f) {
  v.resize(static_cast<size_t>(n));
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& e : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    e = offset + scale * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
}

// Inputs of one sequence of T tokens (batch 1, shared K/V) and the buffers of every phase.
struct BenchData {
  index_t T, H, H_kv, d_k, d_v;
  std::vector<float> q, k, v, gates, out;
  std::vector<float> phi_k[kPhiFields.size()], phi_v[kPhiFields.size()];  // per PhiField (mlp)

  BenchData(const Config& config, const BenchOptions& o, index_t tokens)
      : T(tokens), H(o.heads), H_kv(o.kv_heads), d_k(o.d_k), d_v(o.d_v) {
    // Uniform in [-sqrt3, sqrt3): unit variance like N(0, 1).
    fill(q, T * H * d_k, 1.732f, 1);
    fill(k, T * H_kv * d_k, 1.732f, 2);
    fill(v, T * H_kv * d_v, 1.732f, 3);
    fill(gates, T * H * 3, 0.4f, 4, 0.5f);
    out.resize(static_cast<size_t>(T * H * d_v));
    fill_phi(config, d_k, phi_k, 10);
    fill_phi(config, d_v, phi_v, 20);
  }

  // The mlp's fields at the test problems' scales (testing::phi_field_scale), the matrices'
  // uniform draws widened to unit variance.
  static void fill_phi(const Config& c, index_t dim, std::vector<float>* p, std::uint64_t seed) {
    const index_t l = c.block_len(), hidden = c.phi_hidden_for(dim);
    auto scale = [&](PhiField f) {
      const auto s = static_cast<float>(testing::phi_field_scale(f, l, dim, hidden));
      return phi_field_is_matrix(f) ? 1.732f * s : s;
    };
    for (PhiField f : kPhiFields)
      if (phi_field_used(PhiKind::mlp, f))
        fill(p[static_cast<int>(f)], phi_field_size(f, l, dim, hidden), scale(f), seed + static_cast<int>(f));
  }
  static PhiWeights<float> weights(const std::vector<float>* p) { return phi_views<PhiWeights<float>>(p); }

  template <class U>
  TensorView<U> view(U* data, index_t heads, index_t dim) const {
    return contiguous_view(data, 1, T, heads, dim);
  }
  NsaInputs<float> nsa_inputs() const {
    NsaInputs<float> in;
    in.q = view(q.data(), H, d_k);
    in.k_cmp = in.k_slc = in.k_win = view(k.data(), H_kv, d_k);  // shared K/V
    in.v_cmp = in.v_slc = in.v_win = view(v.data(), H_kv, d_v);
    in.gates = view(gates.data(), H, 3);
    in.phi_k = weights(phi_k);
    in.phi_v = weights(phi_v);
    return in;
  }
  DenseInputs<float> dense_inputs() const {
    DenseInputs<float> in;
    in.q = view(q.data(), H, d_k);
    in.k = view(k.data(), H_kv, d_k);
    in.v = view(v.data(), H_kv, d_v);
    return in;
  }

  // The same inputs rounded to bf16 (--bf16), made on first use.
  std::vector<bf16> q16, k16, v16, gates16, phi_k16[kPhiFields.size()], phi_v16[kPhiFields.size()];
  static std::vector<bf16> rounded(const std::vector<float>& x) {
    std::vector<bf16> y(x.size());
    to_bf16(x.data(), y.data(), x.size());
    return y;
  }
  void make_bf16() {
    if (!q16.empty()) return;
    q16 = rounded(q), k16 = rounded(k), v16 = rounded(v), gates16 = rounded(gates);
    for (std::size_t i = 0; i < kPhiFields.size(); ++i) phi_k16[i] = rounded(phi_k[i]), phi_v16[i] = rounded(phi_v[i]);
  }
  NsaInputs<bf16> nsa_inputs_bf16() {
    make_bf16();
    NsaInputs<bf16> in;
    in.q = view<const bf16>(q16.data(), H, d_k);
    in.k_cmp = in.k_slc = in.k_win = view<const bf16>(k16.data(), H_kv, d_k);
    in.v_cmp = in.v_slc = in.v_win = view<const bf16>(v16.data(), H_kv, d_v);
    in.gates = view<const bf16>(gates16.data(), H, 3);
    in.phi_k = phi_views<PhiWeights<bf16>>(phi_k16);
    in.phi_v = phi_views<PhiWeights<bf16>>(phi_v16);
    return in;
  }
  DenseInputs<bf16> dense_inputs_bf16() {
    make_bf16();
    DenseInputs<bf16> in;
    in.q = view<const bf16>(q16.data(), H, d_k);
    in.k = view<const bf16>(k16.data(), H_kv, d_k);
    in.v = view<const bf16>(v16.data(), H_kv, d_v);
    return in;
  }
};

// Keys read per query, summed over the T queries of a causal sequence.
double dense_keys_read(index_t T) { return 0.5 * static_cast<double>(T) * static_cast<double>(T + 1); }
// NSA's count is nsa::tokens_read (the one definition, decode.h) of each query with the
// selection of the n most recent blocks: with the current block forced (n_local >= 1, as
// in the paper) every selection reads as many tokens, since all other blocks are complete.
double nsa_keys_read(const Config& c, index_t T) {
  const index_t n = c.top_n();
  std::vector<std::int32_t> sel(static_cast<size_t>(n));
  double sum = 0;
  for (index_t t = 0; t < T; ++t) {
    const index_t current = t / c.sel_block(), first = std::max<index_t>(0, current - n + 1);
    std::fill(sel.begin(), sel.end(), -1);
    for (index_t j = first; j <= current; ++j) sel[static_cast<size_t>(j - first)] = static_cast<std::int32_t>(j);
    sum += static_cast<double>(tokens_read(c, t, sel.data()).total());
  }
  return sum;
}

// The paper's speed-ups (NSA / full attention): Figure 6 (forward, backward; Triton on
// A100) and Table 4 (decode, expected from memory access). 0: the paper gives none.
double paper_speedup(const std::string& phase, index_t T) {
  // Forward/backward: only the 64k figures quoted in the paper's text (9.0x, 6.0x) are
  // entered; the other points of its Figure 6 are not checked against the paper here.
  static const std::map<index_t, double> forward{{65536, 9.0}};
  static const std::map<index_t, double> backward{{65536, 6.0}};
  static const std::map<index_t, double> decode{{8192, 4.0}, {16384, 6.4}, {32768, 9.1}, {65536, 11.6}};
  const auto& table = phase == "forward" ? forward : phase == "backward" ? backward : decode;
  const auto it = table.find(T);
  return it == table.end() ? 0.0 : it->second;
}

Result make_result(index_t T, const std::string& phase, const std::string& impl, const Timing& t,
                   double flops, double tokens_read, const std::string& dtype = "fp32") {
  return {T, "", phase, impl, dtype, t.ms, t.ms_min, t.ms_max, t.ms > 0 ? flops / (t.ms * 1e6) : 0.0, tokens_read};
}

void progress(const char* fmt, const std::string& phase, const char* impl, index_t T) {
  std::fprintf(stderr, fmt, phase.c_str(), impl, static_cast<long long>(T));
  std::fflush(stderr);
}

void done(const Timing& t) {
  std::fprintf(stderr, " %.2f ms (median)\n", t.ms);
  std::fflush(stderr);
}

// One decode step against a cache of T tokens, dense and NSA, with K/V stored as `storage`
// (bf16: dense_decode_step over the rounded K/V, a bf16 DecodeCache); appends both results.
void time_decode(const Config& config, const BenchOptions& o, BenchData& data, CacheStorage storage,
                 ThreadPool& pool, std::vector<Result>& results) {
  const index_t T = data.T;
  const std::string phase = "decode";
  const bool b16 = storage == CacheStorage::bf16;
  const char* dtype = b16 ? "bf16" : "fp32";
  const char* fmt = b16 ? "  %-8s %-5s T=%-6lld (bf16) ..." : "  %-8s %-5s T=%-6lld ...";
  const double per_key = 2.0 * static_cast<double>(data.H) * static_cast<double>(data.d_k + data.d_v);
  // New tokens, cycled through by the steps.
  const index_t kNew = 16;
  std::vector<float> q, nk, nv, gates;
  fill(q, kNew * data.H * data.d_k, 1.732f, 6);
  fill(nk, kNew * data.H_kv * data.d_k, 1.732f, 7);
  fill(nv, kNew * data.H_kv * data.d_v, 1.732f, 8);
  fill(gates, kNew * data.H * 3, 0.4f, 9, 0.5f);
  std::vector<float> out(static_cast<size_t>(data.H * data.d_v));
  const int steps = std::max(1, o.decode_steps);
  if (b16) data.make_bf16();

  progress(fmt, phase, "dense", T);
  Timing td;
  {
    std::vector<double> ms;
    for (int s = -1; s < steps; ++s) {  // s = -1: warm-up
      const float* qs = q.data() + ((s + 1) % kNew) * data.H * data.d_k;
      const auto t0 = std::chrono::steady_clock::now();
      if (b16)
        dense_decode_step(qs, data.k16.data(), data.v16.data(), T, data.H, data.H_kv, data.d_k, data.d_v, 0.0,
                          out.data(), pool);
      else
        dense_decode_step(qs, data.k.data(), data.v.data(), T, data.H, data.H_kv, data.d_k, data.d_v, 0.0,
                          out.data(), pool);
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (s >= 0) ms.push_back(t);
    }
    td = summarize(std::move(ms));
  }
  done(td);

  progress(b16 ? "  %-8s %-5s T=%-6lld (bf16, filling the cache) ..." : "  %-8s %-5s T=%-6lld (filling the cache) ...",
           phase, "nsa", T);
  DecodeShape shape{data.H, data.H_kv, data.d_k, data.d_v, /*shared_kv=*/true, 1};
  shape.storage = storage;
  DecodeCache cache(config, shape, BenchData::weights(data.phi_k), BenchData::weights(data.phi_v));
  {
    DecodeTokens x;
    x.k_cmp = data.view<const float>(data.k.data(), data.H_kv, data.d_k);
    x.v_cmp = data.view<const float>(data.v.data(), data.H_kv, data.d_v);
    cache.append(0, x, pool);
  }
  Timing tn;
  double nsa_read = 0;  // tokens read per step per kv group, mean over the timed steps
  double nsa_flops = 0;
  {
    const auto out_view = contiguous_view(out.data(), 1, 1, data.H, data.d_v);
    const index_t seq = 0;
    const index_t G = data.H / data.H_kv;
    std::vector<double> ms;
    for (int s = -1; s < steps; ++s) {
      const index_t i = (s + 1) % kNew;
      DecodeTokens x;
      x.q = contiguous_view<const float>(q.data() + i * data.H * data.d_k, 1, 1, data.H, data.d_k);
      x.k_cmp = contiguous_view<const float>(nk.data() + i * data.H_kv * data.d_k, 1, 1, data.H_kv, data.d_k);
      x.v_cmp = contiguous_view<const float>(nv.data() + i * data.H_kv * data.d_v, 1, 1, data.H_kv, data.d_v);
      x.gates = contiguous_view<const float>(gates.data() + i * data.H * 3, 1, 1, data.H, 3);
      const auto t0 = std::chrono::steady_clock::now();
      cache.step(&seq, 1, x, out_view, pool);
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (s < 0) continue;
      ms.push_back(t);
      double reads = 0;
      for (index_t kv = 0; kv < data.H_kv; ++kv) reads += static_cast<double>(cache.tokens_read(seq, kv).total());
      nsa_read += reads / static_cast<double>(data.H_kv);
      nsa_flops += reads * static_cast<double>(G) * 2.0 * static_cast<double>(data.d_k + data.d_v);
    }
    nsa_read /= steps;
    nsa_flops /= steps;
    tn = summarize(std::move(ms));
  }
  done(tn);
  results.push_back(make_result(T, phase, "dense", td, per_key * static_cast<double>(T), static_cast<double>(T), dtype));
  results.push_back(make_result(T, phase, "nsa", tn, nsa_flops, nsa_read, dtype));
}

// Runs one phase at one T; appends the dense and the NSA result.
void run_phase(const Config& config, const BenchOptions& o, const std::string& phase, BenchData& data,
               ThreadPool& pool, std::vector<Result>& results) {
  const index_t T = data.T;
  const double per_key = 2.0 * static_cast<double>(data.H) * static_cast<double>(data.d_k + data.d_v);
  const char* fmt = "  %-8s %-5s T=%-6lld ...";
  if (phase == "forward" || phase == "backward") {
    const bool fwd = phase == "forward";
    const double factor = fwd ? 1.0 : 2.5;
    const double dense_keys = dense_keys_read(T), nsa_keys = nsa_keys_read(config, T);
    const auto out = data.view(data.out.data(), data.H, data.d_v);
    const DenseInputs<float> din = data.dense_inputs();
    const NsaInputs<float> nin = data.nsa_inputs();
    Timing td, tn;
    if (fwd) {
      progress(fmt, phase, "dense", T);
      td = time_reps(o.reps, [&] { dense_forward(din, out, nullptr, pool); });
      done(td);
      progress(fmt, phase, "nsa", T);
      tn = time_reps(o.reps, [&] { nsa_forward(config, nin, out, nullptr, pool); });
      done(tn);
    } else {
      std::vector<float> d_out, dq(data.q.size()), dk(data.k.size()), dv(data.v.size());
      fill(d_out, T * data.H * data.d_v, 1.0f, 5);
      const auto d_out_view = data.view<const float>(d_out.data(), data.H, data.d_v);
      {
        progress("  %-8s %-5s T=%-6lld (forward, untimed) ...", phase, "dense", T);
        std::vector<float> lse(static_cast<size_t>(T * data.H));
        dense_forward(din, out, lse.data(), pool);
        const DenseGradients<float> g{data.view(dq.data(), data.H, data.d_k),
                                      data.view(dk.data(), data.H_kv, data.d_k),
                                      data.view(dv.data(), data.H_kv, data.d_v)};
        td = time_reps(o.backward_reps, [&] { dense_backward(din, out.as_const(), lse.data(), d_out_view, g, pool); });
        done(td);
      }
      {
        progress("  %-8s %-5s T=%-6lld (forward, untimed) ...", phase, "nsa", T);
        NsaSaved<float> saved;
        nsa_forward(config, nin, out, &saved, pool);
        std::vector<float> dgates(data.gates.size()), gk[kPhiFields.size()], gv[kPhiFields.size()];
        for (std::size_t i = 0; i < kPhiFields.size(); ++i)
          gk[i].resize(data.phi_k[i].size()), gv[i].resize(data.phi_v[i].size());
        NsaGradients<float> g;
        g.dq = data.view(dq.data(), data.H, data.d_k);
        g.dk_cmp = g.dk_slc = g.dk_win = data.view(dk.data(), data.H_kv, data.d_k);  // shared: summed
        g.dv_cmp = g.dv_slc = g.dv_win = data.view(dv.data(), data.H_kv, data.d_v);
        g.dgates = data.view(dgates.data(), data.H, 3);
        g.phi_k = phi_views<PhiGradients<float>>(gk);
        g.phi_v = phi_views<PhiGradients<float>>(gv);
        tn = time_reps(o.backward_reps, [&] { nsa_backward(config, nin, saved, d_out_view, g, pool); });
        done(tn);
      }
    }
    results.push_back(make_result(T, phase, "dense", td, factor * per_key * dense_keys, dense_keys / static_cast<double>(T)));
    results.push_back(make_result(T, phase, "nsa", tn, factor * per_key * nsa_keys, nsa_keys / static_cast<double>(T)));
    if (fwd && o.bf16) {  // the same forward with bf16 storage
      const char* fmt16 = "  %-8s %-5s T=%-6lld (bf16) ...";
      const DenseInputs<bf16> din16 = data.dense_inputs_bf16();
      const NsaInputs<bf16> nin16 = data.nsa_inputs_bf16();
      progress(fmt16, phase, "dense", T);
      const Timing td16 = time_reps(o.reps, [&] { dense_forward(din16, out, nullptr, pool); });
      done(td16);
      progress(fmt16, phase, "nsa", T);
      const Timing tn16 = time_reps(o.reps, [&] { nsa_forward(config, nin16, out, nullptr, pool); });
      done(tn16);
      results.push_back(make_result(T, phase, "dense", td16, per_key * dense_keys, dense_keys / static_cast<double>(T), "bf16"));
      results.push_back(make_result(T, phase, "nsa", tn16, per_key * nsa_keys, nsa_keys / static_cast<double>(T), "bf16"));
    }
    return;
  }
  if (phase != "decode") throw Error("bench: unknown phase '" + phase + "' (forward, backward, decode)");
  time_decode(config, o, data, CacheStorage::fp32, pool, results);
  if (o.bf16) time_decode(config, o, data, CacheStorage::bf16, pool, results);
}

std::string fmt_speedup(double x) {
  if (x <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fx", x);
  return buf;
}

// The options a result was measured with: o, or o with the result's preset shape (the
// real shape of --paper).
BenchOptions shape_of(const BenchOptions& o, const Result& r) {
  if (r.shape == o.shape) return o;
  const ShapePreset* p = find_shape(r.shape);
  return p ? with_shape(o, *p) : o;
}

// The compulsory traffic of a row (bench_roofline.h): every input read once, every output
// written once. decode: the K/V rows read (dense: the whole cache; NSA: tokens_read per kv
// group, raw and compressed alike); forward: q, k, v in the row's storage and o in fp32;
// backward (fp32): q, k, v, o, dO read and dq, dk, dv written. Gates, lse and phi's
// weights are left out (under 1% at every preset shape).
double compulsory_bytes(const BenchOptions& o, const Result& r) {
  const double elem = r.dtype == "bf16" ? 2.0 : 4.0, T = static_cast<double>(r.T);
  const double H = static_cast<double>(o.heads), Hkv = static_cast<double>(o.kv_heads);
  const double dk = static_cast<double>(o.d_k), dv = static_cast<double>(o.d_v);
  if (r.phase == "decode") return elem * r.tokens_read * Hkv * (dk + dv);
  const double inputs = T * (H * dk + Hkv * (dk + dv)), outputs = T * H * dv;
  if (r.phase == "forward") return elem * inputs + 4.0 * outputs;
  return 4.0 * 2.0 * (inputs + outputs);
}

RowRoof row_roofline(const BenchOptions& o, const MachineRoof& m, const Result& r) {
  return roofline(m, r.gflops * r.ms * 1e6, compulsory_bytes(o, r), r.ms);
}

// The table: one row per (phase, T, impl, dtype), dense then NSA. roofline: the row's
// fraction of its bound and which bound (bench_roofline.h); "!" marks a row below half of
// it, and a speed-up over such a dense row carries "*" (a weak baseline, not NSA's gain).
void print_table(std::FILE* f, const BenchOptions& o, const MachineRoof& machine, const std::vector<Result>& results) {
  const double peak = machine.compute_gflops;
  bool any_weak_baseline = false;
  std::fprintf(f, "%-8s %6s %-5s %-5s %10s %21s %9s %8s %6s %13s %11s %8s\n", "phase", "T", "impl", "dtype", "ms",
              "[min, max]", "speedup", "GFLOP/s", "%peak", "roofline", "tokens_read", "paper");
  for (size_t i = 0; i + 1 < results.size(); i += 2) {
    const Result& d = results[i];
    const Result& n = results[i + 1];
    const double speedup = n.ms > 0 ? d.ms / n.ms : 0.0;
    const bool weak_baseline = row_roofline(o, machine, d).weak;
    any_weak_baseline = any_weak_baseline || weak_baseline;
    for (const Result* r : {&d, &n}) {
      char range[64];
      std::snprintf(range, sizeof range, "[%.3f, %.3f]", r->ms_min, r->ms_max);
      const bool is_nsa = r == &n;
      // % of the fp32 FMA peak; bf16 rows have none (vdpbf16ps has twice the fp32 rate).
      char share[16] = "-";
      if (r->dtype == "fp32" && peak > 0) std::snprintf(share, sizeof share, "%.1f%%", 100.0 * r->gflops / peak);
      const RowRoof roof = row_roofline(o, machine, *r);
      char roof_text[32];
      std::snprintf(roof_text, sizeof roof_text, "%.0f%% %s%s", 100.0 * roof.fraction, roof.bound.c_str(),
                    roof.weak ? " !" : "");
      const std::string speed = is_nsa ? fmt_speedup(speedup) + (weak_baseline ? "*" : "") : "";
      std::fprintf(f, "%-8s %6lld %-5s %-5s %10.3f %21s %9s %8.1f %6s %13s %11.0f %8s\n", r->phase.c_str(),
                  static_cast<long long>(r->T), r->impl.c_str(), r->dtype.c_str(), r->ms, range, speed.c_str(),
                  r->gflops, share, roof_text, r->tokens_read,
                  is_nsa ? fmt_speedup(paper_speedup(r->phase, r->T)).c_str() : "");
    }
  }
  if (any_weak_baseline)
    std::fprintf(f, "* over a dense row below %.0f%% of its roofline (!): the ratio overstates NSA's gain\n",
                 100.0 * kWeakRoofline);
  // bf16 against fp32, same T and implementation (--bf16).
  for (const Result& b : results) {
    if (b.dtype != "bf16") continue;
    for (const Result& a : results)
      if (a.dtype == "fp32" && a.T == b.T && a.phase == b.phase && a.impl == b.impl && b.ms > 0)
        std::fprintf(f, "bf16 vs fp32: %s %-5s T=%lld  %.3f ms vs %.3f ms: %.2fx\n", b.phase.c_str(),
                     b.impl.c_str(), static_cast<long long>(b.T), b.ms, a.ms, a.ms / b.ms);
  }
  std::fflush(f);
}

void write_json(const std::string& path, const BenchOptions& o, const FmaPeak& peak, const MachineRoof& machine,
                int threads, const std::string& cpu, const std::vector<Result>& results) {
  nlohmann::json rows = nlohmann::json::array();
  for (const Result& r : results) {
    const RowRoof roof = row_roofline(shape_of(o, r), machine, r);
    rows.push_back({{"shape", r.shape}, {"T", r.T}, {"phase", r.phase}, {"impl", r.impl}, {"dtype", r.dtype},
                    {"ms", r.ms}, {"ms_min", r.ms_min}, {"ms_max", r.ms_max}, {"gflops", r.gflops},
                    {"tokens_read", r.tokens_read}, {"bytes", compulsory_bytes(shape_of(o, r), r)},
                    {"roofline", roof.fraction}, {"bound", roof.bound}});
  }
  const nlohmann::json out = {
      {"machine", {{"fma_peak_gflops", peak.gflops}, {"dram_read_gbs", machine.dram_gbs}, {"l3_read_gbs", machine.l3_gbs},
                   {"l3_bytes", machine.l3_bytes}, {"threads", threads}, {"cpu", cpu}}},
      {"results", rows}};
  write_json_file(path, out, "bench");
}

// The speed-up chart of --plot: one solid line per measured phase, and the paper's figures
// for that phase as a dashed line in the same color.
void write_plot(const std::string& path, const BenchOptions& o, int threads, const std::string& cpu,
                const std::vector<Result>& results) {
  plot::LineChart chart;
  chart.title = "NSA speed-up over full attention (fp32 CPU)";
  chart.subtitle = cpu + ", " + std::to_string(threads) + (threads == 1 ? " thread" : " threads") +
                   "; H=" + std::to_string(o.heads) + " H_kv=" + std::to_string(o.kv_heads) +
                   " d_k=" + std::to_string(o.d_k) + " d_v=" + std::to_string(o.d_v);
  chart.x_label = "sequence length T";
  chart.y_label = "speed-up (full ms / NSA ms)";
  chart.x_scale = plot::Scale::kLog2;
  chart.y_include_zero = true;
  chart.rules.push_back({1.0, "break-even"});
  const char* phases[3] = {"forward", "backward", "decode"};
  for (int p = 0; p < 3; ++p) {
    plot::Series ours{phases[p], {}, {}, plot::palette(p), false, true, plot::Marker::kCircle};
    for (size_t i = 0; i + 1 < results.size(); i += 2)
      if (results[i].phase == phases[p] && results[i].dtype == "fp32" && results[i + 1].ms > 0)
        ours.x.push_back(static_cast<double>(results[i].T)), ours.y.push_back(results[i].ms / results[i + 1].ms);
    if (ours.x.empty()) continue;
    plot::Series paper{std::string("paper ") + phases[p] + (p == 2 ? " (Table 4, expected)" : " (A100)"),
                       {}, {}, plot::palette(p), true, true, plot::Marker::kDiamond};
    for (const index_t T : {8192, 16384, 32768, 65536})
      if (const double x = paper_speedup(phases[p], T); x > 0)
        paper.x.push_back(static_cast<double>(T)), paper.y.push_back(x);
    chart.series.push_back(std::move(ours));
    if (!paper.x.empty()) chart.series.push_back(std::move(paper));
  }
  plot::write_png(path, plot::render_line_chart(chart));
}

int run_bench(const BenchOptions& in) {
  const BenchOptions& o = in;
  if (o.kv_heads <= 0 || o.heads <= 0 || o.heads % o.kv_heads != 0)
    throw Error("bench: --heads must be a positive multiple of --kv-heads");
  if (o.reps < 1 || o.backward_reps < 1) throw Error("bench: --reps and --backward-reps must be >= 1");
  for (const auto& p : o.phases)
    if (p != "forward" && p != "backward" && p != "decode")
      throw Error("bench: unknown phase '" + p + "' (forward, backward, decode)");
  if (!o.plot.empty()) {  // fail before the measurements, not after
    const std::filesystem::path dir = std::filesystem::path(o.plot).parent_path();
    if (!dir.empty() && !std::filesystem::is_directory(dir))
      throw Error("bench: cannot write " + o.plot + ": no directory " + dir.string());
  }

  const Config config;
  ThreadPool pool(o.threads);
  const auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "nsa bench: measuring the fp32 FMA peak on %d threads ...", pool.size());
  std::fflush(stderr);
  const FmaPeak peak = measure_fma_peak(pool);
  const std::string cpu = cpu_name();
  std::fprintf(stderr, " %.1f GFLOP/s (%s)\n", peak.gflops, peak.isa.c_str());
  std::fprintf(stderr, "nsa bench: measuring the DRAM read bandwidth ...");
  std::fflush(stderr);
  const double dram_gbs = measure_read_bandwidth(pool);
  const double l3_bytes = l3_cache_bytes();
  const double l3_gbs = measure_l3_bandwidth(pool, l3_bytes);
  std::fprintf(stderr, " %.1f GB/s (L3: %.0f MB, %.1f GB/s)\n", dram_gbs, l3_bytes * 1e-6, l3_gbs);
  const MachineRoof machine{peak.gflops, dram_gbs, l3_gbs, l3_bytes};

  // Every (T, phase) of one shape's options, then its table.
  std::vector<Result> results;
  auto measure = [&](const BenchOptions& so) {
    const size_t first = results.size();
    for (const index_t T : so.tokens) {
      if (T < 1) throw Error("bench: --tokens must be >= 1");
      std::fprintf(stderr, "%s T = %lld\n", so.shape.c_str(), static_cast<long long>(T));
      BenchData data(config, so, T);
      for (const auto& phase : so.phases) run_phase(config, so, phase, data, pool, results);
    }
    for (size_t i = first; i < results.size(); ++i) results[i].shape = so.shape;
    return first;
  };
  // With --json - the JSON owns stdout; the table then goes to stderr.
  std::FILE* table = o.json == "-" ? stderr : stdout;
  auto report = [&](const BenchOptions& so, size_t first, double seconds) {
    const std::vector<Result> mine(results.begin() + static_cast<std::ptrdiff_t>(first), results.end());
    std::fprintf(table, "nsa bench: %s; %s: H=%lld H_kv=%lld d_k=%lld d_v=%lld, batch 1, shared K/V, %s\n", cpu.c_str(),
                 so.shape.c_str(), static_cast<long long>(so.heads), static_cast<long long>(so.kv_heads),
                 static_cast<long long>(so.d_k), static_cast<long long>(so.d_v), config.describe().c_str());
    std::fprintf(table, "threads %d, fp32 FMA peak %.1f GFLOP/s (%s), DRAM read %.1f GB/s, L3 %.0f MB read %.1f GB/s; "
                 "median of %d reps (backward %d, decode %d steps); %.1f s\n",
                 pool.size(), peak.gflops, peak.isa.c_str(), dram_gbs, l3_bytes * 1e-6, l3_gbs, so.reps,
                 so.backward_reps, so.decode_steps, seconds);
    print_table(table, so, machine, mine);
    // The decode steps' bandwidth against the measured one of their working set's level.
    for (const Result& r : mine)
      if (r.phase == "decode" && r.ms > 0) {
        const double bytes = compulsory_bytes(so, r), gbs = bytes / (r.ms * 1e6);
        const bool l3 = in_l3(machine, bytes);
        const double level_gbs = l3 ? l3_gbs : dram_gbs;
        std::fprintf(table, "%-5s decode %s T=%lld: reads %.1f MB per step, %.1f GB/s = %.0f%% of the %s read bandwidth\n",
                     r.impl.c_str(), r.dtype.c_str(), static_cast<long long>(r.T), bytes * 1e-6, gbs,
                     level_gbs > 0 ? 100.0 * gbs / level_gbs : 0.0, l3 ? "L3" : "DRAM");
      }
    std::fflush(table);
  };
  const size_t first = measure(o);
  report(o, first, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (o.paper && o.shape == "paper") {
    BenchOptions real = with_shape(o, *find_shape(kPaperRealShape));
    real.phases.clear();
    for (const auto& p : o.phases)
      if (p != "backward") real.phases.push_back(p);
    if (!real.phases.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      const size_t at = measure(real);
      std::fprintf(table, "\n");
      report(real, at, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  if (!o.json.empty()) write_json(o.json, o, peak, machine, pool.size(), cpu, results);
  if (!o.plot.empty()) {  // the paper's shape (or the one asked for) only
    std::vector<Result> own;
    for (const Result& r : results)
      if (r.shape == o.shape) own.push_back(r);
    write_plot(o.plot, o, pool.size(), cpu, own);
    std::fprintf(table, "speed-up chart written to %s\n", o.plot.c_str());
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand(
      "bench",
      "NSA against full attention: forward, backward and decode-step times, speed-ups, GFLOP/s and % of "
      "the measured FMA peak, beside the paper's speed-ups");
  sub->add_option("--tokens", options->tokens, "sequence lengths T (default 16384)")->delimiter(',');
  sub->add_flag("--paper", options->paper,
                "T = 8192,16384,32768,65536 (the paper's Figure 6 / Table 4); at the paper's shape, then the forward and "
                "decode again at llama3-8b's");
  std::string shape_names;
  for (const ShapePreset& s : kShapes) shape_names += std::string(shape_names.empty() ? "" : ", ") + s.name;
  auto shape = std::make_shared<std::string>();
  sub->add_option("--shape", *shape,
                  "a model's attention shape instead of --heads/--kv-heads/--dk/--dv: " + shape_names);
  sub->add_option("--heads", options->heads, "query heads H")->capture_default_str();
  sub->add_option("--kv-heads", options->kv_heads, "key/value heads H_kv")->capture_default_str();
  sub->add_option("--dk", options->d_k, "d_k")->capture_default_str();
  sub->add_option("--dv", options->d_v, "d_v")->capture_default_str();
  sub->add_option("--threads", options->threads, "threads (0: every hardware thread)")->capture_default_str();
  sub->add_option("--reps", options->reps, "repetitions of forward (median reported)")->capture_default_str();
  sub->add_option("--backward-reps", options->backward_reps, "repetitions of backward")->capture_default_str();
  sub->add_option("--decode-steps", options->decode_steps, "timed decode steps")->capture_default_str();
  sub->add_option("--phases", options->phases,
                  "phases, from forward,backward,decode (default forward,decode; --paper adds backward)")
      ->delimiter(',');
  sub->add_flag("--bf16", options->bf16,
                "also time the forward with q, k, v (and gates, phi) stored as bf16 and the decode step with a bf16 "
                "K/V cache, and report bf16 / fp32");
  sub->add_option("--json", options->json, "write the results as JSON to FILE ('-': stdout)");
  sub->add_option("--plot", options->plot,
                  "draw the speed-up vs T of every phase, beside the paper's, as a PNG chart to FILE")
      ->type_name("FILE.png");
  return {sub, [options, sub, shape] {
            BenchOptions o = *options;
            if (!shape->empty()) {
              for (const char* flag : {"--heads", "--kv-heads", "--dk", "--dv"})
                if (sub->count(flag)) throw Error(std::string("bench: give --shape or ") + flag + ", not both");
              const ShapePreset* found = find_shape(*shape);
              if (!found) throw Error("bench: unknown --shape '" + *shape + "'");
              o = with_shape(o, *found);
            } else {  // the defaults are the paper's preset; any other --heads/--dk/... is "custom"
              const ShapePreset& paper = *find_shape("paper");
              if (o.heads != paper.heads || o.kv_heads != paper.kv_heads || o.d_k != paper.d_k || o.d_v != paper.d_v)
                o.shape = "custom";
            }
            if (o.paper && sub->count("--phases") == 0) o.phases = {"forward", "backward", "decode"};
            if (o.paper && sub->count("--tokens") == 0) o.tokens = {8192, 16384, 32768, 65536};
            return run_bench(o);
          }};
}

}  // namespace nsa::cli
