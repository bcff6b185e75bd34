// Saving and restoring a decode cache: a restored cache continues bitwise like an
// uninterrupted one; truncated, corrupted and mismatched files are rejected with a clear
// nsa::Error and leave the cache untouched; a failed save leaves the previous file intact.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "decode/cache_state.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "test_cpu_util.h"
#include "test_decode_util.h"

namespace nsa {
namespace {

namespace fs = std::filesystem;
using decode_test::StepBatch;

using cpu_test::small_options;

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory per test, removed afterwards.
class DecodeFile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("nsa_decode_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// A small layer: config, shape and phi weights drawn from a seed.
struct Layer {
  Config config;
  DecodeShape shape;
  testing::RandomNsaProblem weights;
  Layer(const ConfigOptions& o, DecodeShape s, std::uint64_t seed = 1)
      : config(o), shape(s), weights(config, problem_shape(s, seed)) {}
  static testing::ProblemShape problem_shape(const DecodeShape& s, std::uint64_t seed) {
    testing::ProblemShape p;
    p.heads = s.heads;
    p.kv_heads = s.kv_heads;
    p.d_k = s.d_k;
    p.d_v = s.d_v;
    p.tokens = 1;
    p.seed = seed;
    return p;
  }
  DecodeCache make() const {
    const auto& f = const_cast<testing::RandomNsaProblem&>(weights).buffers32();
    return DecodeCache(config, shape, f.phi_k.weights(), f.phi_v.weights());
  }
};

DecodeShape small_shape(bool shared = false, CacheStorage storage = CacheStorage::fp32) {
  DecodeShape s{4, 2, 16, 8, shared, 3};
  s.storage = storage;
  return s;
}

// Runs `steps` batched steps of random tokens (sequence s joins at step 20 * s) and
// appends the outputs to `outs`.
void run_steps(DecodeCache& cache, std::mt19937_64& rng, index_t first, index_t steps, ThreadPool& pool,
               std::vector<float>& outs) {
  const DecodeShape& s = cache.shape();
  StepBatch batch(s.heads, s.kv_heads, s.d_k, s.d_v, s.shared_kv);
  for (index_t i = first; i < first + steps; ++i) {
    batch.clear();
    for (index_t id = 0; id < s.max_seqs; ++id)
      if (i >= 20 * id) batch.add_random(rng, id);
    batch.step(cache, pool);
    outs.insert(outs.end(), batch.out.begin(), batch.out.end());
  }
}

// The full content of a cache, as its file bytes.
std::vector<char> snapshot(const DecodeCache& cache, const std::string& path) {
  cache.save(path);
  return read_file(path);
}

TEST_F(DecodeFile, SaveRestoreContinueIsBitwiseIdentical) {
  for (const CacheStorage storage : {CacheStorage::fp32, CacheStorage::bf16})
  for (bool shared : {false, true}) {
    SCOPED_TRACE(storage == CacheStorage::bf16 ? "bf16 storage" : "fp32 storage");
    const Layer layer(small_options(), small_shape(shared, storage));
    ThreadPool pool(2);
    // Uninterrupted: 150 steps.
    DecodeCache a = layer.make();
    std::mt19937_64 rng_a(5);
    std::vector<float> out_a;
    run_steps(a, rng_a, 0, 150, pool, out_a);

    // Interrupted after 70 steps: save, restore into a new cache, continue.
    std::vector<float> out_b;
    std::mt19937_64 rng_b(5);
    {
      DecodeCache b = layer.make();
      run_steps(b, rng_b, 0, 70, pool, out_b);
      b.save(path("cache.nsa"));
    }
    DecodeCache c = layer.make();
    c.load(path("cache.nsa"));
    EXPECT_EQ(c.position(0), 70);
    EXPECT_EQ(c.position(2), 30);
    run_steps(c, rng_b, 70, 80, pool, out_b);
    ASSERT_EQ(out_a.size(), out_b.size());
    EXPECT_EQ(std::memcmp(out_a.data(), out_b.data(), out_a.size() * sizeof(float)), 0)
        << "a restored cache must continue bitwise like the uninterrupted one (shared=" << shared << ")";
    // Loading also replaces a cache that already holds something else.
    DecodeCache d = layer.make();
    std::vector<float> scratch;
    std::mt19937_64 rng_d(99);
    run_steps(d, rng_d, 0, 10, pool, scratch);
    d.load(path("cache.nsa"));
    EXPECT_EQ(snapshot(d, path("d.nsa")), read_file(path("cache.nsa")));
  }
}

TEST_F(DecodeFile, EmptyCacheRoundTrips) {
  const Layer layer(small_options(), small_shape());
  DecodeCache a = layer.make(), b = layer.make();
  a.save(path("empty.nsa"));
  b.load(path("empty.nsa"));
  for (index_t s = 0; s < 3; ++s) EXPECT_EQ(b.position(s), 0);
}

// Expects load(file) to throw an nsa::Error whose message contains `what`, and the cache
// to hold exactly what it held before.
void expect_rejected(DecodeCache& cache, const std::string& file, const std::string& what,
                     const std::vector<char>& before, const std::string& snap_path) {
  try {
    cache.load(file);
    ADD_FAILURE() << "load of " << file << " should fail with '" << what << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << "message: " << e.what();
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << "the message names the file: " << e.what();
  }
  EXPECT_EQ(snapshot(cache, snap_path), before) << "the cache changed after a failed load";
}

TEST_F(DecodeFile, CorruptedTruncatedAndMissingFilesAreRejected) {
  const Layer layer(small_options(), small_shape());
  ThreadPool pool(1);
  DecodeCache source = layer.make();
  std::mt19937_64 rng(1);
  std::vector<float> outs;
  run_steps(source, rng, 0, 60, pool, outs);
  source.save(path("good.nsa"));
  const std::vector<char> good = read_file(path("good.nsa"));

  DecodeCache target = layer.make();  // holds something else
  run_steps(target, rng, 0, 25, pool, outs);
  const std::vector<char> before = snapshot(target, path("target.nsa"));
  const std::string bad = path("bad.nsa");

  // A flipped byte anywhere: magic, version, header fields, positions, payload.
  const size_t header = 24 + 8 * 10 + 8 * 8 + 8 + 8 * 3 + 24;
  for (size_t at : {size_t{0}, size_t{9}, size_t{40}, size_t{130}, size_t{header - 1}, header + 3,
                    good.size() / 2, good.size() - 1}) {
    std::vector<char> b = good;
    b[at] ^= 0x20;
    write_file(bad, b);
    SCOPED_TRACE("flipped byte " + std::to_string(at));
    const std::string what = at < 8 ? "bad magic" : at < 12 ? "version" : at < header ? "corrupted" : "checksum";
    expect_rejected(target, bad, what, before, path("target.nsa"));
  }
  // A file of the previous format (version 1: no storage field) is refused by name.
  {
    std::vector<char> b = good;
    b[8] = 1;
    write_file(bad, b);
    expect_rejected(target, bad, "unsupported file version 1 (this build reads version 2)", before,
                    path("target.nsa"));
  }
  // Truncated anywhere, and trailing garbage.
  for (size_t len : {size_t{0}, size_t{10}, size_t{30}, header - 1, header, good.size() - 1}) {
    write_file(bad, std::vector<char>(good.begin(), good.begin() + static_cast<long>(len)));
    SCOPED_TRACE("truncated to " + std::to_string(len));
    expect_rejected(target, bad, "truncated", before, path("target.nsa"));
  }
  std::vector<char> longer = good;
  longer.push_back(0);
  write_file(bad, longer);
  expect_rejected(target, bad, "trailing bytes", before, path("target.nsa"));
  expect_rejected(target, path("missing.nsa"), "cannot open", before, path("target.nsa"));
  // The good file still loads.
  target.load(path("good.nsa"));
  EXPECT_EQ(snapshot(target, path("target.nsa")), good);
}

// Hostile files with a valid checksum (what fuzzing found): a config field that only
// equals this cache's after a cast to int (block_len = 2^32 + l), and a negative sequence
// length, which must be called what it is.
TEST_F(DecodeFile, HostileHeaderFieldsAreRefusedByName) {
  const Layer layer(small_options(), small_shape());
  ThreadPool pool(1);
  DecodeCache source = layer.make();
  std::mt19937_64 rng(3);
  std::vector<float> outs;
  run_steps(source, rng, 0, 30, pool, outs);
  const std::vector<char> good = snapshot(source, path("good.nsa"));
  DecodeCache target = layer.make();
  const std::vector<char> before = snapshot(target, path("target.nsa"));
  std::uint64_t hsize;
  std::memcpy(&hsize, good.data() + 16, 8);
  auto patched = [&](std::size_t at, std::int64_t value) {
    std::vector<char> b = good;
    std::memcpy(b.data() + at, &value, 8);
    const std::uint64_t sum = fnv1a64(b.data(), hsize - 8);  // a checksum that matches again
    std::memcpy(b.data() + hsize - 8, &sum, 8);
    return b;
  };
  const std::size_t block_len_at = 24, positions_at = 24 + 8 * 10 + 8 * 8 + 8;
  write_file(path("bad.nsa"), patched(block_len_at, (std::int64_t{1} << 32) + small_options().block_len));
  expect_rejected(target, path("bad.nsa"), "written for another configuration: file has l=4294967304", before,
                  path("target.nsa"));
  write_file(path("bad.nsa"), patched(positions_at, -5));
  expect_rejected(target, path("bad.nsa"), "negative token count -5", before, path("target.nsa"));
}

TEST_F(DecodeFile, MismatchedFilesAreRejected) {
  const Layer layer(small_options(), small_shape());
  ThreadPool pool(1);
  DecodeCache target = layer.make();
  std::mt19937_64 rng(2);
  std::vector<float> outs;
  run_steps(target, rng, 0, 30, pool, outs);
  const std::vector<char> before = snapshot(target, path("target.nsa"));

  ConfigOptions other = small_options();
  other.window = 40;
  Layer(other, small_shape()).make().save(path("config.nsa"));
  expect_rejected(target, path("config.nsa"), "another configuration", before, path("target.nsa"));

  DecodeShape wider = small_shape();
  wider.d_v = 16;
  Layer(small_options(), wider).make().save(path("shape.nsa"));
  expect_rejected(target, path("shape.nsa"), "another shape", before, path("target.nsa"));

  Layer(small_options(), small_shape(/*shared=*/true)).make().save(path("shared.nsa"));
  expect_rejected(target, path("shared.nsa"), "another shape", before, path("target.nsa"));

  Layer(small_options(), small_shape(false, CacheStorage::bf16)).make().save(path("bf16.nsa"));
  expect_rejected(target, path("bf16.nsa"), "written by a cache with bf16 storage, this cache stores fp32", before,
                  path("target.nsa"));

  Layer(small_options(), small_shape(), /*seed=*/2).make().save(path("weights.nsa"));
  expect_rejected(target, path("weights.nsa"), "phi weights", before, path("target.nsa"));

  DecodeShape more = small_shape();
  more.max_seqs = 5;
  Layer(small_options(), more).make().save(path("seqs.nsa"));
  expect_rejected(target, path("seqs.nsa"), "room for 3", before, path("target.nsa"));

  write_file(path("text.nsa"), std::vector<char>(100, 'x'));
  expect_rejected(target, path("text.nsa"), "not an NSA decode cache", before, path("target.nsa"));
}

TEST_F(DecodeFile, FailedSaveKeepsThePreviousFile) {
  const Layer layer(small_options(), small_shape());
  ThreadPool pool(1);
  DecodeCache cache = layer.make();
  std::mt19937_64 rng(4);
  std::vector<float> outs;
  run_steps(cache, rng, 0, 10, pool, outs);
  const std::string file = path("conversation.nsa");
  cache.save(file);
  const std::vector<char> previous = read_file(file);

  // Into a directory that does not exist: a clear error.
  try {
    cache.save(path("no/such/dir/c.nsa"));
    ADD_FAILURE() << "save into a missing directory should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create a temporary file"), std::string::npos) << e.what();
  }

  // A write that fails half-way (file size limit below the new file's size, as a full disk
  // would): the error is reported, the previous file is intact, no temporary is left.
  run_steps(cache, rng, 10, 200, pool, outs);
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = old_limit;
  limit.rlim_cur = previous.size() + 100;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  bool threw = false;
  try {
    cache.save(file);
  } catch (const Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw) << "save beyond the file size limit should fail";
  EXPECT_EQ(read_file(file), previous) << "a failed save must leave the previous file as it was";
  index_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += (void(e), 1);
  EXPECT_EQ(files, 1) << "no temporary file may be left behind";
  // The previous file still loads, and a save that succeeds replaces it.
  DecodeCache restored = layer.make();
  restored.load(file);
  EXPECT_EQ(restored.position(0), 10);
  cache.save(file);
  restored.load(file);
  EXPECT_EQ(restored.position(0), 210);
}

}  // namespace
}  // namespace nsa
