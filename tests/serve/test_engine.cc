// The engine: replies equal the offline generation of the same conversation; automatic
// prefix reuse prefills only the new tokens; concurrent turns run as batched steps; the
// logs bring conversations back after a restart and after eviction, bitwise; corrupted and
// torn logs; refusals.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "serve/chat_template.h"
#include "serve/engine.h"
#include "test_serve_util.h"

namespace nsa::serve {
namespace {

using testing::OfflineTurn;
using testing::TempDir;

// The value of the sample `name` (with its labels, as written) in a Prometheus text.
double metric(const std::string& text, const std::string& name) {
  const std::size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name.size() + 2));
}

struct EngineTest : ::testing::Test {
  TempDir dir;
  std::string ckpt = testing::write_checkpoint(dir.file("model.safetensors"));
  model::Model<float> model = model::load_model(ckpt);

  EngineOptions options(const std::string& state = "") {
    EngineOptions o;
    o.checkpoint = ckpt;
    o.state_dir = state;
    o.max_context = 2048;
    return o;
  }
  static TurnRequest turn(const std::string& text, std::int64_t max_tokens, const std::string& id = "") {
    TurnRequest r;
    r.conversation = id;
    r.tokens = model::encode_bytes(text);
    r.sampling.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
  }
};

TEST_F(EngineTest, ExplicitConversationEqualsOfflineGeneration) {
  Engine engine(options());
  const std::vector<OfflineTurn> turns = {{"In the beginning", 20}, {" and the earth", 12}, {" was without form", 30}};
  const std::vector<std::string> want = testing::offline_replies(model, turns);
  for (std::size_t i = 0; i < turns.size(); ++i) {
    auto t = engine.submit(turn(turns[i].new_text, turns[i].max_tokens, "talk"));
    EXPECT_EQ(t->wait(), want[i]) << "turn " << i;
    EXPECT_EQ(t->finish_reason(), "length");
    EXPECT_EQ(t->conversation(), "talk");
    EXPECT_EQ(t->completion_tokens(), turns[i].max_tokens);
  }
  const ConversationInfo info = engine.conversation("talk");
  // Every token but the last reply's final one is in the cache.
  EXPECT_EQ(info.tokens, 16 + 20 + 14 + 12 + 17 + 30 - 1);
}

TEST_F(EngineTest, ResentHistoryPrefillsOnlyTheNewTokens) {
  Engine engine(options());
  std::vector<ChatMessage> chat = {{"user", "Who made the heaven?"}};
  auto t1 = engine.submit(turn(render_chat(chat), 24));
  const std::string r1 = t1->wait();
  EXPECT_EQ(t1->reused_tokens(), 0);
  chat.push_back({"assistant", r1});
  chat.push_back({"user", "And the earth?"});
  const std::string history = render_chat(chat);
  auto t2 = engine.submit(turn(history, 24));
  const std::string r2 = t2->wait();
  EXPECT_EQ(t2->conversation(), t1->conversation());  // continued in place
  // All of turn 1 was cached but its reply's final token.
  const auto turn1 = static_cast<std::int64_t>(render_chat({{"user", "Who made the heaven?"}}).size() + r1.size());
  EXPECT_EQ(t2->reused_tokens(), turn1 - 1);
  EXPECT_EQ(t2->prompt_tokens(), static_cast<std::int64_t>(history.size()));
  const std::string turn1_prompt = render_chat({{"user", "Who made the heaven?"}});
  const std::vector<std::string> want =
      testing::offline_replies(model, {{turn1_prompt, 24}, {history.substr(turn1_prompt.size() + r1.size()), 24}});
  EXPECT_EQ(r1, want[0]);
  EXPECT_EQ(r2, want[1]);

  // Another client with the same first message but another question: a fork, sharing the prefix.
  std::vector<ChatMessage> other = {{"user", "Who made the heaven?"}, {"assistant", r1}, {"user", "Who made the sea?"}};
  auto t3 = engine.submit(turn(render_chat(other), 8));
  t3->wait();
  EXPECT_NE(t3->conversation(), t1->conversation());
  EXPECT_GE(t3->reused_tokens(), turn1 - 1);
  EXPECT_EQ(engine.conversations().size(), 2u);
  // The first conversation is untouched by its fork.
  chat.push_back({"assistant", r2});
  chat.push_back({"user", "Amen."});
  auto t4 = engine.submit(turn(render_chat(chat), 8));
  t4->wait();
  EXPECT_EQ(t4->conversation(), t1->conversation());
  EXPECT_GE(t4->reused_tokens(), static_cast<std::int64_t>(history.size() + r2.size()) - 1);
}

