#include "model/checkpoint/json.h"

#include <cstddef>
#include <unordered_set>

namespace nsa::model::json {
namespace {

// Length of the UTF-8 sequence starting at s[i] (1..4), or 0 when it is malformed.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  std::size_t len;
  std::uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2, cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3, cp = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4, cp = c & 0x07u;
  } else {
    return 0;  // continuation byte, overlong lead (C0, C1) or beyond U+10FFFF (F5..FF)
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3Fu);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;  // overlong
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;                             // surrogate
  if (cp > 0x10FFFF) return 0;
  return len;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  Parser(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  Value document() {
    skip_space();
    Value v = value(0);
    skip_space();
    if (i_ != s_.size()) fail("end of input after the value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& expected) const {
    std::string found;
    if (i_ >= s_.size()) {
      found = "end of input";
    } else {
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c >= 0x20 && c < 0x7F) {
        found = std::string("'") + static_cast<char>(c) + "'";
      } else {
        static const char* hex = "0123456789abcdef";
        found = std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
      }
    }
    throw ParseError("JSON: expected " + expected + " at byte " + std::to_string(i_) + ", found " + found);
  }

  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return s_[i_]; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++i_;
  }

  void expect(char c, const char* what) {
    if (at_end() || peek() != c) fail(what);
    ++i_;
  }

  void literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) fail("a value");
    i_ += word.size();
  }

  Value value(int depth) {
    if (at_end()) fail("a value");
    Value v;
    switch (peek()) {
      case '{':
        return object(depth);
      case '[':
        return array(depth);
      case '"':
        v.kind = Value::Kind::string;
        v.string = string();
        return v;
      case 't':
        literal("true");
        v.kind = Value::Kind::boolean;
        v.boolean = true;
        return v;
      case 'f':
        literal("false");
        v.kind = Value::Kind::boolean;
        return v;
      case 'n':
        literal("null");
        return v;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number();
        fail("a value");
    }
  }

  void enter(int depth) {
    if (depth >= max_depth_) fail("at most " + std::to_string(max_depth_) + " levels of nesting");
  }

  Value object(int depth) {
    enter(depth);
    Value v;
    v.kind = Value::Kind::object;
    std::unordered_set<std::string> seen;
    ++i_;  // '{'
    skip_space();
    if (!at_end() && peek() == '}') {
      ++i_;
      return v;
    }
    for (;;) {
      skip_space();
      if (at_end() || peek() != '"') fail("a string key");
      const std::size_t key_at = i_;
      std::string key = string();
      // A hash set keeps the check linear: a linear scan per key made a header of 80,000
      // keys take minutes.
      if (!seen.insert(key).second) {
        i_ = key_at;
        fail("no duplicate of key " + quote(key));
      }
      skip_space();
      expect(':', "':'");
      skip_space();
      v.items.push_back(value(depth + 1));
      v.keys.push_back(std::move(key));
      skip_space();
      if (!at_end() && peek() == ',') {
        ++i_;
        continue;
      }
      expect('}', "',' or '}'");
      return v;
    }
  }

  Value array(int depth) {
    enter(depth);
    Value v;
    v.kind = Value::Kind::array;
    ++i_;  // '['
    skip_space();
    if (!at_end() && peek() == ']') {
      ++i_;
      return v;
    }
    for (;;) {
      skip_space();
      v.items.push_back(value(depth + 1));
      skip_space();
      if (!at_end() && peek() == ',') {
        ++i_;
        continue;
      }
      expect(']', "',' or ']'");
      return v;
    }
  }

  unsigned hex4() {
    unsigned cp = 0;
    for (int k = 0; k < 4; ++k) {
      if (at_end()) fail("4 hex digits after \\u");
      const char c = peek();
      unsigned d;
      if (c >= '0' && c <= '9') {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail("4 hex digits after \\u");
      }
      cp = cp * 16 + d;
      ++i_;
    }
    return cp;
  }

  std::string string() {
    ++i_;  // '"'
    std::string out;
    for (;;) {
      if (at_end()) fail("'\"' closing the string");
      const unsigned char c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("no raw control character in a string (\\u escape it)");
      if (c >= 0x80) {
        const std::size_t len = utf8_sequence(s_, i_);
        if (len == 0) fail("valid UTF-8");
        out.append(s_.substr(i_, len));
        i_ += len;
        continue;
      }
      ++i_;
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (at_end()) fail("an escape character after '\\'");
      const char e = peek();
      ++i_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("no lone low surrogate (\\udc00..\\udfff)");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(i_, 2) != "\\u") fail("a low surrogate \\uXXXX after a high one");
            i_ += 2;
            const std::uint32_t low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("a low surrogate \\udc00..\\udfff after a high one");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --i_;
          fail("an escape (one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u)");
      }
    }
  }

  Value number() {
    const std::size_t start = i_;
    bool plain = true;  // no sign, fraction or exponent
    if (peek() == '-') {
      plain = false;
      ++i_;
    }
    const auto digits = [&] {
      const std::size_t from = i_;
      while (!at_end() && peek() >= '0' && peek() <= '9') ++i_;
      return i_ - from;
    };
    if (at_end() || !(peek() >= '0' && peek() <= '9')) fail("a digit");
    if (peek() == '0') {
      ++i_;
      if (!at_end() && peek() >= '0' && peek() <= '9') fail("no leading zero");
    } else {
      digits();
    }
    if (!at_end() && peek() == '.') {
      plain = false;
      ++i_;
      if (digits() == 0) fail("a digit after '.'");
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      plain = false;
      ++i_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++i_;
      if (digits() == 0) fail("a digit in the exponent");
    }
    Value v;
    v.kind = Value::Kind::number;
    v.text = std::string(s_.substr(start, i_ - start));
    if (plain) {
      v.is_uint = true;
      for (const char c : v.text) {
        const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
        if (v.uint > (UINT64_MAX - d) / 10) {
          v.is_uint = false;  // does not fit in 64 bits
          v.uint = 0;
          break;
        }
        v.uint = v.uint * 10 + d;
      }
    }
    return v;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  int max_depth_;
};

}  // namespace

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::null: return "null";
    case Value::Kind::boolean: return "boolean";
    case Value::Kind::number: return "number";
    case Value::Kind::string: return "string";
    case Value::Kind::array: return "array";
    case Value::Kind::object: return "object";
  }
  return "?";
}

Value parse(std::string_view text, int max_depth) { return Parser(text, max_depth).document(); }

std::string quote(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = utf8_sequence(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace nsa::model::json
