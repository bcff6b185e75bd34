// Trainer: one training run of a Model<float>: the task mix (data/task_mix.h: text,
// passkey and MQAR steps), the progressive-training schedule (training/schedule.h), AdamW with warm-up + cosine schedule and gradient clipping, periodic
// validation, checkpoints that resume exactly.
//
// Reproducibility: the model's init and the data order come from options.seed; the kernels
// are bitwise deterministic at a fixed thread count. A run resumed from a checkpoint at
// step s therefore continues bit for bit like the uninterrupted run (same thread count).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/data/corpus.h"
#include "model/data/rng.h"
#include "model/data/task_mix.h"
#include "model/model.h"
#include "model/training/checkpoint_io.h"
#include "model/training/train_options.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

struct StepStats {
  std::int64_t step = 0;  // steps done after this one (1-based)
  Task task = Task::text;  // the step's task; recall tasks are scored on their answers only
  double loss = 0;        // training loss of this step's batch
  double accuracy = -1;   // recall steps: share of answer targets that are the argmax (else -1)
  double grad_norm = 0;   // before clipping
  double lr = 0;
  std::int64_t tokens = 0;  // tokens in this step's batch
};

class Trainer {
 public:
  // A fresh run: the model initialized from options.seed.
  Trainer(const ModelConfig& config, const TrainOptions& options);
  // Continues the run saved in a training checkpoint. `steps`, when > 0, replaces the
  // saved total (to extend a finished run); the schedule is then recomputed for it.
  static Trainer resume(const std::string& checkpoint, std::int64_t steps = 0);

  // Converts a run: copies every parameter of `checkpoint` that exists in this model with
  // the same shape (e.g. full -> nsa keeps embeddings, projections and MLPs; phi and gate
  // parameters keep their fresh init). Returns the names that were not in the checkpoint.
  std::vector<std::string> init_from(const std::string& checkpoint);

  // One optimizer step on a batch drawn from corpus.train(). Throws nsa::Error when the
  // loss or the gradient norm is not finite (the parameters are then left as they were).
  StepStats step(const Corpus& corpus, ThreadPool& pool);
  // Mean loss over the first eval_batches * batch windows of the validation split.
  double validation_loss(const Corpus& corpus, ThreadPool& pool);

  void save(const std::string& path) const;  // a training checkpoint (atomic)

  bool done() const { return state_.step >= state_.options.steps; }
  std::int64_t steps_done() const { return state_.step; }
  const TrainOptions& options() const { return state_.options; }
  Model<float>& model() { return model_; }
  const Model<float>& model() const { return model_; }

 private:
  Trainer(Model<float> model, TrainState state);
  Batch next_batch(const Corpus& corpus, Task* task);

  Model<float> model_;
  TrainState state_;
  Rng data_rng_;  // the data stream; state_.rng is its state after the last completed step
  std::vector<std::uint8_t> decay_mask_;  // [num_params]
};

}  // namespace nsa::model
