#include "model/training/trainer.h"

#include <algorithm>
#include <cmath>

#include "model/data/mqar.h"
#include "model/eval/recall.h"
#include "model/data/needle.h"
#include "model/training/schedule.h"
#include "model/optim/adamw.h"
#include "nsa/error.h"

namespace nsa::model {
namespace {

std::vector<std::uint8_t> make_decay_mask(const Model<float>& model) {
  std::vector<std::uint8_t> mask(model.num_params(), 0);
  for (const TensorInfo& t : model.tensors())
    std::fill(mask.begin() + static_cast<std::ptrdiff_t>(t.offset),
              mask.begin() + static_cast<std::ptrdiff_t>(t.offset + t.size), t.decay ? 1 : 0);
  return mask;
}

TrainState fresh_state(const TrainOptions& options, std::size_t num_params) {
  options.validate();
  TrainState state;
  state.options = options;
  // The data stream has its own seed, derived from the run's seed, so that the model's
  // init and the batches do not share random numbers.
  state.rng = Rng(options.seed ^ 0x5DEECE66Dull).state();
  state.adam_m.assign(num_params, 0.0f);
  state.adam_v.assign(num_params, 0.0f);
  return state;
}

Model<float> initialized_model(const ModelConfig& config, std::uint64_t seed) {
  Model<float> model(config);
  model.init(seed);
  return model;
}

}  // namespace

Trainer::Trainer(const ModelConfig& config, const TrainOptions& options)
    : Trainer(initialized_model(config, options.seed), TrainState{}) {
  state_ = fresh_state(options, model_.num_params());
  data_rng_.set_state(state_.rng);
}

Trainer::Trainer(Model<float> model, TrainState state)
    : model_(std::move(model)), state_(std::move(state)), decay_mask_(make_decay_mask(model_)) {
  data_rng_.set_state(state_.rng);
}

Trainer Trainer::resume(const std::string& checkpoint, std::int64_t steps) {
  Model<float> model = load_model(checkpoint);
  TrainState state;
  load_train_state(checkpoint, model, &state);
  if (steps > 0) {
    if (steps < state.step)
      throw Error("resume: --steps " + std::to_string(steps) + " is below the " +
                  std::to_string(state.step) + " steps already done in " + checkpoint);
    state.options.steps = steps;
  }
  return Trainer(std::move(model), std::move(state));
}

std::vector<std::string> Trainer::init_from(const std::string& checkpoint) {
  return load_matching_parameters(checkpoint, model_);
}

Batch Trainer::next_batch(const Corpus& corpus, Task* task) {
  const TrainOptions& o = state_.options;
  const TaskMix mix = o.task_mix();
  // A step draws its task only when there is a choice, so a single-task run's data stream
  // is that task's alone.
  *task = mix.mixed() ? mix.draw(data_rng_.uniform()) : mix.draw(0.0);
  Batch batch;
  batch.batch = o.batch;
  batch.seq = o.seq;
  // A recall example (needle or MQAR) as the next row: its tokens and answer-only targets.
  const auto append_row = [&batch](const auto& ex) {
    batch.tokens.insert(batch.tokens.end(), ex.tokens.begin(), ex.tokens.end());
    batch.targets.insert(batch.targets.end(), ex.targets.begin(), ex.targets.end());
  };
  switch (*task) {
    case Task::text: return sample_batch(corpus.train(), o.batch, o.seq, data_rng_);
    case Task::needle:
      // Every row a passkey example at a random depth, scored on the answer only.
      for (std::int64_t row = 0; row < o.batch; ++row) {
        NeedleOptions options;
        options.context = o.seq;
        options.depth = data_rng_.uniform();
        append_row(make_needle(corpus.train(), options, data_rng_));
      }
      return batch;
    case Task::mqar:
      // Every row an MQAR example with its pairs at a random depth (so answer distances
      // range from 1 to nearly the whole context), filler from the training text.
      for (std::int64_t row = 0; row < o.batch; ++row) {
        MqarOptions options;
        options.context = o.seq;
        options.pairs = o.mqar_pairs;
        options.depth = data_rng_.uniform();
        append_row(make_mqar(&corpus.train(), options, data_rng_));
      }
      return batch;
  }
  throw Error("train: unknown task");
}

StepStats Trainer::step(const Corpus& corpus, ThreadPool& pool) {
  if (done())
    throw Error("train: the run has already done its " + std::to_string(state_.options.steps) + " steps");
  const TrainOptions& o = state_.options;
  StepStats stats;
  const Batch batch = next_batch(corpus, &stats.task);
  stats.tokens = batch.batch * batch.seq;
  model_.set_attention_schedule(schedule_at(model_.config(), o, state_.step));
  stats.loss = model_.forward(batch.tokens.data(), batch.targets.data(), batch.batch, batch.seq, pool);
  if (is_recall(stats.task)) stats.accuracy = argmax_accuracy(model_, batch.targets.data());
  if (!std::isfinite(stats.loss)) {
    data_rng_.set_state(state_.rng);  // the failed step consumed no data either
    throw Error("train: loss is " + std::to_string(stats.loss) + " at step " + std::to_string(state_.step + 1) +
                "; the parameters are those of the last good step (lower --lr?)");
  }
  model_.backward(pool);
  const std::size_t n = model_.num_params();
  stats.grad_norm = clip_grad_norm(model_.grads(), n, o.clip);
  if (!std::isfinite(stats.grad_norm)) {
    data_rng_.set_state(state_.rng);
    throw Error("train: gradient norm is not finite at step " + std::to_string(state_.step + 1) +
                "; the parameters are those of the last good step (lower --lr?)");
  }
  stats.lr = learning_rate(state_.step, o.warmup, o.steps, o.lr, o.min_lr);
  AdamWOptions adam;
  adam.beta1 = o.beta1;
  adam.beta2 = o.beta2;
  adam.weight_decay = o.weight_decay;
  adamw_step(model_.params(), model_.grads(), state_.adam_m.data(), state_.adam_v.data(), n,
             state_.step + 1, stats.lr, adam, decay_mask_.data());
  ++state_.step;
  state_.rng = data_rng_.state();
  stats.step = state_.step;
  return stats;
}

double Trainer::validation_loss(const Corpus& corpus, ThreadPool& pool) {
  const TrainOptions& o = state_.options;
  model_.set_attention_schedule(schedule_at(model_.config(), o, state_.step));
  const index_t windows = num_windows(corpus.val(), o.seq);
  if (windows < 1)
    throw Error("validation split has " + std::to_string(corpus.val().size()) + " tokens, fewer than seq + 1 = " +
                std::to_string(o.seq + 1));
  double total = 0;
  index_t counted = 0;
  for (index_t b = 0; b < o.eval_batches; ++b) {
    const index_t first = b * o.batch;
    if (first >= windows) break;
    const index_t rows = std::min<index_t>(o.batch, windows - first);
    const Batch batch = window_batch(corpus.val(), first, rows, o.seq);
    total += model_.forward(batch.tokens.data(), batch.targets.data(), batch.batch, batch.seq, pool) *
             static_cast<double>(rows);
    counted += rows;
  }
  return total / static_cast<double>(counted);
}

void Trainer::save(const std::string& path) const { save_checkpoint(path, model_, &state_); }

}  // namespace nsa::model
