// The JSON of safetensors headers (checkpoint/json.h, on nlohmann::json): strict RFC 8259
// parsing, duplicate keys refused in linear time, bounded nesting, escapes in both
// directions, numbers, and errors with their byte offset.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "model/checkpoint/json.h"

namespace nsa::model::json {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const ParseError& e) {
    return e.what();
  }
  return "";
}

// Duplicate keys are refused in linear time: 200,000 distinct keys (a 2.6 MB header) parse,
// and a duplicate at the very end is still found. A linear scan per key took minutes at
// 80,000 keys, so a hostile checkpoint could hang the reader; the bound below is far above
// the linear parse's time and far below the quadratic one's.
TEST(SafetensorsJson, ManyKeysParseInLinearTime) {
  std::string text = "{";
  for (int i = 0; i < 200000; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
  const auto start = std::chrono::steady_clock::now();
  const Json v = parse(text + "}");
  EXPECT_EQ(v.size(), 200000u);
  EXPECT_NE(error_of(text + ",\"k199999\":1}").find("duplicate key \"k199999\""), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
}

// The same key in different objects is no duplicate; in one object at any depth it is.
TEST(SafetensorsJson, DuplicateKeysAreFoundPerObject) {
  EXPECT_EQ(error_of(R"({"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 3}, {"x": 4}]})"), "");
  EXPECT_NE(error_of(R"({"a": {"x": 1, "y": {"x": 0}, "x": 2}})").find("duplicate key \"x\""), std::string::npos);
  EXPECT_NE(error_of(R"([{"x": 1}, {"x": 3, "x": 4}])").find("duplicate"), std::string::npos);
  EXPECT_NE(error_of(R"({"a": 1, "b": {"c": 2}, "a": 3})").find("duplicate key \"a\""), std::string::npos);
}

TEST(SafetensorsJson, ParsesEveryKind) {
  const Json v = parse(" {\"b\": [1, -2, 3.5e2, true, false, null], \"a\": {\"x\": \"y\"}, \"c\": {}} \n");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.size(), 3u);
  const Json& b = v["b"];
  ASSERT_TRUE(b.is_array());
  ASSERT_EQ(b.size(), 6u);
  EXPECT_TRUE(b[0].is_number_unsigned());
  EXPECT_EQ(b[0].get<std::uint64_t>(), 1u);
  EXPECT_FALSE(b[1].is_number_unsigned());
  EXPECT_EQ(b[1].get<std::int64_t>(), -2);
  EXPECT_TRUE(b[2].is_number_float());
  EXPECT_EQ(b[2].get<double>(), 350.0);
  EXPECT_TRUE(b[3].is_boolean() && b[3].get<bool>());
  EXPECT_TRUE(b[4].is_boolean() && !b[4].get<bool>());
  EXPECT_TRUE(b[5].is_null());
  EXPECT_EQ(v["a"]["x"].get<std::string>(), "y");
  EXPECT_TRUE(v["c"].is_object());
  EXPECT_TRUE(v["c"].empty());
}

TEST(SafetensorsJson, UnsignedIntegersUpTo64Bits) {
  EXPECT_EQ(parse("18446744073709551615").get<std::uint64_t>(), 18446744073709551615ull);
  EXPECT_TRUE(parse("18446744073709551615").is_number_unsigned());
  EXPECT_FALSE(parse("18446744073709551616").is_number_unsigned());
  EXPECT_EQ(parse("0").get<std::uint64_t>(), 0u);
  EXPECT_FALSE(parse("1e3").is_number_unsigned());
  EXPECT_FALSE(parse("-0").is_number_unsigned());
}

