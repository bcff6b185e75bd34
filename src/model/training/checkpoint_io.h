// Model checkpoints: a safetensors file (checkpoint/safetensors.h) holding
//   the parameters, one tensor per entry of Model::tensors(), under their own names
//     ("embed", "layers.0.wq", ...), F32;
//   for a training checkpoint, AdamW's moments "optim.m.<name>", "optim.v.<name>" (F32)
//     and "train.rng" (I64 [4], the data generator's state, bit-cast);
// and the metadata
//   "nsa.format"         "nsa-model-1"
//   "nsa.model_config"   ModelConfig::serialize()
//   "nsa.train_options"  TrainOptions::serialize()          (training checkpoints)
//   "nsa.step"           optimizer steps taken               (training checkpoints)
// Python reads it with safetensors.safe_open(path, "np") (tests/model/read_safetensors.py).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/training/train_options.h"

namespace nsa::model {

// What a training run needs beyond the parameters to continue exactly.
struct TrainState {
  TrainOptions options;
  std::int64_t step = 0;
  std::array<std::uint64_t, 4> rng{};
  std::vector<float> adam_m, adam_v;  // [num_params] each
};

// Writes atomically (temp file + rename). `state` may be null (weights only).
void save_checkpoint(const std::string& path, const Model<float>& model, const TrainState* state);

// The model config stored in a checkpoint. Throws CheckpointError.
ModelConfig read_checkpoint_config(const std::string& path);

// A model with the checkpoint's config and parameters. Every parameter tensor must be
// present with its exact shape; throws CheckpointError naming the missing or mismatched one.
Model<float> load_model(const std::string& path);

// The training state of a training checkpoint into *state (throws CheckpointError when the
// file holds weights only). The model must already have the checkpoint's parameters.
void load_train_state(const std::string& path, const Model<float>& model, TrainState* state);

// Copies every parameter of `model` whose name and shape also exist in the checkpoint
// (e.g. a `full` model's weights into an `nsa` model); returns the names not found there,
// which keep their current (freshly initialized) values.
std::vector<std::string> load_matching_parameters(const std::string& path, Model<float>& model);

}  // namespace nsa::model
