// The subcommands of the `nsa` tool. Each lives in its own file and registers itself on
// the CLI11 app with one add_*_command(): it declares its options on a subcommand and
// returns the action to run when that subcommand is the one given. main.cc only
// dispatches.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace nsa::cli {

// One registered subcommand: its CLI11 node, and what it does once the command line is
// parsed (returns the exit status).
struct Command {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};

Command add_version_command(CLI::App& app);  // version.cc: version, build, SIMD, CUDA
Command add_check_command(CLI::App& app);    // check.cc: CPU kernels vs the float64 reference
Command add_bench_command(CLI::App& app);    // bench.cc: NSA vs full attention speed, paper figures
Command add_train_command(CLI::App& app);    // train.cc: train a small language model
Command add_eval_command(CLI::App& app);     // eval.cc: validation loss and passkey accuracy grid
Command add_generate_command(CLI::App& app); // generate.cc: sample text through the decode cache
Command add_inspect_command(CLI::App& app);  // inspect.cc: gates, chosen blocks, selection map
Command add_serve_command(CLI::App& app);    // serve.cc: an HTTP server of conversations (src/serve)
Command add_plot_loss_command(CLI::App& app);  // loss_plot.cc: loss curves of several runs in one PNG

}  // namespace nsa::cli
