// The byte tokenizer and the corpus: encode/decode, the train/validation split, the file
// errors, and the batches (next-token targets, determinism per Rng state, windows).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "model/data/corpus.h"
#include "nsa/error.h"

namespace nsa::model {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string all_bytes() {
  std::string s;
  for (int c = 0; c < 256; ++c) s += static_cast<char>(c);
  return s;
}

TEST(DataCorpus, EncodeDecodeEveryByte) {
  const std::string text = all_bytes();
  const std::vector<std::int32_t> tokens = encode_bytes(text);
  ASSERT_EQ(tokens.size(), 256u);
  for (int c = 0; c < 256; ++c) EXPECT_EQ(tokens[static_cast<std::size_t>(c)], c);
  EXPECT_EQ(decode_bytes(tokens.data(), 256), text);
  const std::vector<std::int32_t> odd = {'a', -1, 256, 'b', 1000};
  EXPECT_EQ(decode_bytes(odd.data(), 5), "a??b?");
  EXPECT_EQ(decode_bytes(nullptr, 0), "");
  EXPECT_THROW(decode_bytes(odd.data(), -1), Error);
}

TEST(DataCorpus, SplitTakesTheLastFractionForValidation) {
  const std::string text = "abcdefghijklmnopqrst";  // 20 bytes
  const Corpus c = Corpus::from_text(text, 0.25);
  EXPECT_EQ(c.size(), 20u);
  EXPECT_EQ(decode_bytes(c.train().data(), static_cast<index_t>(c.train().size())), "abcdefghijklmno");
  EXPECT_EQ(decode_bytes(c.val().data(), static_cast<index_t>(c.val().size())), "pqrst");
  EXPECT_EQ(Corpus::from_text(text, 0.0).val().size(), 0u);
  EXPECT_EQ(Corpus::from_text(text, 0.12).val().size(), 2u);   // floor(2.4)
  EXPECT_EQ(Corpus::from_text(text, 0.049).val().size(), 0u);  // floor(0.98)
  EXPECT_EQ(Corpus::from_text(text, 0.999).train().size(), 1u);
  EXPECT_EQ(Corpus::from_text("", 0.5).size(), 0u);
  EXPECT_THROW(Corpus::from_text(text, 1.0), Error);
  EXPECT_THROW(Corpus::from_text(text, -0.1), Error);
  EXPECT_THROW(Corpus::from_text(text, std::nan("")), Error);
}

class DataCorpusFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "nsa_corpus_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(DataCorpusFile, ReadsTheWholeFile) {
  const std::string path = dir_ + "/text.txt";
  std::string text;
  for (int i = 0; i < 100; ++i) text += all_bytes();  // binary-safe: NUL, CR, 0xFF ...
  std::ofstream(path, std::ios::binary) << text;
  const Corpus c = Corpus::from_file(path, 0.1);
  ASSERT_EQ(c.size(), text.size());
  EXPECT_EQ(c.val().size(), 2560u);
  std::vector<std::int32_t> joined = c.train();
  joined.insert(joined.end(), c.val().begin(), c.val().end());
  EXPECT_EQ(joined, encode_bytes(text));
}

TEST_F(DataCorpusFile, ErrorsNameThePath) {
  const std::string missing = dir_ + "/missing.txt";
  std::string e = error_of([&] { Corpus::from_file(missing); });
  EXPECT_NE(e.find(missing), std::string::npos) << e;
  EXPECT_NE(e.find("No such file"), std::string::npos) << e;

  const std::string empty = dir_ + "/empty.txt";
  std::ofstream(empty).close();
  e = error_of([&] { Corpus::from_file(empty); });
  EXPECT_NE(e.find(empty), std::string::npos) << e;
  EXPECT_NE(e.find("empty"), std::string::npos) << e;

  e = error_of([&] { Corpus::from_file(dir_); });
  EXPECT_NE(e.find(dir_), std::string::npos) << e;
  EXPECT_NE(e.find("directory"), std::string::npos) << e;

  const std::string ok = dir_ + "/ok.txt";
  std::ofstream(ok) << "hello";
  e = error_of([&] { Corpus::from_file(ok, 2.0); });
  EXPECT_NE(e.find(ok), std::string::npos) << e;
  EXPECT_NE(e.find("val_fraction"), std::string::npos) << e;
}

// A split whose token i is i % 251 (so a window's content says where it came from).
std::vector<std::int32_t> counting(std::size_t n) {
  std::vector<std::int32_t> s(n);
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<std::int32_t>(i % 251);
  return s;
}

