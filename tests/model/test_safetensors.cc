// safetensors: round trips of every dtype and of escaped metadata, byte layout, and the
// reader's refusal of every kind of broken file (truncated at each byte, corrupted header
// bytes, hand-made invalid headers) with a CheckpointError naming the file, never a crash;
// the writer's atomicity (a failing write leaves the existing file as it was).
// SafetensorsPython.* exchange files with Python's `safetensors` (read_safetensors.py).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint/safetensors.h"

namespace nsa::model {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  ::unlink(path.c_str());  // a new file: ext4 flushes a truncated-and-rewritten one on close
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file made of a header (used as is, no padding) and data bytes.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Runs `call`, expects a CheckpointError whose message contains `path` and every needle.
void expect_checkpoint_error(const std::function<void()>& call, const std::string& path,
                             const std::vector<std::string>& needles, const std::string& where) {
  try {
    call();
    ADD_FAILURE() << where << ": no CheckpointError thrown";
  } catch (const CheckpointError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << where << ": message does not name the file: " << message;
    for (const std::string& needle : needles)
      EXPECT_NE(message.find(needle), std::string::npos) << where << ": message lacks '" << needle << "': " << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << where << ": threw something else than CheckpointError: " << e.what();
  }
}

// The sample of SafetensorsPython.* and of the round trip: one tensor of each dtype with
// values at the edges of their ranges, a scalar, an empty tensor, names and metadata that
// need escaping. read_safetensors.py holds the same values.
struct Sample {
  std::vector<float> f32{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};                            // [2, 3]
  std::vector<double> f64{1.0, 0.5, 1.0 / 3.0, 0.25, -1e300, 5e-324};                      // [6]
  std::vector<std::int32_t> i32{std::numeric_limits<std::int32_t>::min(), -1, 0, 1,
                                std::numeric_limits<std::int32_t>::max(), 7};               // [3, 2]
  std::vector<std::int64_t> i64{std::numeric_limits<std::int64_t>::min(), -1, 1,
                                std::numeric_limits<std::int64_t>::max()};                  // [2, 1, 2]
  std::vector<std::uint8_t> u8{0, 1, 127, 128, 254, 255, 42};                              // [7]
  double scalar = 3.141592653589793;                                                       // []
  std::map<std::string, std::string> metadata{
      {"plain", "value"},
      {"escapes", std::string("quote \" backslash \\ slash / newline \n tab \t cr \r ctrl \x01\x1f del \x7f")},
      {"unicode", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"},  // "été € 🙂"
      {"empty", ""},
      {"key with \"quotes\"", "{\"looks\": [\"like json\"]}"},
  };

  SafetensorsWriter writer() const {
    SafetensorsWriter w;
    w.add("layers.0.f32", DType::f32, {2, 3}, f32.data());
    w.add("f64", DType::f64, {6}, f64.data());
    w.add("i32", DType::i32, {3, 2}, i32.data());
    w.add("i64 \"quoted\" \\ name", DType::i64, {2, 1, 2}, i64.data());
    w.add("u8", DType::u8, {7}, u8.data());
    w.add("scalar", DType::f64, {}, &scalar);
    w.add("empty", DType::f32, {0, 3}, nullptr);
    for (const auto& [k, v] : metadata) w.add_metadata(k, v);
    return w;
  }

  void check(const SafetensorsFile& file) const {
    EXPECT_EQ(file.names(), (std::vector<std::string>{"layers.0.f32", "f64", "i32", "i64 \"quoted\" \\ name", "u8",
                                                      "scalar", "empty"}));
    EXPECT_EQ(file.metadata(), metadata);
    EXPECT_EQ(file.dtype("u8"), DType::u8);
    EXPECT_EQ(file.shape("i64 \"quoted\" \\ name"), (std::vector<std::int64_t>{2, 1, 2}));
    EXPECT_EQ(file.shape("scalar"), (std::vector<std::int64_t>{}));
    std::vector<float> a(6);
    file.copy_to("layers.0.f32", DType::f32, {2, 3}, a.data());
    EXPECT_EQ(a, f32);
    std::vector<double> b(6);
    file.copy_to("f64", DType::f64, {6}, b.data());
    EXPECT_EQ(0, std::memcmp(b.data(), f64.data(), 6 * sizeof(double)));  // bit-exact, denormal included
    std::vector<std::int32_t> c(6);
    file.copy_to("i32", DType::i32, {3, 2}, c.data());
    EXPECT_EQ(c, i32);
    std::vector<std::int64_t> d(4);
    file.copy_to("i64 \"quoted\" \\ name", DType::i64, {2, 1, 2}, d.data());
    EXPECT_EQ(d, i64);
    std::vector<std::uint8_t> e(7);
    file.copy_to("u8", DType::u8, {7}, e.data());
    EXPECT_EQ(e, u8);
    double s = 0;
    file.copy_to("scalar", DType::f64, {}, &s);
    EXPECT_EQ(s, scalar);
    float sentinel = 9.0f;
    file.copy_to("empty", DType::f32, {0, 3}, &sentinel);
    EXPECT_EQ(sentinel, 9.0f);
  }
};

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "nsa_safetensors_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0755);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Files in the folder other than `keep` (left-over temporaries).
  std::vector<std::string> others(const std::string& keep) const {
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir_))
      if (entry.path().filename() != keep) out.push_back(entry.path().filename().string());
    return out;
  }
  std::string dir_;
};

