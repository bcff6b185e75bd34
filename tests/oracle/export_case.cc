// nsa_oracle_export: writes random NSA problems, and the float64 reference's forward output,
// selection and gradients for them, to a folder, for the independent autograd oracle
// (nsa_torch_oracle.py) to recompute and compare. Nothing of the C++ implementation is
// imported by the oracle: only these numbers cross.
//
// Usage: nsa_oracle_export OUT_DIR
// Writes OUT_DIR/<case>/case.json and one <tensor>.bin per tensor (float64 or int64,
// little-endian, C order; shapes in case.json).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nsa/backward.h"
#include "nsa/error.h"
#include "reference/reference.h"
#include "testing/random_problem.h"

namespace {

using nsa::index_t;
namespace fs = std::filesystem;

struct Case {
  std::string name;
  nsa::ConfigOptions options;
  nsa::testing::ProblemShape shape;
};

class CaseWriter {
 public:
  explicit CaseWriter(fs::path dir) : dir_(std::move(dir)) { fs::create_directories(dir_); }

  template <class T>
  void tensor(const std::string& name, const T* data, std::vector<index_t> shape) {
    size_t n = 1;
    for (auto s : shape) n *= static_cast<size_t>(s);
    std::ofstream f(dir_ / (name + ".bin"), std::ios::binary);
    if constexpr (std::is_floating_point_v<T>) {
      f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * sizeof(double)));
    } else {
      std::vector<std::int64_t> wide(data, data + n);
      f.write(reinterpret_cast<const char*>(wide.data()), static_cast<std::streamsize>(n * 8));
    }
    if (!f) throw nsa::Error("cannot write " + (dir_ / (name + ".bin")).string());
    std::ostringstream s;
    s << "\"" << name << "\": {\"dtype\": \"" << (std::is_floating_point_v<T> ? "float64" : "int64")
      << "\", \"shape\": [";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << "]}";
    entries_.push_back(s.str());
  }

  void finish(const std::string& meta) {
    std::ofstream f(dir_ / "case.json");
    f << "{\n" << meta << ",\n\"tensors\": {\n";
    for (size_t i = 0; i < entries_.size(); ++i) f << "  " << entries_[i] << (i + 1 < entries_.size() ? ",\n" : "\n");
    f << "}}\n";
  }

 private:
  fs::path dir_;
  std::vector<std::string> entries_;
};

