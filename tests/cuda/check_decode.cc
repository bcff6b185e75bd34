// Decode part of the kernel lab (nsa_gpu_check): the CUDA DecodeCache against the float64
// reference forward (spec, "Decoding with a cache": decode at position t gives row t of a
// prefill of the same tokens).
//
// Per case: prefill the first P tokens of each sequence (prompt; or store them with two
// append calls, whose rows then have no outputs to compare), then step the remaining
// tokens one by one (several sequences of different lengths step together while they
// last), and compare every output row with the reference's, one line per case:
//   OK   decode/f32  G=4 192/128 ... steps=200 step=3.1e-07 worst_row=6e-07 prefill=2e-07 (tol 1e-05) sel=0/0
// "step" is ||x - ref|| / ||ref|| over all stepped rows (<= tol), "worst_row" the largest
// per-row value (<= 10 tol). Selection: each step's chosen blocks are compared with the
// reference's; a difference is accepted only among near-tied reference scores, and then
// the reference is rerun with the kernel's selection for the stepped rows (reference::
// nsa_forward_with_selection), so a tie resolved the other way is not an output error.
// Also: the dense decode step against a float64 loop, invalid input -> nsa::Error, and
// (run_decode_bench) step timings of NSA decode vs dense decode.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>

#include "check_util.h"
#include "device_fill.h"
#include "nsa/cuda.h"
#include "nsa/cuda_decode.h"
#include "nsa/error.h"
#include "reference/reference.h"
#include "testing/random_problem.h"

using namespace nsa::gpu_check;

