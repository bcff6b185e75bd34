#include "model/training/key_value.h"

#include <cstdio>
#include <sstream>

#include "nsa/error.h"

namespace nsa::model {

std::map<std::string, std::string> parse_key_values(const std::string& text, const char* what) {
  std::map<std::string, std::string> kv;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(std::string(what) + ": expected key=value, got '" + line + "'");
    const std::string key = line.substr(0, eq);
    if (!kv.emplace(key, line.substr(eq + 1)).second)
      throw Error(std::string(what) + ": key '" + key + "' given twice");
  }
  return kv;
}

namespace {

template <class T, class Parse>
void read_with(const std::map<std::string, std::string>& kv, const std::string& key, T& out,
               const char* what, Parse parse) {
  const auto it = kv.find(key);
  if (it == kv.end()) return;
  std::size_t used = 0;
  try {
    out = parse(it->second, &used);
  } catch (const std::exception&) {
    used = std::string::npos;
  }
  if (used != it->second.size() || it->second.empty())
    throw Error(std::string(what) + ": bad value '" + it->second + "' for " + key);
}

}  // namespace

void read_value(const std::map<std::string, std::string>& kv, const std::string& key,
                std::int64_t& out, const char* what) {
  read_with(kv, key, out, what, [](const std::string& s, std::size_t* used) { return std::stoll(s, used); });
}

void read_value(const std::map<std::string, std::string>& kv, const std::string& key,
                std::uint64_t& out, const char* what) {
  read_with(kv, key, out, what, [](const std::string& s, std::size_t* used) {
    if (!s.empty() && s[0] == '-') throw std::invalid_argument("negative");
    return std::stoull(s, used);
  });
}

void read_value(const std::map<std::string, std::string>& kv, const std::string& key, double& out,
                const char* what) {
  read_with(kv, key, out, what, [](const std::string& s, std::size_t* used) { return std::stod(s, used); });
}

std::string format_double(double value) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  return buffer;
}

}  // namespace nsa::model