TEST(SafetensorsDType, NamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::f32), "F32");
  EXPECT_STREQ(dtype_name(DType::f64), "F64");
  EXPECT_STREQ(dtype_name(DType::i32), "I32");
  EXPECT_STREQ(dtype_name(DType::i64), "I64");
  EXPECT_STREQ(dtype_name(DType::u8), "U8");
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::f64), 8u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_EQ(dtype_size(DType::u8), 1u);
}

TEST_F(Safetensors, RoundTripEveryDTypeAndEscapedMetadata) {
  const Sample sample;
  sample.writer().write(path("a.safetensors"));
  sample.check(SafetensorsFile::read(path("a.safetensors")));
  EXPECT_EQ(SafetensorsFile::read(path("a.safetensors")).path(), path("a.safetensors"));
  EXPECT_TRUE(others("a.safetensors").empty());
}

TEST_F(Safetensors, ByteLayout) {
  // One F32 [2] then one U8 [3]: header padded with spaces to a multiple of 8, data in the
  // order added, offsets relative to the data section.
  SafetensorsWriter w;
  const float f[2] = {1.0f, -2.0f};
  const std::uint8_t u[3] = {7, 8, 9};
  w.add("f", DType::f32, {2}, f);
  w.add("u", DType::u8, {3}, u);
  w.add_metadata("k", "v");
  w.write(path("b.safetensors"));
  const std::string bytes = read_bytes(path("b.safetensors"));
  ASSERT_GE(bytes.size(), 8u);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 11);
  std::string header = bytes.substr(8, n);
  while (!header.empty() && header.back() == ' ') header.pop_back();
  EXPECT_EQ(header,
            "{\"__metadata__\":{\"k\":\"v\"},"
            "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}");
  EXPECT_EQ(0, std::memcmp(bytes.data() + 8 + n, f, 8));
  EXPECT_EQ(0, std::memcmp(bytes.data() + 8 + n + 8, u, 3));
}

TEST_F(Safetensors, EmptyFileOfNoTensors) {
  SafetensorsWriter().write(path("e.safetensors"));
  const SafetensorsFile file = SafetensorsFile::read(path("e.safetensors"));
  EXPECT_TRUE(file.names().empty());
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_EQ(read_bytes(path("e.safetensors")).size(), 16u);  // length + "{}" padded to 8
}

TEST_F(Safetensors, LookupErrorsNameTheKeyOrTensor) {
  Sample().writer().write(path("a.safetensors"));
  const SafetensorsFile file = SafetensorsFile::read(path("a.safetensors"));
  EXPECT_EQ(file.metadata("plain"), "value");
  EXPECT_TRUE(file.has("u8"));
  EXPECT_FALSE(file.has("nope"));
  expect_checkpoint_error([&] { file.metadata("nsa.step"); }, path("a.safetensors"), {"'nsa.step'", "missing"}, "metadata");
  expect_checkpoint_error([&] { file.dtype("nope"); }, path("a.safetensors"), {"'nope'", "missing"}, "dtype");
  expect_checkpoint_error([&] { file.shape("nope"); }, path("a.safetensors"), {"'nope'", "missing"}, "shape");
  float x;
  expect_checkpoint_error([&] { file.copy_to("nope", DType::f32, {1}, &x); }, path("a.safetensors"),
                          {"'nope'", "missing"}, "copy_to");
}