// The prefix index (serve/prefix_index.h) holds what the state folder brought back, and
// forgets a deleted conversation: a resent history continues the restored conversation,
// and after its deletion starts a new one.
TEST_F(EngineTest, PrefixReuseFindsRestoredAndForgetsDeletedConversations) {
  TempDir state;
  const std::string first = render_chat({{"user", "Who made the heaven and the earth?"}});
  std::string id, reply;
  {
    Engine engine(options(state.path));
    auto t = engine.submit(turn(first, 20));
    reply = t->wait();
    id = t->conversation();
  }
  Engine engine(options(state.path));
  const std::string history = first + reply + "\nUser: And the sea?\nAssistant:";
  auto t2 = engine.submit(turn(history, 4));
  t2->wait();
  EXPECT_EQ(t2->conversation(), id);
  EXPECT_EQ(t2->reused_tokens(), static_cast<std::int64_t>(first.size() + reply.size()) - 1);
  engine.remove(id);
  auto t3 = engine.submit(turn(history, 4));
  t3->wait();
  EXPECT_EQ(t3->reused_tokens(), 0);  // a new conversation (its id may be the freed one)
  EXPECT_EQ(engine.conversations().size(), 1u);
}

TEST_F(EngineTest, ConcurrentTurnsAreBatchedAndEachGetsItsOwnReply) {
  Engine engine(options());
  const int n = 8;
  std::vector<std::shared_ptr<Turn>> turns(n);
  std::vector<std::thread> clients;
  for (int i = 0; i < n; ++i)
    clients.emplace_back([&, i] { turns[static_cast<std::size_t>(i)] = engine.submit(turn("Psalm " + std::to_string(i * 7), 40)); });
  for (auto& c : clients) c.join();
  // A monitoring client reading the conversations while they grow.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done)
      for (const ConversationInfo& c : engine.conversations()) (void)engine.conversation(c.id).text.size();
  });
  for (int i = 0; i < n; ++i) {
    const std::string got = turns[static_cast<std::size_t>(i)]->wait();
    EXPECT_EQ(got, testing::offline_replies(model, {{"Psalm " + std::to_string(i * 7), 40}})[0]) << "client " << i;
  }
  done = true;
  watcher.join();
  const std::string m = engine.metrics_text();
  // Fewer steps than tokens stepped: steps ran several sequences at once.
  EXPECT_LT(metric(m, "nsa_decode_steps_total"), metric(m, "nsa_step_batch_size_sum")) << m;
  EXPECT_EQ(metric(m, "nsa_step_batch_size_sum"), n * 39);  // each reply's last token is not stepped
  EXPECT_EQ(metric(m, "nsa_generated_tokens_total"), n * 40);
  EXPECT_EQ(metric(m, "nsa_step_tokens_read_count"), n * 40);  // one per sampled token
}

TEST_F(EngineTest, StopStringsEndTheReplyAndTheCacheKeepsWhatWasSent) {
  Engine engine(options());
  const std::string full = testing::offline_replies(model, {{"And God said", 40}})[0];
  const std::string stop = full.substr(10, 3);
  TurnRequest r = turn("And God said", 40, "s");
  r.sampling.stop = {stop};
  auto t = engine.submit(r);
  const std::string got = t->wait();
  EXPECT_EQ(t->finish_reason(), "stop");
  EXPECT_EQ(got, full.substr(0, full.find(stop)));
  EXPECT_EQ(engine.conversation("s").tokens, static_cast<std::int64_t>(12 + got.size()));
}

TEST_F(EngineTest, RestartRestoresEveryFinishedTurnBitwise) {
  const std::string state = dir.file("state");
  const std::vector<OfflineTurn> turns = {{"Blessed are", 30}, {" the meek", 30}, {" for they", 30}, {" shall", 30}};
  const std::vector<std::string> want = testing::offline_replies(model, turns);
  {
    Engine engine(options(state));
    for (int i = 0; i < 2; ++i) EXPECT_EQ(engine.submit(turn(turns[static_cast<std::size_t>(i)].new_text, 30, "m"))->wait(), want[static_cast<std::size_t>(i)]);
    engine.submit(turn("another", 5, "other"))->wait();
  }
  Engine engine(options(state));
  EXPECT_EQ(engine.conversations().size(), 2u);
  EXPECT_FALSE(engine.conversation("m").resident);
  for (int i = 2; i < 4; ++i) EXPECT_EQ(engine.submit(turn(turns[static_cast<std::size_t>(i)].new_text, 30, "m"))->wait(), want[static_cast<std::size_t>(i)]);
  EXPECT_EQ(metric(engine.metrics_text(), "nsa_conversations_restored_total"), 1);
}

