// nsa: the command-line tool of the Native Sparse Attention library.
//
//   nsa --help             the commands
//   nsa version            version, build type, SIMD targets, CUDA
//   nsa check [options]    fp32 CPU kernels against the float64 reference
//   nsa bench [options]    NSA vs full attention: times, speed-ups, % of FMA peak
//   nsa train [options]    train a small NSA / full / window language model
//   nsa eval CKPT          its validation loss and passkey accuracy grid
//   nsa generate CKPT      sample text through the decode cache
//   nsa inspect CKPT       gates, selected blocks, tokens read, selection map
//   nsa plot-loss ...      loss curves of several training runs in one PNG
//
// Every command sits in its own file (commands.h); this file parses and dispatches.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <vector>

#include "commands.h"
#include "nsa/error.h"
#include "nsa/version.h"

int main(int argc, char** argv) {
  CLI::App app{"nsa: Native Sparse Attention (Yuan et al., 2025) in C++.\n"
               "Semantics: ../shared/docs/nsa-spec.md. Run `nsa <command> --help` for a command's options."};
  app.name("nsa");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("nsa ") + nsa::kVersion);

  const std::vector<nsa::cli::Command> commands = {
      nsa::cli::add_version_command(app),
      nsa::cli::add_check_command(app),
      nsa::cli::add_bench_command(app),
      nsa::cli::add_train_command(app),
      nsa::cli::add_eval_command(app),
      nsa::cli::add_generate_command(app),
      nsa::cli::add_serve_command(app),
      nsa::cli::add_inspect_command(app),
      nsa::cli::add_plot_loss_command(app),
  };

  CLI11_PARSE(app, argc, argv);
  try {
    for (const auto& command : commands)
      if (command.sub->parsed()) return command.run();
  } catch (const nsa::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nsa: unexpected error: %s\n", e.what());
    return 1;
  }
  return 1;  // require_subcommand(1) makes this unreachable
}
