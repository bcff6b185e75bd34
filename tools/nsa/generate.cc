// nsa generate: samples text from a checkpoint through the decode caches (one per layer;
// model/generator.h), printing the text as it comes and, at the end, the speed and the
// attention tokens read per step.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "model/data/corpus.h"
#include "model/data/rng.h"
#include "model/generator.h"
#include "model/sampling.h"
#include "model/training/checkpoint_io.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa::cli {
namespace {

struct GenerateOptions {
  std::string checkpoint;
  std::string prompt = "And it came to pass";
  std::int64_t tokens = 200;
  double temperature = 0.8;
  int top_k = 0;
  std::uint64_t seed = 1;
  int threads = 1;
};

int run_generate(const GenerateOptions& o) {
  if (o.checkpoint.empty()) throw Error("generate: give a checkpoint (nsa generate CHECKPOINT)");
  if (o.prompt.empty()) throw Error("generate: --prompt must not be empty");
  if (o.tokens < 0) throw Error("generate: --tokens must be >= 0");
  if (!(o.temperature >= 0)) throw Error("generate: --temperature must be >= 0");
  const model::Model<float> m = model::load_model(o.checkpoint);
  ThreadPool pool(o.threads);
  const std::vector<std::int32_t> prompt = model::encode_bytes(o.prompt);
  model::Generator generator(m, static_cast<index_t>(prompt.size()) + o.tokens);
  model::Rng rng(o.seed);

  std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  const float* logits = generator.prefill(prompt.data(), static_cast<index_t>(prompt.size()), pool);
  const auto prefilled = std::chrono::steady_clock::now();
  std::int64_t read_total = 0;
  for (std::int64_t i = 0; i < o.tokens; ++i) {
    const std::int32_t token = model::sample_token(logits, m.config().vocab, o.temperature, o.top_k, rng);
    const char c = static_cast<char>(token);
    std::fwrite(&c, 1, 1, stdout);
    std::fflush(stdout);
    logits = generator.step(token, pool);
    read_total += generator.last_tokens_read();
  }
  const auto end = std::chrono::steady_clock::now();
  const double prefill_s = std::chrono::duration<double>(prefilled - start).count();
  const double decode_s = std::chrono::duration<double>(end - prefilled).count();
  std::printf("\n");
  std::fprintf(stderr,
               "nsa generate: %s; prompt %zu tokens in %.1f ms, %lld tokens at %.1f tokens/s; attention tokens read "
               "per step (all layers and kv heads) %.0f on average, %lld at the last step\n",
               model::attention_kind_name(m.config().attention), prompt.size(), prefill_s * 1e3,
               static_cast<long long>(o.tokens), o.tokens > 0 ? static_cast<double>(o.tokens) / decode_s : 0.0,
               o.tokens > 0 ? static_cast<double>(read_total) / static_cast<double>(o.tokens) : 0.0,
               static_cast<long long>(generator.last_tokens_read()));
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* sub = app.add_subcommand("generate", "Sample text from a checkpoint through the decode cache");
  sub->add_option("checkpoint", o->checkpoint, "a checkpoint written by nsa train")->required();
  sub->add_option("--prompt", o->prompt, "text to continue")->capture_default_str();
  sub->add_option("--tokens", o->tokens, "tokens (bytes) to generate")->capture_default_str();
  sub->add_option("--temperature", o->temperature, "sampling temperature (0: greedy)")->capture_default_str();
  sub->add_option("--top-k", o->top_k, "sample among the k most likely (0: all)")->capture_default_str();
  sub->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  sub->add_option("--threads", o->threads, "threads")->capture_default_str();
  return {sub, [o] { return run_generate(*o); }};
}

}  // namespace nsa::cli
