// Backward part of the kernel lab (nsa_gpu_check): the CUDA nsa_backward / dense_backward
// against the float64 reference, one line per case listing every gradient's relative
// error ||x - ref|| / ||ref||:
//   OK   bwd/f32  G=4 192/128 ...  dq=2.1e-07 dk_cmp=... dgates=... phi_k.w1=... (tol 1e-04)
// The reference backward runs on the same (rounded) inputs and d_out, and with the
// selection the GPU forward chose (the backward takes the selection as a constant, so a
// near-tie resolved differently by the forward must not count as a gradient error).
// Shared K/V cases pass ONE gradient buffer for the three branches' dk (and dv), to both
// implementations: the aliased buffer must receive the sum.
// Also: a determinism check (two backward calls, bitwise equal gradients) per storage
// type, and the dense backward at a few shapes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "check_util.h"
#include "nsa/backward.h"
#include "nsa/cuda.h"
#include "nsa/cuda_backward.h"
#include "nsa/error.h"
#include "reference/reference.h"
#include "testing/random_problem.h"

using namespace nsa::gpu_check;

namespace {

using nsa::testing::ProblemShape;
using nsa::testing::RandomDenseProblem;
using nsa::testing::RandomNsaProblem;

// Gradient tolerance: the spec's fp32 gradient tolerance, the 16-bit storage one.
template <class Tag>
double grad_tolerance() { return std::is_same_v<Tag, float> ? 1e-4 : 1e-2; }

// Random N(0, 1) values rounded to what Tag holds (the reference sees the same values).
template <class Tag>
std::vector<double> random_rounded(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  round_to<Tag>(v);
  return v;
}

template <class Tag>
std::vector<Tag> to_tags(const std::vector<double>& v) {
  std::vector<Tag> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = to_tag<Tag>(static_cast<float>(v[i]));
  return out;
}

// One named gradient: host reference (float64) and device result (fp32), with the same
// aliasing structure on both sides (a name listed once per distinct buffer).
struct GradPair {
  std::string name;
  std::vector<double> ref;
  std::unique_ptr<ncu::DeviceBuffer> dev;
};

class GradSet {
 public:
  // A [B, T, heads, dim] gradient; returns the index to alias other views to.
  std::size_t add(const std::string& name, index_t n) {
    auto g = std::make_unique<GradPair>();
    g->name = name;
    g->ref.assign(static_cast<std::size_t>(n), 0.0);
    if (g_reference_only) {  // no device
      items_.push_back(std::move(g));
      return items_.size() - 1;
    }
    g->dev = std::make_unique<ncu::DeviceBuffer>(std::max<std::size_t>(1, static_cast<std::size_t>(n)) * sizeof(float));
    // Poison the device buffer: every element must be written by the backward.
    std::vector<float> nan(static_cast<std::size_t>(n), std::nanf(""));
    g->dev->copy_from_host(nan.data(), nan.size() * sizeof(float));
    items_.push_back(std::move(g));
    return items_.size() - 1;
  }
  GradPair& operator[](std::size_t i) { return *items_[i]; }
  float* device(std::size_t i) { return items_[i]->dev ? items_[i]->dev->as<float>() : nullptr; }
  std::size_t size() const { return items_.size(); }

  // "name=err ..." for every gradient; false when any error exceeds tol or is not finite.
  bool compare(double tol, std::string& detail, std::vector<std::vector<float>>* got_out = nullptr) {
    bool ok = true;
    for (auto& g : items_) {
      const auto got = download<float>(*g->dev, g->ref.size());
      const double e = rel_err(got, g->ref.data(), g->ref.size());
      detail += fmt(" %s=%.1e", g->name.c_str(), e);
      ok = ok && e <= tol;
      if (got_out != nullptr) got_out->push_back(got);
    }
    return ok;
  }

