// The MQAR task (mqar.h): the documented layout (filler, pairs at the depth, queries at
// the end), distinct keys, disjoint key / value ranges, targets on the answers only,
// answer distances, determinism per seed, random filler, errors; and the task mix
// (task_mix.h): parsing, normalising, drawing, errors.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "model/data/mqar.h"
#include "model/data/task_mix.h"
#include "nsa/error.h"

namespace nsa::model {
namespace {

std::vector<std::int32_t> ascii_text(std::size_t n) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = 'a' + static_cast<std::int32_t>(i * 7 % 26);
  return t;
}

void check_example(const MqarExample& ex, const MqarOptions& o, bool text_filler) {
  const index_t C = o.context, P = o.pairs, F = C - 4 * P;
  ASSERT_EQ(static_cast<index_t>(ex.tokens.size()), C);
  ASSERT_EQ(static_cast<index_t>(ex.targets.size()), C);
  ASSERT_EQ(static_cast<index_t>(ex.answers.size()), P);
  const index_t p = std::llround(o.depth * static_cast<double>(F));
  // Filler before and between: text (ASCII letters) or printable bytes, never a key or value.
  for (index_t t = 0; t < C - 2 * P; ++t) {
    if (t >= p && t < p + 2 * P) continue;
    const std::int32_t tok = ex.tokens[static_cast<std::size_t>(t)];
    if (text_filler) EXPECT_TRUE(tok >= 'a' && tok <= 'z') << t;
    else EXPECT_TRUE(tok >= 32 && tok <= 126) << t;
  }
  // The pairs at p: keys in their range, distinct; values in theirs.
  std::set<std::int32_t> keys;
  std::vector<std::int32_t> value_of(256, -1);
  for (index_t i = 0; i < P; ++i) {
    const std::int32_t k = ex.tokens[static_cast<std::size_t>(p + 2 * i)];
    const std::int32_t v = ex.tokens[static_cast<std::size_t>(p + 2 * i + 1)];
    EXPECT_GE(k, kMqarKeyFirst);
    EXPECT_LT(k, kMqarKeyFirst + kMqarRange);
    EXPECT_GE(v, kMqarValueFirst);
    EXPECT_LT(v, kMqarValueFirst + kMqarRange);
    EXPECT_TRUE(keys.insert(k).second) << "key " << k << " twice";
    value_of[static_cast<std::size_t>(k)] = v;
  }
  // The queries: every key once, followed by its value; targets on the keys' positions only.
  std::set<std::int32_t> asked;
  index_t scored = 0;
  for (index_t t = 0; t < C; ++t) scored += ex.targets[static_cast<std::size_t>(t)] >= 0 ? 1 : 0;
  EXPECT_EQ(scored, P);
  for (index_t i = 0; i < P; ++i) {
    const MqarAnswer& a = ex.answers[static_cast<std::size_t>(i)];
    EXPECT_EQ(a.position, C - 2 * P + 2 * i);
    const std::int32_t k = ex.tokens[static_cast<std::size_t>(a.position)];
    EXPECT_TRUE(asked.insert(k).second);
    EXPECT_EQ(a.value, value_of[static_cast<std::size_t>(k)]);
    EXPECT_EQ(ex.tokens[static_cast<std::size_t>(a.position + 1)], a.value);
    EXPECT_EQ(ex.targets[static_cast<std::size_t>(a.position)], a.value);
    // The pair's value sits `distance` tokens before the query.
    EXPECT_EQ(ex.tokens[static_cast<std::size_t>(a.position - a.distance)], a.value);
    EXPECT_EQ(ex.tokens[static_cast<std::size_t>(a.position - a.distance - 1)], k);
    EXPECT_GE(a.distance, 1);
  }
  EXPECT_EQ(asked, keys);
}

TEST(Mqar, LayoutAtSeveralShapesAndDepths) {
  const auto text = ascii_text(5000);
  for (index_t C : {64, 100, 256, 1024})
    for (int P : {1, 3, 16})
      for (double depth : {0.0, 0.3, 1.0})
        for (bool with_text : {true, false}) {
          if (C < 4 * P) continue;
          SCOPED_TRACE("C " + std::to_string(C) + " P " + std::to_string(P) + " depth " + std::to_string(depth));
          MqarOptions o;
          o.context = C;
          o.pairs = P;
          o.depth = depth;
          Rng rng(5);
          check_example(make_mqar(with_text ? &text : nullptr, o, rng), o, with_text);
        }
}

TEST(Mqar, DepthMovesTheDistance) {
  // depth 0: the first pair's value is at 1, so distances are large; depth 1: the pairs end
  // where the queries start, every answer within 4P tokens.
  MqarOptions o;
  o.context = 512;
  o.pairs = 8;
  Rng rng(9);
  o.depth = 0;
  for (const MqarAnswer& a : make_mqar(nullptr, o, rng).answers) EXPECT_GT(a.distance, 512 - 4 * 8 - 1);
  o.depth = 1;
  for (const MqarAnswer& a : make_mqar(nullptr, o, rng).answers) EXPECT_LT(a.distance, 4 * 8);
}

TEST(Mqar, DeterministicPerSeed) {
  MqarOptions o;
  Rng a(3), b(3), c(4);
  const auto x = make_mqar(nullptr, o, a), y = make_mqar(nullptr, o, b), z = make_mqar(nullptr, o, c);
  EXPECT_EQ(x.tokens, y.tokens);
  EXPECT_NE(x.tokens, z.tokens);
}

TEST(Mqar, ErrorsNameTheProblem) {
  Rng rng(1);
  const auto short_text = ascii_text(10);
  auto message = [&](MqarOptions o, const std::vector<std::int32_t>* text) {
    try {
      make_mqar(text, o, rng);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  MqarOptions o;
  o.pairs = 0;
  EXPECT_NE(message(o, nullptr).find("pairs"), std::string::npos);
  o.pairs = kMqarRange + 1;
  EXPECT_NE(message(o, nullptr).find("pairs"), std::string::npos);
  o.pairs = 16;
  o.context = 63;
  EXPECT_NE(message(o, nullptr).find("cannot hold"), std::string::npos);
  o.context = 256;
  o.depth = 1.5;
  EXPECT_NE(message(o, nullptr).find("depth"), std::string::npos);
  o.depth = std::nan("");
  EXPECT_NE(message(o, nullptr).find("depth"), std::string::npos);
  o.depth = 0.5;
  EXPECT_NE(message(o, &short_text).find("filler text"), std::string::npos);
}

TEST(TaskMix, ParsesNormalisesAndDraws) {
  const TaskMix mix = TaskMix::parse("text:3,mqar:1");
  EXPECT_EQ(mix.spec(), "text:0.75,mqar:0.25");
  EXPECT_TRUE(mix.mixed());
  EXPECT_EQ(mix.draw(0.0), Task::text);
  EXPECT_EQ(mix.draw(0.7499), Task::text);
  EXPECT_EQ(mix.draw(0.75), Task::mqar);
  EXPECT_EQ(mix.draw(0.999999), Task::mqar);
  EXPECT_DOUBLE_EQ(mix.weight(Task::needle), 0);
  EXPECT_EQ(TaskMix::parse(mix.spec()).spec(), mix.spec());
  const TaskMix one = TaskMix::parse("mqar");
  EXPECT_FALSE(one.mixed());
  EXPECT_EQ(one.draw(0.3), Task::mqar);
  // A zero-weight part is never drawn.
  const TaskMix zero = TaskMix::parse("needle:0,text:1");
  EXPECT_FALSE(zero.mixed());
  EXPECT_EQ(zero.draw(0.0), Task::text);
}

TEST(TaskMix, RejectsBadSpecs) {
  for (const char* bad : {"", "txt:1", "text:-1", "text:abc", "text:1,text:2", "text:0,mqar:0", "text:inf",
                          "text:1x", "text:nan"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(TaskMix::parse(bad), Error);
  }
}

}  // namespace
}  // namespace nsa::model
