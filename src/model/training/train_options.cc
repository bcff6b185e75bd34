#include "model/training/train_options.h"

#include <cmath>

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
  require(needle_fraction >= 0 && needle_fraction <= 1, "needle_fraction must be in [0, 1]");
  // A passkey example needs room for the needle, the question and a 5-digit answer.
  require(needle_fraction == 0 || seq >= 66,
          "seq must be >= 66 when needle_fraction > 0 (a passkey example needs 66 tokens), got " + std::to_string(seq));
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
  put("needle_fraction", format_double(needle_fraction));
  put("eval_every", std::to_string(eval_every));
  put("eval_batches", std::to_string(eval_batches));
  return s;
}

TrainOptions TrainOptions::parse(const std::string& text) {
  const char* what = "training options";
  const auto kv = parse_key_values(text, what);
  static const char* known[] = {"steps", "batch", "seq", "lr", "min_lr", "warmup", "weight_decay",
                                "beta1", "beta2", "clip", "seed", "needle_fraction", "eval_every",
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
  read_value(kv, "needle_fraction", o.needle_fraction, what);
  read_value(kv, "eval_every", o.eval_every, what);
  read_value(kv, "eval_batches", o.eval_batches, what);
  o.validate();
  return o;
}

}  // namespace nsa::model
