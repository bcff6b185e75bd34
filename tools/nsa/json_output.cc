#include "json_output.h"

#include <cstdio>

#include "nsa/error.h"

namespace nsa::cli {

void write_json_file(const std::string& path, const nlohmann::json& value, const std::string& command) {
  const std::string text = value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "w");
  if (f == nullptr) throw Error(command + ": cannot write " + path);
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = path == "-" ? std::fflush(f) == 0 : std::fclose(f) == 0;
  if (!written || !closed) throw Error(command + ": cannot write " + path);
}

}  // namespace nsa::cli