namespace {

using nsa::testing::ProblemShape;

using nsa::testing::RandomNsaProblem;

struct DecodeCase {
  std::string name;
  ProblemShape shape;            // B = 1; several sequences via seqlens
  nsa::ConfigOptions opts;
  std::vector<index_t> prompt;   // per sequence: tokens given to prefill; the rest are stepped
  bool append_prompt = false;    // store the prompts with append instead (two calls, no outputs)
};

// Are selections a (kernel) and b (reference) of query t equal up to near-tied reference
// scores S? The forced blocks (rule 1) must be in both; the threshold kth is the lowest score
// the reference chose freely (a forced block, e.g. the current partial one, can score far
// below it, and a tie at the real threshold would then be reported as a bad selection).
bool same_up_to_ties(const nsa::Config& config, index_t t, const std::int32_t* a, const std::int32_t* b, index_t n,
                     const std::vector<double>& S, double tie_tol) {
  std::set<index_t> sa, sb, forced;
  for (index_t i = 0; i < n; ++i) {
    if (a[i] >= 0) sa.insert(a[i]);
    if (b[i] >= 0) sb.insert(b[i]);
  }
  if (sa.size() != sb.size()) return false;
  const index_t cur = t / config.sel_block();
  for (index_t j = 0; j < config.n_init() && j <= cur; ++j) forced.insert(j);
  for (index_t k = 0; k < config.n_local() && cur - k >= 0; ++k) forced.insert(cur - k);
  for (index_t j : forced)
    if (!sa.count(j)) return false;
  double smax = 0.0, kth = INFINITY;
  for (double x : S) smax = std::max(smax, x);
  for (index_t j : sb)
    if (!forced.count(j)) kth = std::min(kth, S[j]);
  for (index_t j : sa)
    if (!sb.count(j) && (j >= static_cast<index_t>(S.size()) || std::abs(S[j] - kth) > tie_tol * smax)) return false;
  for (index_t j : sb)
    if (!sa.count(j) && std::abs(S[j] - kth) > tie_tol * smax) return false;
  return true;
}

// Rows [row0, row0 + n) of a contiguous [1, rows, heads, dim] host array, as Tag.
template <class Tag>
void gather_row(std::vector<Tag>& dst, std::size_t at, const float* src, index_t row, index_t width) {
  for (index_t c = 0; c < width; ++c) dst[at + c] = to_tag<Tag>(src[row * width + c]);
}

template <class Tag>
void check_decode(const DecodeCase& c) {
  const nsa::Config config(c.opts);
  RandomNsaProblem prob(config, c.shape);
  round_problem_to<Tag>(prob);
  const auto& s = prob.shape();
  const std::string name = fmt("decode/%-4s %-24s %s", tag_name<Tag>(), c.name.c_str(), s.describe().c_str());
  const auto in64 = prob.inputs64();
  std::vector<double> ref;
  nsa::NsaSaved<double> saved;
  const auto t0 = std::chrono::steady_clock::now();
  nsa::reference::nsa_forward(config, in64, prob.out_view(ref), &saved);
  if (g_reference_only) {
    std::printf("reference %s: %.2f s\n", name.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return;
  }

  const std::vector<index_t> lens = s.seqlens.empty() ? std::vector<index_t>{s.tokens}
                                                      : std::vector<index_t>(s.seqlens.begin(), s.seqlens.end());
  const index_t nseq = static_cast<index_t>(lens.size());
  std::vector<index_t> start(lens.size(), 0);
  for (std::size_t i = 1; i < lens.size(); ++i) start[i] = start[i - 1] + lens[i - 1];
  const index_t H = s.heads, Hkv = s.kv_heads, dk = s.d_k, dv = s.d_v;
  const index_t rows = saved.rows, top_n = config.top_n();
  const int streams = s.shared_kv ? 1 : 3;

  const auto in32 = prob.inputs32();
  Uploader<Tag> up;
  const nsa::TensorView<const Tag> fq = up.view(in32.q), fg = up.view(in32.gates);
  const nsa::TensorView<const Tag> fk[3] = {up.view(in32.k_cmp), up.view(in32.k_slc), up.view(in32.k_win)};
  const nsa::TensorView<const Tag> fv[3] = {up.view(in32.v_cmp), up.view(in32.v_slc), up.view(in32.v_win)};
  const float* hk_src[3] = {in32.k_cmp.data, in32.k_slc.data, in32.k_win.data};
  const float* hv_src[3] = {in32.v_cmp.data, in32.v_slc.data, in32.v_win.data};

  std::vector<float> got(static_cast<std::size_t>(rows * H * dv), NAN);
  std::vector<char> stepped(static_cast<std::size_t>(rows), 0);
  std::vector<char> appended(static_cast<std::size_t>(rows), 0);  // prompt rows stored by append: no outputs
  std::vector<std::int32_t> gpu_sel(saved.sel_blocks);  // reference selection, stepped rows replaced
  index_t steps = 0, mismatched = 0, ties = 0, bad = 0;
  const double tie_tol = std::is_same_v<Tag, float> ? 1e-4 : 3e-2;
  try {
    ncu::DecodeCacheShape cs;
    cs.heads = H; cs.kv_heads = Hkv; cs.d_k = dk; cs.d_v = dv; cs.shared_kv = s.shared_kv;
    cs.max_seqs = nseq;
    cs.max_tokens = *std::max_element(lens.begin(), lens.end());
    ncu::DecodeCache<Tag> cache(config, cs, upload_phi(up, config, in32.phi_k, dk),
                                  upload_phi(up, config, in32.phi_v, dv));

    // Prefill: sub-views of the uploaded tensors.
    auto sub = [](const nsa::TensorView<const Tag>& v, index_t first, index_t count) {
      nsa::TensorView<const Tag> r = v;
      r.data = v.data + first * v.stride[1];
      r.shape[1] = count;
      return r;
    };
    for (index_t q = 0; q < nseq; ++q) {
      const index_t P = c.prompt[q], r0 = start[q];
      if (P == 0) continue;
      if (c.append_prompt) {
        // Two calls, the first ending inside a compression block: the second compresses the
        // blocks that straddle the two (phi of blocks N_cmp(first) .. N_cmp(P) - 1).
        const index_t first = std::min<index_t>(P, P / 2 + 3);
        for (const auto& [a, cnt] : {std::pair<index_t, index_t>{0, first}, {first, P - first}}) {
          if (cnt == 0) continue;
          ncu::DecodeTokens<Tag> y;
          y.k_cmp = sub(fk[0], r0 + a, cnt);
          y.v_cmp = sub(fv[0], r0 + a, cnt);
          if (!s.shared_kv) {
            y.k_slc = sub(fk[1], r0 + a, cnt); y.v_slc = sub(fv[1], r0 + a, cnt);
            y.k_win = sub(fk[2], r0 + a, cnt); y.v_win = sub(fv[2], r0 + a, cnt);
          }
          cache.append(q, y, nullptr);
        }
        std::fill(appended.begin() + r0, appended.begin() + r0 + P, 1);
        if (cache.position(q) != P) throw nsa::Error("position after append is " + std::to_string(cache.position(q)));
        continue;
      }
      ncu::DecodeTokens<Tag> x;
      x.q = sub(fq, r0, P);
      x.gates = sub(fg, r0, P);
      x.k_cmp = sub(fk[0], r0, P);
      x.v_cmp = sub(fv[0], r0, P);
      if (!s.shared_kv) {
        x.k_slc = sub(fk[1], r0, P); x.v_slc = sub(fv[1], r0, P);
        x.k_win = sub(fk[2], r0, P); x.v_win = sub(fv[2], r0, P);
      }
      ncu::DeviceBuffer ob(std::size_t(P) * H * dv * sizeof(Tag));
      cache.prefill(q, x, nsa::contiguous_view(ob.as<Tag>(), 1, P, H, dv), nullptr);
      const auto o = download<Tag>(ob, std::size_t(P) * H * dv);
      std::copy(o.begin(), o.end(), got.begin() + r0 * H * dv);
      if (cache.position(q) != P) throw nsa::Error("position after prefill is " + std::to_string(cache.position(q)));
    }

    // Steps: every sequence with tokens left, together.
    std::vector<index_t> pos(c.prompt.begin(), c.prompt.end());
    ncu::DeviceBuffer dq, dg, dkb[3], dvb[3], dout;
    dq.reserve(std::size_t(nseq) * H * dk * sizeof(Tag));
    dg.reserve(std::size_t(nseq) * H * 3 * sizeof(Tag));
    for (int b = 0; b < streams; ++b) {
      dkb[b].reserve(std::size_t(nseq) * Hkv * dk * sizeof(Tag));
      dvb[b].reserve(std::size_t(nseq) * Hkv * dv * sizeof(Tag));
    }
    dout.reserve(std::size_t(nseq) * H * dv * sizeof(Tag));
    for (;;) {
      std::vector<index_t> ids;
      for (index_t q = 0; q < nseq; ++q)
        if (pos[q] < lens[q]) ids.push_back(q);
      if (ids.empty()) break;
      const index_t n = static_cast<index_t>(ids.size());
      std::vector<Tag> hq(n * H * dk), hg(n * H * 3), hk[3], hv[3];
      for (int b = 0; b < streams; ++b) { hk[b].resize(n * Hkv * dk); hv[b].resize(n * Hkv * dv); }
      for (index_t i = 0; i < n; ++i) {
        const index_t row = start[ids[i]] + pos[ids[i]];
        gather_row(hq, i * H * dk, in32.q.data, row, H * dk);
        gather_row(hg, i * H * 3, in32.gates.data, row, H * 3);
        for (int b = 0; b < streams; ++b) {
          gather_row(hk[b], i * Hkv * dk, hk_src[b], row, Hkv * dk);
          gather_row(hv[b], i * Hkv * dv, hv_src[b], row, Hkv * dv);
        }
      }
      dq.copy_from_host(hq.data(), hq.size() * sizeof(Tag));
      dg.copy_from_host(hg.data(), hg.size() * sizeof(Tag));
      ncu::DecodeTokens<Tag> x;
      x.q = nsa::contiguous_view<const Tag>(dq.as<const Tag>(), n, 1, H, dk);
      x.gates = nsa::contiguous_view<const Tag>(dg.as<const Tag>(), n, 1, H, 3);
      for (int b = 0; b < streams; ++b) {
        dkb[b].copy_from_host(hk[b].data(), hk[b].size() * sizeof(Tag));
        dvb[b].copy_from_host(hv[b].data(), hv[b].size() * sizeof(Tag));
        const auto kv = nsa::contiguous_view<const Tag>(dkb[b].as<const Tag>(), n, 1, Hkv, dk);
        const auto vv = nsa::contiguous_view<const Tag>(dvb[b].as<const Tag>(), n, 1, Hkv, dv);
        (b == 0 ? x.k_cmp : b == 1 ? x.k_slc : x.k_win) = kv;
        (b == 0 ? x.v_cmp : b == 1 ? x.v_slc : x.v_win) = vv;
      }
      cache.step(ids.data(), n, x, nsa::contiguous_view(dout.as<Tag>(), n, 1, H, dv), nullptr);
      const auto o = download<Tag>(dout, std::size_t(n) * H * dv);
      for (index_t i = 0; i < n; ++i) {
        const index_t q = ids[i], t = pos[q], row = start[q] + t;
        std::copy(o.begin() + i * H * dv, o.begin() + (i + 1) * H * dv, got.begin() + row * H * dv);
        stepped[row] = 1;
        for (index_t hk = 0; hk < Hkv; ++hk) {
          const auto sel = cache.last_selection(i, hk, nullptr);
          std::int32_t* ref_sel = saved.sel_blocks.data() + (row * Hkv + hk) * top_n;
          std::copy(sel.begin(), sel.end(), gpu_sel.begin() + (row * Hkv + hk) * top_n);
          if (std::equal(sel.begin(), sel.end(), ref_sel)) continue;
          ++mismatched;
          if (same_up_to_ties(config, t, sel.data(), ref_sel, top_n, reference_scores(config, in64, saved, row, hk, q, t),
                              tie_tol))
            ++ties;
          else
            ++bad;
        }
        ++pos[q];
      }
      ++steps;
    }
    for (index_t q = 0; q < nseq; ++q)
      if (cache.position(q) != lens[q]) throw nsa::Error("position after the steps is " + std::to_string(cache.position(q)));
  } catch (const nsa::Error& e) {
    report(false, name, std::string("threw: ") + e.what());
    return;
  }

  // The reference with the kernel's selection on the stepped rows, when it differs by ties.
  std::vector<double> ref_sel_out;
  const std::vector<double>* cmp_ref = &ref;
  if (mismatched > 0) {
    nsa::reference::nsa_forward_with_selection(config, in64, prob.out_view(ref_sel_out), nullptr, gpu_sel.data());
    cmp_ref = &ref_sel_out;
  }
  std::vector<float> xs, xp;
  std::vector<double> rs, rp;
  double worst_row = 0.0;
  for (index_t r = 0; r < rows; ++r) {
    if (appended[r]) continue;
    const std::size_t o = static_cast<std::size_t>(r * H * dv), n = static_cast<std::size_t>(H * dv);
    auto& x = stepped[r] ? xs : xp;
    auto& rr = stepped[r] ? rs : rp;
    x.insert(x.end(), got.begin() + o, got.begin() + o + n);
    rr.insert(rr.end(), cmp_ref->begin() + o, cmp_ref->begin() + o + n);
    if (stepped[r])
      worst_row = std::max(worst_row, nsa::testing::relative_error(got.data() + o, cmp_ref->data() + o, static_cast<index_t>(n)));
  }
  const double tol = tolerance<Tag>();
  const double e_step = xs.empty() ? 0.0 : rel_err(xs, rs.data(), xs.size());
  const double e_prefill = xp.empty() ? 0.0 : rel_err(xp, rp.data(), xp.size());
  // worst_row bounds each stepped row too (10 x tol): a fault in a few rows only (one item of
  // a varlen step, the steps that complete a block) barely moves the aggregate "step".
  const bool ok = !xs.empty() && e_step <= tol && e_prefill <= tol && worst_row <= 10 * tol && bad == 0;
  report(ok, name,
         fmt("steps=%lld rows=%lld step=%.2e worst_row=%.1e prefill=%.1e (tol %.0e) sel_mismatch=%lld(ties %lld, bad %lld)",
             static_cast<long long>(steps), static_cast<long long>(rs.size() / (H * dv)), e_step, worst_row, e_prefill,
             tol, static_cast<long long>(mismatched), static_cast<long long>(ties), static_cast<long long>(bad)));
}

// The dense decode step against a float64 loop.
template <class Tag>
void check_dense_decode(index_t T, index_t H, index_t Hkv, index_t dk, index_t dv, std::uint64_t seed) {
  const std::string name = fmt("decode/%-4s dense step G=%lld d_k=%lld d_v=%lld T=%lld", tag_name<Tag>(),
                               static_cast<long long>(H / Hkv), static_cast<long long>(dk),
                               static_cast<long long>(dv), static_cast<long long>(T));
  if (g_reference_only) return;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  auto make = [&](std::size_t n) {
    std::vector<double> v(n);
    for (auto& x : v) x = dist(rng);
    round_to<Tag>(v);
    return v;
  };
  const auto q = make(H * dk), k = make(T * Hkv * dk), v = make(T * Hkv * dv);
  const double scale = 1.0 / std::sqrt(double(dk));
  std::vector<double> ref(H * dv, 0.0);
  const index_t G = H / Hkv;
  for (index_t h = 0; h < H; ++h) {
    const index_t hk = h / G;
    std::vector<double> sc(T);
    double mx = -INFINITY;
    for (index_t t = 0; t < T; ++t) {
      double s = 0.0;
      for (index_t c = 0; c < dk; ++c) s += q[h * dk + c] * k[(t * Hkv + hk) * dk + c];
      sc[t] = scale * s;
      mx = std::max(mx, sc[t]);
    }
    double sum = 0.0;
    for (index_t t = 0; t < T; ++t) sum += (sc[t] = std::exp(sc[t] - mx));
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < dv; ++c) ref[h * dv + c] += sc[t] / sum * v[(t * Hkv + hk) * dv + c];
  }
  auto upload = [](const std::vector<double>& h, ncu::DeviceBuffer& d) {
    std::vector<Tag> tmp(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) tmp[i] = to_tag<Tag>(static_cast<float>(h[i]));
    d.reserve(tmp.size() * sizeof(Tag));
    d.copy_from_host(tmp.data(), tmp.size() * sizeof(Tag));
  };
  ncu::DeviceBuffer dq, dkb, dvb, dout(std::size_t(H) * dv * sizeof(Tag));
  upload(q, dq);
  upload(k, dkb);
  upload(v, dvb);
  ncu::Workspace ws;
  try {
    ncu::dense_decode_step<Tag>(dq.as<const Tag>(), dkb.as<const Tag>(), dvb.as<const Tag>(), T, H, Hkv, dk, dv, 0.0,
                                dout.as<Tag>(), ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("threw: ") + e.what());
    return;
  }
  const double tol = tolerance<Tag>();
  const double e = rel_err(download<Tag>(dout, std::size_t(H) * dv), ref.data(), std::size_t(H) * dv);
  report(e <= tol, name, fmt("out maxrel=%.2e (tol %.0e)", e, tol));
}

// Invalid input must throw nsa::Error (before launching anything) naming the problem.
void check_decode_errors() {
  if (g_reference_only) return;
  using Tag = ncu::bf16;
  nsa::ConfigOptions o;
  o.block_len = 16; o.stride = 8; o.sel_block = 32; o.top_n = 4; o.window = 64; o.phi = nsa::PhiKind::mean;
  const nsa::Config config(o);
  ncu::DecodeCacheShape cs;
  cs.heads = 2; cs.kv_heads = 1; cs.d_k = 16; cs.d_v = 16; cs.shared_kv = true; cs.max_seqs = 2; cs.max_tokens = 2;
  const nsa::PhiWeights<Tag> none;
  auto expect = [&](const std::string& check, const std::string& needle, const std::function<void()>& fn) {
    std::string what;
    try { fn(); } catch (const nsa::Error& e) { what = e.what(); }
    report(what.find(needle) != std::string::npos, "decode/errors " + check, "\"" + what + "\"");
  };
  expect("d_k=24 is rejected", "multiple of 16", [&] {
    ncu::DecodeCacheShape bad = cs;
    bad.d_k = 24;
    ncu::DecodeCache<Tag> c(config, bad, none, none);
  });
  ncu::DeviceBuffer buf(4096);
  cuda_ok(cudaMemset(buf.data(), 0, 4096), "cudaMemset");
  const Tag* p = buf.as<const Tag>();
  ncu::DecodeTokens<Tag> x;
  x.q = nsa::contiguous_view<const Tag>(p, 1, 1, 2, 16);
  x.k_cmp = nsa::contiguous_view<const Tag>(p, 1, 1, 1, 16);
  x.v_cmp = x.k_cmp;
  x.gates = nsa::contiguous_view<const Tag>(p, 1, 1, 2, 3);
  ncu::DeviceBuffer ob(4096);
  const auto out = nsa::contiguous_view(ob.as<Tag>(), 1, 1, 2, 16);
  try {
    ncu::DecodeCache<Tag> cache(config, cs, none, none);
    expect("bad sequence id", "out of range", [&] { const index_t id = 2; cache.step(&id, 1, x, out, nullptr); });
    expect("negative sequence id", "out of range", [&] { const index_t id = -1; cache.step(&id, 1, x, out, nullptr); });
    expect("wrong q shape", "expected shape", [&] {
      ncu::DecodeTokens<Tag> y = x;
      y.q.shape[2] = 3;
      const index_t id = 0;
      cache.step(&id, 1, y, out, nullptr);
    });
    // Repeated id: views for two items.
    ncu::DecodeTokens<Tag> x2 = x;
    x2.q = nsa::contiguous_view<const Tag>(p, 2, 1, 2, 16);
    x2.k_cmp = nsa::contiguous_view<const Tag>(p, 2, 1, 1, 16);
    x2.v_cmp = x2.k_cmp;
    x2.gates = nsa::contiguous_view<const Tag>(p, 2, 1, 2, 3);
    const auto out2 = nsa::contiguous_view(ob.as<Tag>(), 2, 1, 2, 16);
    expect("repeated sequence id", "twice", [&] { const index_t ids[2] = {1, 1}; cache.step(ids, 2, x2, out2, nullptr); });
    // Capacity: two steps fit, the third is refused.
    const index_t id = 0;
    cache.step(&id, 1, x, out, nullptr);
    cache.step(&id, 1, x, out, nullptr);
    ncu::synchronize(nullptr);
    expect("sequence beyond capacity", "full", [&] { cache.step(&id, 1, x, out, nullptr); });
    expect("prefill of a non-empty sequence", "not empty", [&] { cache.prefill(0, x, out, nullptr); });
    report(cache.position(0) == 2 && cache.position(1) == 0, "decode/errors positions unchanged by refused calls",
           fmt("pos = %lld, %lld", static_cast<long long>(cache.position(0)), static_cast<long long>(cache.position(1))));
  } catch (const nsa::Error& e) {
    report(false, "decode/errors", std::string("threw: ") + e.what());
  }
}

}  // namespace

