// Routes, request parsing and the OpenAI response shapes.
#include "serve/http_api.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>

#include "serve/engine.h"
#include "serve/monitor_page.h"
#include "serve/request_parse.h"

namespace nsa::serve {
namespace {

using json = nlohmann::json;

// Text the model wrote may be any bytes: invalid UTF-8 becomes U+FFFD in the JSON.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* error_type(int status) {
  switch (status) {
    case 400: case 413: return "invalid_request_error";
    case 404: return "not_found_error";
    case 409: return "conflict_error";
    case 429: return "rate_limit_error";
    default: return "server_error";
  }
}

void send_error(httplib::Response& res, int status, const std::string& message, const char* param = nullptr) {
  json e = {{"message", message}, {"type", error_type(status)}, {"param", param ? json(param) : json(nullptr)},
            {"code", nullptr}};
  res.status = status;
  res.set_content(dump({{"error", e}}), "application/json");
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct HttpServer::Impl {
  Engine& engine;
  HttpOptions options;
  httplib::Server server;
  int port = -1;
  std::atomic<std::uint64_t> ids{0};

  Impl(Engine& e, const HttpOptions& o) : engine(e), options(o) { routes(); }

  std::string new_id(const char* prefix) { return std::string(prefix) + std::to_string(++ids); }

  // Runs a handler body, mapping exceptions to OpenAI errors.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const RequestError& e) {
      send_error(res, e.status(), e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
    }
  }

  void completion(const httplib::Request& req, httplib::Response& res, bool chat) {
    ParsedCompletion p = parse_completion(req.body, chat);
    const bool stream = p.stream, include_usage = p.include_usage;
    TurnRequest t = std::move(p.turn);
    const std::shared_ptr<Turn> turn = engine.submit(std::move(t));
    const std::string id = new_id(chat ? "chatcmpl-" : "cmpl-");
    const std::int64_t created = now_seconds();
    const std::string model = engine.model_name();
    auto usage = [turn] {
      return json{{"prompt_tokens", turn->prompt_tokens()},
                  {"completion_tokens", turn->completion_tokens()},
                  {"total_tokens", turn->prompt_tokens() + turn->completion_tokens()},
                  {"prompt_tokens_details", {{"cached_tokens", turn->reused_tokens()}}}};
    };
    if (!stream) {
      const std::string reply = turn->wait();
      if (turn->error_status()) throw RequestError(turn->error_status(), turn->error());
      json choice = {{"index", 0}, {"finish_reason", turn->finish_reason()}, {"logprobs", nullptr}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", reply}};
      else
        choice["text"] = reply;
      json out = {{"id", id},           {"object", chat ? "chat.completion" : "text_completion"},
                  {"created", created}, {"model", model},
                  {"choices", {choice}}, {"usage", usage()},
                  {"conversation", turn->conversation()}};
      res.set_content(dump(out), "application/json");
      return;
    }
    // Server-sent events: a chunk per piece of text, the finish reason, then [DONE].
    auto chunk = [=](const json& delta_or_text, const json& finish) {
      json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
      if (chat)
        choice["delta"] = delta_or_text;
      else
        choice["text"] = delta_or_text;
      json c = {{"id", id},           {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created}, {"model", model},
                {"choices", {choice}}, {"conversation", turn->conversation()}};
      return "data: " + dump(c) + "\n\n";
    };
    auto state = std::make_shared<int>(0);  // 0: nothing sent, 1: streaming, 2: finished
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](std::size_t, httplib::DataSink& sink) {
          if (*state == 2) return false;
          // The first text (or the end) comes once the turn has its conversation.
          const std::string text = turn->next_text();
          if (*state == 0 && chat) {
            const std::string first = chunk(json{{"role", "assistant"}, {"content", ""}}, nullptr);
            if (!sink.write(first.data(), first.size())) return turn->cancel(), false;
          }
          *state = 1;
          if (!text.empty()) {
            const std::string c = chunk(chat ? json{{"content", text}} : json(text), nullptr);
            if (!sink.write(c.data(), c.size())) return turn->cancel(), false;
            return true;
          }
          if (!turn->done()) return true;
          std::string tail;
          if (turn->error_status()) {
            json e = {{"message", turn->error()}, {"type", error_type(turn->error_status())}, {"param", nullptr},
                      {"code", nullptr}};
            tail = "data: " + dump({{"error", e}}) + "\n\n";
          } else {
            tail = chunk(chat ? json::object() : json(""), turn->finish_reason());
            if (include_usage) {  // OpenAI's stream_options.include_usage: a last chunk, no choices
              json u = {{"id", id},           {"object", chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created}, {"model", model},
                        {"choices", json::array()}, {"usage", usage()}};
              tail += "data: " + dump(u) + "\n\n";
            }
          }
          tail += "data: [DONE]\n\n";
          *state = 2;
          if (!sink.write(tail.data(), tail.size())) return false;
          sink.done();
          return true;
        },
        [turn](bool success) {
          if (!success) turn->cancel();  // the client went away mid-stream
        });
  }

