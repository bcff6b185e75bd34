// "key=value" text, one pair per line: how model and training options are written into a
// checkpoint's metadata, readable by people and by Python.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace nsa::model {

// Parses "key=value" lines (blank lines ignored). Throws nsa::Error naming `what` on a line
// without '=' or a repeated key.
std::map<std::string, std::string> parse_key_values(const std::string& text, const char* what);

// Typed reads of a parsed map; throw nsa::Error naming the key and `what` when the value
// does not parse. Keys absent from the map leave `out` unchanged.
void read_value(const std::map<std::string, std::string>& kv, const std::string& key,
                std::int64_t& out, const char* what);
void read_value(const std::map<std::string, std::string>& kv, const std::string& key,
                std::uint64_t& out, const char* what);
void read_value(const std::map<std::string, std::string>& kv, const std::string& key, double& out,
                const char* what);

// Doubles written with 17 significant digits round-trip exactly.
std::string format_double(double value);

}  // namespace nsa::model
