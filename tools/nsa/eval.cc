// nsa eval: a checkpoint's validation loss on a text, and its retrieval accuracy on a
// recall task (--task needle: the passkey; --task mqar: multi-query associative recall)
// over a grid of context lengths x depths (the paper's Figure 5 at small scale), printed
// as a table and drawn as a heatmap; for mqar also split into answers within the sliding
// window and beyond it. Contexts beyond the training length measure length generalisation.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "json_output.h"
#include "model/data/corpus.h"
#include "model/data/needle.h"
#include "model/eval/recall.h"
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
  bool needle = true;            // run the task grid (--no-needle: only the validation loss)
  std::string task = "needle";   // needle | mqar
  int mqar_pairs = 16;
  std::int64_t window = 0;       // mqar: the within/beyond split (0: the model's nsa.window)
  std::vector<std::int64_t> contexts = {256, 512, 1024};
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  std::int64_t trials = 10;
  std::uint64_t seed = 1234;
  std::string heatmap;
  std::string json;
  int threads = 0;
};

void write_heatmap(const EvalOptions& o, const model::Model<float>& m, const std::vector<std::vector<double>>& grid,
                   const std::string& what) {
  // Like the paper's Figure 5: context length across, depth down.
  plot::Heatmap map;
  map.rows = static_cast<int>(o.depths.size());
  map.cols = static_cast<int>(o.contexts.size());
  for (std::size_t r = 0; r < o.depths.size(); ++r)
    for (std::size_t c = 0; c < o.contexts.size(); ++c) map.values.push_back(grid[c][r]);
  for (double d : o.depths) {
    char label[16];
    std::snprintf(label, sizeof label, "%.2f", d);
    map.row_labels.push_back(label);
  }
  for (std::int64_t c : o.contexts) map.col_labels.push_back(std::to_string(c));
  map.title = what + ": " + model::attention_kind_name(m.config().attention);
  map.subtitle = o.checkpoint + ", window " + std::to_string(m.config().nsa.window) + ", " +
                 std::to_string(o.trials) + " trials per cell";
  map.x_label = "context length (tokens)";
  map.y_label = o.task == "mqar" ? "depth of the pairs" : "needle depth";
  map.colorbar_label = "accuracy";
  plot::write_png(o.heatmap, plot::render_heatmap(map));
  std::printf("heatmap: %s\n", o.heatmap.c_str());
}

void print_grid(const EvalOptions& o, const char* what, const std::vector<std::vector<double>>& grid, int window) {
  std::printf("%s (%lld trials per cell; window w=%d)\n%10s", what, static_cast<long long>(o.trials), window,
              "context");
  for (double d : o.depths) std::printf("  depth %4.2f", d);
  std::printf("\n");
  for (std::size_t i = 0; i < o.contexts.size(); ++i) {
    std::printf("%10lld", static_cast<long long>(o.contexts[i]));
    for (double a : grid[i]) std::printf("  %10.2f", a);
    std::printf("\n");
  }
}