TEST_F(Safetensors, CopyToChecksDTypeAndShapeNamingTheTensor) {
  Sample().writer().write(path("a.safetensors"));
  const SafetensorsFile file = SafetensorsFile::read(path("a.safetensors"));
  std::vector<double> out(6, 7.0);
  expect_checkpoint_error([&] { file.copy_to("layers.0.f32", DType::f64, {2, 3}, out.data()); },
                          path("a.safetensors"), {"'layers.0.f32'", "F32 [2, 3]", "expected F64 [2, 3]"}, "dtype");
  expect_checkpoint_error([&] { file.copy_to("layers.0.f32", DType::f32, {3, 2}, out.data()); },
                          path("a.safetensors"), {"'layers.0.f32'", "F32 [2, 3]", "expected F32 [3, 2]"}, "shape");
  expect_checkpoint_error([&] { file.copy_to("layers.0.f32", DType::f32, {6}, out.data()); }, path("a.safetensors"),
                          {"'layers.0.f32'", "expected F32 [6]"}, "rank");
  expect_checkpoint_error([&] { file.copy_to("scalar", DType::f64, {1}, out.data()); }, path("a.safetensors"),
                          {"'scalar'", "F64 []", "expected F64 [1]"}, "scalar");
  for (const double v : out) EXPECT_EQ(v, 7.0);  // nothing written on a mismatch
}

TEST_F(Safetensors, WriterRejectsBadArguments) {
  SafetensorsWriter w;
  const float x[4] = {};
  w.add("a", DType::f32, {4}, x);
  EXPECT_THROW(w.add("a", DType::f32, {4}, x), Error);
  EXPECT_THROW(w.add("", DType::f32, {4}, x), Error);
  EXPECT_THROW(w.add("__metadata__", DType::f32, {4}, x), Error);
  EXPECT_THROW(w.add("neg", DType::f32, {-1}, x), Error);
  EXPECT_THROW(w.add("huge", DType::f32, {1ll << 40, 1ll << 40}, x), Error);  // 2^80 elements
  EXPECT_THROW(w.add("null", DType::f32, {4}, nullptr), Error);
  EXPECT_THROW(w.add("bad \xff utf8", DType::f32, {4}, x), Error);
  EXPECT_THROW(w.add_metadata("k", "bad \xc0\xaf utf8"), Error);  // overlong '/'
  EXPECT_NO_THROW(w.add("ok", DType::f32, {0}, nullptr));
}

TEST_F(Safetensors, TruncatedAtEveryByteIsAnError) {
  Sample().writer().write(path("full.safetensors"));
  const std::string bytes = read_bytes(path("full.safetensors"));
  ASSERT_GT(bytes.size(), 300u);
  const std::string cut = path("cut.safetensors");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(cut, bytes.substr(0, n));
    expect_checkpoint_error([&] { SafetensorsFile::read(cut); }, cut, {}, "cut at " + std::to_string(n));
    if (::testing::Test::HasFailure()) break;
  }
  write_bytes(cut, bytes + "x");
  expect_checkpoint_error([&] { SafetensorsFile::read(cut); }, cut, {"1 bytes of data after the last tensor"},
                          "trailing byte");
  write_bytes(cut, bytes.substr(0, 4));
  expect_checkpoint_error([&] { SafetensorsFile::read(cut); }, cut, {"truncated", "4 bytes"}, "4 bytes");
}