void run_decode_checks(bool quick) {
  std::printf("== decode: prefill + steps vs the float64 reference forward ==\n");
  nsa::ConfigOptions def;    // paper defaults: l=32 d=16 l'=64 n=16 w=512, mlp phi
  nsa::ConfigOptions small;  // other block sizes, top-n active early
  small.block_len = 16; small.stride = 8; small.sel_block = 32; small.top_n = 4; small.window = 64;
  nsa::ConfigOptions lin = small; lin.phi = nsa::PhiKind::linear;
  nsa::ConfigOptions mean = small; mean.phi = nsa::PhiKind::mean;
  auto shape = [](index_t T, index_t H, index_t Hkv, index_t dk, index_t dv, bool shared, std::uint64_t seed,
                  std::vector<std::int64_t> seqlens = {}) {
    ProblemShape s;
    s.batch = 1; s.tokens = T; s.heads = H; s.kv_heads = Hkv; s.d_k = dk; s.d_v = dv;
    s.shared_kv = shared; s.seed = seed; s.seqlens = std::move(seqlens);
    if (!s.seqlens.empty()) {
      s.tokens = 0;
      for (auto n : s.seqlens) s.tokens += n;
    }
    return s;
  };
  // Default config: top-n is a real choice from t >= n * l' = 1024 on; small config from 128.
  std::vector<DecodeCase> cases = {
      {"G=1 128/128", shape(1300, 2, 2, 128, 128, false, 31), def, {1100}},
      {"G=4 192/128", shape(1150, 4, 1, 192, 128, false, 32), def, {1000}},
      {"G=16 shared small-cfg", shape(400, 16, 1, 128, 128, true, 33), small, {150}},
      {"G=3 small-cfg 64/32", shape(400, 6, 2, 64, 32, false, 34), small, {100}},
      {"varlen x3 G=4 small-cfg", shape(0, 8, 2, 64, 64, false, 35, {300, 90, 410}), small, {200, 5, 330}},
      {"prompt<l G=2 64/64", shape(200, 4, 2, 64, 64, false, 36), small, {10}},
      {"long T=5000 G=2 32/32", shape(5000, 2, 1, 32, 32, false, 37), def, {4992}},
      {"G=20 linear 32/64", shape(300, 20, 1, 32, 64, true, 38), lin, {150}},
      {"G=5 mean no prompt 16/16", shape(150, 5, 1, 16, 16, false, 39), mean, {0}},
      // append instead of prefill (the tiled phi GEMM of launch_phi_blocks, mlp and mean)
      {"append varlen x3 G=4 small-cfg", shape(0, 8, 2, 64, 64, false, 44, {300, 90, 410}), small, {200, 5, 330}, true},
      {"append G=3 mean shared 32/16", shape(260, 3, 1, 32, 16, true, 45), mean, {170}, true},
  };
  if (quick) cases = {cases[1], cases[3], cases[4], cases[9]};
  for (const auto& c : cases) check_decode<float>(c);
  for (const auto& c : cases) check_decode<ncu::bf16>(c);
  check_decode<ncu::f16>(cases[quick ? 0 : 1]);

  check_dense_decode<float>(3000, 8, 2, 192, 128, 41);
  check_dense_decode<ncu::bf16>(3000, 8, 2, 192, 128, 42);
  check_dense_decode<float>(700, 20, 1, 64, 256, 43);
  check_decode_errors();
}