 private:
  std::vector<std::unique_ptr<GradPair>> items_;
};

// The reference backward alone, into scratch gradients (for --reference-only timing).
void reference_backward_only(const nsa::Config& config, const RandomNsaProblem& prob,
                             const nsa::NsaSaved<double>& saved, const std::vector<double>& d_out) {
  const auto& s = prob.shape();
  const index_t BT = s.batch * s.tokens, l = config.block_len();
  std::vector<double> dq(BT * s.heads * s.d_k), dk(BT * s.kv_heads * s.d_k * 3), dv(BT * s.kv_heads * s.d_v * 3),
      dg(BT * s.heads * 3);
  nsa::NsaGradients<double> g;
  g.dq = nsa::contiguous_view(dq.data(), s.batch, s.tokens, s.heads, s.d_k);
  const index_t nk = BT * s.kv_heads * s.d_k, nv = BT * s.kv_heads * s.d_v;
  g.dk_cmp = nsa::contiguous_view(dk.data(), s.batch, s.tokens, s.kv_heads, s.d_k);
  g.dk_slc = nsa::contiguous_view(dk.data() + nk, s.batch, s.tokens, s.kv_heads, s.d_k);
  g.dk_win = nsa::contiguous_view(dk.data() + 2 * nk, s.batch, s.tokens, s.kv_heads, s.d_k);
  g.dv_cmp = nsa::contiguous_view(dv.data(), s.batch, s.tokens, s.kv_heads, s.d_v);
  g.dv_slc = nsa::contiguous_view(dv.data() + nv, s.batch, s.tokens, s.kv_heads, s.d_v);
  g.dv_win = nsa::contiguous_view(dv.data() + 2 * nv, s.batch, s.tokens, s.kv_heads, s.d_v);
  g.dgates = nsa::contiguous_view(dg.data(), s.batch, s.tokens, s.heads, 3);
  std::vector<std::vector<double>> keep;
  auto phi = [&](index_t dim) {
    const index_t hidden = config.phi_hidden_for(dim);
    nsa::PhiGradients<double> p;
    for (auto [ptr, n] : {std::pair{&p.pe, l * dim}, std::pair{&p.w1, hidden * l * dim}, std::pair{&p.b1, hidden},
                          std::pair{&p.w2, dim * hidden}, std::pair{&p.b2, dim}, std::pair{&p.w, dim * l * dim}}) {
      keep.emplace_back(static_cast<std::size_t>(n));
      *ptr = keep.back().data();
    }
    return p;
  };
  keep.reserve(12);
  g.phi_k = phi(s.d_k);
  g.phi_v = phi(s.d_v);
  nsa::reference::nsa_backward(config, prob.inputs64(), saved,
                               nsa::contiguous_view<const double>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v), g);
}

