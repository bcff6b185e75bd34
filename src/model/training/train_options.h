// TrainOptions: everything that defines a training run besides the model's shape. Stored
// in every checkpoint (metadata "nsa.train_options") so that a resumed run continues with
// exactly the same schedule and data mixture.
#pragma once

#include <cstdint>
#include <string>

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
  double needle_fraction = 0.25;   // share of steps that train on passkey examples (loss on
                                   //   the answer digits only); the others train on text
  std::int64_t eval_every = 100;   // validation loss every N steps (0: only at the end)
  std::int64_t eval_batches = 2;   // validation batches (fixed windows of the val split)

  void validate() const;  // throws nsa::Error naming the bad field
  // "key=value" lines; parse inverts it (unknown keys are an error).
  std::string serialize() const;
  static TrainOptions parse(const std::string& text);
};

}  // namespace nsa::model
