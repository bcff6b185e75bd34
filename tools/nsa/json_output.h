// Writing a command's JSON output (nsa bench --json, nsa eval --json) with nlohmann::json:
// strings escaped, numbers written exactly (NaN and infinities as null).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace nsa::cli {

// Writes `value` indented by 2 to `path` ("-": standard output); throws nsa::Error naming
// `command` and the path when the file cannot be written.
void write_json_file(const std::string& path, const nlohmann::json& value, const std::string& command);

}  // namespace nsa::cli
