#include "model/checkpoint/json.h"

#include <string>
#include <unordered_set>
#include <vector>

namespace nsa::model::json {

Json parse(std::string_view text, int max_depth) {
  // nlohmann's lexer reads a NUL byte as the end of input (C strings), so "{}\0junk" would
  // parse; valid JSON has none (in strings it is escaped), so one is refused here.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos)
    throw ParseError("JSON error at byte " + std::to_string(nul) + ": a NUL byte");
  // nlohmann's callback sees each object start at the depth of its parent and each key at
  // the depth of its object: keys[d] holds the keys seen so far in the open object whose
  // keys sit at depth d (one hash set per open object: linear, not a scan per key).
  std::vector<std::unordered_set<std::string>> keys;
  const auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    const auto d = static_cast<std::size_t>(depth);
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      // ParseError is no nlohmann exception: it leaves the parse past the catches below.
      if (depth >= max_depth)
        throw ParseError("JSON error: nesting deeper than " + std::to_string(max_depth) + " levels");
      if (event == Json::parse_event_t::object_start) {
        if (keys.size() < d + 2) keys.resize(d + 2);
        keys[d + 1].clear();
      }
    } else if (event == Json::parse_event_t::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys[d].insert(key).second) throw ParseError("JSON error: duplicate key \"" + key + "\"");
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check);
  } catch (const Json::parse_error& e) {
    // e.byte: 1 + the offset of the byte where the parse stopped. Its message reads
    // "[json.exception.parse_error.101] parse error at line L, column C: <what>".
    std::string what = e.what();
    const std::size_t colon = what.find(": ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    throw ParseError("JSON error at byte " + std::to_string(e.byte > 0 ? e.byte - 1 : 0) + ": " + what);
  } catch (const Json::exception& e) {  // out_of_range: a number too large for a double (1e999)
    std::string what = e.what();
    const std::size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    throw ParseError("JSON error: " + what);
  }
}

bool valid_utf8(std::string_view s) {
  try {
    (void)Json(std::string(s)).dump();
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

}  // namespace nsa::model::json
