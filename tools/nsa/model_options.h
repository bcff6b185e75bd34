// Command-line options shared by the model commands (train, eval, generate, inspect):
// the model's shape, its NSA block sizes, threads and the training text.
#pragma once

#include <string>

#include "model/model_config.h"

namespace CLI {
class App;
}

namespace nsa::cli {

// Adds --attention, --d-model, --layers, --heads, --kv-heads, --dk, --dv, --mlp-hidden,
// --init-std, --token-shift, --independent-kv, --block-len, --stride, --sel-block, --top-n, --window, --phi to `sub`,
// writing into *config (defaults: ModelConfig{} with default_small_nsa_options()).
void add_model_options(CLI::App* sub, model::ModelConfig* config, std::string* attention,
                       std::string* phi);
// Applies the parsed --attention and --phi names and validates the result.
model::ModelConfig finish_model_config(model::ModelConfig config, const std::string& attention,
                                       const std::string& phi);

// The default training text made by scripts/setup.
constexpr const char* kDefaultData = "data/kjv.txt";

}  // namespace nsa::cli
