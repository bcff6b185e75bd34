// nsa inspect: what a checkpoint's attention does on an input. For every layer: the mean
// gate of each branch; for chosen queries: the selection blocks each one picked; tokens
// read per step against full attention; with --needle (--mqar), whether the queries that
// answer the passkey (each MQAR key) select the block holding the needle (the key's pair),
// and for MQAR whether answers are right when the block was chosen and when it was missed;
// and a PNG selection map (queries x blocks).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "model/data/corpus.h"
#include "model/data/mqar.h"
#include "model/data/needle.h"
#include "model/training/checkpoint_io.h"
#include "model_options.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "plot/matrix_image.h"
#include "plot/png.h"

namespace nsa::cli {
namespace {

struct InspectOptions {
  std::string checkpoint;
  std::string text, file;
  std::int64_t needle = 0;  // context length of a passkey example (0: not used)
  std::int64_t mqar = 0;    // context length of an MQAR example (0: not used)
  int mqar_pairs = 16;
  double depth = 0.3;
  std::string data = kDefaultData;
  std::int64_t max_tokens = 2048;
  int layer = -1;  // -1: the last layer
  int kv_head = 0;
  std::vector<std::int64_t> queries;
  std::string map;
  std::uint64_t seed = 1;
  int threads = 0;
};

int run_inspect(const InspectOptions& o) {
  if (o.checkpoint.empty()) throw Error("inspect: give a checkpoint (nsa inspect CHECKPOINT)");
  model::Model<float> m = model::load_model(o.checkpoint);
  const model::ModelConfig& mc = m.config();
  if (mc.attention == model::AttentionKind::full)
    throw Error("inspect: " + o.checkpoint + " is a full-attention model: it has no branches or selection to inspect");

  // The input.
  std::vector<std::int32_t> tokens;
  index_t needle_at = -1, answer_at = -1;
  // Recall probes: a query position that must retrieve from a source position.
  struct Probe {
    index_t query, source;
    std::int32_t answer;
  };
  std::vector<Probe> probes;
  const int sources = (!o.text.empty()) + (!o.file.empty()) + (o.needle > 0) + (o.mqar > 0);
  if (sources > 1) throw Error("inspect: give one of --text, --file, --needle, --mqar");
  if (o.mqar > 0) {
    const model::Corpus corpus = model::Corpus::from_file(o.data);
    model::Rng rng(o.seed);
    model::MqarOptions options;
    options.context = o.mqar;
    options.pairs = o.mqar_pairs;
    options.depth = o.depth;
    const model::MqarExample ex = model::make_mqar(&corpus.val(), options, rng);
    tokens = ex.tokens;
    for (const model::MqarAnswer& a : ex.answers) probes.push_back({a.position, a.position - a.distance, a.value});
    answer_at = ex.answers.front().position;
  } else if (!o.text.empty()) {
    tokens = model::encode_bytes(o.text);
  } else if (!o.file.empty() || o.needle == 0) {
    const std::string path = o.file.empty() ? o.data : o.file;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("inspect: cannot read " + path + (o.file.empty() ? " (run scripts/setup, or pass --text)" : ""));
    std::string text(static_cast<std::size_t>(o.max_tokens), '\0');
    in.read(text.data(), o.max_tokens);
    text.resize(static_cast<std::size_t>(in.gcount()));
    tokens = model::encode_bytes(text);
  } else {
    const model::Corpus corpus = model::Corpus::from_file(o.data);
    model::Rng rng(o.seed);
    model::NeedleOptions options;
    options.context = o.needle;
    options.depth = o.depth;
    const model::NeedleExample ex = model::make_needle(corpus.val(), options, rng);
    tokens = ex.tokens;
    needle_at = ex.needle_position;
    answer_at = ex.answer_start;
    for (index_t t = answer_at; t < static_cast<index_t>(tokens.size()); ++t) probes.push_back({t, needle_at, -1});
  }
  if (static_cast<std::int64_t>(tokens.size()) > o.max_tokens) tokens.resize(static_cast<std::size_t>(o.max_tokens));
  const index_t T = static_cast<index_t>(tokens.size());
  if (T < 1) throw Error("inspect: the input is empty");
  const int layer = o.layer < 0 ? mc.n_layers - 1 : o.layer;
  if (layer >= mc.n_layers) throw Error("inspect: --layer " + std::to_string(o.layer) + " but the model has " + std::to_string(mc.n_layers));
  if (o.kv_head < 0 || o.kv_head >= mc.n_kv_heads) throw Error("inspect: --kv-head out of range");

  ThreadPool pool(o.threads);
  const std::vector<std::int32_t> no_targets(tokens.size(), -1);
  m.forward(tokens.data(), no_targets.data(), 1, T, pool);
  const Config config(mc.nsa);
  const int H = mc.n_heads, top_n = config.top_n();
  std::printf("nsa inspect %s: %s; %lld tokens\n", o.checkpoint.c_str(), mc.describe().c_str(), static_cast<long long>(T));

  std::printf("\nmean gate per branch (over tokens and heads)\n  layer      cmp      slc      win\n");
  for (int l = 0; l < mc.n_layers; ++l) {
    double sum[3] = {0, 0, 0};
    const float* g = m.gates(l);
    for (index_t i = 0; i < T * H; ++i)
      for (int b = 0; b < 3; ++b) sum[b] += g[i * 3 + b];
    std::printf("  %5d  %7.3f  %7.3f  %7.3f\n", l, sum[0] / (T * H), sum[1] / (T * H), sum[2] / (T * H));
  }

  const auto& saved = m.attention_saved(layer);
  auto chosen_of = [&](index_t t) { return saved.sel_blocks.data() + (t * mc.n_kv_heads + o.kv_head) * top_n; };
  std::vector<std::int64_t> queries = o.queries;
  if (queries.empty()) {
    for (int i = 1; i <= 4; ++i) queries.push_back(T * i / 4 - 1);
    if (answer_at >= 0) queries.push_back(answer_at);
  }
  std::printf("\nlayer %d, kv head %d: selected blocks (of %d tokens) and tokens read per query\n", layer, o.kv_head,
              config.sel_block());
  for (std::int64_t t : queries) {
    if (t < 0 || t >= T) throw Error("inspect: query " + std::to_string(t) + " is outside 0.." + std::to_string(T - 1));
    const std::int32_t* chosen = chosen_of(t);
    std::printf("  t=%-6lld blocks", static_cast<long long>(t));
    for (int i = 0; i < top_n; ++i)
      if (chosen[i] >= 0) std::printf(" %d", chosen[i]);
    std::printf("   tokens read %lld (full attention: %lld)\n", static_cast<long long>(tokens_read(config, t, chosen).total()),
                static_cast<long long>(t + 1));
  }

  if (!probes.empty()) {
    const char* what = o.mqar > 0 ? "the pair's" : "the needle's";
    if (needle_at >= 0)
      std::printf("\npasskey at token %lld (selection block %lld); the answer starts at %lld\n",
                  static_cast<long long>(needle_at), static_cast<long long>(needle_at / config.sel_block()),
                  static_cast<long long>(answer_at));
    else
      std::printf("\n%zu MQAR queries from token %lld; pairs at depth %.2f, the answers %lld..%lld tokens back\n",
                  probes.size(), static_cast<long long>(answer_at), o.depth,
                  static_cast<long long>(probes.back().query - probes.back().source),
                  static_cast<long long>(probes.front().query - probes.front().source));
    auto selected = [&](int l, const Probe& p, int kv) {
      const std::int32_t* c = m.attention_saved(l).sel_blocks.data() + (p.query * mc.n_kv_heads + kv) * top_n;
      return std::find(c, c + top_n, static_cast<std::int32_t>(p.source / config.sel_block())) != c + top_n;
    };
    for (int l = 0; l < mc.n_layers; ++l) {
      int hits = 0, asked = 0;
      for (const Probe& p : probes)
        for (int kv = 0; kv < mc.n_kv_heads; ++kv) {
          ++asked;
          hits += selected(l, p, kv) ? 1 : 0;
        }
      std::printf("  layer %d: %s block is selected by %d of %d (answer query, kv head) pairs\n", l, what, hits, asked);
    }
    if (o.mqar > 0) {
      // Right answers, split by whether the pair's block was selected in the listed layer
      // (for every kv head): a miss there is the selection's failure, a wrong answer despite
      // a hit is the attention's.
      int right_hit = 0, hit = 0, right_miss = 0, miss = 0;
      for (const Probe& p : probes) {
        const float* logits = m.logits() + p.query * mc.vocab;
        const bool right = std::max_element(logits, logits + mc.vocab) - logits == p.answer;
        bool all = true;
        for (int kv = 0; kv < mc.n_kv_heads; ++kv) all = all && selected(layer, p, kv);
        (all ? hit : miss) += 1;
        (all ? right_hit : right_miss) += right ? 1 : 0;
      }
      std::printf("  answers right: %d of %d; block selected in layer %d: %d of %d right; block missed: %d of %d right\n",
                  right_hit + right_miss, hit + miss, layer, right_hit, hit, right_miss, miss);
    }
  }

  if (!o.map.empty()) {
    const index_t blocks = config.num_sel_blocks(T);
    plot::MatrixImage image;
    image.title = "selected blocks, layer " + std::to_string(layer) + ", kv head " + std::to_string(o.kv_head);
    image.subtitle = "dark: selected; light: visible, not selected; white: in the future";
    image.x_label = "key block (" + std::to_string(config.sel_block()) + " tokens)";
    image.y_label = "query token";
    image.rows = static_cast<int>(T);
    image.cols = static_cast<int>(blocks);
    image.lo = 0;
    image.hi = 1;
    image.colorbar = false;
    image.values.assign(static_cast<std::size_t>(T * blocks), 0.0f);
    for (index_t t = 0; t < T; ++t) {
      for (index_t b = 0; b * config.sel_block() <= t; ++b) image.values[static_cast<std::size_t>(t * blocks + b)] = 0.15f;
      const std::int32_t* chosen = chosen_of(t);
      for (int i = 0; i < top_n; ++i)
        if (chosen[i] >= 0) image.values[static_cast<std::size_t>(t * blocks + chosen[i])] = 1.0f;
    }
    plot::write_png(o.map, plot::render_matrix_image(image));
    std::printf("\nselection map: %s (dark: selected; light: visible, not selected)\n", o.map.c_str());
  }
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand(
      "inspect", "What the attention of a checkpoint selects on an input: gates, chosen blocks, tokens read, a map");
  sub->add_option("checkpoint", o->checkpoint, "a checkpoint written by nsa train")->required();
  sub->add_option("--text", o->text, "input text");
  sub->add_option("--file", o->file, "input file (its first --max-tokens bytes)");
  sub->add_option("--needle", o->needle, "a passkey example of this many tokens as the input");
  sub->add_option("--mqar", o->mqar, "an MQAR example of this many tokens as the input");
  sub->add_option("--mqar-pairs", o->mqar_pairs, "key-value pairs of the MQAR example")->capture_default_str();
  sub->add_option("--depth", o->depth, "the passkey's (MQAR pairs') depth in [0, 1]")->capture_default_str();
  sub->add_option("--data", o->data, "text for the default input and the passkey filler")->capture_default_str();
  sub->add_option("--max-tokens", o->max_tokens, "longest input")->capture_default_str();
  sub->add_option("--layer", o->layer, "layer of the per-query listing and the map (-1: last)")->capture_default_str();
  sub->add_option("--kv-head", o->kv_head, "kv head of the listing and the map")->capture_default_str();
  sub->add_option("--queries", o->queries, "query positions to list (default: 4 spread out, and the answer)")
      ->delimiter(',');
  sub->add_option("--map", o->map, "write the selection map (queries x blocks) to FILE.png");
  sub->add_option("--seed", o->seed, "seed of the passkey example")->capture_default_str();
  sub->add_option("--threads", o->threads, "threads (0: every hardware thread)")->capture_default_str();
  return {sub, [o] { return run_inspect(*o); }};
}

}  // namespace nsa::cli
