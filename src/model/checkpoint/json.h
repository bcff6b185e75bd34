// The little JSON a safetensors header needs (RFC 8259): a strict parser into a value
// tree and string quoting for the writer. No dependency; strings are UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nsa/error.h"

namespace nsa::model::json {

// A syntax error; the message says what was expected and at which byte offset.
class ParseError : public Error {
 public:
  using Error::Error;
};

struct Value {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  // number: the literal as written; is_uint when it is a plain non-negative integer
  // ("0", "42": no sign, fraction or exponent) that fits in 64 bits, then uint = its value.
  std::string text;
  bool is_uint = false;
  std::uint64_t uint = 0;
  // string: the decoded UTF-8 value
  std::string string;
  // array: items; object: keys[i] -> items[i], in document order (duplicate keys are a
  // ParseError)
  std::vector<std::string> keys;
  std::vector<Value> items;
};

const char* kind_name(Value::Kind kind);  // "null", "boolean", ..., "object"

// Parses exactly one value surrounded by optional whitespace. Throws ParseError on any
// deviation from RFC 8259, on invalid UTF-8, on duplicate object keys and on nesting
// deeper than `max_depth` (so that garbage cannot exhaust the stack).
Value parse(std::string_view text, int max_depth = 32);

// `s` as a JSON string literal with its quotes: '"' '\\' and control characters escaped,
// everything else (UTF-8 included) kept as is.
std::string quote(std::string_view s);

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view s);

}  // namespace nsa::model::json