void export_case(const Case& c, const fs::path& root) {
  const nsa::Config config(c.options);
  nsa::testing::RandomNsaProblem prob(config, c.shape);
  const auto& s = prob.shape();
  const auto in = prob.inputs64();
  const index_t B = s.batch, T = s.tokens, H = s.heads, Hk = s.kv_heads;

  std::vector<double> out;
  nsa::NsaSaved<double> saved;
  nsa::reference::nsa_forward(config, in, prob.out_view(out), &saved);

  std::mt19937_64 rng(s.seed + 1);
  std::normal_distribution<double> normal;
  std::vector<double> d_out(out.size());
  for (auto& x : d_out) x = normal(rng);

  // Gradient buffers; with shared K/V the three branches write one buffer (their sum).
  std::vector<double> dq(B * T * H * s.d_k), dgates(B * T * H * 3);
  std::vector<double> dk[3], dv[3];
  for (int b = 0; b < 3; ++b) dk[b].resize(B * T * Hk * s.d_k), dv[b].resize(B * T * Hk * s.d_v);
  auto view = [&](std::vector<double>& v, index_t heads, index_t dim) {
    return nsa::contiguous_view(v.data(), B, T, heads, dim);
  };
  nsa::NsaGradients<double> g;
  g.dq = view(dq, H, s.d_k);
  g.dgates = view(dgates, H, 3);
  const int kb[3] = {0, s.shared_kv ? 0 : 1, s.shared_kv ? 0 : 2};
  g.dk_cmp = view(dk[kb[0]], Hk, s.d_k), g.dv_cmp = view(dv[kb[0]], Hk, s.d_v);
  g.dk_slc = view(dk[kb[1]], Hk, s.d_k), g.dv_slc = view(dv[kb[1]], Hk, s.d_v);
  g.dk_win = view(dk[kb[2]], Hk, s.d_k), g.dv_win = view(dv[kb[2]], Hk, s.d_v);
  const auto& w64 = prob.buffers64();
  const std::vector<double>* wk[6] = {&w64.phi_k.pe, &w64.phi_k.w1, &w64.phi_k.b1, &w64.phi_k.w2, &w64.phi_k.b2, &w64.phi_k.w};
  const std::vector<double>* wv[6] = {&w64.phi_v.pe, &w64.phi_v.w1, &w64.phi_v.b1, &w64.phi_v.w2, &w64.phi_v.b2, &w64.phi_v.w};
  std::vector<double> gk[6], gv[6];
  for (int i = 0; i < 6; ++i) gk[i].assign(wk[i]->size(), 0.0), gv[i].assign(wv[i]->size(), 0.0);
  g.phi_k = {gk[0].data(), gk[1].data(), gk[2].data(), gk[3].data(), gk[4].data(), gk[5].data()};
  g.phi_v = {gv[0].data(), gv[1].data(), gv[2].data(), gv[3].data(), gv[4].data(), gv[5].data()};
  nsa::reference::nsa_backward(config, in, saved,
                               nsa::contiguous_view<const double>(d_out.data(), B, T, H, s.d_v), g);

  CaseWriter w(root / c.name);
  const auto& b = prob.buffers64();
  w.tensor("q", b.q.data(), {B, T, H, s.d_k});
  w.tensor("k_cmp", b.k_cmp.data(), {B, T, Hk, s.d_k});
  w.tensor("v_cmp", b.v_cmp.data(), {B, T, Hk, s.d_v});
  if (!s.shared_kv) {
    w.tensor("k_slc", b.k_slc.data(), {B, T, Hk, s.d_k});
    w.tensor("v_slc", b.v_slc.data(), {B, T, Hk, s.d_v});
    w.tensor("k_win", b.k_win.data(), {B, T, Hk, s.d_k});
    w.tensor("v_win", b.v_win.data(), {B, T, Hk, s.d_v});
  }
  w.tensor("gates", b.gates.data(), {B, T, H, 3});
  const char* names[6] = {"pe", "w1", "b1", "w2", "b2", "w"};
  const index_t l = config.block_len();
  for (int side = 0; side < 2; ++side) {
    const index_t dim = side == 0 ? s.d_k : s.d_v, hidden = config.phi_hidden_for(dim);
    const std::vector<index_t> shapes[6] = {{l, dim}, {hidden, l * dim}, {hidden}, {dim, hidden}, {dim}, {dim, l * dim}};
    const auto& src = side == 0 ? wk : wv;
    const auto& grad = side == 0 ? gk : gv;
    const std::string prefix = side == 0 ? "phi_k." : "phi_v.";
    for (int i = 0; i < 6; ++i) {
      const bool used = config.phi() == nsa::PhiKind::mlp ? i < 5 : config.phi() == nsa::PhiKind::linear ? (i == 0 || i == 5) : false;
      if (!used) continue;
      w.tensor(prefix + names[i], src[i]->data(), shapes[i]);
      w.tensor("grad." + prefix + names[i], grad[i].data(), shapes[i]);
    }
  }
  w.tensor("d_out", d_out.data(), {B, T, H, s.d_v});
  w.tensor("ref.out", out.data(), {B, T, H, s.d_v});
  w.tensor("ref.sel_blocks", saved.sel_blocks.data(), {B, T, Hk, config.top_n()});
  w.tensor("grad.q", dq.data(), {B, T, H, s.d_k});
  w.tensor("grad.gates", dgates.data(), {B, T, H, 3});
  const char* branch[3] = {"cmp", "slc", "win"};
  for (int br = 0; br < (s.shared_kv ? 1 : 3); ++br) {
    w.tensor(std::string("grad.k_") + branch[br], dk[br].data(), {B, T, Hk, s.d_k});
    w.tensor(std::string("grad.v_") + branch[br], dv[br].data(), {B, T, Hk, s.d_v});
  }
  std::vector<std::int64_t> cu{0};
  for (auto n : s.seqlens) cu.push_back(cu.back() + n);
  if (!s.seqlens.empty()) w.tensor("cu_seqlens", cu.data(), {static_cast<index_t>(cu.size())});

  std::ostringstream meta;
  meta.precision(17);
  const auto& o = c.options;
  meta << "\"name\": \"" << c.name << "\", \"block_len\": " << o.block_len << ", \"stride\": " << o.stride
       << ", \"sel_block\": " << o.sel_block << ", \"top_n\": " << o.top_n << ", \"n_init\": " << o.n_init
       << ", \"n_local\": " << o.n_local << ", \"window\": " << o.window << ", \"phi\": \""
       << nsa::phi_kind_name(o.phi) << "\", \"scale\": " << config.scale_for(s.d_k)
       << ", \"shared_kv\": " << (s.shared_kv ? "true" : "false");
  w.finish(meta.str());
  std::printf("exported %s (%s, %s)\n", c.name.c_str(), config.describe().c_str(), s.describe().c_str());
}

nsa::ConfigOptions small(nsa::PhiKind phi, int top_n = 4, int window = 32) {
  nsa::ConfigOptions o;
  o.block_len = 8, o.stride = 4, o.sel_block = 16, o.top_n = top_n, o.window = window, o.phi = phi;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    nsa::ConfigOptions paper;  // l=32, d=16, l'=64 with a small n and window
    paper.top_n = 4;
    paper.window = 100;
    nsa::testing::ProblemShape packed{.heads = 4, .kv_heads = 2, .d_k = 8, .d_v = 4, .seed = 5};
    packed.seqlens = {70, 0, 5, 123};
    nsa::testing::ProblemShape shared{.batch = 2, .tokens = 90, .heads = 2, .kv_heads = 2, .d_k = 6, .d_v = 6, .seed = 4};
    shared.shared_kv = true;
    const std::vector<Case> cases = {
        {"mlp_g3_dk8_dv6", small(nsa::PhiKind::mlp), {.tokens = 100, .heads = 3, .kv_heads = 1, .d_k = 8, .d_v = 6, .seed = 1}},
        {"linear_g1_shared_b2", small(nsa::PhiKind::linear, 3, 24), shared},
        {"mean_varlen", small(nsa::PhiKind::mean), packed},
        {"mlp_paper_blocks_t300", paper, {.tokens = 300, .heads = 4, .kv_heads = 1, .d_k = 8, .d_v = 4, .seed = 3}},
    };
    for (const auto& c : cases) export_case(c, argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