template <class Tag>
void check_nsa_backward(const std::string& cname, const ProblemShape& shape, const nsa::ConfigOptions& opts,
                        bool determinism) {
  const nsa::Config config(opts);
  RandomNsaProblem prob(config, shape);
  round_problem_to<Tag>(prob);
  const auto& s = prob.shape();
  const std::string name = fmt("bwd/%-4s %-26s %s", tag_name<Tag>(), cname.c_str(), s.describe().c_str());
  const index_t dk = s.d_k, dv = s.d_v, l = config.block_len();
  const index_t BT = s.batch * s.tokens;
  const auto in64 = prob.inputs64();
  const auto in32 = prob.inputs32();
  const std::size_t nout = static_cast<std::size_t>(prob.out_size());
  const auto d_out64 = random_rounded<Tag>(nout, s.seed * 7 + 1);
  if (g_reference_only) {  // time the float64 reference of this case (no GPU needed)
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<double> ref_out;
    nsa::NsaSaved<double> saved;
    nsa::reference::nsa_forward(config, in64, prob.out_view(ref_out), &saved);
    const auto t1 = std::chrono::steady_clock::now();
    reference_backward_only(config, prob, saved, d_out64);
    const auto t2 = std::chrono::steady_clock::now();
    std::printf("reference %s: forward %.2f s, backward %.2f s\n", name.c_str(),
                std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
    return;
  }

  // ---- GPU forward (saved state for the backward)
  Uploader<Tag> up;
  const nsa::NsaInputs<Tag> in = upload_inputs(up, config, in32, dk, dv);
  ncu::DeviceBuffer out_buf(nout * sizeof(Tag));
  ncu::NsaSavedDevice dsaved;
  ncu::Workspace ws;
  const auto d_out_tags = to_tags<Tag>(d_out64);
  ncu::DeviceBuffer dout_buf(nout * sizeof(Tag));
  dout_buf.copy_from_host(d_out_tags.data(), nout * sizeof(Tag));
  try {
    ncu::nsa_forward<Tag>(config, in, nsa::contiguous_view(out_buf.as<Tag>(), s.batch, s.tokens, s.heads, dv),
                          &dsaved, ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("forward threw: ") + e.what());
    return;
  }

  // ---- reference forward, then its selection replaced by the GPU's
  std::vector<double> ref_out;
  nsa::NsaSaved<double> saved;
  nsa::reference::nsa_forward(config, in64, prob.out_view(ref_out), &saved);
  const std::size_t nsel = saved.sel_blocks.size();
  std::vector<std::int32_t> gpu_sel(nsel);
  dsaved.sel_blocks.copy_to_host(gpu_sel.data(), nsel * sizeof(std::int32_t));
  index_t sel_diff = 0;
  for (std::size_t i = 0; i < nsel; ++i) sel_diff += gpu_sel[i] != saved.sel_blocks[i];
  saved.sel_blocks = gpu_sel;

  // ---- gradients, aliased exactly like the inputs
  GradSet gs;
  const bool shared_k = in32.k_slc.data == in32.k_cmp.data && in32.k_win.data == in32.k_cmp.data;
  const bool shared_v = in32.v_slc.data == in32.v_cmp.data && in32.v_win.data == in32.v_cmp.data;
  const std::size_t i_dq = gs.add("dq", BT * s.heads * dk);
  const std::size_t i_dkc = gs.add(shared_k ? "dk" : "dk_cmp", BT * s.kv_heads * dk);
  const std::size_t i_dks = shared_k ? i_dkc : gs.add("dk_slc", BT * s.kv_heads * dk);
  const std::size_t i_dkw = shared_k ? i_dkc : gs.add("dk_win", BT * s.kv_heads * dk);
  const std::size_t i_dvc = gs.add(shared_v ? "dv" : "dv_cmp", BT * s.kv_heads * dv);
  const std::size_t i_dvs = shared_v ? i_dvc : gs.add("dv_slc", BT * s.kv_heads * dv);
  const std::size_t i_dvw = shared_v ? i_dvc : gs.add("dv_win", BT * s.kv_heads * dv);
  const std::size_t i_dg = gs.add("dgates", BT * s.heads * 3);
  struct PhiIdx { std::size_t pe = 0, w1 = 0, b1 = 0, w2 = 0, b2 = 0, w = 0; };
  auto add_phi = [&](const char* pfx, index_t dim) {
    PhiIdx x;
    const index_t hidden = config.phi_hidden_for(dim);
    const std::string p(pfx);
    if (config.phi() == nsa::PhiKind::mean) return x;
    x.pe = gs.add(p + ".pe", l * dim);
    if (config.phi() == nsa::PhiKind::linear) {
      x.w = gs.add(p + ".w", dim * l * dim);
    } else {
      x.w1 = gs.add(p + ".w1", hidden * l * dim);
      x.b1 = gs.add(p + ".b1", hidden);
      x.w2 = gs.add(p + ".w2", dim * hidden);
      x.b2 = gs.add(p + ".b2", dim);
    }
    return x;
  };
  const PhiIdx pk = add_phi("phi_k", dk), pv = add_phi("phi_v", dv);
  auto ref_view = [&](std::size_t i, index_t heads, index_t dim) {
    return nsa::contiguous_view(gs[i].ref.data(), s.batch, s.tokens, heads, dim);
  };
  auto dev_view = [&](std::size_t i, index_t heads, index_t dim) {
    return nsa::contiguous_view(gs[i].dev->as<float>(), s.batch, s.tokens, heads, dim);
  };
  nsa::NsaGradients<double> g64;
  nsa::NsaGradients<float> g32;
  g64.dq = ref_view(i_dq, s.heads, dk);
  g32.dq = dev_view(i_dq, s.heads, dk);
  g64.dk_cmp = ref_view(i_dkc, s.kv_heads, dk); g32.dk_cmp = dev_view(i_dkc, s.kv_heads, dk);
  g64.dk_slc = ref_view(i_dks, s.kv_heads, dk); g32.dk_slc = dev_view(i_dks, s.kv_heads, dk);
  g64.dk_win = ref_view(i_dkw, s.kv_heads, dk); g32.dk_win = dev_view(i_dkw, s.kv_heads, dk);
  g64.dv_cmp = ref_view(i_dvc, s.kv_heads, dv); g32.dv_cmp = dev_view(i_dvc, s.kv_heads, dv);
  g64.dv_slc = ref_view(i_dvs, s.kv_heads, dv); g32.dv_slc = dev_view(i_dvs, s.kv_heads, dv);
  g64.dv_win = ref_view(i_dvw, s.kv_heads, dv); g32.dv_win = dev_view(i_dvw, s.kv_heads, dv);
  g64.dgates = ref_view(i_dg, s.heads, 3);
  g32.dgates = dev_view(i_dg, s.heads, 3);
  auto phi_grads = [&](const PhiIdx& x, auto& g64p, auto& g32p) {
    if (config.phi() == nsa::PhiKind::mean) return;
    g64p.pe = gs[x.pe].ref.data(); g32p.pe = gs[x.pe].dev->template as<float>();
    if (config.phi() == nsa::PhiKind::linear) {
      g64p.w = gs[x.w].ref.data(); g32p.w = gs[x.w].dev->template as<float>();
      return;
    }
    g64p.w1 = gs[x.w1].ref.data(); g32p.w1 = gs[x.w1].dev->template as<float>();
    g64p.b1 = gs[x.b1].ref.data(); g32p.b1 = gs[x.b1].dev->template as<float>();
    g64p.w2 = gs[x.w2].ref.data(); g32p.w2 = gs[x.w2].dev->template as<float>();
    g64p.b2 = gs[x.b2].ref.data(); g32p.b2 = gs[x.b2].dev->template as<float>();
  };
  phi_grads(pk, g64.phi_k, g32.phi_k);
  phi_grads(pv, g64.phi_v, g32.phi_v);

  nsa::reference::nsa_backward(config, in64,
                               saved, nsa::contiguous_view<const double>(d_out64.data(), s.batch, s.tokens, s.heads, dv),
                               g64);
  const auto d_out = nsa::contiguous_view<const Tag>(dout_buf.as<const Tag>(), s.batch, s.tokens, s.heads, dv);
  try {
    ncu::nsa_backward<Tag>(config, in, dsaved, d_out, g32, ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("backward threw: ") + e.what());
    return;
  }
  const double tol = grad_tolerance<Tag>();
  std::string detail;
  std::vector<std::vector<float>> first;
  const bool ok = gs.compare(tol, detail, determinism ? &first : nullptr);
  report(ok, name, detail + fmt(" (tol %.0e, sel differs in %lld entries)", tol, static_cast<long long>(sel_diff)));

  if (!determinism) return;
  try {
    ncu::nsa_backward<Tag>(config, in, dsaved, d_out, g32, ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, "determinism " + name, std::string("threw: ") + e.what());
    return;
  }
  std::string which;
  for (std::size_t i = 0; i < gs.size(); ++i) {
    const auto again = download<float>(*gs[i].dev, gs[i].ref.size());
    if (again.size() != first[i].size() ||
        std::memcmp(again.data(), first[i].data(), again.size() * sizeof(float)) != 0)
      which += " " + gs[i].name;
  }
  report(which.empty(), fmt("bwd/%-4s determinism: two calls bitwise equal", tag_name<Tag>()),
         which.empty() ? std::string("(all gradients)") : "differs:" + which);
}

template <class Tag>
void check_dense_backward(const std::string& cname, const ProblemShape& shape) {
  RandomDenseProblem prob(shape);
  const auto in32 = prob.inputs32();
  const auto& qs = in32.q.shape;
  const index_t B = qs[0], T = qs[1], H = qs[2], dk = qs[3], Hkv = in32.k.shape[2], dv = in32.v.shape[3];
  // Reference inputs: the fp32 values rounded to Tag (what the kernels see).
  auto rounded = [](const float* p, index_t n) {
    std::vector<double> v(p, p + n);
    round_to<Tag>(v);
    return v;
  };
  const auto q64 = rounded(in32.q.data, B * T * H * dk);
  const auto k64 = rounded(in32.k.data, B * T * Hkv * dk);
  const auto v64 = rounded(in32.v.data, B * T * Hkv * dv);
  nsa::DenseInputs<double> in64;
  in64.q = nsa::contiguous_view(q64.data(), B, T, H, dk);
  in64.k = nsa::contiguous_view(k64.data(), B, T, Hkv, dk);
  in64.v = nsa::contiguous_view(v64.data(), B, T, Hkv, dv);
  in64.seqs = in32.seqs;
  const std::size_t nout = static_cast<std::size_t>(B * T * H * dv);
  const auto d_out64 = random_rounded<Tag>(nout, 4242 + static_cast<std::uint64_t>(T));

  const std::string name = fmt("bwd/dense/%-4s %-20s G=%lld d_k=%lld d_v=%lld T=%lld", tag_name<Tag>(), cname.c_str(),
                               static_cast<long long>(H / Hkv), static_cast<long long>(dk),
                               static_cast<long long>(dv), static_cast<long long>(T));
  GradSet gs;
  const std::size_t i_dq = gs.add("dq", B * T * H * dk), i_dk = gs.add("dk", B * T * Hkv * dk),
                    i_dv = gs.add("dv", B * T * Hkv * dv);
  nsa::DenseGradients<double> g64{nsa::contiguous_view(gs[i_dq].ref.data(), B, T, H, dk),
                                  nsa::contiguous_view(gs[i_dk].ref.data(), B, T, Hkv, dk),
                                  nsa::contiguous_view(gs[i_dv].ref.data(), B, T, Hkv, dv)};
  nsa::DenseGradients<float> g32{nsa::contiguous_view(gs.device(i_dq), B, T, H, dk),
                                 nsa::contiguous_view(gs.device(i_dk), B, T, Hkv, dk),
                                 nsa::contiguous_view(gs.device(i_dv), B, T, Hkv, dv)};
  const auto t0 = std::chrono::steady_clock::now();
  nsa::reference::dense_backward(in64, nsa::contiguous_view<const double>(d_out64.data(), B, T, H, dv), g64);
  if (g_reference_only) {
    std::printf("reference %s: backward %.2f s\n", name.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return;
  }

  Uploader<Tag> up;
  nsa::DenseInputs<Tag> in;
  in.q = up.view(in32.q);
  in.k = up.view(in32.k);
  in.v = up.view(in32.v);
  in.seqs = in32.seqs;
  ncu::DeviceBuffer out_buf(nout * sizeof(Tag)), lse_buf(static_cast<std::size_t>(B * T * H) * sizeof(float)),
      dout_buf(nout * sizeof(Tag));
  const auto d_out_tags = to_tags<Tag>(d_out64);
  dout_buf.copy_from_host(d_out_tags.data(), nout * sizeof(Tag));
  ncu::Workspace ws;
  try {
    auto out = nsa::contiguous_view(out_buf.as<Tag>(), B, T, H, dv);
    ncu::dense_forward<Tag>(in, out, lse_buf.as<float>(), ws, nullptr);
    ncu::dense_backward<Tag>(in, out.as_const(), lse_buf.as<const float>(),
                             nsa::contiguous_view<const Tag>(dout_buf.as<const Tag>(), B, T, H, dv), g32, ws, nullptr);
    ncu::synchronize(nullptr);
  } catch (const nsa::Error& e) {
    report(false, name, std::string("threw: ") + e.what());
    return;
  }
  const double tol = grad_tolerance<Tag>();
  std::string detail;
  const bool ok = gs.compare(tol, detail);
  report(ok, name, detail + fmt(" (tol %.0e)", tol));
}

// Invalid calls must throw nsa::Error before launching anything.
void check_backward_errors() {
  if (g_reference_only) return;
  using Tag = ncu::bf16;
  ncu::DeviceBuffer buf(1 << 16), grads(1 << 16);
  const Tag* x = buf.as<const Tag>();
  float* gp = grads.as<float>();
  nsa::ConfigOptions o;
  o.phi = nsa::PhiKind::mean;
  const nsa::Config config(o);
  nsa::NsaInputs<Tag> in;
  in.q = nsa::contiguous_view(x, 1, 4, 2, 16);
  in.k_cmp = in.v_cmp = in.k_slc = in.v_slc = in.k_win = in.v_win = nsa::contiguous_view(x, 1, 4, 1, 16);
  in.gates = nsa::contiguous_view(x, 1, 4, 2, 3);
  nsa::NsaGradients<float> g;
  g.dq = nsa::contiguous_view(gp, 1, 4, 2, 16);
  g.dk_cmp = g.dv_cmp = g.dk_slc = g.dv_slc = g.dk_win = g.dv_win = nsa::contiguous_view(gp, 1, 4, 1, 16);
  g.dgates = nsa::contiguous_view(gp, 1, 4, 2, 3);
  ncu::NsaSavedDevice empty;  // not from a forward call
  ncu::Workspace ws;
  std::string what;
  try {
    ncu::nsa_backward<Tag>(config, in, empty, nsa::contiguous_view(x, 1, 4, 2, 16), g, ws, nullptr);
  } catch (const nsa::Error& e) {
    what = e.what();
  }
  report(what.find("saved state does not match") != std::string::npos, "bwd/errors: saved state of another call",
         "\"" + what + "\"");
  what.clear();
  nsa::DenseInputs<Tag> din{in.q, in.k_cmp, in.v_cmp};
  nsa::DenseGradients<float> dg{g.dq, g.dk_cmp, g.dv_cmp};
  try {
    ncu::dense_backward<Tag>(din, in.q, nullptr, in.q, dg, ws, nullptr);
  } catch (const nsa::Error& e) {
    what = e.what();
  }
  report(what.find("lse is null") != std::string::npos, "bwd/errors: dense without lse", "\"" + what + "\"");
}

}  // namespace

// Called from run_checks (gpu_check.cc).
void run_backward_checks(bool quick) {
  std::printf("== backward vs float64 reference (gradients: fp32 tol 1e-4, 16-bit 1e-2) ==\n");
  nsa::ConfigOptions def;  // l=32 d=16 l'=64 n=16 w=512, mlp
  nsa::ConfigOptions small;  // l=16 d=8 l'=32 n=4 w=64: non-trivial selection at small T
  small.block_len = 16; small.stride = 8; small.sel_block = 32; small.top_n = 4; small.window = 64;
  nsa::ConfigOptions lin = def; lin.phi = nsa::PhiKind::linear;
  nsa::ConfigOptions small_lin = small; small_lin.phi = nsa::PhiKind::linear;
  nsa::ConfigOptions mean = small; mean.phi = nsa::PhiKind::mean; mean.n_init = 0; mean.n_local = 1; mean.top_n = 3;
  auto shape = [](index_t B, index_t T, index_t H, index_t Hkv, index_t dk, index_t dv, bool shared,
                  std::uint64_t seed, std::vector<std::int64_t> seqlens = {}) {
    ProblemShape s;
    s.batch = B; s.tokens = T; s.heads = H; s.kv_heads = Hkv; s.d_k = dk; s.d_v = dv;
    s.shared_kv = shared; s.seed = seed; s.seqlens = std::move(seqlens);
    return s;
  };
  struct Case {
    std::string name;
    ProblemShape shape;
    nsa::ConfigOptions opts;
  };
  // Reference cost: each case is a few seconds of float64 at most (the sizes are chosen
  // for it); the small config gives a non-trivial selection at small T.
  std::vector<Case> cases = {
      {"G=1 T=600 128/128", shape(1, 600, 2, 2, 128, 128, false, 31), def},
      {"G=4 T=1280 192/128", shape(1, 1280, 4, 1, 192, 128, false, 32), def},  // T > n*l': real top-n
      {"G=16 shared small-cfg", shape(1, 300, 16, 1, 64, 64, true, 33), small},
      {"T<l B=2 T=20", shape(2, 20, 4, 1, 64, 64, false, 34), def},
      {"varlen G=4 shared small-cfg", shape(1, 0, 4, 1, 128, 64, true, 35, {300, 5, 9, 500, 17}), small},
      {"G=3 small-cfg 64/32", shape(1, 333, 6, 2, 64, 32, false, 36), small},
      {"G=2 linear small-cfg 64/64", shape(2, 200, 4, 2, 64, 64, false, 37), small_lin},
      {"G=2 T=500 linear 64/64", shape(1, 500, 2, 1, 64, 64, false, 38), lin},
      {"G=80 mean 16/16 shared", shape(1, 150, 80, 1, 16, 16, true, 39), mean},
      {"G=20 small-cfg 32/256", shape(1, 200, 20, 1, 32, 256, false, 40), small},
  };
  if (quick) cases.resize(5);
  // Any exception (a CUDA fault surfaces as nsa::Error from the next CUDA call) fails the
  // case, not the run.
  auto guarded = [](const std::string& what, auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      report(false, what, std::string("threw: ") + e.what());
    }
  };
  for (std::size_t i = 0; i < cases.size(); ++i)
    guarded("bwd/f32 " + cases[i].name,
            [&] { check_nsa_backward<float>(cases[i].name, cases[i].shape, cases[i].opts, i == 2); });
  for (std::size_t i = 0; i < cases.size(); ++i)
    guarded("bwd/bf16 " + cases[i].name,
            [&] { check_nsa_backward<ncu::bf16>(cases[i].name, cases[i].shape, cases[i].opts, i == 4); });
  for (std::size_t i : {std::size_t(2), std::size_t(4), std::size_t(7)})
    if (i < cases.size())
      guarded("bwd/f16 " + cases[i].name,
              [&] { check_nsa_backward<ncu::f16>(cases[i].name, cases[i].shape, cases[i].opts, false); });

  const std::vector<std::pair<std::string, ProblemShape>> dense = {
      {"G=1 T=500", shape(1, 500, 2, 2, 128, 128, false, 41)},
      {"G=4 T=300 B=2", shape(2, 300, 8, 2, 192, 128, false, 42)},
      {"G=16 T=400", shape(1, 400, 16, 1, 64, 64, false, 43)},
      {"varlen G=4", shape(1, 0, 4, 1, 64, 64, false, 44, {200, 1, 317})},
      {"G=2 256/256", shape(1, 200, 2, 1, 256, 256, false, 45)},
  };
  for (const auto& [n, s] : dense) guarded("bwd/dense/f32 " + n, [&] { check_dense_backward<float>(n, s); });
  for (const auto& [n, s] : dense) guarded("bwd/dense/bf16 " + n, [&] { check_dense_backward<ncu::bf16>(n, s); });
  guarded("bwd/dense/f16 " + dense[1].first, [&] { check_dense_backward<ncu::f16>(dense[1].first, dense[1].second); });
  guarded("bwd/errors", [] { check_backward_errors(); });
}
