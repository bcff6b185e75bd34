// The HTTP face of the engine (cpp-httplib; JSON by nlohmann::json):
//
//   POST /v1/completions, POST /v1/chat/completions   OpenAI-compatible, "stream": true as
//        server-sent events; max_tokens (chat: or max_completion_tokens), temperature, top_k,
//        seed, stop; the extension "conversation" names a conversation to continue with
//        only the new prompt / messages (without it: automatic prefix reuse)
//   GET  /v1/models
//   GET  /v1/conversations, GET|DELETE /v1/conversations/{id}
//   GET  /v1/conversations/{id}/attention   the last step's selected blocks, gates, tokens read
//   GET  /metrics (Prometheus text), GET /health, GET / (the monitoring page)
// Errors are OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with 400 (bad
// JSON, types, values, context), 404, 409, 413 (body over max_body_bytes), 429, 500, 503.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace nsa::serve {

class Engine;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                          // 0: any free port (see HttpServer::port)
  std::size_t max_body_bytes = 1 << 20;
  int threads = 0;                          // handler threads (streams hold one each); 0: 72
};

class HttpServer {
 public:
  HttpServer(Engine& engine, const HttpOptions& options);
  ~HttpServer();
  // Binds (throws nsa::Error naming host:port when it cannot); port() is then known.
  void bind();
  void serve();  // blocks until stop()
  void stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nsa::serve