  void routes() {
    server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { completion(req, res, false); });
    });
    server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { completion(req, res, true); });
    });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", engine.model_name()}, {"object", "model"}, {"created", 0}, {"owned_by", "nsa"},
                {"context_length", engine.max_context()}};
      res.set_content(dump({{"object", "list"}, {"data", {m}}}), "application/json");
    });
    auto info_json = [](const ConversationInfo& c) {
      json j = {{"id", c.id}, {"object", "conversation"}, {"tokens", c.tokens}, {"in_memory", c.resident}, {"busy", c.busy}};
      if (!c.error.empty()) j["error"] = c.error;
      if (!c.text.empty()) j["text"] = c.text;
      return j;
    };
    server.Get("/v1/conversations", [this, info_json](const httplib::Request&, httplib::Response& res) {
      json data = json::array();
      for (const ConversationInfo& c : engine.conversations()) data.push_back(info_json(c));
      res.set_content(dump({{"object", "list"}, {"data", data}}), "application/json");
    });
    server.Get(R"(/v1/conversations/([^/]+))", [this, info_json](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { res.set_content(dump(info_json(engine.conversation(req.matches[1]))), "application/json"); });
    });
    server.Delete(R"(/v1/conversations/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] {
        engine.remove(req.matches[1]);
        res.set_content(dump({{"id", std::string(req.matches[1])}, {"object", "conversation"}, {"deleted", true}}),
                        "application/json");
      });
    });
    server.Get(R"(/v1/conversations/([^/]+)/attention)", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] {
        const AttentionSnapshot a = engine.attention(req.matches[1]);
        json layers = json::array();
        for (std::size_t l = 0; l < a.layers.size(); ++l) {
          const model::LayerStep& s = a.layers[l];
          layers.push_back({{"layer", l},
                            {"gates", {{"cmp", s.gates[0]}, {"slc", s.gates[1]}, {"win", s.gates[2]}}},
                            {"tokens_read", s.tokens_read},
                            {"selected_blocks", s.selected}});
        }
        const model::ModelConfig& c = engine.model_config();
        json out = {{"id", a.id},
                    {"position", a.position},
                    {"tokens_read", a.tokens_read},
                    {"dense_tokens", a.dense_tokens},
                    {"attention", model::attention_kind_name(c.attention)},
                    {"block_tokens", c.nsa.sel_block},
                    {"window", c.nsa.window},
                    {"layers", layers}};
        res.set_content(dump(out), "application/json");
      });
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(engine.metrics_text(), "text/plain; version=0.0.4");
    });
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    server.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(monitor_page(), "text/html; charset=utf-8");
    });
    // httplib's own refusals (413 over the body limit, 404 no route) in OpenAI's shape.
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string why = res.status == 413 ? "the request body is over the size limit"
                              : res.status == 404 ? "no such route"
                                                  : "the request was refused";
      send_error(res, res.status, why);
    });
    server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_error(res, 500, "internal error");
    });
    server.set_payload_max_length(options.max_body_bytes);
  }
};

HttpServer::HttpServer(Engine& engine, const HttpOptions& options) : impl_(std::make_unique<Impl>(engine, options)) {
  const int threads = options.threads > 0 ? options.threads : 72;
  impl_->server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::bind() {
  Impl& s = *impl_;
  if (s.options.port == 0) {
    s.port = s.server.bind_to_any_port(s.options.host);
  } else {
    s.port = s.server.bind_to_port(s.options.host, s.options.port) ? s.options.port : -1;
  }
  if (s.port < 0)
    throw Error("serve: cannot listen on " + s.options.host + ":" + std::to_string(s.options.port) +
                " (in use, or not an address of this machine)");
}

void HttpServer::serve() { impl_->server.listen_after_bind(); }
void HttpServer::stop() { impl_->server.stop(); }
int HttpServer::port() const { return impl_->port; }

}  // namespace nsa::serve