TEST_F(Safetensors, CorruptedHeaderBytesNeverCrash) {
  // Every header byte replaced by each of a few values: the reader either throws a
  // CheckpointError or returns a file whose tensors all copy out (a harmless change, e.g.
  // a letter of a name or of a metadata value).
  Sample().writer().write(path("full.safetensors"));
  const std::string bytes = read_bytes(path("full.safetensors"));
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  const std::string bad = path("bad.safetensors");
  int errors = 0, accepted = 0;
  for (std::size_t at = 0; at < 8 + n; ++at) {
    for (const char c : {'\0', '"', '{', '}', '[', ',', ':', '9', '-', '\\', ' ', 'x', '\xff', '\x80'}) {
      if (bytes[at] == c) continue;
      std::string corrupted = bytes;
      corrupted[at] = c;
      write_bytes(bad, corrupted);
      try {
        const SafetensorsFile file = SafetensorsFile::read(bad);
        for (const std::string& name : file.names()) {
          std::uint64_t size = dtype_size(file.dtype(name));
          for (const std::int64_t d : file.shape(name)) size *= static_cast<std::uint64_t>(d);
          std::vector<std::uint8_t> out(size);
          file.copy_to(name, file.dtype(name), file.shape(name), out.data());
        }
        ++accepted;
      } catch (const CheckpointError& e) {
        EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
        ++errors;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "byte " << at << " = " << int(c) << ": not a CheckpointError: " << e.what();
      }
    }
  }
  EXPECT_GT(errors, 1000);  // the loop ran over the header
  EXPECT_GT(accepted, 0);   // and some changes (inside strings) are harmless
}

// Hand-made broken files: each must give a CheckpointError naming the problem.
TEST_F(Safetensors, InvalidFilesNameTheProblem) {
  const std::string f32x2 = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  const std::string eight(8, '\x01');
  struct Case {
    std::string what, bytes;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"valid (control)", raw_file(f32x2, eight), {}},
      {"header length 2^60", le64(1ull << 60) + f32x2 + eight, {"truncated", "1152921504606846976"}},
      {"header length 2^64-1", le64(~0ull) + f32x2, {"truncated"}},
      {"header longer than the file", le64(f32x2.size() + 9) + f32x2 + eight, {"truncated"}},
      {"header length 0", le64(0) + eight, {"cannot hold a JSON object"}},
      {"empty file", "", {"truncated", "0 bytes"}},
      {"not an object", raw_file("[1, 2]", ""), {"does not start with '{'"}},
      {"leading garbage", raw_file("x{}", ""), {"does not start with '{'"}},
      {"unterminated object", raw_file("{\"t\":", ""), {"bad header", "JSON"}},
      {"missing colon", raw_file("{\"t\" 1}", ""), {"bad header", "':'"}},
      {"trailing comma", raw_file("{\"a\":\"b\",}", ""), {"bad header", "byte 9", "expected string literal"}},
      {"text after the object", raw_file("{} {}", ""), {"bad header", "end of input"}},
      {"nul in padding", raw_file(std::string("{}") + '\0', ""), {"bad header"}},
      {"bad escape", raw_file("{\"__metadata__\":{\"a\":\"\\q\"}}", ""), {"bad header", "after backslash"}},
      {"raw newline in string", raw_file("{\"__metadata__\":{\"a\":\"x\ny\"}}", ""), {"bad header", "control"}},
      {"invalid UTF-8", raw_file("{\"__metadata__\":{\"a\":\"\xff\"}}", ""), {"bad header", "UTF-8"}},
      {"lone surrogate", raw_file("{\"__metadata__\":{\"a\":\"\\ud800x\"}}", ""), {"bad header", "surrogate"}},
      {"deep nesting", raw_file("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", ""),
       {"bad header", "nesting"}},
      {"metadata not strings", raw_file("{\"__metadata__\":{\"a\":1}}", ""), {"metadata 'a'", "not a string"}},
      {"metadata not an object", raw_file("{\"__metadata__\":[]}", ""), {"__metadata__", "not an object"}},
      {"unknown dtype",
       raw_file("{\"t\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "unsupported dtype 'BF16'"}},
      {"dtype not a string", raw_file("{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "dtype"}},
      {"shape x size != span",
       raw_file("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "F32 [3] does not fit its 8 bytes"}},
      {"negative shape", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[-8],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "-8", "non-negative integer"}},
      {"fractional shape", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[8.0],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "8.0"}},
      {"shape overflowing 64 bits",
       raw_file("{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "does not fit"}},
      {"shape entry beyond 64 bits",
       raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[18446744073709551616],\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "shape entry 1.8446744073709552e+19 is not a non-negative integer"}},
      {"shape not an array", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":8,\"data_offsets\":[0,8]}}", eight),
       {"tensor 't'", "shape is not an array"}},
      {"offsets backwards", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", eight),
       {"tensor 't'", "backwards"}},
      {"offsets past the data",
       raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}", eight),
       {"tensor 't'", "past the 8 bytes of data"}},
      {"offsets of three", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8,8]}}", eight),
       {"tensor 't'", "data_offsets"}},
      {"offsets negative", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[-1,7]}}", eight),
       {"tensor 't'", "data_offsets"}},
      {"missing field", raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[8]}}", eight),
       {"tensor 't'", "needs dtype, shape and data_offsets"}},
      {"unknown field",
       raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8],\"x\":1}}", eight),
       {"tensor 't'", "unknown field 'x'"}},
      {"entry not an object", raw_file("{\"t\":[1]}", eight), {"tensor 't'", "not a JSON object"}},
      {"empty tensor name", raw_file("{\"\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", eight),
       {"empty name", "could not be saved again"}},
      {"duplicate name",
       raw_file("{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                "\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                eight),
       {"duplicate", "\"t\""}},
      {"overlap",
       raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[0,6]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                eight),
       {"'a' and 'b' overlap"}},
      {"same range twice",
       raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                eight),
       {"overlap"}},
      {"gap",
       raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                eight),
       {"gap of 2 bytes", "'b'"}},
      {"data before the first tensor",
       raw_file("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", eight), {"gap of 4 bytes"}},
      {"trailing bytes", raw_file(f32x2, eight + "abc"), {"3 bytes of data after the last tensor"}},
      {"data without tensors", raw_file("{}", "z"), {"1 bytes of data after the last tensor"}},
  };
  const std::string file = path("case.safetensors");
  for (const Case& c : cases) {
    write_bytes(file, c.bytes);
    if (c.needles.empty()) {
      EXPECT_NO_THROW(SafetensorsFile::read(file)) << c.what;
    } else {
      expect_checkpoint_error([&] { SafetensorsFile::read(file); }, file, c.needles, c.what);
    }
  }
}

