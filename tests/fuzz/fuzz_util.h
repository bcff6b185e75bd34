// Shared by the fuzz harnesses: the input as a file (the parsers under test read paths),
// and seeds. Each harness defines LLVMFuzzerTestOneInput and nsa_fuzz_seeds() (valid
// examples of its format). Built for libFuzzer (scripts/fuzz, clang) a harness writes its
// seeds into $NSA_FUZZ_SEEDS and exits when that is set, to start a corpus; built with
// replay_main.cc (ctest, any compiler, under the sanitizers) it runs the seeds and
// deterministic mutations of them.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>
#include <iterator>

namespace nsa::fuzz {

// A per-process scratch file holding the current input.
inline const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir ? dir : "/tmp") + "/nsa_fuzz_" + std::to_string(::getpid());
  }();
  return path;
}

inline const std::string& write_input(const std::uint8_t* data, std::size_t size) {
  std::ofstream(scratch_path(), std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return scratch_path();
}

// The input as a file, its checksums first repaired by `fix` when the harness is built
// with NSA_FUZZ_FIX_CHECKSUMS (the _fixed variants).
template <class Fix>
const std::string& input_file(const std::uint8_t* data, std::size_t size, [[maybe_unused]] Fix&& fix) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
#ifdef NSA_FUZZ_FIX_CHECKSUMS
  fix(bytes);
#endif
  return write_input(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A scratch folder for making seeds (files written by the code under test).
inline std::string scratch_dir() {
  const char* dir = std::getenv("TMPDIR");
  return dir ? dir : "/tmp";
}

}  // namespace nsa::fuzz

// Valid inputs of the harness's format.
std::vector<std::string> nsa_fuzz_seeds();

#ifndef NSA_FUZZ_REPLAY
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("NSA_FUZZ_SEEDS");
  if (!dir) return 0;
  const std::vector<std::string> seeds = nsa_fuzz_seeds();
  for (std::size_t i = 0; i < seeds.size(); ++i)
    std::ofstream(std::string(dir) + "/seed" + std::to_string(i), std::ios::binary | std::ios::trunc)
        .write(seeds[i].data(), static_cast<std::streamsize>(seeds[i].size()));
  std::exit(0);
}
#endif

namespace nsa::fuzz {
}  // namespace nsa::fuzz
