// Bad input to the decode cache: each call throws nsa::Error with a message naming the
// problem, before anything is changed.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "test_cpu_util.h"
#include "test_decode_util.h"

namespace nsa {
namespace {

using decode_test::StepBatch;

#define EXPECT_NSA_ERROR(stmt, text)                                                        \
  do {                                                                                      \
    try {                                                                                   \
      stmt;                                                                                 \
      ADD_FAILURE() << #stmt " did not throw";                                              \
    } catch (const ::nsa::Error& e) {                                                       \
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what(); \
    }                                                                                       \
  } while (0)

using cpu_test::small_options;

struct Fixture {
  Config config{small_options()};
  testing::RandomNsaProblem weights;
  DecodeShape shape;
  Fixture(bool shared = false, index_t max_tokens = 0)
      : weights(config, problem_shape()), shape{4, 2, 16, 8, shared, 2, max_tokens} {}
  static testing::ProblemShape problem_shape() {
    testing::ProblemShape p;
    p.heads = 4;
    p.kv_heads = 2;
    p.d_k = 16;
    p.d_v = 8;
    p.tokens = 1;
    return p;
  }
  PhiWeights<float> phi_k() { return weights.buffers32().phi_k.weights(); }
  PhiWeights<float> phi_v() { return weights.buffers32().phi_v.weights(); }
  DecodeCache make() { return DecodeCache(config, shape, phi_k(), phi_v()); }
};

TEST(DecodeErrors, InvalidShapesAndWeights) {
  Fixture f;
  DecodeShape s = f.shape;
  s.heads = 3;
  EXPECT_NSA_ERROR(DecodeCache(f.config, s, f.phi_k(), f.phi_v()), "multiple of key/value heads");
  s = f.shape;
  s.d_k = 0;
  EXPECT_NSA_ERROR(DecodeCache(f.config, s, f.phi_k(), f.phi_v()), "must be positive");
  s = f.shape;
  s.max_seqs = 0;
  EXPECT_NSA_ERROR(DecodeCache(f.config, s, f.phi_k(), f.phi_v()), "max_seqs");
  s = f.shape;
  s.chunk_tokens = 24;
  EXPECT_NSA_ERROR(DecodeCache(f.config, s, f.phi_k(), f.phi_v()), "chunk_tokens");
  PhiWeights<float> missing = f.phi_k();
  missing.w1 = nullptr;
  EXPECT_NSA_ERROR(DecodeCache(f.config, f.shape, missing, f.phi_v()), "phi_k.w1 is null");
  f.weights.buffers32().phi_v.b2[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NSA_ERROR(DecodeCache(f.config, f.shape, f.phi_k(), f.phi_v()), "phi_v.b2: non-finite");
}

TEST(DecodeErrors, BadStepsLeaveTheCacheUnchanged) {
  Fixture f(/*shared=*/false, /*max_tokens=*/40);
  DecodeCache cache = f.make();
  ThreadPool pool(1);
  std::mt19937_64 rng(1);
  StepBatch batch(4, 2, 16, 8, false);
  batch.add_random(rng, 0);
  batch.add_random(rng, 1);
  batch.step(cache, pool);  // a good step
  ASSERT_EQ(cache.position(0), 1);

  // Unknown and repeated sequence ids.
  batch.ids[1] = 2;
  EXPECT_NSA_ERROR(batch.step(cache, pool), "unknown sequence id 2");
  batch.ids[1] = -1;
  EXPECT_NSA_ERROR(batch.step(cache, pool), "unknown sequence id -1");
  batch.ids[1] = 0;
  EXPECT_NSA_ERROR(batch.step(cache, pool), "listed twice");
  batch.ids[1] = 1;
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 0, batch.tokens(), batch.out_view(), pool), "must be positive");
  EXPECT_NSA_ERROR(cache.position(7), "unknown sequence id 7");
  EXPECT_NSA_ERROR(cache.reset(2), "unknown sequence id");
  EXPECT_NSA_ERROR(cache.tokens_read(0, 2), "kv head 2 out of range");