// ---- timing ------------------------------------------------------------------------------

namespace {
using BTag = ncu::bf16;
}  // namespace

void run_decode_bench(bool quick, index_t max_t) {
  std::printf("\n== decode step timing: bf16, H=64 H_kv=4 (G=4) d_k=192 d_v=128, batch 1, cudaEvents ==\n");
  const nsa::Config config;  // paper defaults
  const index_t H = 64, Hkv = 4, dk = 192, dv = 128, l = config.block_len();
  std::vector<index_t> Ts = {8192, 16384, 32768, 65536};
  Ts.erase(std::remove_if(Ts.begin(), Ts.end(), [&](index_t t) { return t > max_t; }), Ts.end());
  if (Ts.empty()) return;
  const index_t Tmax = Ts.back();
  const int warmup = 3, reps = quick ? 15 : 33;
  try {
    ncu::DeviceBuffer ks[3], vs[3], q, g, kstep[3], vstep[3], out, out_dense;
    for (int b = 0; b < 3; ++b) {
      fill_random(ks[b], std::size_t(Tmax) * Hkv * dk, 10 + b, 1.f);
      fill_random(vs[b], std::size_t(Tmax) * Hkv * dv, 20 + b, 1.f);
      fill_random(kstep[b], std::size_t(Hkv) * dk, 30 + b, 1.f);
      fill_random(vstep[b], std::size_t(Hkv) * dv, 40 + b, 1.f);
    }
    fill_random(q, std::size_t(H) * dk, 1, 1.f);
    fill_random(g, std::size_t(H) * 3, 2, 1.f, true, 0.05f, 0.95f);
    out.reserve(std::size_t(H) * dv * sizeof(BTag));
    out_dense.reserve(std::size_t(H) * dv * sizeof(BTag));
    ncu::DeviceBuffer phi_buf[10];
    auto phi = [&](index_t dim, int at, std::uint64_t seed) {
      fill_random(phi_buf[at], l * dim, seed, 0.5f);
      fill_random(phi_buf[at + 1], dim * l * dim, seed + 1, 1.f / std::sqrt(float(l * dim)));
      fill_random(phi_buf[at + 2], dim, seed + 2, 0.1f);
      fill_random(phi_buf[at + 3], dim * dim, seed + 3, 1.f / std::sqrt(float(dim)));
      fill_random(phi_buf[at + 4], dim, seed + 4, 0.1f);
      nsa::PhiWeights<BTag> w;
      w.pe = phi_buf[at].as<BTag>(); w.w1 = phi_buf[at + 1].as<BTag>(); w.b1 = phi_buf[at + 2].as<BTag>();
      w.w2 = phi_buf[at + 3].as<BTag>(); w.b2 = phi_buf[at + 4].as<BTag>();
      return w;
    };
    ncu::DecodeCacheShape cs;
    cs.heads = H; cs.kv_heads = Hkv; cs.d_k = dk; cs.d_v = dv; cs.shared_kv = false; cs.max_seqs = 1;
    cs.max_tokens = Tmax + warmup + reps + 16;
    ncu::DecodeCache<BTag> cache(config, cs, phi(dk, 0, 100), phi(dv, 5, 200));
    std::printf("cache: %.1f MiB (independent K/V per branch), l=%d d=%d l'=%d n=%d w=%d phi=mlp\n",
                cache.memory_bytes() / 1048576.0, config.block_len(), config.stride(), config.sel_block(),
                config.top_n(), config.window());
    std::printf("%7s | %9s %9s | %9s | %8s | %13s %7s\n", "T", "nsa us", "nsa mean", "dense us", "speedup",
                "tokens read", "fewer");
    ncu::DecodeTokens<BTag> step_in;
    step_in.q = nsa::contiguous_view<const BTag>(q.as<const BTag>(), 1, 1, H, dk);
    step_in.gates = nsa::contiguous_view<const BTag>(g.as<const BTag>(), 1, 1, H, 3);
    for (int b = 0; b < 3; ++b) {
      const auto kv = nsa::contiguous_view<const BTag>(kstep[b].as<const BTag>(), 1, 1, Hkv, dk);
      const auto vv = nsa::contiguous_view<const BTag>(vstep[b].as<const BTag>(), 1, 1, Hkv, dv);
      (b == 0 ? step_in.k_cmp : b == 1 ? step_in.k_slc : step_in.k_win) = kv;
      (b == 0 ? step_in.v_cmp : b == 1 ? step_in.v_slc : step_in.v_win) = vv;
    }
    const auto out_view = nsa::contiguous_view(out.as<BTag>(), 1, 1, H, dv);
    ncu::Workspace ws_dense;
    cudaEvent_t e0, e1;
    cuda_ok(cudaEventCreate(&e0), "cudaEventCreate");
    cuda_ok(cudaEventCreate(&e1), "cudaEventCreate");
    auto time_us = [&](const std::function<void()>& fn) {
      cuda_ok(cudaEventRecord(e0), "cudaEventRecord");
      fn();
      cuda_ok(cudaEventRecord(e1), "cudaEventRecord");
      cuda_ok(cudaEventSynchronize(e1), "cudaEventSynchronize");
      float ms = 0.f;
      cuda_ok(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
      return 1000.0 * ms;
    };
    // NaN/Inf in an output is a failure (counted, printed only when it happens).
    auto finite = [&](const ncu::DeviceBuffer& b, const std::string& what) {
      const auto h = download<BTag>(b, std::size_t(H) * dv);
      bool ok = true;
      for (float x : h) ok = ok && std::isfinite(x);
      ++g_checks;
      if (!ok) {
        ++g_failures;
        std::printf("FAIL %s: non-finite output\n", what.c_str());
      }
      return ok;
    };
    for (index_t T : Ts) {
      // Fill: reset, then append T random tokens (K/V of each branch, phi of every block).
      cache.reset(0);
      ncu::DecodeTokens<BTag> fill;
      for (int b = 0; b < 3; ++b) {
        const auto kv = nsa::contiguous_view<const BTag>(ks[b].as<const BTag>(), 1, T, Hkv, dk);
        const auto vv = nsa::contiguous_view<const BTag>(vs[b].as<const BTag>(), 1, T, Hkv, dv);
        (b == 0 ? fill.k_cmp : b == 1 ? fill.k_slc : fill.k_win) = kv;
        (b == 0 ? fill.v_cmp : b == 1 ? fill.v_slc : fill.v_win) = vv;
      }
      cache.append(0, fill, nullptr);
      ncu::synchronize(nullptr);
      const index_t seq = 0;
      std::vector<double> t_nsa, t_dense;
      for (int r = 0; r < warmup + reps; ++r) {
        const double us = time_us([&] { cache.step(&seq, 1, step_in, out_view, nullptr); });
        if (r >= warmup) t_nsa.push_back(us);
      }
      finite(out, fmt("decode/bench nsa step T=%lld", static_cast<long long>(T)));
      // Tokens read by the last step (kv head 0; the paper's measure).
      const index_t t = cache.position(0) - 1;
      const auto sel = cache.last_selection(0, 0, nullptr);
      index_t slc = 0;
      for (auto j : sel)
        if (j >= 0) slc += std::min<index_t>(config.sel_block(), t + 1 - index_t(j) * config.sel_block());
      const index_t read = config.visible_cmp_blocks(t) + slc + std::min<index_t>(t + 1, config.window());
      for (int r = 0; r < warmup + reps; ++r) {
        const double us = time_us([&] {
          ncu::dense_decode_step<BTag>(q.as<const BTag>(), ks[1].as<const BTag>(), vs[1].as<const BTag>(), T, H, Hkv, dk,
                                       dv, 0.0, out_dense.as<BTag>(), ws_dense, nullptr);
        });
        if (r >= warmup) t_dense.push_back(us);
      }
      finite(out_dense, fmt("decode/bench dense step T=%lld", static_cast<long long>(T)));
      double mean = 0.0;
      for (double x : t_nsa) mean += x / t_nsa.size();
      std::sort(t_nsa.begin(), t_nsa.end());
      std::sort(t_dense.begin(), t_dense.end());
      const double m_nsa = t_nsa[t_nsa.size() / 2], m_dense = t_dense[t_dense.size() / 2];
      std::printf("%7lld | %9.1f %9.1f | %9.1f | %7.2fx | %6lld/%-6lld %6.1fx\n", static_cast<long long>(T), m_nsa, mean,
                  m_dense, m_nsa > 0 ? m_dense / m_nsa : 0.0, static_cast<long long>(read), static_cast<long long>(T),
                  double(T) / double(read));
      std::fflush(stdout);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::printf("nsa us: median step (append, phi when a block completes, 3 branches, merge); nsa mean includes\n"
                "the steps that run phi (1 in d = 16). tokens read: visible compressed blocks + chosen blocks'\n"
                "tokens + window, vs T for dense decode.\n");
  } catch (const std::exception& e) {
    report(false, "decode/bench", std::string("threw: ") + e.what());
  }
}