TEST(SafetensorsJson, StringEscapesDecode) {
  EXPECT_EQ(parse(R"("a\"b\\c\/d\b\f\n\r\t")").get<std::string>(), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(parse(R"("\u0041\u00e9\u20AC")").get<std::string>(), "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(parse(R"("\ud83d\ude42")").get<std::string>(), "\xf0\x9f\x99\x82");  // surrogate pair: U+1F642
  EXPECT_EQ(parse(R"("\u0000")").get<std::string>(), std::string(1, '\0'));
  EXPECT_EQ(parse("\"\xc3\xa9\"").get<std::string>(), "\xc3\xa9");  // raw UTF-8 kept
}

// What the writer dumps, the strict parse reads back: every ASCII byte (control
// characters escaped, none raw) and multi-byte UTF-8.
TEST(SafetensorsJson, DumpRoundTripsEveryByteValueOfValidText) {
  std::string all;
  for (int c = 0; c < 128; ++c) all += static_cast<char>(c);
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82";
  const std::string quoted = Json(all).dump();
  EXPECT_EQ(quoted.front(), '"');
  for (std::size_t i = 1; i + 1 < quoted.size(); ++i)
    EXPECT_GE(static_cast<unsigned char>(quoted[i]), 0x20) << "raw control byte at " << i;
  EXPECT_EQ(parse(quoted).get<std::string>(), all);
  EXPECT_EQ(Json("a\"b\\c\n\x01").dump(), R"("a\"b\\c\n\u0001")");
}

TEST(SafetensorsJson, ErrorsSayWhatAndWhere) {
  EXPECT_NE(error_of("{\"a\" 1}").find("at byte 5: syntax error while parsing object separator"), std::string::npos)
      << error_of("{\"a\" 1}");
  EXPECT_NE(error_of("[1,]").find("at byte 3"), std::string::npos) << error_of("[1,]");
  EXPECT_NE(error_of("{\"a\":1,\"a\":2}").find("duplicate"), std::string::npos);
  EXPECT_NE(error_of("01").find("expected end of input"), std::string::npos);  // a leading zero
  EXPECT_NE(error_of("1.").find("digit after '.'"), std::string::npos);
  EXPECT_NE(error_of("1e").find("exponent"), std::string::npos);
  EXPECT_NE(error_of("-").find("digit"), std::string::npos);
  EXPECT_NE(error_of("\"abc").find("closing"), std::string::npos);
  EXPECT_NE(error_of("\"\\x\"").find("backslash"), std::string::npos);
  EXPECT_NE(error_of("\"\\u12\"").find("hex"), std::string::npos);
  EXPECT_NE(error_of("\"\\udc00\"").find("surrogate"), std::string::npos);
  EXPECT_NE(error_of("\"\\ud800\\u0041\"").find("surrogate"), std::string::npos);
  EXPECT_NE(error_of("\"\t\"").find("control"), std::string::npos);
  EXPECT_NE(error_of("\"\xc0\xaf\"").find("UTF-8"), std::string::npos);      // overlong
  EXPECT_NE(error_of("\"\xed\xa0\x80\"").find("UTF-8"), std::string::npos);  // encoded surrogate
  EXPECT_NE(error_of("\"\xe2\x82\"").find("UTF-8"), std::string::npos);      // cut sequence
  EXPECT_NE(error_of("tru").find("literal"), std::string::npos);
  EXPECT_NE(error_of("{\"a\": [1e999]}").find("number overflow"), std::string::npos);  // not a crash
  EXPECT_NE(error_of("").find("end of input"), std::string::npos);
  EXPECT_NE(error_of("{} x").find("end of input"), std::string::npos);
  EXPECT_NE(error_of(std::string("{}\0x", 4)).find("at byte 2: a NUL byte"), std::string::npos);
  EXPECT_NE(error_of(std::string("\"a\0\"", 4)).find("NUL"), std::string::npos);
  EXPECT_NE(error_of(std::string(33, '[') + std::string(33, ']')).find("nesting"), std::string::npos);
  std::string objects;  // 20 arrays around 13 objects: {"a":{"a": ... {}}}
  for (int i = 0; i < 12; ++i) objects += "{\"a\":";
  objects = std::string(20, '[') + objects + "{}" + std::string(12, '}') + std::string(20, ']');
  EXPECT_NE(error_of(objects).find("nesting deeper than 32"), std::string::npos) << error_of(objects);
  EXPECT_EQ(error_of(std::string(32, '[') + std::string(32, ']')), "");
  // Nesting is refused as it is read: a 10 MB run of '[' fails at once, without a 10 MB stack.
  EXPECT_NE(error_of(std::string(10'000'000, '[')).find("nesting"), std::string::npos);
}

TEST(SafetensorsJson, ValidUtf8) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain \xc3\xa9 \xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));                  // U+110000
  EXPECT_FALSE(valid_utf8("\x80"));
  EXPECT_FALSE(valid_utf8("\xe0\x80\x80"));  // overlong
  EXPECT_FALSE(valid_utf8("\xc3"));
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));  // an encoded surrogate
}

}  // namespace
}  // namespace nsa::model::json