int run_eval(const EvalOptions& o) {
  if (o.checkpoint.empty()) throw Error("eval: give a checkpoint (nsa eval CHECKPOINT)");
  if (!std::filesystem::exists(o.data))
    throw Error("eval: text " + o.data + " not found: run scripts/setup or pass --data FILE");
  if (o.task != "needle" && o.task != "mqar") throw Error("eval: --task must be needle or mqar, got '" + o.task + "'");
  if (o.trials < 1) throw Error("eval: --trials must be >= 1");
  if (o.window < 0) throw Error("eval: --window must be >= 0");
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

  const int window = o.window > 0 ? static_cast<int>(o.window) : m.config().nsa.window;
  std::vector<std::vector<double>> accuracy, digit_accuracy;  // [context][depth]
  std::vector<std::vector<model::MqarScore>> mqar;              // [context][depth]
  model::MqarScore mqar_total;
  if (o.needle) {
    model::Rng rng(o.seed);
    Progress progress(static_cast<std::int64_t>(o.contexts.size() * o.depths.size()));
    std::int64_t done = 0;
    for (std::int64_t context : o.contexts) {
      accuracy.emplace_back();
      digit_accuracy.emplace_back();
      mqar.emplace_back();
      for (double depth : o.depths) {
        if (o.task == "needle") {
          const model::NeedleScore score = model::needle_score(m, corpus.val(), context, depth, o.trials, rng, pool);
          accuracy.back().push_back(static_cast<double>(score.exact) / static_cast<double>(o.trials));
          digit_accuracy.back().push_back(static_cast<double>(score.digits_right) / static_cast<double>(score.digits));
        } else {
          model::MqarOptions options;
          options.context = context;
          options.pairs = o.mqar_pairs;
          options.depth = depth;
          const model::MqarScore score = model::mqar_score(m, &corpus.val(), options, o.trials, window, rng, pool);
          accuracy.back().push_back(score.accuracy());
          mqar.back().push_back(score);
          mqar_total.add(score);
        }
        progress.update(++done, "context " + std::to_string(context));
      }
    }
    progress.finish();
    if (o.task == "needle") {
      print_grid(o, "passkey accuracy, all 5 digits right", accuracy, window);
      print_grid(o, "passkey digit accuracy (chance 0.1)", digit_accuracy, window);
    } else {
      print_grid(o, "mqar answer accuracy (chance 1/64)", accuracy, window);
      std::printf("mqar answers within the window (distance < %d): %.4f of %lld; beyond it: %.4f of %lld\n",
                  window, mqar_total.accuracy_within(), static_cast<long long>(mqar_total.within),
                  mqar_total.accuracy_beyond(), static_cast<long long>(mqar_total.beyond));
      for (std::size_t i = 0; i < o.contexts.size(); ++i) {
        model::MqarScore row;
        for (const auto& cell : mqar[i]) row.add(cell);
        std::printf("  context %6lld: within %.4f (%lld), beyond %.4f (%lld)\n",
                    static_cast<long long>(o.contexts[i]), row.accuracy_within(), static_cast<long long>(row.within),
                    row.accuracy_beyond(), static_cast<long long>(row.beyond));
      }
    }
    if (!o.heatmap.empty())
      write_heatmap(o, m, accuracy, o.task == "mqar" ? "mqar accuracy" : "passkey accuracy");
  }
  if (!o.json.empty()) {
    nlohmann::json out = {{"checkpoint", o.checkpoint}, {"attention", model::attention_kind_name(m.config().attention)},
                          {"val_loss", val_loss}, {"task", o.task}, {"window", window}};
    if (o.task == "mqar" && o.needle) {
      out["mqar_pairs"] = o.mqar_pairs;
      out["accuracy"] = mqar_total.accuracy();
      out["accuracy_within"] = mqar_total.accuracy_within();
      out["answers_within"] = mqar_total.within;
      out["accuracy_beyond"] = mqar_total.accuracy_beyond();
      out["answers_beyond"] = mqar_total.beyond;
    }
    nlohmann::json cells = nlohmann::json::array();
    for (std::size_t i = 0; i < accuracy.size(); ++i)
      for (std::size_t j = 0; j < o.depths.size(); ++j) {
        nlohmann::json cell = {{"context", o.contexts[i]}, {"depth", o.depths[j]}, {"accuracy", accuracy[i][j]}};
        if (o.task == "needle") {
          cell["digit_accuracy"] = digit_accuracy[i][j];
        } else {
          const model::MqarScore& c = mqar[i][j];
          cell["accuracy_within"] = c.accuracy_within();
          cell["answers_within"] = c.within;
          cell["accuracy_beyond"] = c.accuracy_beyond();
          cell["answers_beyond"] = c.beyond;
        }
        cells.push_back(std::move(cell));
      }
    out["cells"] = std::move(cells);
    write_json_file(o.json, out, "eval");
  }
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Validation loss of a checkpoint, and its recall accuracy (passkey or MQAR) over context length x depth");
  sub->add_option("checkpoint", o->checkpoint, "a checkpoint written by nsa train")->required();
  sub->add_option("--data", o->data, "text whose validation split is used")->capture_default_str();
  sub->add_option("--seq", o->seq, "tokens per validation window")->capture_default_str();
  sub->add_option("--val-windows", o->val_windows, "validation windows")->capture_default_str();
  sub->add_option("--task", o->task, "recall task: needle (passkey) or mqar")->capture_default_str();
  sub->add_option("--mqar-pairs", o->mqar_pairs, "mqar: key-value pairs per example")->capture_default_str();
  sub->add_option("--window", o->window, "mqar: window of the within/beyond split (0: the model's)")
      ->capture_default_str();
  sub->add_option("--contexts", o->contexts, "context lengths (beyond the training length: length generalisation)")->delimiter(',')->capture_default_str();
  sub->add_option("--depths", o->depths, "depths in [0, 1] (needle: of the needle; mqar: of the pairs)")->delimiter(',')->capture_default_str();
  sub->add_option("--trials", o->trials, "examples per cell")->capture_default_str();
  sub->add_option("--seed", o->seed, "seed of the examples")->capture_default_str();
  sub->add_flag("!--no-needle", o->needle, "skip the recall grid (validation loss only)");
  sub->add_option("--heatmap", o->heatmap, "write the accuracy heatmap to FILE.png");
  sub->add_option("--json", o->json, "write the results as JSON to FILE");
  sub->add_option("--threads", o->threads, "threads (0: every hardware thread)")->capture_default_str();
  return {sub, [o] { return run_eval(*o); }};
}

}  // namespace nsa::cli
