// Rng: a small, fast, seedable generator (xoshiro256**) whose whole state can be saved
// in a checkpoint, so that a resumed run draws exactly the numbers the uninterrupted one
// would have drawn.
#pragma once

#include <array>
#include <cstdint>

namespace nsa::model {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0);  // state from splitmix64(seed)
  std::uint64_t next_u64();
  std::uint64_t uniform_int(std::uint64_t n);  // in [0, n), n >= 1, unbiased
  double uniform();                            // in [0, 1)
  double normal();                             // standard normal

  std::array<std::uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<std::uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<std::uint64_t, 4> s_{};
};

}  // namespace nsa::model