TEST_F(EngineTest, EvictedConversationsComeBackTransparently) {
  const std::string state = dir.file("state");
  EngineOptions o = options(state);
  o.max_resident = 2;
  Engine engine(o);
  const std::vector<OfflineTurn> turns = {{"Let there be light", 10}, {" and there was", 10}, {" light", 10}};
  const std::vector<std::string> want = testing::offline_replies(model, turns);
  // Four conversations in two slots, turn by turn: each turn finds its cache evicted.
  for (std::size_t t = 0; t < turns.size(); ++t)
    for (int c = 0; c < 4; ++c)
      EXPECT_EQ(engine.submit(turn(turns[t].new_text, 10, "c" + std::to_string(c)))->wait(), want[t]) << t << " " << c;
  EXPECT_GE(metric(engine.metrics_text(), "nsa_conversations_evicted_total"), 8);
  int resident = 0;
  for (const ConversationInfo& c : engine.conversations()) resident += c.resident;
  EXPECT_EQ(resident, 2);
}

TEST_F(EngineTest, MemoryBudgetEvictsTheLeastRecentlyUsed) {
  EngineOptions o = options(dir.file("state"));
  o.max_memory = 1;  // nothing idle stays in memory
  Engine engine(o);
  engine.submit(turn("one", 4, "a"))->wait();
  engine.submit(turn("two", 4, "b"))->wait();
  EXPECT_FALSE(engine.conversation("a").resident);
  EXPECT_FALSE(engine.conversation("b").resident);
  EXPECT_EQ(engine.submit(turn(" more", 6, "a"))->wait(), testing::offline_replies(model, {{"one", 4}, {" more", 6}})[1]);
}

TEST_F(EngineTest, CorruptedAndTornLogs) {
  const std::string state = dir.file("state");
  const std::string good_reply = testing::offline_replies(model, {{"good", 8}, {" again", 8}})[1];
  {
    Engine engine(options(state));
    engine.submit(turn("good", 8, "good"))->wait();
    engine.submit(turn("bad", 8, "bad"))->wait();
    engine.submit(turn(" more", 8, "bad"))->wait();
  }
  // "bad": a byte of its first record flipped; "good": a torn half record appended.
  const std::string bad = state + "/bad.nsaconv", good = state + "/good.nsaconv";
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(90);
    f.put('\x7f');
  }
  const auto good_size = std::filesystem::file_size(good);
  std::ofstream(good, std::ios::app | std::ios::binary).write("\x01\x00\x00\x00garbage", 11);
  Engine engine(options(state));
  EXPECT_NE(engine.conversation("bad").error.find("corrupted"), std::string::npos) << engine.conversation("bad").error;
  EXPECT_EQ(std::filesystem::file_size(good), good_size);  // the torn tail was cut
  try {
    engine.submit(turn(" again", 8, "bad"));
    ADD_FAILURE() << "a corrupted conversation was served";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status(), 500);
    EXPECT_NE(std::string(e.what()).find("bad.nsaconv"), std::string::npos) << e.what();
  }
  EXPECT_EQ(engine.submit(turn(" again", 8, "good"))->wait(), good_reply);
}

TEST_F(EngineTest, RefusalsNameTheProblem) {
  EngineOptions o = options();
  o.max_active = 1;
  o.max_context = 64;
  Engine engine(o);
  auto expect_status = [&](TurnRequest r, int status, const char* what) {
    try {
      engine.submit(std::move(r))->wait();
      ADD_FAILURE() << "accepted; expected " << status;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.status(), status) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_status(turn(std::string(60, 'a'), 10), 400, "context limit");
  expect_status(turn("", 10), 400, "empty");
  TurnRequest bad = turn("x", 5);
  bad.tokens[0] = 300;
  expect_status(bad, 400, "vocabulary");
  expect_status(turn("x", 5, "no/slash"), 400, "conversation ids");
  TurnRequest neg = turn("x", -1);
  expect_status(neg, 400, "max_tokens");
  EXPECT_THROW(engine.conversation("nobody"), RequestError);
  EXPECT_THROW(engine.remove("nobody"), RequestError);
  EXPECT_THROW(engine.remove("nobody"), RequestError);
  EXPECT_TRUE(engine.conversations().empty());
}

TEST_F(EngineTest, TooManyTurnsGet429AndABusyConversation409) {
  EngineOptions o = options();
  o.max_active = 1;
  Engine engine(o);
  auto long_turn = engine.submit(turn("x", 1500, "busy"));  // runs for a while
  try {
    engine.submit(turn("y", 5));
    ADD_FAILURE() << "a second turn was accepted beside a running one with max_active 1";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status(), 429) << e.what();
  }
  try {
    engine.remove("busy");
    ADD_FAILURE() << "a running conversation was removed";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.status(), 409) << e.what();
  }
  long_turn->wait();
  engine.remove("busy");
  EXPECT_TRUE(engine.conversations().empty());
  EXPECT_EQ(engine.submit(turn("y", 5))->wait().size(), 5u);
}

}  // namespace
}  // namespace nsa::serve
