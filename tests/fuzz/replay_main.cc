// The fuzz harnesses without libFuzzer (ctest, under ASan+UBSan in the sanitizer build):
// every seed, then deterministic mutations of each (bit flips, truncations, duplicated and
// deleted spans, bytes set to 0x00 / 0xff / 0x7f), N_MUTATIONS per seed (argv[1], default
// 2000). A crash, a sanitizer report or a trap fails the test. scripts/fuzz runs the same
// harnesses under libFuzzer's coverage-guided search.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n ? static_cast<std::size_t>(next() % n) : 0; }
};

std::string mutate(std::string b, SplitMix& rng) {
  const int edits = 1 + static_cast<int>(rng.below(4));
  for (int e = 0; e < edits; ++e) {
    switch (rng.below(6)) {
      case 0:  // flip a bit
        if (!b.empty()) b[rng.below(b.size())] ^= static_cast<char>(1u << rng.below(8));
        break;
      case 1:  // truncate
        b.resize(rng.below(b.size() + 1));
        break;
      case 2: {  // duplicate a span
        if (b.empty()) break;
        const std::size_t at = rng.below(b.size()), n = 1 + rng.below(std::min<std::size_t>(64, b.size() - at));
        b.insert(rng.below(b.size()), b.substr(at, n));
        break;
      }
      case 3: {  // delete a span
        if (b.empty()) break;
        const std::size_t at = rng.below(b.size());
        b.erase(at, 1 + rng.below(std::min<std::size_t>(64, b.size() - at)));
        break;
      }
      default: {  // an interesting byte
        if (b.empty()) break;
        const char v[3] = {'\0', '\xff', '\x7f'};
        b[rng.below(b.size())] = v[rng.below(3)];
        break;
      }
    }
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const long per_seed = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 2000;
  const std::vector<std::string> seeds = nsa_fuzz_seeds();
  SplitMix rng{12345};
  long runs = 0;
  for (const std::string& seed : seeds) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(seed.data()), seed.size());
    ++runs;
    for (long i = 0; i < per_seed; ++i) {
      const std::string m = mutate(seed, rng);
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(m.data()), m.size());
      ++runs;
    }
  }
  std::remove(nsa::fuzz::scratch_path().c_str());
  std::printf("%ld inputs (%zu seeds), no crash\n", runs, seeds.size());
  return 0;
}
