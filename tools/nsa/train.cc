// nsa train: trains a small language model (src/model) on a mix of tasks (--task: text,
// passkey, MQAR), optionally with a progressive schedule, and writes into --out:
//   checkpoint.safetensors   the latest training checkpoint (resume with --resume)
//   loss.csv                 step, train_loss, val_loss, lr, grad_norm, tokens_per_s, elapsed_s,
//                            needle_loss, mqar_loss, recall_accuracy (train_loss on text steps,
//                            needle_loss / mqar_loss on those tasks' steps, recall_accuracy:
//                            the answers' argmax accuracy on recall steps)
//   loss.png                 the training and validation loss curves
//   run.txt                  the model and training options
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "loss_plot.h"
#include "model/data/corpus.h"
#include "model/training/trainer.h"
#include "model_options.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"
#include "progress.h"

namespace nsa::cli {
namespace {

struct TrainCommandOptions {
  model::ModelConfig config;
  std::string attention, phi;
  model::TrainOptions train;
  std::string data = kDefaultData;
  std::string out = "runs/nsa";
  std::string resume, init_from;
  std::int64_t checkpoint_every = 0;
  int threads = 0;
  double needle_fraction = -1;  // --needle-fraction f: shorthand for --task needle:f,text:1-f
};

// Rows of an existing loss.csv up to `step` (a resumed run continues the file).
std::vector<std::string> csv_rows_up_to(const std::string& path, std::int64_t step) {
  std::vector<std::string> rows;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return rows;  // header
  while (std::getline(in, line)) {
    const auto comma = line.find(',');
    if (comma == std::string::npos) continue;
    try {
      if (std::stoll(line.substr(0, comma)) <= step) rows.push_back(line);
    } catch (const std::exception&) {
    }
  }
  return rows;
}

const char* kCsvHeader =
    "step,train_loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s,needle_loss,mqar_loss,recall_accuracy";

void write_text_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error("train: cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

int run_train(TrainCommandOptions o, CLI::App* sub) {
  namespace fs = std::filesystem;
  if (!o.resume.empty() && !o.init_from.empty())
    throw Error("train: --resume continues a run, --init-from starts a new one from another's weights; give one");
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw Error("train: cannot create the output folder " + o.out + ": " + ec.message());

  if (!fs::exists(o.data))
    throw Error("train: training text " + o.data +
                " not found: run scripts/setup (it writes the King James Bible there) or pass --data FILE");
  const model::Corpus corpus = model::Corpus::from_file(o.data);
  ThreadPool pool(o.threads);

  std::unique_ptr<model::Trainer> trainer;
  if (!o.resume.empty()) {
    for (const char* flag : {"--attention", "--d-model", "--layers", "--heads", "--kv-heads", "--dk", "--dv",
                             "--batch", "--seq", "--lr", "--seed", "--needle-fraction", "--task", "--mqar-pairs",
                             "--token-shift", "--selection-delay", "--selection-ramp", "--sparsify-steps"})
      if (sub->count(flag))
        throw Error(std::string("train: ") + flag + " cannot change a resumed run (it comes from " + o.resume + ")");
    trainer = std::make_unique<model::Trainer>(
        model::Trainer::resume(o.resume, sub->count("--steps") ? o.train.steps : 0));
    std::fprintf(stderr, "nsa train: resuming %s at step %lld of %lld\n", o.resume.c_str(),
                 static_cast<long long>(trainer->steps_done()), static_cast<long long>(trainer->options().steps));
  } else {
    const model::ModelConfig config = finish_model_config(o.config, o.attention, o.phi);
    if (o.needle_fraction >= 0) {
      if (sub->count("--task")) throw Error("train: give --task or --needle-fraction, not both");
      if (!(o.needle_fraction <= 1)) throw Error("train: --needle-fraction must be in [0, 1]");
      o.train.tasks = "needle:" + std::to_string(o.needle_fraction) + ",text:" + std::to_string(1 - o.needle_fraction);
    }
    o.train.tasks = model::TaskMix::parse(o.train.tasks).spec();
    o.train.validate();
    trainer = std::make_unique<model::Trainer>(config, o.train);
    if (!o.init_from.empty()) {
      const auto fresh = trainer->init_from(o.init_from);
      std::fprintf(stderr, "nsa train: weights from %s; %zu tensors keep their fresh init:", o.init_from.c_str(),
                   fresh.size());
      for (const auto& name : fresh) std::fprintf(stderr, " %s", name.c_str());
      std::fprintf(stderr, "\n");
    }
  }
  const model::TrainOptions& t = trainer->options();
  const model::ModelConfig& config = trainer->model().config();
  // Checkpoints every --checkpoint-every steps, else at every validation, else at the end only.
  const std::int64_t checkpoint_every =
      o.checkpoint_every > 0 ? o.checkpoint_every : (t.eval_every > 0 ? t.eval_every : t.steps);

  const std::string checkpoint = (fs::path(o.out) / "checkpoint.safetensors").string();
  const std::string csv_path = (fs::path(o.out) / "loss.csv").string();
  const std::string png_path = (fs::path(o.out) / "loss.png").string();
  std::ostringstream run_text;
  run_text << "model: " << config.describe() << "\nparameters: " << trainer->model().num_params()
           << "\ndata: " << o.data << " (" << corpus.train().size() << " train / " << corpus.val().size()
           << " validation bytes)\nthreads: " << pool.size() << "\n\n[model]\n"
           << config.serialize() << "\n[training]\n" << t.serialize();
  write_text_atomically((fs::path(o.out) / "run.txt").string(), run_text.str());
  std::fprintf(stderr, "nsa train: %s, %zu parameters; %lld steps of %lld x %lld tokens; %d threads -> %s\n",
               config.describe().c_str(), trainer->model().num_params(), static_cast<long long>(t.steps),
               static_cast<long long>(t.batch), static_cast<long long>(t.seq), pool.size(), o.out.c_str());

  std::vector<std::string> rows = csv_rows_up_to(csv_path, trainer->steps_done());
  double elapsed_before = 0;
  if (!rows.empty()) {  // the elapsed_s column (the 7th) of the last kept row
    std::string field;
    std::stringstream fields(rows.back());
    for (int i = 0; i < 7 && std::getline(fields, field, ','); ++i) {
    }
    try {
      elapsed_before = std::stod(field);
    } catch (const std::exception&) {
      throw Error("train: " + csv_path + ": malformed row '" + rows.back() + "'");
    }
  }
  auto flush_outputs = [&] {
    std::string csv = std::string(kCsvHeader) + "\n";
    for (const auto& r : rows) csv += r + "\n";
    write_text_atomically(csv_path, csv);
    write_loss_plot(csv_path, png_path,
                    std::string(model::attention_kind_name(config.attention)) + " model, " +
                        std::to_string(trainer->model().num_params()) + " parameters");
    trainer->save(checkpoint);
  };

  Progress progress(t.steps, trainer->steps_done());
  double last_val = -1, last_text = 0, last_needle = -1, last_mqar = -1;
  std::int64_t tokens_since = 0;
  double seconds_mark = 0;
  while (!trainer->done()) {
    const model::StepStats s = trainer->step(corpus, pool);
    tokens_since += s.tokens;
    const double now = progress.elapsed_seconds();
    const double tokens_per_s = tokens_since / std::max(1e-9, now - seconds_mark);
    std::string val_field;
    const bool eval_now = (t.eval_every > 0 && s.step % t.eval_every == 0) || trainer->done();
    if (eval_now) {
      last_val = trainer->validation_loss(corpus, pool);
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%.5f", last_val);
      val_field = buffer;
    }
    char loss_field[32];
    std::snprintf(loss_field, sizeof loss_field, "%.5f", s.loss);
    char accuracy_field[32] = "";
    if (s.accuracy >= 0) std::snprintf(accuracy_field, sizeof accuracy_field, "%.4f", s.accuracy);
    const bool text_step = s.task == model::Task::text;
    char row[320];
    std::snprintf(row, sizeof row, "%lld,%s,%s,%.6g,%.4g,%.1f,%.2f,%s,%s,%s", static_cast<long long>(s.step),
                  text_step ? loss_field : "", val_field.c_str(), s.lr, s.grad_norm, tokens_per_s, elapsed_before + now,
                  s.task == model::Task::needle ? loss_field : "", s.task == model::Task::mqar ? loss_field : "",
                  accuracy_field);
    rows.push_back(row);
    if (s.task == model::Task::needle) last_needle = s.loss;
    else if (s.task == model::Task::mqar) last_mqar = s.accuracy;
    else last_text = s.loss;
    char text[200];
    std::snprintf(text, sizeof text, "loss %.3f", last_text);
    if (last_needle >= 0) std::snprintf(text + std::strlen(text), sizeof text - std::strlen(text), "  passkey %.3f", last_needle);
    if (last_mqar >= 0) std::snprintf(text + std::strlen(text), sizeof text - std::strlen(text), "  mqar acc %.3f", last_mqar);
    if (last_val >= 0) std::snprintf(text + std::strlen(text), sizeof text - std::strlen(text), "  val %.3f", last_val);
    std::snprintf(text + std::strlen(text), sizeof text - std::strlen(text), "  %.0f tok/s", tokens_per_s);
    progress.update(s.step, text);
    if (s.step % 10 == 0) {
      tokens_since = 0;
      seconds_mark = now;
    }
    if (s.step % checkpoint_every == 0 || trainer->done()) flush_outputs();
  }
  progress.finish();
  std::fprintf(stdout, "nsa train: %lld steps in %s; final validation loss %.4f (%.3f bits/byte)\n",
               static_cast<long long>(trainer->steps_done()),
               format_duration(elapsed_before + progress.elapsed_seconds()).c_str(), last_val, last_val / std::log(2.0));
  std::fprintf(stdout, "  %s\n  %s\n  %s\n", checkpoint.c_str(), csv_path.c_str(), png_path.c_str());
  return 0;
}

}  // namespace

Command add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainCommandOptions>();
  CLI::App* sub = app.add_subcommand(
      "train", "Train a small byte-level NSA (or full / window) language model on a text file; writes a "
               "checkpoint, loss.csv and loss.png into --out");
  // A later --flag VALUE overrides an earlier one (scripts append a run's own options to
  // shared ones).
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_model_options(sub, &o->config, &o->attention, &o->phi);
  model::TrainOptions& t = o->train;
  sub->add_option("--data", o->data, "training text (scripts/setup writes the King James Bible here)")
      ->capture_default_str();
  sub->add_option("--out", o->out, "output folder")->capture_default_str();
  sub->add_option("--steps", t.steps, "optimizer steps (with --resume: the new total)")->capture_default_str();
  sub->add_option("--batch", t.batch, "sequences per step")->capture_default_str();
  sub->add_option("--seq", t.seq, "tokens per sequence (the context length)")->capture_default_str();
  sub->add_option("--lr", t.lr, "peak learning rate")->capture_default_str();
  sub->add_option("--min-lr", t.min_lr, "final learning rate of the cosine")->capture_default_str();
  sub->add_option("--warmup", t.warmup, "warm-up steps")->capture_default_str();
  sub->add_option("--weight-decay", t.weight_decay, "AdamW weight decay")->capture_default_str();
  sub->add_option("--clip", t.clip, "gradient-norm clip (0: none)")->capture_default_str();
  sub->add_option("--seed", t.seed, "seed of the init and the data order")->capture_default_str();
  sub->add_option("--task", t.tasks,
                  "task mix of the steps, name:weight,...: text (the corpus), needle (passkey), mqar "
                  "(multi-query associative recall), e.g. text:0.5,mqar:0.5")
      ->capture_default_str();
  sub->add_option("--needle-fraction", o->needle_fraction, "shorthand for --task needle:F,text:1-F");
  sub->add_option("--mqar-pairs", t.mqar_pairs, "key-value pairs per MQAR example")->capture_default_str();
  sub->add_option("--selection-delay", t.selection_delay,
                  "compression first: hold the selection gate at 0 for N steps (nsa)")
      ->capture_default_str();
  sub->add_option("--selection-ramp", t.selection_ramp, "then ramp the selection gate to 1 over N steps")
      ->capture_default_str();
  sub->add_option("--sparsify-steps", t.sparsify_steps,
                  "full -> NSA: start top-n and window covering the whole sequence, shrink them to the "
                  "model's over N steps")
      ->capture_default_str();
  sub->add_option("--eval-every", t.eval_every, "validation loss every N steps")->capture_default_str();
  sub->add_option("--eval-batches", t.eval_batches, "validation batches")->capture_default_str();
  sub->add_option("--checkpoint-every", o->checkpoint_every, "checkpoint every N steps (0: every --eval-every)")
      ->capture_default_str();
  sub->add_option("--resume", o->resume, "continue the run of this training checkpoint");
  sub->add_option("--init-from", o->init_from,
                  "start from this checkpoint's weights where names and shapes match (e.g. full -> nsa)");
  sub->add_option("--threads", o->threads, "threads (0: every hardware thread)")->capture_default_str();
  return {sub, [o, sub] { return run_train(*o, sub); }};
}

}  // namespace nsa::cli
