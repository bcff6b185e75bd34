#include "model/training/checkpoint_io.h"

#include <cstring>

#include "model/checkpoint/safetensors.h"

namespace nsa::model {
namespace {

constexpr const char* kFormat = "nsa-model-1";

SafetensorsFile open_checkpoint(const std::string& path) {
  SafetensorsFile file = SafetensorsFile::read(path);
  const auto it = file.metadata().find("nsa.format");
  if (it == file.metadata().end() || it->second != kFormat)
    throw CheckpointError("checkpoint " + path + ": not an nsa model checkpoint (metadata nsa.format is " +
                          (it == file.metadata().end() ? std::string("missing") : "'" + it->second + "'") +
                          ", expected '" + kFormat + "')");
  return file;
}

void copy_parameters(const SafetensorsFile& file, Model<float>& model) {
  for (const TensorInfo& t : model.tensors()) {
    if (!file.has(t.name))
      throw CheckpointError("checkpoint " + file.path() + ": parameter '" + t.name + "' is missing");
    file.copy_to(t.name, DType::f32, t.shape, model.params() + t.offset);
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const Model<float>& model, const TrainState* state) {
  SafetensorsWriter writer;
  writer.add_metadata("nsa.format", kFormat);
  writer.add_metadata("nsa.model_config", model.config().serialize());
  for (const TensorInfo& t : model.tensors()) writer.add(t.name, DType::f32, t.shape, model.params() + t.offset);
  if (state) {
    if (state->adam_m.size() != model.num_params() || state->adam_v.size() != model.num_params())
      throw Error("save_checkpoint: optimizer state has " + std::to_string(state->adam_m.size()) +
                  " moments for " + std::to_string(model.num_params()) + " parameters");
    writer.add_metadata("nsa.train_options", state->options.serialize());
    writer.add_metadata("nsa.step", std::to_string(state->step));
    for (const TensorInfo& t : model.tensors()) {
      writer.add("optim.m." + t.name, DType::f32, t.shape, state->adam_m.data() + t.offset);
      writer.add("optim.v." + t.name, DType::f32, t.shape, state->adam_v.data() + t.offset);
    }
    writer.add("train.rng", DType::i64, {4}, state->rng.data());
  }
  writer.write(path);
}

ModelConfig read_checkpoint_config(const std::string& path) {
  const SafetensorsFile file = open_checkpoint(path);
  try {
    return ModelConfig::parse(file.metadata("nsa.model_config"));
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError("checkpoint " + path + ": bad model config: " + e.what());
  }
}

Model<float> load_model(const std::string& path) {
  const SafetensorsFile file = open_checkpoint(path);
  ModelConfig config;
  try {
    config = ModelConfig::parse(file.metadata("nsa.model_config"));
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError("checkpoint " + path + ": bad model config: " + e.what());
  }
  Model<float> model(config);
  copy_parameters(file, model);
  return model;
}

void load_train_state(const std::string& path, const Model<float>& model, TrainState* state) {
  const SafetensorsFile file = open_checkpoint(path);
  if (!file.has("train.rng"))
    throw CheckpointError("checkpoint " + path + ": holds weights only, no training state to resume from");
  TrainState loaded;
  try {
    loaded.options = TrainOptions::parse(file.metadata("nsa.train_options"));
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError("checkpoint " + path + ": bad training options: " + e.what());
  }
  const std::string& step = file.metadata("nsa.step");
  try {
    std::size_t used = 0;
    loaded.step = std::stoll(step, &used);
    if (used != step.size() || loaded.step < 0) throw std::invalid_argument(step);
  } catch (const std::exception&) {
    throw CheckpointError("checkpoint " + path + ": bad nsa.step '" + step + "'");
  }
  loaded.adam_m.assign(model.num_params(), 0.0f);
  loaded.adam_v.assign(model.num_params(), 0.0f);
  for (const TensorInfo& t : model.tensors()) {
    for (const char* moment : {"optim.m.", "optim.v."}) {
      const std::string name = moment + t.name;
      if (!file.has(name)) throw CheckpointError("checkpoint " + path + ": optimizer tensor '" + name + "' is missing");
      float* dst = (moment[6] == 'm' ? loaded.adam_m.data() : loaded.adam_v.data()) + t.offset;
      file.copy_to(name, DType::f32, t.shape, dst);
    }
  }
  file.copy_to("train.rng", DType::i64, {4}, loaded.rng.data());
  *state = std::move(loaded);
}

std::vector<std::string> load_matching_parameters(const std::string& path, Model<float>& model) {
  const SafetensorsFile file = open_checkpoint(path);
  std::vector<std::string> missing;
  for (const TensorInfo& t : model.tensors()) {
    if (file.has(t.name) && file.shape(t.name) == t.shape && file.dtype(t.name) == DType::f32)
      file.copy_to(t.name, DType::f32, t.shape, model.params() + t.offset);
    else
      missing.push_back(t.name);
  }
  return missing;
}

}  // namespace nsa::model
