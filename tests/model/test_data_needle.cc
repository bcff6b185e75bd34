// The passkey task (needle.h): exact length, needle at the requested depth on a word end,
// haystack from a line start of the filler, the answer and where its targets sit,
// determinism per seed, errors; needle_batch rows with next-token targets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "model/data/needle.h"
#include "nsa/error.h"

namespace nsa::model {
namespace {

// Lines of 3..12 words of 2..7 letters, no digits: the passkey is the only number.
std::vector<std::int32_t> make_filler(std::size_t bytes) {
  Rng rng(77);
  std::string text;
  while (text.size() < bytes) {
    const int words = 3 + static_cast<int>(rng.uniform_int(10));
    for (int w = 0; w < words; ++w) {
      if (w) text += ' ';
      const int len = 2 + static_cast<int>(rng.uniform_int(6));
      for (int k = 0; k < len; ++k) text += static_cast<char>('a' + rng.uniform_int(26));
    }
    text += ".\n";
  }
  return encode_bytes(text);
}

std::string text_of(const std::vector<std::int32_t>& tokens) {
  return decode_bytes(tokens.data(), static_cast<index_t>(tokens.size()));
}

constexpr index_t kFixed5 = 66;  // needle + question of a 5-digit key: 56 + 2 * 5

// Checks everything make_needle documents; returns the haystack's offset in the filler.
std::size_t check_example(const NeedleExample& ex, const std::vector<std::int32_t>& filler,
                          const NeedleOptions& o) {
  const index_t c = o.context, d = o.digits, hay = c - 56 - 2 * d;
  EXPECT_EQ(static_cast<index_t>(ex.tokens.size()), c);
  EXPECT_EQ(static_cast<index_t>(ex.targets.size()), c);
  const std::string text = text_of(ex.tokens);
  const std::string key = text_of(ex.answer);
  EXPECT_EQ(static_cast<index_t>(key.size()), d);
  EXPECT_TRUE(std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) << key;
  EXPECT_NE(key[0], '0');

  const std::string needle = " The passkey is " + key + ". ";
  const std::string question = " What is the passkey? The passkey is " + key + ".";
  const std::size_t p = static_cast<std::size_t>(ex.needle_position);
  EXPECT_EQ(text.substr(p, needle.size()), needle);
  EXPECT_EQ(text.substr(text.size() - question.size()), question);
  EXPECT_EQ(text.find("passkey"), p + 5) << "a passkey sentence before the needle";

  // Depth: within 8 tokens of depth * haystack, on a word end (make_filler has a space or
  // newline at least every 10 bytes, so there is always one that close).
  const index_t target = std::llround(o.depth * static_cast<double>(hay));
  EXPECT_LE(std::abs(ex.needle_position - target), 8) << "depth " << o.depth << " hay " << hay;
  std::string haystack = text.substr(0, p) + text.substr(p + needle.size(), static_cast<std::size_t>(hay) - p);
  EXPECT_EQ(static_cast<index_t>(haystack.size()), hay);
  if (ex.needle_position != 0 && ex.needle_position != hay)
    EXPECT_TRUE(haystack[p] == ' ' || haystack[p] == '\n') << "needle not at a word end: " << haystack.substr(p);

  // Targets: the answer digits at the positions that predict them, -1 elsewhere.
  EXPECT_EQ(ex.answer_start, c - 2 - d);
  for (index_t t = 0; t < c; ++t) {
    const std::size_t i = static_cast<std::size_t>(t);
    if (t >= ex.answer_start && t < ex.answer_start + d) {
      EXPECT_EQ(ex.targets[i], ex.tokens[i + 1]) << t;
      EXPECT_EQ(ex.targets[i], ex.answer[static_cast<std::size_t>(t - ex.answer_start)]) << t;
    } else {
      EXPECT_EQ(ex.targets[i], -1) << t;
    }
  }
  EXPECT_EQ(ex.tokens[static_cast<std::size_t>(ex.answer_start)], ' ');  // "... is " then the digits

  // The haystack is a contiguous piece of the filler.
  const std::string filler_text = text_of(filler);
  const std::size_t at = filler_text.find(haystack);
  EXPECT_NE(at, std::string::npos) << "haystack is not a piece of the filler";
  return at;
}

TEST(DataNeedle, LayoutTargetsAndDepth) {
  const std::vector<std::int32_t> filler = make_filler(20000);
  for (const index_t context : {kFixed5, kFixed5 + 1, index_t{300}, index_t{1024}}) {
    for (const double depth : {0.0, 0.1, 0.25, 0.5, 0.9, 1.0}) {
      NeedleOptions o;
      o.context = context;
      o.depth = depth;
      Rng rng(static_cast<std::uint64_t>(context) * 10 + static_cast<std::uint64_t>(depth * 10));
      const NeedleExample ex = make_needle(filler, o, rng);
      check_example(ex, filler, o);
      if (depth == 0.0) EXPECT_EQ(ex.needle_position, 0);
      if (depth == 1.0) EXPECT_EQ(ex.needle_position, context - kFixed5);
    }
  }
}

TEST(DataNeedle, HaystackStartsAtALineStart) {
  const std::vector<std::int32_t> filler = make_filler(50000);
  std::set<std::size_t> starts;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    NeedleOptions o;
    o.context = 500;
    Rng rng(seed);
    const std::size_t at = check_example(make_needle(filler, o, rng), filler, o);
    EXPECT_TRUE(at == 0 || filler[at - 1] == '\n') << "haystack starts mid-line at " << at;
    starts.insert(at);
  }
  EXPECT_GT(starts.size(), 30u);  // random offsets
}

TEST(DataNeedle, DigitCounts) {
  const std::vector<std::int32_t> filler = make_filler(5000);
  std::set<int> first_digits;
  for (const int digits : {1, 2, 7, 18}) {
    for (std::uint64_t seed = 0; seed < 50; ++seed) {
      NeedleOptions o;
      o.context = 200;
      o.digits = digits;
      Rng rng(seed);
      const NeedleExample ex = make_needle(filler, o, rng);
      check_example(ex, filler, o);
      if (digits == 2) first_digits.insert(ex.answer[0] - '0');
    }
  }
  EXPECT_EQ(first_digits, (std::set<int>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(DataNeedle, DeterministicPerSeed) {
  const std::vector<std::int32_t> filler = make_filler(20000);
  NeedleOptions o;
  o.context = 400;
  o.depth = 0.3;
  Rng a(5), b(5), c(6);
  const NeedleExample x = make_needle(filler, o, a), y = make_needle(filler, o, b), z = make_needle(filler, o, c);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_EQ(x.targets, y.targets);
  EXPECT_EQ(x.needle_position, y.needle_position);
  EXPECT_EQ(a.state(), b.state());
  EXPECT_NE(x.tokens, z.tokens);
}

TEST(DataNeedle, Errors) {
  const std::vector<std::int32_t> filler = make_filler(2000);
  Rng rng(0);
  NeedleOptions o;
  o.context = kFixed5 - 1;
  try {
    make_needle(filler, o, rng);
    ADD_FAILURE() << "no error for a context of 65";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("66"), std::string::npos) << e.what();
  }
  o.context = 100;
  for (const int digits : {0, 19}) {
    NeedleOptions bad = o;
    bad.digits = digits;
    EXPECT_THROW(make_needle(filler, bad, rng), Error) << digits;
  }
  for (const double depth : {-0.01, 1.01, std::nan("")}) {
    NeedleOptions bad = o;
    bad.depth = depth;
    EXPECT_THROW(make_needle(filler, bad, rng), Error) << depth;
  }
  NeedleOptions longer = o;
  const index_t n = static_cast<index_t>(filler.size());
  longer.context = n + kFixed5 + 1;  // haystack one token longer than the filler
  try {
    make_needle(filler, longer, rng);
    ADD_FAILURE() << "no error for a filler shorter than the haystack";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("filler has " + std::to_string(n)), std::string::npos) << e.what();
  }
  longer.context = n + kFixed5;  // the whole filler is the haystack
  const NeedleExample whole = make_needle(filler, longer, rng);
  check_example(whole, filler, longer);
}

TEST(DataNeedle, BatchRowsAreNeedlesWithNextTokenTargets) {
  const std::vector<std::int32_t> filler = make_filler(30000);
  Rng rng(21);
  const Batch b = needle_batch(filler, 4, 256, rng);
  EXPECT_EQ(b.batch, 4);
  EXPECT_EQ(b.seq, 256);
  ASSERT_EQ(b.tokens.size(), 4u * 256u);
  ASSERT_EQ(b.targets.size(), 4u * 256u);
  Rng replay(21);
  std::set<index_t> positions;
  for (std::size_t r = 0; r < 4; ++r) {
    NeedleOptions o;
    o.context = 256;
    o.depth = replay.uniform();  // the documented draws: depth, then make_needle's
    const NeedleExample ex = make_needle(filler, o, replay);
    check_example(ex, filler, o);
    positions.insert(ex.needle_position);
    const std::vector<std::int32_t> row(b.tokens.begin() + static_cast<std::ptrdiff_t>(r * 256),
                                        b.tokens.begin() + static_cast<std::ptrdiff_t>(r * 256 + 256));
    EXPECT_EQ(row, ex.tokens);
    for (std::size_t t = 0; t < 256; ++t)
      EXPECT_EQ(b.targets[r * 256 + t], t + 1 < 256 ? row[t + 1] : -1) << r << "," << t;
  }
  EXPECT_EQ(positions.size(), 4u);  // random depths
  EXPECT_EQ(rng.state(), replay.state());
  EXPECT_THROW(needle_batch(filler, 1, 65, rng), Error);
  EXPECT_THROW(needle_batch(filler, 0, 256, rng), Error);
}

}  // namespace
}  // namespace nsa::model