TEST(DataCorpus, SampleBatchWindowsAndTargets) {
  const std::vector<std::int32_t> split = counting(1000);
  Rng rng(3);
  const Batch b = sample_batch(split, 6, 16, rng);
  EXPECT_EQ(b.batch, 6);
  EXPECT_EQ(b.seq, 16);
  ASSERT_EQ(b.tokens.size(), 96u);
  ASSERT_EQ(b.targets.size(), 96u);
  Rng replay(3);
  for (index_t r = 0; r < 6; ++r) {
    const std::size_t offset = replay.uniform_int(1000 - 16);  // the documented draw
    for (index_t t = 0; t < 16; ++t) {
      const std::size_t i = static_cast<std::size_t>(r * 16 + t);
      EXPECT_EQ(b.tokens[i], split[offset + static_cast<std::size_t>(t)]);
      EXPECT_EQ(b.targets[i], split[offset + static_cast<std::size_t>(t) + 1]);
    }
  }
  EXPECT_EQ(rng.state(), replay.state());
}

TEST(DataCorpus, SampleBatchIsDeterministicPerSeedAndReachesBothEnds) {
  const std::vector<std::int32_t> split = counting(40);
  Rng a(11), b(11), c(12);
  const Batch x = sample_batch(split, 8, 4, a), y = sample_batch(split, 8, 4, b), z = sample_batch(split, 8, 4, c);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_NE(x.tokens, z.tokens);
  // Offsets 0 .. size - seq - 1 all occur; the last target is the split's last token.
  std::set<std::int32_t> starts;
  Rng rng(1);
  for (int i = 0; i < 400; ++i) starts.insert(sample_batch(split, 1, 4, rng).tokens[0]);
  EXPECT_EQ(starts.size(), 36u);
  EXPECT_EQ(*starts.begin(), 0);
  EXPECT_EQ(*starts.rbegin(), 35);
  // A split of exactly seq + 1 tokens has one window.
  Rng r(0);
  const Batch one = sample_batch(counting(5), 2, 4, r);
  EXPECT_EQ(one.tokens, (std::vector<std::int32_t>{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(one.targets, (std::vector<std::int32_t>{1, 2, 3, 4, 1, 2, 3, 4}));
}

TEST(DataCorpus, SampleBatchErrors) {
  Rng rng(0);
  const std::string e = error_of([&] { sample_batch(counting(16), 1, 16, rng); });
  EXPECT_NE(e.find("16 tokens, fewer than seq + 1 = 17"), std::string::npos) << e;
  EXPECT_THROW(sample_batch(counting(100), 0, 16, rng), Error);
  EXPECT_THROW(sample_batch(counting(100), 1, 0, rng), Error);
}

TEST(DataCorpus, ConsecutiveWindows) {
  const std::vector<std::int32_t> split = counting(21);
  EXPECT_EQ(num_windows(split, 5), 4);  // (21 - 1) / 5
  EXPECT_EQ(num_windows(split, 20), 1);
  EXPECT_EQ(num_windows(split, 21), 0);
  EXPECT_EQ(num_windows(counting(1), 1), 0);
  EXPECT_EQ(num_windows({}, 1), 0);
  EXPECT_THROW(num_windows(split, 0), Error);

  const Batch b = window_batch(split, 1, 3, 5);  // windows 1, 2, 3
  EXPECT_EQ(b.batch, 3);
  EXPECT_EQ(b.seq, 5);
  std::vector<std::int32_t> tokens, targets;
  for (int i = 5; i < 20; ++i) tokens.push_back(i), targets.push_back(i + 1);
  EXPECT_EQ(b.tokens, tokens);
  EXPECT_EQ(b.targets, targets);
  EXPECT_EQ(window_batch(split, 1, 3, 5).tokens, b.tokens);  // no randomness

  const std::string e = error_of([&] { window_batch(split, 2, 3, 5); });  // windows 2..4 of 4
  EXPECT_NE(e.find("windows 2..4"), std::string::npos) << e;
  EXPECT_NE(e.find("4 windows"), std::string::npos) << e;
  EXPECT_THROW(window_batch(split, -1, 1, 5), Error);
  EXPECT_THROW(window_batch(split, 0, 0, 5), Error);
  EXPECT_NO_THROW(window_batch(split, 3, 1, 5));
}

}  // namespace
}  // namespace nsa::model
