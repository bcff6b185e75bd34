// The decode cache's pages (decode/page_pool.h; DecodeCache::fork, truncate,
// DecodeShape::max_pages): a forked sequence shares its source's chunks until either writes
// into one (copy on write) and then decodes exactly as an unshared copy would; truncate
// rolls a sequence back so that decoding continues as if the dropped tokens never came;
// the memory budget refuses a call that would exceed it, naming the budget, and leaves
// everything as it was; save/load of forked sequences; bad arguments.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "nsa/decode.h"
#include "nsa/nsa.h"
#include "test_cpu_util.h"
#include "test_decode_util.h"
#include "testing/random_problem.h"

namespace nsa {
namespace {

using cpu_test::small_options;
using decode_test::StepBatch;
using testing::ProblemShape;
using testing::RandomNsaProblem;

constexpr index_t kH = 4, kHkv = 2, kD = 16, kChunk = 32;  // chunks of 32 tokens (2 selection blocks)

struct Fixture {
  Config config{small_options()};
  RandomNsaProblem a, b;  // two token streams of 100 tokens; one phi (a's)
  Fixture() : a(config, shape(11)), b(config, shape(12)) {}

  static ProblemShape shape(std::uint64_t seed) {
    ProblemShape s;
    s.heads = kH;
    s.kv_heads = kHkv;
    s.d_k = s.d_v = kD;
    s.shared_kv = false;
    s.seqlens = {100};
    s.seed = seed;
    return s;
  }
  DecodeCache cache(index_t max_seqs, index_t max_pages = 0) const {
    DecodeShape ds{kH, kHkv, kD, kD, false, max_seqs};
    ds.chunk_tokens = kChunk;
    ds.max_pages = max_pages;
    const auto& f = const_cast<RandomNsaProblem&>(a).buffers32();
    return DecodeCache(config, ds, f.phi_k.weights(), f.phi_v.weights());
  }
  // Prefills tokens [0, n) of `prob` into seq.
  void prefill(DecodeCache& c, index_t seq, const RandomNsaProblem& prob, index_t n, ThreadPool& pool) const {
    std::vector<float> out(static_cast<size_t>(n * kH * kD));
    c.prefill(seq, decode_test::prompt_tokens(prob, 0, n), contiguous_view(out.data(), 1, n, kH, kD), pool);
  }
  // Steps the sequences ids[i] with token row rows[i] of probs[i]; returns the outputs.
  std::vector<float> step(DecodeCache& c, const std::vector<index_t>& ids,
                          const std::vector<const RandomNsaProblem*>& probs, index_t row, ThreadPool& pool) const {
    StepBatch batch(kH, kHkv, kD, kD, false);
    for (size_t i = 0; i < ids.size(); ++i) batch.add(*probs[i], ids[i], row);
    batch.step(c, pool);
    return batch.out;
  }
};

TEST(DecodePages, ForkSharesChunksThenDecodesLikeAnUnsharedCopy) {
  const Fixture f;
  ThreadPool pool(2);
  DecodeCache forked = f.cache(2), plain = f.cache(2);
  f.prefill(forked, 0, f.a, 40, pool);
  forked.fork(0, 1);
  EXPECT_EQ(forked.position(1), 40);
  EXPECT_EQ(forked.num_cmp_blocks(1), forked.num_cmp_blocks(0));
  EXPECT_EQ(forked.selected_blocks(1, 1), forked.selected_blocks(0, 1));
  EXPECT_EQ(forked.memory().chunks, 2);  // 40 tokens: 2 chunks, held by both sequences
  EXPECT_EQ(forked.memory().shared_chunks, 2);
  f.prefill(plain, 0, f.a, 40, pool);
  f.prefill(plain, 1, f.a, 40, pool);
  EXPECT_EQ(plain.memory().chunks, 4);
  // The two sequences diverge: seq 0 continues with a's tokens, seq 1 with b's.
  for (index_t t = 40; t < 100; ++t) {
    const auto x = f.step(forked, {0, 1}, {&f.a, &f.b}, t, pool);
    const auto y = f.step(plain, {0, 1}, {&f.a, &f.b}, t, pool);
    ASSERT_EQ(x, y) << "t=" << t;  // bitwise: the same computation on the same values
  }
  // Chunk 0 (tokens 0..31, compressed blocks 0..7) was never written again: still shared.
  // Chunk 1 (the compressed block 9 of the first step lives there) was copied on write.
  EXPECT_EQ(forked.memory().shared_chunks, 1);
  EXPECT_EQ(forked.memory().chunks, 2 * 4 - 1);  // 100 tokens: 4 chunks each, one shared
  EXPECT_EQ(plain.memory().chunks, 8);
  // Resetting the source leaves the fork intact.
  forked.reset(0);
  plain.reset(0);
  EXPECT_EQ(forked.memory().shared_chunks, 0);
  EXPECT_EQ(forked.memory().chunks, 4);
  EXPECT_EQ(f.step(forked, {1}, {&f.b}, 99, pool), f.step(plain, {1}, {&f.b}, 99, pool));
}

TEST(DecodePages, TruncateRollsBackAsIfTheTokensNeverCame) {
  const Fixture f;
  ThreadPool pool(2);
  for (const index_t keep : {60, 57, 33, 32, 5, 0}) {  // chunk and block boundaries, and not
    DecodeCache c = f.cache(1), fresh = f.cache(1);
    f.prefill(c, 0, f.a, 70, pool);
    for (index_t t = 70; t < 80; ++t) f.step(c, {0}, {&f.b}, t, pool);  // tokens to be rejected
    c.truncate(0, keep);
    EXPECT_EQ(c.position(0), keep);
    EXPECT_EQ(c.num_cmp_blocks(0), f.config.num_cmp_blocks(keep));
    EXPECT_EQ(c.memory().chunks, (keep + kChunk - 1) / kChunk);
    if (keep > 0) f.prefill(fresh, 0, f.a, keep, pool);
    for (index_t t = keep; t < keep + 20; ++t)
      ASSERT_EQ(f.step(c, {0}, {&f.a}, t, pool), f.step(fresh, {0}, {&f.a}, t, pool)) << "keep=" << keep << " t=" << t;
  }
  // Truncating a fork releases only its own hold on the shared chunks.
  DecodeCache c = f.cache(2);
  f.prefill(c, 0, f.a, 64, pool);
  c.fork(0, 1);
  c.truncate(1, 20);
  EXPECT_EQ(c.memory().chunks, 2);
  EXPECT_EQ(c.memory().shared_chunks, 1);
  EXPECT_EQ(c.position(0), 64);
}

TEST(DecodePages, MemoryBudgetRefusesACallAndChangesNothing) {
  const Fixture f;
  ThreadPool pool(2);
  DecodeCache c = f.cache(2, /*max_pages=*/5);
  f.prefill(c, 0, f.a, 64, pool);  // 2 chunks
  c.fork(0, 1);                    // still 2
  f.prefill(c, 1, f.b, 0, pool);   // an empty prompt needs nothing
  // A step of both: each needs a new chunk (token 64 starts chunk 2), and both write the
  // compressed block 15 into shared chunk 1: one copy (the second writer then holds the
  // original alone). 2 + 2 + 1 = 5, exactly the budget.
  f.step(c, {0, 1}, {&f.a, &f.b}, 64, pool);
  EXPECT_EQ(c.memory().chunks, 5);
  EXPECT_EQ(c.memory().shared_chunks, 1);
  EXPECT_EQ(c.memory().max_chunks, 5);
  // 32 more tokens for seq 0 (65 .. 96) would need a sixth chunk: refused, nothing changed.
  const index_t pos = c.position(0);
  ASSERT_EQ(pos, 65);
  std::vector<float> out(static_cast<size_t>(32 * kH * kD));
  try {
    c.prefill(0, decode_test::prompt_tokens(f.a, pos, 32), contiguous_view(out.data(), 1, 32, kH, kD), pool);
    ADD_FAILURE() << "a prefill past the budget was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("memory budget"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_pages = 5"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.position(0), pos);
  EXPECT_EQ(c.memory().chunks, 5);
  // A fork that would copy on write past the budget: refused too.
  DecodeCache d = f.cache(2, 2);
  f.prefill(d, 0, f.a, 40, pool);
  d.fork(0, 1);
  EXPECT_THROW(f.step(d, {0, 1}, {&f.a, &f.b}, 40, pool), Error);
  EXPECT_EQ(d.position(0), 40);
  EXPECT_EQ(d.position(1), 40);
  EXPECT_EQ(d.memory().shared_chunks, 2);
  // Releasing a sequence makes room; decoding then goes on.
  d.reset(1);
  f.step(d, {0}, {&f.a}, 40, pool);
  EXPECT_EQ(d.position(0), 41);
}

TEST(DecodePages, SaveAndLoadForkedSequences) {
  const Fixture f;
  ThreadPool pool(2);
  DecodeCache c = f.cache(2);
  f.prefill(c, 0, f.a, 50, pool);
  c.fork(0, 1);
  for (index_t t = 50; t < 60; ++t) f.step(c, {0, 1}, {&f.a, &f.b}, t, pool);
  const std::string path = ::testing::TempDir() + "/nsa_pages_cache.bin";
  c.save(path);
  DecodeCache loaded = f.cache(2);
  loaded.load(path);
  EXPECT_EQ(loaded.position(1), 60);
  EXPECT_EQ(loaded.memory().shared_chunks, 0);  // shared chunks are saved per sequence
  for (index_t t = 60; t < 70; ++t)
    ASSERT_EQ(f.step(loaded, {0, 1}, {&f.a, &f.b}, t, pool), f.step(c, {0, 1}, {&f.a, &f.b}, t, pool)) << t;
  // A budget too small for the file: refused, the cache kept.
  DecodeCache small = f.cache(2, 3);
  f.prefill(small, 0, f.b, 10, pool);
  EXPECT_THROW(small.load(path), DecodeFileError);
  EXPECT_EQ(small.position(0), 10);
}

TEST(DecodePages, BadArgumentsAreRefusedNamingThem) {
  const Fixture f;
  ThreadPool pool(1);
  DecodeCache c = f.cache(3);
  f.prefill(c, 0, f.a, 20, pool);
  f.prefill(c, 1, f.b, 5, pool);
  auto expect_error = [](auto call, const std::string& what) {
    try {
      call();
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error([&] { c.fork(0, 1); }, "destination sequence 1 holds 5 tokens; reset it first");
  expect_error([&] { c.fork(0, 0); }, "same sequence 0");
  expect_error([&] { c.fork(0, 7); }, "unknown sequence id 7");
  expect_error([&] { c.truncate(0, 21); }, "holds 20 tokens, cannot keep 21");
  expect_error([&] { c.truncate(0, -1); }, "cannot keep -1");
  DecodeShape bad{kH, kHkv, kD, kD, false, 1};
  bad.max_pages = -2;
  const auto& w = const_cast<RandomNsaProblem&>(f.a).buffers32();
  expect_error([&] { DecodeCache(f.config, bad, w.phi_k.weights(), w.phi_v.weights()); }, "max_pages must be >= 0");
  EXPECT_EQ(c.position(0), 20);
  EXPECT_EQ(c.position(1), 5);
}


// A step of k tokens per sequence (speculative decoding's draft) equals k one-token steps,
// bitwise, over two sequences of different lengths; then truncate drops the rejected ones.
TEST(DecodePages, MultiTokenStepEqualsOneTokenSteps) {
  const Fixture f;
  ThreadPool pool(2);
  DecodeCache multi = f.cache(2), single = f.cache(2);
  for (DecodeCache* c : {&multi, &single}) {
    f.prefill(*c, 0, f.a, 37, pool);
    f.prefill(*c, 1, f.b, 50, pool);
  }
  for (const index_t k : {1, 3, 8}) {
    const index_t p0 = multi.position(0), p1 = multi.position(1);
    // Batch item 0: a's tokens p0 .. p0+k-1; item 1: b's p1 .. p1+k-1; views [2, k, heads, dim].
    auto pack = [&](const std::vector<float>& xa, const std::vector<float>& xb, index_t width) {
      std::vector<float> v(xa.begin() + p0 * width, xa.begin() + (p0 + k) * width);
      v.insert(v.end(), xb.begin() + p1 * width, xb.begin() + (p1 + k) * width);
      return v;
    };
    auto& A = const_cast<RandomNsaProblem&>(f.a).buffers32();
    auto& B = const_cast<RandomNsaProblem&>(f.b).buffers32();
    const std::vector<float> q = pack(A.q, B.q, kH * kD), g = pack(A.gates, B.gates, kH * 3);
    const std::vector<float> ks[3] = {pack(A.k_cmp, B.k_cmp, kHkv * kD), pack(A.k_slc, B.k_slc, kHkv * kD),
                                      pack(A.k_win, B.k_win, kHkv * kD)};
    const std::vector<float> vs[3] = {pack(A.v_cmp, B.v_cmp, kHkv * kD), pack(A.v_slc, B.v_slc, kHkv * kD),
                                      pack(A.v_win, B.v_win, kHkv * kD)};
    DecodeTokens x;
    x.q = contiguous_view(q.data(), 2, k, kH, kD);
    x.gates = contiguous_view(g.data(), 2, k, kH, 3);
    x.k_cmp = contiguous_view(ks[0].data(), 2, k, kHkv, kD), x.v_cmp = contiguous_view(vs[0].data(), 2, k, kHkv, kD);
    x.k_slc = contiguous_view(ks[1].data(), 2, k, kHkv, kD), x.v_slc = contiguous_view(vs[1].data(), 2, k, kHkv, kD);
    x.k_win = contiguous_view(ks[2].data(), 2, k, kHkv, kD), x.v_win = contiguous_view(vs[2].data(), 2, k, kHkv, kD);
    std::vector<float> out(static_cast<size_t>(2 * k * kH * kD));
    const index_t ids[2] = {0, 1};
    multi.step(ids, 2, x, contiguous_view(out.data(), 2, k, kH, kD), pool);
    for (index_t j = 0; j < k; ++j) {
      StepBatch one(kH, kHkv, kD, kD, false);
      one.add(f.a, 0, p0 + j);
      one.add(f.b, 1, p1 + j);
      one.step(single, pool);
      for (index_t b = 0; b < 2; ++b)
        ASSERT_EQ(0, std::memcmp(out.data() + (b * k + j) * kH * kD, one.out.data() + b * kH * kD,
                                 sizeof(float) * kH * kD))
            << "k=" << k << " token " << j << " sequence " << b;
    }
    EXPECT_EQ(multi.position(0), p0 + k);
    EXPECT_EQ(multi.selected_blocks(1, 1), single.selected_blocks(1, 1));
  }
  // Reject the last 5 draft tokens of sequence 0: it continues as the unrolled cache does
  // after the same rollback.
  multi.truncate(0, multi.position(0) - 5);
  single.truncate(0, single.position(0) - 5);
  const index_t t = multi.position(0);
  EXPECT_EQ(f.step(multi, {0}, {&f.b}, t, pool), f.step(single, {0}, {&f.b}, t, pool));
}


// Chunked prefill: a prompt appended to a non-empty sequence runs as one chunk (all its
// tokens stored, then their attention in parallel over tokens and kv heads) and equals one
// token steps bitwise: every output row, the last token's selection, tokens read. With 4
// workers and one sequence of 2 kv heads each token also splits its keys in 2 (as a single
// step does), with 1 and 2 workers it does not. Chunks straddle pages (32 tokens) and
// compression blocks, and one chunk starts inside a shared (forked) page.
TEST(DecodePages, ContinuationPrefillEqualsOneTokenSteps) {
  const Fixture f;
  for (const int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    DecodeCache chunked = f.cache(2), single = f.cache(2);
    for (DecodeCache* c : {&chunked, &single}) {
      f.prefill(*c, 0, f.a, 13, pool);
      c->fork(0, 1);
    }
    index_t pos = 13;
    for (const index_t n : {2, 29, 1, 41}) {
      std::vector<float> out(static_cast<size_t>(n * kH * kD));
      chunked.prefill(1, decode_test::prompt_tokens(f.a, pos, n), contiguous_view(out.data(), 1, n, kH, kD), pool);
      for (index_t j = 0; j < n; ++j) {
        const std::vector<float> one = f.step(single, {1}, {&f.a}, pos + j, pool);
        ASSERT_EQ(0, std::memcmp(out.data() + j * kH * kD, one.data(), sizeof(float) * kH * kD))
            << threads << " threads, chunk of " << n << " at " << pos << ", token " << j;
      }
      pos += n;
      ASSERT_EQ(chunked.position(1), pos);
      for (index_t h = 0; h < kHkv; ++h) {
        EXPECT_EQ(chunked.selected_blocks(1, h), single.selected_blocks(1, h));
        EXPECT_EQ(chunked.tokens_read(1, h).total(), single.tokens_read(1, h).total());
      }
      EXPECT_EQ(chunked.total_tokens_read(), single.total_tokens_read());
    }
    // The source of the fork kept its 13 tokens and decodes as before.
    EXPECT_EQ(f.step(chunked, {0}, {&f.b}, 13, pool), f.step(single, {0}, {&f.b}, 13, pool));
  }
}

// 1000 sequences forked from one 16k-token prefix hold about one prefix's memory; each then
// decodes on its own, copying only the chunks it writes (the prefix's last one, where the
// next compressed block goes, and its new one).
TEST(DecodePages, ThousandForksOfA16kPrefixCostOnePrefix) {
  const Config config;  // the paper's: chunks of 1024 tokens
  DecodeShape ds{2, 1, 16, 16, true, 1000};
  testing::ProblemShape ps;
  ps.heads = 2, ps.kv_heads = 1, ps.d_k = ps.d_v = 16, ps.shared_kv = true, ps.seqlens = {16384};
  RandomNsaProblem prob(config, ps);
  const auto& w = prob.buffers32();
  DecodeCache cache(config, ds, w.phi_k.weights(), w.phi_v.weights());
  ThreadPool pool(2);
  cache.append(0, decode_test::prompt_tokens(prob, 0, 16384), pool);
  const DecodeMemory one = cache.memory();
  ASSERT_EQ(one.chunks, 16);
  for (index_t s = 1; s < 1000; ++s) cache.fork(0, s);
  const DecodeMemory all = cache.memory();
  EXPECT_EQ(all.chunks, 16);
  EXPECT_EQ(all.shared_chunks, 16);
  EXPECT_LT(all.bytes, one.bytes + one.bytes / 10) << "1000 forks: " << all.bytes << " bytes, one prefix " << one.bytes;
  EXPECT_EQ(all.tokens, 1000 * 16384);
  // One step of 10 of them: 2 chunks each, the other 990 still share all 16.
  StepBatch batch(2, 1, 16, 16, true);
  std::mt19937_64 rng(5);
  for (index_t s = 0; s < 10; ++s) batch.add_random(rng, s * 100);
  batch.step(cache, pool);
  EXPECT_EQ(cache.memory().chunks, 16 + 10 * 2);
  EXPECT_EQ(cache.position(500), 16385);
  EXPECT_EQ(cache.position(501), 16384);
}


// save_sequence / load_sequence: one conversation written out and brought back into another
// cache's slot continues bitwise as the original; the others are untouched; bad files and
// a full budget leave the slot as it was.
TEST(DecodePages, SaveAndLoadOneSequence) {
  const Fixture f;
  ThreadPool pool(2);
  DecodeCache c = f.cache(2);
  f.prefill(c, 0, f.a, 45, pool);
  f.prefill(c, 1, f.b, 70, pool);
  const std::string one = ::testing::TempDir() + "/nsa_one_sequence.bin";
  const std::string all = ::testing::TempDir() + "/nsa_all_sequences.bin";
  c.save_sequence(1, one);
  c.save(all);
  DecodeCache other = f.cache(4);
  f.prefill(other, 0, f.a, 10, pool);
  f.prefill(other, 3, f.a, 20, pool);  // replaced by the loaded conversation
  other.load_sequence(3, one);
  EXPECT_EQ(other.position(3), 70);
  EXPECT_EQ(other.position(0), 10);
  for (index_t t = 70; t < 80; ++t)
    ASSERT_EQ(f.step(other, {3}, {&f.b}, t, pool), f.step(c, {1}, {&f.b}, t, pool)) << t;
  // The one-sequence file is a cache file: load() puts it at sequence 0.
  DecodeCache whole = f.cache(1);
  whole.load(one);
  EXPECT_EQ(whole.position(0), 70);
  // A file of two conversations is refused by load_sequence, the slot kept.
  try {
    other.load_sequence(3, all);
    ADD_FAILURE() << "a two-sequence file was loaded into one slot";
  } catch (const DecodeFileError& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 sequences"), std::string::npos) << e.what();
  }
  EXPECT_EQ(other.position(3), 80);
  EXPECT_THROW(other.load_sequence(3, one + ".missing"), DecodeFileError);
  EXPECT_EQ(other.position(3), 80);
  // No room: a budget of 3 chunks with 2 held by sequence 0, the slot's own 0.
  DecodeCache tight = f.cache(2, 3);
  f.prefill(tight, 0, f.a, 64, pool);
  try {
    tight.load_sequence(1, one);  // 70 tokens: 3 chunks
    ADD_FAILURE() << "a load past the budget was accepted";
  } catch (const DecodeFileError& e) {
    EXPECT_NE(std::string(e.what()).find("budget"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tight.position(1), 0);
  EXPECT_EQ(tight.memory().chunks, 2);
}

}  // namespace
}  // namespace nsa
