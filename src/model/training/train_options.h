// TrainOptions: everything that defines a training run besides the model's shape. Stored
// in every checkpoint (metadata "nsa.train_options") so that a resumed run continues with
// exactly the same schedule and data mixture.
#pragma once

#include <cstdint>
#include <string>

#include "model/data/task_mix.h"

namespace nsa::model {

struct TrainOptions {
  std::int64_t steps = 600;        // total optimizer steps of the run
  std::int64_t batch = 8;          // sequences per step
  std::int64_t seq = 1024;         // tokens per sequence
  double lr = 2e-3;                // peak learning rate (after warm-up)
  double min_lr = 2e-4;            // learning rate at the end of the cosine
  std::int64_t warmup = 40;        // linear warm-up steps
  double weight_decay = 0.1;       // AdamW decoupled decay on matrices
  double beta1 = 0.9, beta2 = 0.95;
  double clip = 1.0;               // global gradient-norm clip (0: none)
  std::uint64_t seed = 1;          // model init and data order
  std::string tasks = "needle:0.25,text:0.75";  // the steps' task mix (data/task_mix.h):
                                   //   text, needle (passkey), mqar; canonical spec
  int mqar_pairs = 16;             // mqar steps: key-value pairs per example (depth uniform)
  // Progressive training (both 0: off). The schedule is a function of the step alone, so
  // a resumed run continues it exactly (training/schedule.h).
  std::int64_t selection_delay = 0;  // compression first: the selection gate is held at 0
  std::int64_t selection_ramp = 0;   //   for selection_delay steps, then ramps to 1 over
                                     //   selection_ramp steps
  std::int64_t sparsify_steps = 0;   // full -> NSA: top_n and window start covering the whole
                                     //   sequence and shrink geometrically to the model's
                                     //   over this many steps
  std::int64_t eval_every = 100;   // validation loss every N steps (0: only at the end)
  std::int64_t eval_batches = 2;   // validation batches (fixed windows of the val split)

  TaskMix task_mix() const { return TaskMix::parse(tasks); }
  void validate() const;  // throws nsa::Error naming the bad field
  // "key=value" lines; parse inverts it (unknown keys are an error). The key
  // needle_fraction=f of older checkpoints reads as tasks=needle:f,text:1-f.
  std::string serialize() const;
  static TrainOptions parse(const std::string& text);
};

}  // namespace nsa::model
