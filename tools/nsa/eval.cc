// nsa eval: a checkpoint's validation loss on a text, and its passkey retrieval accuracy
// over a grid of context lengths x needle depths (the paper's Figure 5 at small scale),
// printed as a table and drawn as a heatmap.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "model/data/corpus.h"
#include "model/data/needle.h"
#include "model/training/checkpoint_io.h"
#include "model_options.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "plot/heatmap.h"
#include "plot/png.h"
#include "progress.h"

namespace nsa::cli {
namespace {

struct EvalOptions {
  std::string checkpoint;
  std::string data = kDefaultData;
  std::int64_t seq = 1024;
  std::int64_t val_windows = 16;
  bool needle = true;
  std::vector<std::int64_t> contexts = {256, 512, 1024};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  std::int64_t trials = 10;
  std::uint64_t seed = 1234;
  std::string heatmap;
  std::string json;
  int threads = 0;
};

struct NeedleScore {
  std::int64_t exact = 0;         // examples with every digit right
  std::int64_t digits_right = 0;  // digits right, over all examples
  std::int64_t digits = 0;
};

// Of `trials` passkey examples at (context, depth): how many have every digit of the
// answer as the model's argmax (teacher-forced: digit i is predicted after digits < i),
// and how many digits are right.
NeedleScore needle_score(model::Model<float>& m, const std::vector<std::int32_t>& filler, std::int64_t context,
                            double depth, std::int64_t trials, model::Rng& rng, ThreadPool& pool) {
  std::vector<model::NeedleExample> examples;
  std::vector<std::int32_t> tokens, targets;
  for (std::int64_t i = 0; i < trials; ++i) {
    model::NeedleOptions options;
    options.context = context;
    options.depth = depth;
    examples.push_back(model::make_needle(filler, options, rng));
    tokens.insert(tokens.end(), examples.back().tokens.begin(), examples.back().tokens.end());
    targets.insert(targets.end(), examples.back().targets.begin(), examples.back().targets.end());
  }
  m.forward(tokens.data(), targets.data(), trials, context, pool);
  const int vocab = m.config().vocab;
  NeedleScore score;
  for (std::int64_t i = 0; i < trials; ++i) {
    bool all = true;
    for (std::int64_t t = 0; t < context; ++t) {
      const std::int32_t want = examples[static_cast<std::size_t>(i)].targets[static_cast<std::size_t>(t)];
      if (want < 0) continue;
      const float* logits = m.logits() + (i * context + t) * vocab;
      const std::int32_t best = static_cast<std::int32_t>(std::max_element(logits, logits + vocab) - logits);
      all = all && best == want;
      score.digits_right += best == want;
      ++score.digits;
    }
    score.exact += all ? 1 : 0;
  }
  return score;
}

int run_eval(const EvalOptions& o) {
  if (o.checkpoint.empty()) throw Error("eval: give a checkpoint (nsa eval CHECKPOINT)");
  if (!std::filesystem::exists(o.data))
    throw Error("eval: text " + o.data + " not found: run scripts/setup or pass --data FILE");
  if (o.trials < 1) throw Error("eval: --trials must be >= 1");
  for (double d : o.depths)
    if (!(d >= 0 && d <= 1)) throw Error("eval: --depths must be in [0, 1]");
  const model::Corpus corpus = model::Corpus::from_file(o.data);
  model::Model<float> m = model::load_model(o.checkpoint);
  ThreadPool pool(o.threads);
  std::printf("nsa eval %s: %s, %zu parameters\n", o.checkpoint.c_str(), m.config().describe().c_str(),
              m.num_params());

  // Validation loss over the first consecutive windows of the validation split.
  const index_t windows = std::min<index_t>(o.val_windows, model::num_windows(corpus.val(), o.seq));
  if (windows < 1) throw Error("eval: the validation split is shorter than --seq + 1 tokens");
  double total = 0;
  for (index_t w = 0; w < windows; w += 4) {
    const index_t rows = std::min<index_t>(4, windows - w);
    const model::Batch b = model::window_batch(corpus.val(), w, rows, o.seq);
    total += m.forward(b.tokens.data(), b.targets.data(), rows, o.seq, pool) * static_cast<double>(rows);
  }
  const double val_loss = total / static_cast<double>(windows);
  std::printf("validation loss %.4f nats/byte (%.3f bits/byte) over %lld windows of %lld tokens\n", val_loss,
              val_loss / std::log(2.0), static_cast<long long>(windows), static_cast<long long>(o.seq));

  std::vector<std::vector<double>> accuracy, digit_accuracy;  // [context][depth]
  if (o.needle) {
    model::Rng rng(o.seed);
    Progress progress(static_cast<std::int64_t>(o.contexts.size() * o.depths.size()));
    std::int64_t done = 0;
    for (std::int64_t context : o.contexts) {
      accuracy.emplace_back();
      digit_accuracy.emplace_back();
      for (double depth : o.depths) {
        const NeedleScore score = needle_score(m, corpus.val(), context, depth, o.trials, rng, pool);
        accuracy.back().push_back(static_cast<double>(score.exact) / static_cast<double>(o.trials));
        digit_accuracy.back().push_back(static_cast<double>(score.digits_right) / static_cast<double>(score.digits));
        progress.update(++done, "context " + std::to_string(context));
      }
    }
    progress.finish();
    const auto print_grid = [&](const char* what, const std::vector<std::vector<double>>& grid) {
      std::printf("%s (%lld trials per cell; window w=%d)\n%10s", what, static_cast<long long>(o.trials),
                  m.config().nsa.window, "context");
      for (double d : o.depths) std::printf("  depth %4.2f", d);
      std::printf("\n");
      for (std::size_t i = 0; i < o.contexts.size(); ++i) {
        std::printf("%10lld", static_cast<long long>(o.contexts[i]));
        for (double a : grid[i]) std::printf("  %10.2f", a);
        std::printf("\n");
      }
    };
    print_grid("passkey accuracy, all 5 digits right", accuracy);
    print_grid("passkey digit accuracy (chance 0.1)", digit_accuracy);
    if (!o.heatmap.empty()) {
      // Like the paper's Figure 5: context length across, needle depth down.
      plot::Heatmap map;
      map.rows = static_cast<int>(o.depths.size());
      map.cols = static_cast<int>(o.contexts.size());
      for (std::size_t r = 0; r < o.depths.size(); ++r)
        for (std::size_t c = 0; c < o.contexts.size(); ++c) map.values.push_back(accuracy[c][r]);
      for (double d : o.depths) {
        char label[16];
        std::snprintf(label, sizeof label, "%.2f", d);
        map.row_labels.push_back(label);
      }
      for (std::int64_t c : o.contexts) map.col_labels.push_back(std::to_string(c));
      map.title = std::string("passkey accuracy: ") + model::attention_kind_name(m.config().attention);
      map.subtitle = o.checkpoint + ", window " + std::to_string(m.config().nsa.window) + ", " +
                     std::to_string(o.trials) + " trials per cell";
      map.x_label = "context length (tokens)";
      map.y_label = "needle depth";
      map.colorbar_label = "accuracy";
      plot::write_png(o.heatmap, plot::render_heatmap(map));
      std::printf("heatmap: %s\n", o.heatmap.c_str());
    }
  }
  if (!o.json.empty()) {
    std::FILE* f = std::fopen(o.json.c_str(), "w");
    if (!f) throw Error("eval: cannot write " + o.json);
    std::fprintf(f, "{\n  \"checkpoint\": \"%s\",\n  \"attention\": \"%s\",\n  \"val_loss\": %.6f,\n  \"needle\": [",
                 o.checkpoint.c_str(), model::attention_kind_name(m.config().attention), val_loss);
    bool first = true;
    for (std::size_t i = 0; i < accuracy.size(); ++i)
      for (std::size_t j = 0; j < o.depths.size(); ++j) {
        std::fprintf(f, "%s\n    {\"context\": %lld, \"depth\": %.4f, \"accuracy\": %.4f, \"digit_accuracy\": %.4f}",
                     first ? "" : ",", static_cast<long long>(o.contexts[i]), o.depths[j], accuracy[i][j],
                     digit_accuracy[i][j]);
        first = false;
      }
    std::fprintf(f, "\n  ]\n}\n");
    if (std::fclose(f) != 0) throw Error("eval: cannot write " + o.json);
  }
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Validation loss of a checkpoint, and passkey retrieval accuracy over context length x depth");
  sub->add_option("checkpoint", o->checkpoint, "a checkpoint written by nsa train")->required();
  sub->add_option("--data", o->data, "text whose validation split is used")->capture_default_str();
  sub->add_option("--seq", o->seq, "tokens per validation window")->capture_default_str();
  sub->add_option("--val-windows", o->val_windows, "validation windows")->capture_default_str();
  sub->add_option("--contexts", o->contexts, "passkey context lengths")->delimiter(',')->capture_default_str();
  sub->add_option("--depths", o->depths, "passkey depths in [0, 1]")->delimiter(',')->capture_default_str();
  sub->add_option("--trials", o->trials, "passkey examples per cell")->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of the passkey examples")->capture_default_str();
  sub->add_flag("!--no-needle", o->needle, "skip the passkey grid");
  sub->add_option("--heatmap", o->heatmap, "write the passkey accuracy heatmap to FILE.png");
  sub->add_option("--json", o->json, "write the results as JSON to FILE");
  sub->add_option("--threads", o->threads, "threads (0: every hardware thread)")->capture_default_str();
  return {sub, [o] { return run_eval(*o); }};
}

}  // namespace nsa::cli
