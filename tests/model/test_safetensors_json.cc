// The JSON of safetensors headers (checkpoint/json.h): strict RFC 8259 parsing, escapes
// in both directions, numbers, and errors with their byte offset.
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
// and a duplicate at the very end is still found. A linear scan per key, as before, took
// minutes at 80,000 keys, so a hostile checkpoint could hang the reader; the bound below is
// far above the linear parse's time and far below the quadratic one's.
TEST(SafetensorsJson, ManyKeysParseInLinearTime) {
  std::string text = "{";
  for (int i = 0; i < 200000; ++i) text += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
  const auto start = std::chrono::steady_clock::now();
  const Value v = parse(text + "}");
  EXPECT_EQ(v.keys.size(), 200000u);
  EXPECT_NE(error_of(text + ",\"k199999\":1}").find("duplicate"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30.0);
}

TEST(SafetensorsJson, ParsesEveryKindInOrder) {
  const Value v = parse(" {\"b\": [1, -2, 3.5e2, true, false, null], \"a\": {\"x\": \"y\"}, \"c\": {}} \n");
  ASSERT_EQ(v.kind, Value::Kind::object);
  ASSERT_EQ(v.keys, (std::vector<std::string>{"b", "a", "c"}));
  const Value& b = v.items[0];
  ASSERT_EQ(b.kind, Value::Kind::array);
  ASSERT_EQ(b.items.size(), 6u);
  EXPECT_TRUE(b.items[0].is_uint);
  EXPECT_EQ(b.items[0].uint, 1u);
  EXPECT_FALSE(b.items[1].is_uint);
  EXPECT_EQ(b.items[1].text, "-2");
  EXPECT_FALSE(b.items[2].is_uint);
  EXPECT_EQ(b.items[2].text, "3.5e2");
  EXPECT_EQ(b.items[3].kind, Value::Kind::boolean);
  EXPECT_TRUE(b.items[3].boolean);
  EXPECT_FALSE(b.items[4].boolean);
  EXPECT_EQ(b.items[5].kind, Value::Kind::null);
  EXPECT_EQ(v.items[1].items[0].string, "y");
  EXPECT_EQ(v.items[2].kind, Value::Kind::object);
  EXPECT_TRUE(v.items[2].keys.empty());
}

TEST(SafetensorsJson, UnsignedIntegersUpTo64Bits) {
  EXPECT_EQ(parse("18446744073709551615").uint, 18446744073709551615ull);
  EXPECT_TRUE(parse("18446744073709551615").is_uint);
  EXPECT_FALSE(parse("18446744073709551616").is_uint);
  EXPECT_EQ(parse("0").uint, 0u);
  EXPECT_FALSE(parse("1e3").is_uint);
  EXPECT_FALSE(parse("-0").is_uint);
}

TEST(SafetensorsJson, StringEscapesDecode) {
  EXPECT_EQ(parse(R"("a\"b\\c\/d\b\f\n\r\t")").string, "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(parse(R"("\u0041\u00e9\u20AC")").string, "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(parse(R"("\ud83d\ude42")").string, "\xf0\x9f\x99\x82");  // surrogate pair: U+1F642
  EXPECT_EQ(parse(R"("\u0000")").string, std::string(1, '\0'));
  EXPECT_EQ(parse("\"\xc3\xa9\"").string, "\xc3\xa9");  // raw UTF-8 kept
}

TEST(SafetensorsJson, QuoteRoundTripsEveryByteValueOfValidText) {
  std::string all;
  for (int c = 0; c < 128; ++c) all += static_cast<char>(c);
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82";
  const std::string quoted = quote(all);
  EXPECT_EQ(quoted.front(), '"');
  for (std::size_t i = 1; i + 1 < quoted.size(); ++i)
    EXPECT_GE(static_cast<unsigned char>(quoted[i]), 0x20) << "raw control byte at " << i;
  EXPECT_EQ(parse(quoted).string, all);
  EXPECT_EQ(quote("a\"b\\c\n\x01"), R"("a\"b\\c\n\u0001")");
}

TEST(SafetensorsJson, ErrorsSayWhatAndWhere) {
  EXPECT_NE(error_of("{\"a\" 1}").find("expected ':' at byte 5"), std::string::npos) << error_of("{\"a\" 1}");
  EXPECT_NE(error_of("[1,]").find("a value at byte 3"), std::string::npos) << error_of("[1,]");
  EXPECT_NE(error_of("{\"a\":1,\"a\":2}").find("duplicate"), std::string::npos);
  EXPECT_NE(error_of("01").find("leading zero"), std::string::npos);
  EXPECT_NE(error_of("1.").find("digit after '.'"), std::string::npos);
  EXPECT_NE(error_of("1e").find("exponent"), std::string::npos);
  EXPECT_NE(error_of("-").find("digit"), std::string::npos);
  EXPECT_NE(error_of("\"abc").find("closing"), std::string::npos);
  EXPECT_NE(error_of("\"\\x\"").find("escape"), std::string::npos);
  EXPECT_NE(error_of("\"\\u12\"").find("hex"), std::string::npos);
  EXPECT_NE(error_of("\"\\udc00\"").find("surrogate"), std::string::npos);
  EXPECT_NE(error_of("\"\\ud800\\u0041\"").find("surrogate"), std::string::npos);
  EXPECT_NE(error_of("\"\t\"").find("control"), std::string::npos);
  EXPECT_NE(error_of("\"\xc0\xaf\"").find("UTF-8"), std::string::npos);      // overlong
  EXPECT_NE(error_of("\"\xed\xa0\x80\"").find("UTF-8"), std::string::npos);  // encoded surrogate
  EXPECT_NE(error_of("\"\xe2\x82\"").find("UTF-8"), std::string::npos);      // cut sequence
  EXPECT_NE(error_of("tru").find("value"), std::string::npos);
  EXPECT_NE(error_of("").find("value"), std::string::npos);
  EXPECT_NE(error_of("{} x").find("end of input"), std::string::npos);
  EXPECT_NE(error_of(std::string(33, '[') + std::string(33, ']')).find("nesting"), std::string::npos);
  EXPECT_EQ(error_of(std::string(32, '[') + std::string(32, ']')), "");
}

TEST(SafetensorsJson, ValidUtf8) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain \xc3\xa9 \xf4\x8f\xbf\xbf"));  // U+10FFFF
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));                  // U+110000
  EXPECT_FALSE(valid_utf8("\x80"));
  EXPECT_FALSE(valid_utf8("\xe0\x80\x80"));  // overlong
  EXPECT_FALSE(valid_utf8("\xc3"));
}

}  // namespace
}  // namespace nsa::model::json
