// Uses the installed nsa library through its public headers only: one NSA forward and one
// dense forward on a small random problem (fp32 CPU kernels), checked to be finite and not
// all zero. Exit status 0 on success.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <nsa/nsa.h>

namespace {

// Deterministic values in [-scale, scale) (no dependency on <random>'s distributions).
std::vector<float> values(std::size_t n, std::uint64_t seed, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    x = scale * (static_cast<float>(seed >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f);
  }
  return v;
}

bool finite_and_nonzero(const std::vector<float>& v, const char* name) {
  double norm = 0.0;
  for (float x : v) {
    if (!std::isfinite(x)) {
      std::printf("FAIL: %s holds a non-finite value\n", name);
      return false;
    }
    norm += static_cast<double>(x) * x;
  }
  if (norm == 0.0) {
    std::printf("FAIL: %s is all zeros\n", name);
    return false;
  }
  std::printf("%s: %zu values, finite, norm %.4f\n", name, v.size(), std::sqrt(norm));
  return true;
}

}  // namespace

int main() {
  // l=8, d=4, l'=16, n=4 (1 initial + 2 local forced), window 32, mlp phi.
  nsa::ConfigOptions options;
  options.block_len = 8;
  options.stride = 4;
  options.sel_block = 16;
  options.top_n = 4;
  options.window = 32;
  const nsa::Config config(options);

  const nsa::index_t B = 1, T = 100, H = 4, H_kv = 2, d_k = 32, d_v = 16, l = config.block_len();
  auto q = values(B * T * H * d_k, 1, 1.0f);
  auto k = values(B * T * H_kv * d_k, 2, 1.0f);  // shared K/V for all three branches
  auto v = values(B * T * H_kv * d_v, 3, 1.0f);
  auto gates = values(B * T * H * 3, 4, 0.4f);
  for (auto& g : gates) g += 0.5f;  // in [0.1, 0.9]

  // phi parameters (mlp, hidden = head dim), shared by all key/value heads.
  struct Phi {
    std::vector<float> pe, w1, b1, w2, b2;
  };
  auto make_phi = [&](nsa::index_t dim, std::uint64_t seed) {
    const float s = 1.0f / std::sqrt(static_cast<float>(l * dim));
    return Phi{values(l * dim, seed, 0.5f), values(dim * l * dim, seed + 1, s), values(dim, seed + 2, 0.1f),
               values(dim * dim, seed + 3, 1.0f / std::sqrt(static_cast<float>(dim))),
               values(dim, seed + 4, 0.1f)};
  };
  const Phi phi_k = make_phi(d_k, 10), phi_v = make_phi(d_v, 20);

  nsa::NsaInputs<float> in;
  in.q = nsa::contiguous_view<const float>(q.data(), B, T, H, d_k);
  in.k_cmp = in.k_slc = in.k_win = nsa::contiguous_view<const float>(k.data(), B, T, H_kv, d_k);
  in.v_cmp = in.v_slc = in.v_win = nsa::contiguous_view<const float>(v.data(), B, T, H_kv, d_v);
  in.gates = nsa::contiguous_view<const float>(gates.data(), B, T, H, 3);
  in.phi_k = {phi_k.pe.data(), phi_k.w1.data(), phi_k.b1.data(), phi_k.w2.data(), phi_k.b2.data(), nullptr};
  in.phi_v = {phi_v.pe.data(), phi_v.w1.data(), phi_v.b1.data(), phi_v.w2.data(), phi_v.b2.data(), nullptr};

  std::vector<float> out(B * T * H * d_v), dense_out(B * T * H * d_v);
  nsa::ThreadPool pool(2);
  try {
    nsa::NsaSaved<float> saved;
    nsa::nsa_forward(config, in, nsa::contiguous_view(out.data(), B, T, H, d_v), &saved, pool);
    nsa::DenseInputs<float> dense{in.q, in.k_slc, in.v_slc, {}, 0.0};
    nsa::dense_forward(dense, nsa::contiguous_view(dense_out.data(), B, T, H, d_v), nullptr, pool);
  } catch (const nsa::Error& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("nsa %s installed: %s\n", nsa::kVersion, config.describe().c_str());
  const bool ok = finite_and_nonzero(out, "nsa_forward out") && finite_and_nonzero(dense_out, "dense_forward out");
  std::printf("%s\n", ok ? "install check OK" : "install check FAILED");
  return ok ? 0 : 1;
}