TEST_F(Safetensors, ZeroSizeTensorsMayShareAnOffset) {
  const std::string header =
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}";
  write_bytes(path("z.safetensors"), raw_file(header, "abcdefgh"));
  const SafetensorsFile file = SafetensorsFile::read(path("z.safetensors"));
  EXPECT_EQ(file.names(), (std::vector<std::string>{"a", "z", "b"}));
  std::string b(4, '?');
  file.copy_to("b", DType::u8, {4}, b.data());
  EXPECT_EQ(b, "efgh");
}

TEST_F(Safetensors, ReadErrorsNameTheFile) {
  expect_checkpoint_error([&] { SafetensorsFile::read(path("missing.safetensors")); }, path("missing.safetensors"),
                          {"cannot open", "No such file"}, "missing");
  expect_checkpoint_error([&] { SafetensorsFile::read(dir_); }, dir_, {"not a regular file"}, "directory");
}

TEST_F(Safetensors, OverwriteReplacesTheFileAndKeepsItsPermissions) {
  const std::string target = path("ckpt.safetensors");
  write_bytes(target, "old contents");
  ASSERT_EQ(::chmod(target.c_str(), 0640), 0);
  Sample().writer().write(target);
  Sample().check(SafetensorsFile::read(target));
  struct stat st;
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_TRUE(others("ckpt.safetensors").empty());
}

TEST_F(Safetensors, WriteToADirectoryFailsAndLeavesItAlone) {
  ASSERT_TRUE(fs::create_directory(path("ckpt")));
  write_bytes(path("ckpt/inside"), "x");
  expect_checkpoint_error([&] { Sample().writer().write(path("ckpt")); }, path("ckpt"), {"rename"}, "directory");
  EXPECT_TRUE(fs::is_directory(path("ckpt")));
  EXPECT_EQ(read_bytes(path("ckpt/inside")), "x");
  EXPECT_TRUE(others("ckpt").empty()) << "temporary file left behind";
}