  // Wrong shapes: a view for another batch size, head count or dim.
  DecodeTokens x = batch.tokens();
  x.q.shape[2] = 2;
  x.q.stride[1] = 2 * 16;
  x.q.stride[0] = 2 * 16;
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 2, x, batch.out_view(), pool), "q: expected shape [2,1,4,16]");
  x = batch.tokens();
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 1, x, batch.out_view(), pool), "expected shape [1,1,");
  x.v_win = {};
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 2, x, batch.out_view(), pool),
                   "v_win is empty but this cache keeps independent K/V");
  std::vector<float> small_out(2 * 4 * 4);
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 2, batch.tokens(), contiguous_view(small_out.data(), 2, 1, 4, 4), pool),
                   "out: expected shape [2,1,4,8]");

  // NaN / Inf in any input.
  batch.q[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NSA_ERROR(batch.step(cache, pool), "q: non-finite value");
  batch.q[5] = 0.5f;
  batch.k[1][3] = std::numeric_limits<float>::infinity();
  EXPECT_NSA_ERROR(batch.step(cache, pool), "k_slc: non-finite value");
  batch.k[1][3] = 0.5f;
  batch.gates[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NSA_ERROR(batch.step(cache, pool), "gates: non-finite value");
  batch.gates[2] = 0.5f;

  // Nothing above changed the cache.
  EXPECT_EQ(cache.position(0), 1);
  EXPECT_EQ(cache.position(1), 1);

  // A full sequence: max_tokens = 40.
  for (int i = 1; i < 40; ++i) {
    batch.clear();
    batch.add_random(rng, 0);
    batch.step(cache, pool);
  }
  EXPECT_EQ(cache.position(0), 40);
  batch.clear();
  batch.add_random(rng, 1);
  batch.add_random(rng, 0);
  EXPECT_NSA_ERROR(batch.step(cache, pool), "sequence 0 is full");
  EXPECT_EQ(cache.position(1), 1) << "a step that fails for one sequence changes none";
  // reset frees it.
  cache.reset(0);
  EXPECT_EQ(cache.position(0), 0);
  batch.step(cache, pool);
  EXPECT_EQ(cache.position(0), 1);
  EXPECT_EQ(cache.position(1), 2);
}

TEST(DecodeErrors, SharedCacheRejectsDistinctBranchViews) {
  Fixture f(/*shared=*/true);
  DecodeCache cache = f.make();
  ThreadPool pool(1);
  std::mt19937_64 rng(1);
  StepBatch batch(4, 2, 16, 8, true);
  batch.add_random(rng, 0);
  DecodeTokens x = batch.tokens();
  std::vector<float> other(x.k_cmp.shape[2] * 16, 0.25f);
  x.k_slc = contiguous_view(other.data(), 1, 1, 2, 16).as_const();
  EXPECT_NSA_ERROR(cache.step(batch.ids.data(), 1, x, batch.out_view(), pool),
                   "k_slc must be left empty or be the same view as k_cmp");
  x.k_slc = x.k_cmp;  // the same view is fine
  x.v_win = x.v_cmp;
  cache.step(batch.ids.data(), 1, x, batch.out_view(), pool);
  EXPECT_EQ(cache.position(0), 1);
}

TEST(DecodeErrors, BadPrompts) {
  Fixture f(/*shared=*/false, /*max_tokens=*/10);
  DecodeCache cache = f.make();
  ThreadPool pool(1);
  std::mt19937_64 rng(1);
  // 12 tokens for a sequence of at most 10.
  StepBatch rows(4, 2, 16, 8, false);
  for (int i = 0; i < 12; ++i) rows.add_random(rng, 0);
  auto as_prompt = [](TensorView<const float> v) {  // [12,1,h,d] -> [1,12,h,d]
    return contiguous_view(v.data, 1, v.shape[0], v.shape[2], v.shape[3]);
  };
  DecodeTokens x = rows.tokens();
  for (auto* v : {&x.q, &x.k_cmp, &x.v_cmp, &x.k_slc, &x.v_slc, &x.k_win, &x.v_win, &x.gates}) *v = as_prompt(*v);
  std::vector<float> out(12 * 4 * 8);
  EXPECT_NSA_ERROR(cache.prefill(0, x, contiguous_view(out.data(), 1, 12, 4, 8), pool),
                   "would exceed max_tokens = 10");
  EXPECT_NSA_ERROR(cache.append(1, x, pool), "would exceed max_tokens = 10");
  EXPECT_NSA_ERROR(cache.prefill(0, x, contiguous_view(out.data(), 1, 11, 4, 8), pool), "out: expected shape");
  EXPECT_NSA_ERROR(cache.prefill(5, x, contiguous_view(out.data(), 1, 12, 4, 8), pool), "unknown sequence id 5");
  rows.v[0][17] = std::numeric_limits<float>::quiet_NaN();
  x.v_cmp.shape[1] = 9;  // 9 tokens fit, but hold a NaN
  for (auto* v : {&x.q, &x.k_cmp, &x.k_slc, &x.v_slc, &x.k_win, &x.v_win, &x.gates}) v->shape[1] = 9;
  EXPECT_NSA_ERROR(cache.prefill(0, x, contiguous_view(out.data(), 1, 9, 4, 8), pool), "v_cmp: non-finite");
  EXPECT_EQ(cache.position(0), 0);
  EXPECT_EQ(cache.position(1), 0);
}

}  // namespace
}  // namespace nsa
