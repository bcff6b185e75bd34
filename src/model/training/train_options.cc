#include "model/training/train_options.h"

#include <cmath>

#include "model/data/mqar.h"
#include "model/training/key_value.h"
#include "nsa/error.h"

namespace nsa::model {

void TrainOptions::validate() const {
  auto require = [](bool ok, const std::string& message) {
    if (!ok) throw Error("training option " + message);
  };
  require(steps >= 1, "steps must be >= 1, got " + std::to_string(steps));
  require(batch >= 1, "batch must be >= 1, got " + std::to_string(batch));
  require(seq >= 2, "seq must be >= 2, got " + std::to_string(seq));
  require(std::isfinite(lr) && lr > 0, "lr must be a positive number");
  require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr, "min_lr must be in [0, lr]");
  require(warmup >= 0, "warmup must be >= 0");
  require(std::isfinite(weight_decay) && weight_decay >= 0, "weight_decay must be >= 0");
  require(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, "beta1 and beta2 must be in [0, 1)");
  require(std::isfinite(clip) && clip >= 0, "clip must be >= 0 (0: no clipping)");
  const TaskMix mix = task_mix();  // throws naming a bad part of the spec
  // A passkey example needs room for the needle, the question and a 5-digit answer.
  require(mix.weight(Task::needle) == 0 || seq >= 66,
          "seq must be >= 66 with needle steps (a passkey example needs 66 tokens), got " + std::to_string(seq));
  require(mqar_pairs >= 1 && mqar_pairs <= kMqarRange,
          "mqar_pairs must be in 1.." + std::to_string(kMqarRange) + ", got " + std::to_string(mqar_pairs));
  require(mix.weight(Task::mqar) == 0 || seq >= 4 * mqar_pairs,
          "seq must be >= 4 * mqar_pairs = " + std::to_string(4 * mqar_pairs) + " with mqar steps, got " +
              std::to_string(seq));
  require(selection_delay >= 0 && selection_ramp >= 0, "selection_delay and selection_ramp must be >= 0");
  require(sparsify_steps >= 0, "sparsify_steps must be >= 0");
  require(eval_every >= 0, "eval_every must be >= 0");
  require(eval_batches >= 1, "eval_batches must be >= 1");
}

std::string TrainOptions::serialize() const {
  std::string s;
  auto put = [&](const char* key, const std::string& value) { s += std::string(key) + "=" + value + "\n"; };
  put("steps", std::to_string(steps));
  put("batch", std::to_string(batch));
  put("seq", std::to_string(seq));
  put("lr", format_double(lr));
  put("min_lr", format_double(min_lr));
  put("warmup", std::to_string(warmup));
  put("weight_decay", format_double(weight_decay));
  put("beta1", format_double(beta1));
  put("beta2", format_double(beta2));
  put("clip", format_double(clip));
  put("seed", std::to_string(seed));
  put("tasks", task_mix().spec());
  put("mqar_pairs", std::to_string(mqar_pairs));
  put("selection_delay", std::to_string(selection_delay));
  put("selection_ramp", std::to_string(selection_ramp));
  put("sparsify_steps", std::to_string(sparsify_steps));
  put("eval_every", std::to_string(eval_every));
  put("eval_batches", std::to_string(eval_batches));
  return s;
}

TrainOptions TrainOptions::parse(const std::string& text) {
  const char* what = "training options";
  const auto kv = parse_key_values(text, what);
  static const char* known[] = {"steps", "batch", "seq", "lr", "min_lr", "warmup", "weight_decay",
                                "beta1", "beta2", "clip", "seed", "needle_fraction", "tasks", "mqar_pairs",
                                "selection_delay", "selection_ramp", "sparsify_steps", "eval_every",
                                "eval_batches"};
  for (const auto& [key, value] : kv) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw Error(std::string(what) + ": unknown key '" + key + "'");
  }
  TrainOptions o;
  read_value(kv, "steps", o.steps, what);
  read_value(kv, "batch", o.batch, what);
  read_value(kv, "seq", o.seq, what);
  read_value(kv, "lr", o.lr, what);
  read_value(kv, "min_lr", o.min_lr, what);
  read_value(kv, "warmup", o.warmup, what);
  read_value(kv, "weight_decay", o.weight_decay, what);
  read_value(kv, "beta1", o.beta1, what);
  read_value(kv, "beta2", o.beta2, what);
  read_value(kv, "clip", o.clip, what);
  read_value(kv, "seed", o.seed, what);
  if (kv.count("needle_fraction")) {  // checkpoints written before the task mix
    if (kv.count("tasks")) throw Error(std::string(what) + ": both needle_fraction and tasks are given");
    double f = 0;
    read_value(kv, "needle_fraction", f, what);
    if (!(f >= 0 && f <= 1)) throw Error(std::string(what) + ": needle_fraction must be in [0, 1]");
    o.tasks = "needle:" + format_double(f) + ",text:" + format_double(1 - f);
  }
  if (kv.count("tasks")) o.tasks = kv.at("tasks");
  std::int64_t pairs = o.mqar_pairs;
  read_value(kv, "mqar_pairs", pairs, what);
  if (pairs < 1 || pairs > kMqarRange) throw Error(std::string(what) + ": mqar_pairs is out of range");
  o.mqar_pairs = static_cast<int>(pairs);
  read_value(kv, "selection_delay", o.selection_delay, what);
  read_value(kv, "selection_ramp", o.selection_ramp, what);
  read_value(kv, "sparsify_steps", o.sparsify_steps, what);
  read_value(kv, "eval_every", o.eval_every, what);
  read_value(kv, "eval_batches", o.eval_batches, what);
  o.validate();
  return o;
}

}  // namespace nsa::model
