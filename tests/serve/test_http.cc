// The HTTP API over loopback (httplib's client): the OpenAI shapes, streaming, the
// conversation routes, and every kind of bad request answered with a clear error while the
// server keeps serving.
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "serve/engine.h"
#include "serve/http_api.h"
#include "test_serve_util.h"

namespace nsa::serve {
namespace {

using json = nlohmann::json;

struct HttpTest : ::testing::Test {
  testing::TempDir dir;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<HttpServer> server;
  std::thread thread;
  std::unique_ptr<httplib::Client> client;

  void SetUp() override {
    EngineOptions o;
    o.checkpoint = testing::write_checkpoint(dir.file("model.safetensors"));
    o.state_dir = dir.file("state");
    o.max_context = 512;
    engine = std::make_unique<Engine>(o);
    HttpOptions h;
    h.port = 0;
    h.max_body_bytes = 4096;
    server = std::make_unique<HttpServer>(*engine, h);
    server->bind();
    thread = std::thread([this] { server->serve(); });
    client = std::make_unique<httplib::Client>("127.0.0.1", server->port());
    client->set_read_timeout(30, 0);
  }
  void TearDown() override {
    server->stop();
    thread.join();
  }
  // POSTs a JSON body (raw text); returns status and the parsed body (null if not JSON).
  std::pair<int, json> post(const std::string& path, const std::string& body) {
    auto res = client->Post(path, body, "application/json");
    if (!res) return {0, nullptr};
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  // POSTs with the response body handed to `receive` as it arrives (return false: hang up).
  static httplib::Result post_streaming(httplib::Client& c, const std::string& path, const std::string& body,
                                        std::function<bool(const char*, std::size_t)> receive) {
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body;
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [receive](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      return receive(data, n);
    };
    return c.send(req);
  }
  void expect_error(const std::string& path, const std::string& body, int status, const std::string& what) {
    auto [code, j] = post(path, body);
    EXPECT_EQ(code, status) << body;
    ASSERT_TRUE(j.is_object()) << body;
    ASSERT_TRUE(j.contains("error")) << j.dump();
    EXPECT_NE(j["error"]["message"].get<std::string>().find(what), std::string::npos) << j.dump();
  }
};

TEST_F(HttpTest, CompletionAndChatHaveOpenAIShapes) {
  auto [code, j] = post("/v1/completions", R"({"prompt": "In the beginning", "max_tokens": 12, "temperature": 0})");
  ASSERT_EQ(code, 200) << j.dump();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 16);
  const std::string id = j["conversation"];
  auto [c2, chat] = post("/v1/chat/completions",
                         R"({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "conversation": "mine"})");
  ASSERT_EQ(c2, 200) << chat.dump();
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["conversation"], "mine");
  auto one = client->Get("/v1/conversations/mine");
  ASSERT_TRUE(one);
  EXPECT_EQ(json::parse(one->body)["text"].get<std::string>().rfind("User: hello\nAssistant:", 0), 0u) << one->body;
  auto list = client->Get("/v1/conversations");
  ASSERT_TRUE(list);
  EXPECT_EQ(json::parse(list->body)["data"].size(), 2u);
  auto att = client->Get("/v1/conversations/mine/attention");
  ASSERT_TRUE(att);
  const json a = json::parse(att->body);
  EXPECT_EQ(a["layers"].size(), 2u);
  EXPECT_EQ(a["layers"][0]["selected_blocks"].size(), 1u);  // one kv head
  EXPECT_GT(a["tokens_read"].get<int>(), 0);
  auto del = client->Delete("/v1/conversations/" + id);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(client->Get("/v1/conversations/" + id)->status, 404);
  EXPECT_EQ(client->Get("/health")->status, 200);
  auto page = client->Get("/");
  EXPECT_NE(page->body.find("selection"), std::string::npos);
}

TEST_F(HttpTest, StreamingSendsEventsThenDone) {
  std::string body;
  auto res = post_streaming(*client, "/v1/completions",
                            R"({"prompt": "Amen", "max_tokens": 20, "temperature": 0, "stream": true})",
                            [&](const char* data, std::size_t n) {
                              body.append(data, n);
                              return true;
                            });
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  std::string text;
  std::string finish;
  std::size_t at = 0;
  int events = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const std::size_t end = body.find("\n\n", at);
    const std::string ev = body.substr(at + 6, end - at - 6);
    at = end;
    ++events;
    if (ev == "[DONE]") break;
    const json j = json::parse(ev);
    text += j["choices"][0]["text"].get<std::string>();
    if (!j["choices"][0]["finish_reason"].is_null()) finish = j["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(finish, "length");
  EXPECT_GT(events, 2);
  EXPECT_NE(body.find("data: [DONE]\n\n"), std::string::npos);
  // The same prompt without streaming gives the same text.
  auto [code, j] = post("/v1/completions", R"({"prompt": "Amen", "max_tokens": 20, "temperature": 0})");
  EXPECT_EQ(j["choices"][0]["text"], text);
}

TEST_F(HttpTest, BadRequestsGetClearErrorsAndTheServerGoesOn) {
  expect_error("/v1/completions", "{not json", 400, "not valid JSON");
  expect_error("/v1/completions", "[1, 2]", 400, "JSON object");
  // A number beyond a double (found by libFuzzer: nlohmann throws out_of_range, not a
  // parse error, and the server must still answer 400).
  expect_error("/v1/completions", R"({"prompt": "a", "max_tokens": 1e999})", 400, "not valid JSON");
  expect_error("/v1/completions", R"({"prompt": "a", "temperature": -66666e6666})", 400, "number overflow");
  expect_error("/v1/completions", std::string("{\"prompt\": \"a\"}\0junk", 20), 400, "NUL byte at byte 15");
  expect_error("/v1/completions", R"({"max_tokens": 3})", 400, "'prompt' is required");
  expect_error("/v1/completions", R"({"prompt": 5})", 400, "'prompt' must be a string");
  expect_error("/v1/completions", R"({"prompt": "a", "max_tokens": "many"})", 400, "'max_tokens' must be an integer");
  expect_error("/v1/completions", R"({"prompt": "a", "temperature": "hot"})", 400, "'temperature' must be a number");
  expect_error("/v1/completions", R"({"prompt": "a", "stream": 1})", 400, "'stream' must be a boolean");
  expect_error("/v1/completions", R"({"prompt": "a", "stop": [1]})", 400, "'stop'");
  expect_error("/v1/completions", R"({"prompt": "a", "n": 2})", 400, "'n'");
  expect_error("/v1/completions", R"({"prompt": "a", "max_tokens": 1000})", 400, "context limit");
  expect_error("/v1/chat/completions", R"({"messages": "hi"})", 400, "'messages' must be an array");
  expect_error("/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "x"}]})", 400, "robot");
  expect_error("/v1/chat/completions", R"({"messages": []})", 400, "must not be empty");
  expect_error("/v1/completions", R"({"prompt": "a", "conversation": "../etc"})", 400, "conversation ids");
  expect_error("/v1/completions", "{\"prompt\": \"" + std::string(5000, 'a') + "\"}", 413, "size limit");
  auto missing = client->Get("/v1/conversations/nobody/attention");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("nobody"), std::string::npos);
  EXPECT_EQ(client->Get("/no/such/route")->status, 404);
  // Invalid UTF-8 in the prompt is bytes like any other; the reply is valid JSON.
  auto [code, j] = post("/v1/completions", "{\"prompt\": \"caf\\u00e9 \\ud83d\\ude00\", \"max_tokens\": 4}");
  EXPECT_EQ(code, 200) << j.dump();
  // A client that goes away mid-stream: its turn is cancelled, the others are unaffected.
  {
    httplib::Client quitter("127.0.0.1", server->port());
    int chunks = 0;
    auto res = post_streaming(quitter, "/v1/completions",
                              R"({"prompt": "x", "max_tokens": 400, "stream": true, "conversation": "quit"})",
                              [&](const char*, std::size_t) { return ++chunks < 2; });
    EXPECT_FALSE(res);  // we hung up
  }
  for (int i = 0; i < 200 && engine->conversation("quit").busy; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(engine->conversation("quit").busy);
  auto [ok, fine] = post("/v1/completions", R"({"prompt": "still here", "max_tokens": 3})");
  EXPECT_EQ(ok, 200);
}

}  // namespace
}  // namespace nsa::serve