TEST_F(Safetensors, WriteIntoAMissingFolderFails) {
  expect_checkpoint_error([&] { Sample().writer().write(path("no/such/dir/ckpt.safetensors")); },
                          path("no/such/dir/ckpt.safetensors"), {"temporary file", path("no/such/dir")}, "missing dir");
}

TEST_F(Safetensors, WriteIntoAReadOnlyFolderLeavesTheFileIntact) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores folder permissions (the file-size limit test covers this)";
  const std::string target = path("ckpt.safetensors");
  write_bytes(target, "old contents");
  ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
  expect_checkpoint_error([&] { Sample().writer().write(target); }, target, {"temporary file"}, "read-only dir");
  ::chmod(dir_.c_str(), 0755);
  EXPECT_EQ(read_bytes(target), "old contents");
  EXPECT_TRUE(others("ckpt.safetensors").empty());
}

TEST_F(Safetensors, WriteFailingHalfwayLeavesTheExistingFileIntact) {
  // A file-size limit (like a full disk) makes write() fail after a few KB, even for root.
  const std::string target = path("ckpt.safetensors");
  Sample().writer().write(target);
  const std::string before = read_bytes(target);
  std::vector<float> big(1 << 16, 1.0f);  // 256 KB
  SafetensorsWriter w;
  w.add("big", DType::f32, {1 << 16}, big.data());

  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct sigaction ignore {}, old_action {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = 16384;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  bool threw = false;
  std::string message;
  try {
    w.write(target);
  } catch (const CheckpointError& e) {
    threw = true;
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::sigaction(SIGXFSZ, &old_action, nullptr);

  EXPECT_TRUE(threw);
  EXPECT_NE(message.find(target), std::string::npos) << message;
  EXPECT_NE(message.find("cannot write"), std::string::npos) << message;
  EXPECT_EQ(read_bytes(target), before);
  EXPECT_TRUE(others("ckpt.safetensors").empty()) << "temporary file left behind";
  Sample().check(SafetensorsFile::read(target));
}

// ---- exchange with Python's safetensors (driven by tests/model/read_safetensors.py) ----
// Without their environment variables these two skip: the script sets them.

TEST(SafetensorsPython, WriteSample) {
  const char* out = std::getenv("NSA_SAFETENSORS_WRITE");
  if (!out) GTEST_SKIP() << "NSA_SAFETENSORS_WRITE is not set (run by read_safetensors.py)";
  Sample().writer().write(out);
}

TEST(SafetensorsPython, ReadSampleWrittenByPython) {
  const char* in = std::getenv("NSA_SAFETENSORS_READ");
  if (!in) GTEST_SKIP() << "NSA_SAFETENSORS_READ is not set (run by read_safetensors.py)";
  const SafetensorsFile file = SafetensorsFile::read(in);
  const Sample sample;
  // Python's writer orders tensors its own way; compare as sets, then the values.
  std::vector<std::string> names = file.names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"empty", "f64", "i32", "i64 \"quoted\" \\ name", "layers.0.f32",
                                             "scalar", "u8"}));
  EXPECT_EQ(file.metadata(), sample.metadata);
  std::vector<float> a(6);
  file.copy_to("layers.0.f32", DType::f32, {2, 3}, a.data());
  EXPECT_EQ(a, sample.f32);
  std::vector<double> b(6);
  file.copy_to("f64", DType::f64, {6}, b.data());
  EXPECT_EQ(0, std::memcmp(b.data(), sample.f64.data(), 6 * sizeof(double)));
  std::vector<std::int32_t> c(6);
  file.copy_to("i32", DType::i32, {3, 2}, c.data());
  EXPECT_EQ(c, sample.i32);
  std::vector<std::int64_t> d(4);
  file.copy_to("i64 \"quoted\" \\ name", DType::i64, {2, 1, 2}, d.data());
  EXPECT_EQ(d, sample.i64);
  std::vector<std::uint8_t> e(7);
  file.copy_to("u8", DType::u8, {7}, e.data());
  EXPECT_EQ(e, sample.u8);
  double s = 0;
  file.copy_to("scalar", DType::f64, {}, &s);
  EXPECT_EQ(s, sample.scalar);
  EXPECT_EQ(file.shape("empty"), (std::vector<std::int64_t>{0, 3}));
}

}  // namespace
}  // namespace nsa::model
