// What continuous batching buys `nsa serve`: for S conversations with T tokens of history
// each, one batched Generator::step over all S against S separate one-sequence steps, for
// an nsa model and the same model with full attention. Prints ms per round (every
// conversation one token further), tokens/s, and the attention K/V bytes one round reads
// (tokens read x (d_k + d_v) x 4 bytes, all layers and kv heads).
//
//   nsa_serve_batch_bench [--seqs 32] [--history 16384] [--rounds 5] [--threads 2] [--json FILE]
//
// The model: byte vocabulary, d_model 256, 4 layers, 8 query heads on 2 kv heads, d_k = d_v
// = 64, random weights (speed does not depend on them); NSA at the paper's blocks (l = 32,
// d = 16, l' = 64, n = 16, w = 512). Histories are filled by Generator::restore from random
// K/V rows, as a server restores a conversation from its log.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "model/data/rng.h"
#include "model/generator.h"
#include "model/model.h"
#include "nsa/thread_pool.h"

namespace {

using nsa::index_t;
using Clock = std::chrono::steady_clock;

struct Options {
  index_t seqs = 32, history = 16384;
  int rounds = 5, threads = 2;
  std::string json;
};

nsa::model::ModelConfig config(nsa::model::AttentionKind kind) {
  nsa::model::ModelConfig c;
  c.vocab = 256;
  c.d_model = 256;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.d_k = 64;
  c.d_v = 64;
  c.mlp_hidden = 768;
  c.attention = kind;
  c.nsa.block_len = 32;
  c.nsa.stride = 16;
  c.nsa.sel_block = 64;
  c.nsa.top_n = 16;
  c.nsa.n_init = 1;
  c.nsa.n_local = 2;
  c.nsa.window = 512;
  return c;
}

struct Row {
  const char* kind;
  const char* mode;
  double ms_per_round;
  double tokens_per_s;
  double bytes_per_round;
};

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::vector<Row> measure(nsa::model::AttentionKind kind, const char* name, const Options& o, nsa::ThreadPool& pool) {
  nsa::model::Model<float> model(config(kind));
  model.init(1);
  nsa::model::Generator gen(model, o.history + o.rounds * 2 + 2, o.seqs);
  // Random rows for every sequence (the same for all; their values do not matter).
  std::vector<float> rows(static_cast<std::size_t>(o.history * gen.row_floats()));
  nsa::model::Rng rng(2);
  for (float& x : rows) x = static_cast<float>(rng.normal());
  for (index_t s = 0; s < o.seqs; ++s) gen.restore(s, rows.data(), o.history, pool);
  std::vector<index_t> ids(static_cast<std::size_t>(o.seqs));
  std::vector<std::int32_t> tokens(ids.size(), 65);
  for (index_t s = 0; s < o.seqs; ++s) ids[static_cast<std::size_t>(s)] = s;
  // One step each first: every sequence has a last step (and warm caches).
  gen.step(ids.data(), tokens.data(), o.seqs, pool);
  const nsa::model::ModelConfig& c = model.config();
  auto bytes_read = [&] {
    std::int64_t read = 0;
    for (index_t s = 0; s < o.seqs; ++s) read += gen.last_tokens_read(s);
    return static_cast<double>(read) * (c.d_k + c.d_v) * 4.0;
  };
  std::vector<Row> out;
  {
    const auto t0 = Clock::now();
    for (int r = 0; r < o.rounds; ++r) gen.step(ids.data(), tokens.data(), o.seqs, pool);
    const double s = seconds(t0, Clock::now()) / o.rounds;
    out.push_back({name, "batched", 1e3 * s, static_cast<double>(o.seqs) / s, bytes_read()});
  }
  {
    const auto t0 = Clock::now();
    for (int r = 0; r < o.rounds; ++r)
      for (index_t s = 0; s < o.seqs; ++s) gen.step(&ids[static_cast<std::size_t>(s)], &tokens[0], 1, pool);
    const double s = seconds(t0, Clock::now()) / o.rounds;
    out.push_back({name, "separate", 1e3 * s, static_cast<double>(o.seqs) / s, bytes_read()});
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seqs") o.seqs = std::atoll(next());
    else if (a == "--history") o.history = std::atoll(next());
    else if (a == "--rounds") o.rounds = std::atoi(next());
    else if (a == "--threads") o.threads = std::atoi(next());
    else if (a == "--json") o.json = next();
    else {
      std::fprintf(stderr, "unknown option %s (see the top of bench/serve/batch_steps.cc)\n", a.c_str());
      return 2;
    }
  }
  if (o.seqs < 1 || o.history < 1 || o.rounds < 1 || o.threads < 1) {
    std::fprintf(stderr, "--seqs, --history, --rounds and --threads must be positive\n");
    return 2;
  }
  nsa::ThreadPool pool(o.threads);
  std::vector<Row> rows = measure(nsa::model::AttentionKind::nsa, "nsa", o, pool);
  for (const Row& r : measure(nsa::model::AttentionKind::full, "full", o, pool)) rows.push_back(r);
  std::printf("%lld conversations x %lld tokens of history, %d threads, %d rounds\n",
              static_cast<long long>(o.seqs), static_cast<long long>(o.history), o.threads, o.rounds);
  std::printf("%-5s %-9s %12s %10s %16s\n", "kind", "steps", "ms/round", "tokens/s", "attn MB/round");
  for (const Row& r : rows)
    std::printf("%-5s %-9s %12.2f %10.1f %16.1f\n", r.kind, r.mode, r.ms_per_round, r.tokens_per_s, r.bytes_per_round / 1e6);
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << "{\"seqs\": " << o.seqs << ", \"history\": " << o.history << ", \"threads\": " << o.threads << ", \"rows\": [";
    for (std::size_t i = 0; i < rows.size(); ++i)
      f << (i ? ", " : "") << "{\"kind\": \"" << rows[i].kind << "\", \"steps\": \"" << rows[i].mode
        << "\", \"ms_per_round\": " << rows[i].ms_per_round << ", \"tokens_per_s\": " << rows[i].tokens_per_s
        << ", \"attention_bytes_per_round\": " << rows[i].bytes_per_round << "}";
    f << "]}\n";
  }
  return 0;
}
