// nsa serve: a checkpoint behind an OpenAI-compatible HTTP API, conversations kept across
// requests (and restarts, with --state-dir), live attention monitoring (src/serve).
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "commands.h"
#include "serve/engine.h"
#include "serve/http_api.h"

namespace nsa::cli {
namespace {

struct ServeOptions {
  serve::EngineOptions engine;
  serve::HttpOptions http;
};

serve::HttpServer* g_server = nullptr;
void on_signal(int) {
  if (g_server) g_server->stop();
}

int run_serve(ServeOptions o) {
  serve::Engine engine(o.engine);
  serve::HttpServer server(engine, o.http);
  server.bind();
  g_server = &server;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::fprintf(stderr, "nsa serve: %s (%s attention, context %lld) on http://%s:%d/%s%s\n",
               engine.model_name().c_str(), model::attention_kind_name(engine.model_config().attention),
               static_cast<long long>(engine.max_context()), o.http.host.c_str(), server.port(),
               o.engine.state_dir.empty() ? "" : ", state in ", o.engine.state_dir.c_str());
  // The line a script waits for (the port, when --port 0 picked one).
  std::printf("listening on %s:%d\n", o.http.host.c_str(), server.port());
  std::fflush(stdout);
  server.serve();
  g_server = nullptr;
  std::fprintf(stderr, "nsa serve: stopped\n");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "Serve a checkpoint over HTTP (OpenAI-compatible), conversations kept");
  sub->add_option("checkpoint", o->engine.checkpoint, "a checkpoint written by nsa train")->required();
  sub->add_option("--host", o->http.host, "address to listen on")->capture_default_str();
  sub->add_option("--port", o->http.port, "port (0: any free one, printed)")->capture_default_str();
  sub->add_option("--state-dir", o->engine.state_dir, "folder of the conversation logs (none: kept in memory only)");
  sub->add_option("--max-memory", o->engine.max_memory, "bytes of cache in memory (0: no limit); beyond, idle conversations go to disk")
      ->capture_default_str();
  sub->add_option("--max-resident", o->engine.max_resident, "conversations in memory at once")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--max-active", o->engine.max_active, "turns running or waiting; more get 429")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--context", o->engine.max_context, "tokens per conversation")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--max-body", o->http.max_body_bytes, "request body limit in bytes (413 beyond)")->capture_default_str();
  sub->add_option("--threads", o->engine.threads, "threads of the model")->capture_default_str()->check(CLI::PositiveNumber);
  return {sub, [o] { return run_serve(*o); }};
}

}  // namespace nsa::cli
