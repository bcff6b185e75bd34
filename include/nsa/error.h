// nsa::Error: the one exception type of the library. Every invalid input is
// reported by throwing it with a message that names the offending argument.
#pragma once

#include <stdexcept>
#include <string>

namespace nsa {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error("nsa: " + message) {}
};

}  // namespace nsa
