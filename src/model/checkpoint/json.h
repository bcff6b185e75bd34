// The JSON of safetensors headers, on nlohmann::json (Debian nlohmann-json3-dev): a strict
// parse for untrusted headers (RFC 8259, UTF-8, no duplicate keys, bounded nesting), in
// time linear in the header's size. Writing is nlohmann's dump().
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "nsa/error.h"

namespace nsa::model::json {

using Json = nlohmann::json;

// A syntax error; the message says what was wrong and at which byte offset (from 0).
class ParseError : public Error {
 public:
  using Error::Error;
};

// Parses exactly one value surrounded by optional whitespace. Throws ParseError on any
// deviation from RFC 8259 (nlohmann's parser; a raw NUL byte included, which nlohmann
// alone reads as the end of input), on invalid UTF-8, on a key that appears
// twice in one object (nlohmann alone would keep the last) and on nesting deeper than
// `max_depth` (garbage cannot grow the parser's stack without bound).
Json parse(std::string_view text, int max_depth = 32);

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF): what dump() accepts in a string.
bool valid_utf8(std::string_view s);

}  // namespace nsa::model::json
