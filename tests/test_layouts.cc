// Memory layouts: head-major tensors ([B, H, T, d] memory, FLA's head_first) viewed as
// [B, T, H, d] through their strides give exactly the results of contiguous tensors.
#include <gtest/gtest.h>

#include "nsa/backward.h"
#include "nsa/thread_pool.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using testing::ProblemShape;
using testing::RandomNsaProblem;

// Copies a contiguous [B, T, H, d] tensor into head-major memory and returns a view of it.
template <class T>
TensorView<T> head_major_copy(const TensorView<const T>& x, std::vector<T>& storage) {
  const index_t B = x.batch(), Tn = x.tokens(), H = x.heads(), d = x.dim();
  storage.resize(static_cast<size_t>(B * H * Tn * d));
  TensorView<T> v{storage.data(), x.shape, {H * Tn * d, d, Tn * d}};  // strides: batch, token, head
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Tn; ++t)
      for (index_t h = 0; h < H; ++h)
        for (index_t c = 0; c < d; ++c) v.at(b, t, h, c) = x.at(b, t, h, c);
  return v;
}

TEST(Layouts, HeadMajorViewsGiveTheSameForwardAndBackward) {
  ConfigOptions o;
  o.block_len = 8, o.stride = 4, o.sel_block = 16, o.top_n = 4, o.window = 32;
  const Config config(o);
  RandomNsaProblem prob(config, {.batch = 2, .tokens = 90, .heads = 6, .kv_heads = 2, .d_k = 16, .d_v = 8});
  const auto& s = prob.shape();
  ThreadPool pool(2);

  // Contiguous run.
  const NsaInputs<float> in = prob.inputs32();
  std::vector<float> out_c;
  NsaSaved<float> saved_c;
  nsa_forward(config, in, prob.out_view(out_c), &saved_c, pool);

  // The same tensors in head-major memory.
  std::vector<float> mem[9];
  NsaInputs<float> hm = in;
  TensorView<const float>* views[8] = {&hm.q, &hm.k_cmp, &hm.v_cmp, &hm.k_slc, &hm.v_slc, &hm.k_win, &hm.v_win, &hm.gates};
  for (int i = 0; i < 8; ++i) *views[i] = head_major_copy(*views[i], mem[i]).as_const();
  std::vector<float> out_c_copy = out_c;
  TensorView<float> out_hm = head_major_copy(prob.out_view(out_c).as_const(), mem[8]);
  out_c = out_c_copy;
  NsaSaved<float> saved_hm;
  nsa_forward(config, hm, out_hm, &saved_hm, pool);
  const TensorView<const float> out_view_c = contiguous_view<const float>(out_c.data(), s.batch, s.tokens, s.heads, s.d_v);
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t t = 0; t < s.tokens; ++t)
      for (index_t h = 0; h < s.heads; ++h)
        for (index_t c = 0; c < s.d_v; ++c)
          ASSERT_EQ(out_hm.at(b, t, h, c), out_view_c.at(b, t, h, c)) << b << "," << t << "," << h << "," << c;
  EXPECT_EQ(saved_hm.sel_blocks, saved_c.sel_blocks);

  // Backward with head-major d_out gives the same dq.
  std::vector<float> d_out(out_c.size(), 0.5f), dq_c(s.batch * s.tokens * s.heads * s.d_k),
      dq_hm(dq_c.size()), dk[6], dv[6], dg(s.batch * s.tokens * s.heads * 3), dg2(dg.size());
  for (size_t i = 0; i < d_out.size(); ++i) d_out[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  for (auto& x : dk) x.resize(s.batch * s.tokens * s.kv_heads * s.d_k);
  for (auto& x : dv) x.resize(s.batch * s.tokens * s.kv_heads * s.d_v);
  const auto& w = prob.buffers32();
  std::vector<float> pk[2][6], pv[2][6];
  auto phi_grads = [&](std::vector<float>* g, const testing::PhiBuffers<float>& p) {
    const std::vector<float>* src[6] = {&p.pe, &p.w1, &p.b1, &p.w2, &p.b2, &p.w};
    for (int i = 0; i < 6; ++i) g[i].resize(src[i]->size());
    return PhiGradients<float>{g[0].data(), g[1].data(), g[2].data(), g[3].data(), g[4].data(), g[5].data()};
  };
  auto grads = [&](std::vector<float>& dq, std::vector<float>& dgates, int k, int run) {
    NsaGradients<float> g;
    g.dq = contiguous_view(dq.data(), s.batch, s.tokens, s.heads, s.d_k);
    g.dgates = contiguous_view(dgates.data(), s.batch, s.tokens, s.heads, 3);
    TensorView<float>* kv[6] = {&g.dk_cmp, &g.dv_cmp, &g.dk_slc, &g.dv_slc, &g.dk_win, &g.dv_win};
    for (int i = 0; i < 3; ++i) {
      *kv[2 * i] = contiguous_view(dk[k + i].data(), s.batch, s.tokens, s.kv_heads, s.d_k);
      *kv[2 * i + 1] = contiguous_view(dv[k + i].data(), s.batch, s.tokens, s.kv_heads, s.d_v);
    }
    g.phi_k = phi_grads(pk[run], w.phi_k);
    g.phi_v = phi_grads(pv[run], w.phi_v);
    return g;
  };
  nsa_backward(config, in, saved_c, contiguous_view<const float>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v),
               grads(dq_c, dg, 0, 0), pool);
  std::vector<float> d_out_hm_mem;
  const auto d_out_hm = head_major_copy(contiguous_view<const float>(d_out.data(), s.batch, s.tokens, s.heads, s.d_v), d_out_hm_mem);
  nsa_backward(config, hm, saved_hm, d_out_hm.as_const(), grads(dq_hm, dg2, 3, 1), pool);
  EXPECT_EQ(dq_c, dq_hm);
  EXPECT_EQ(dg, dg2);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(dk[i], dk[3 + i]) << "branch " << i;
  for (int i = 0; i < 6; ++i) EXPECT_EQ(pk[0][i], pk[1][i]) << "phi_k param " << i;
}

}  // namespace
}  // namespace nsa
