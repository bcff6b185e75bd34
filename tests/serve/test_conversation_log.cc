// Conversation logs: what was appended reads back; a torn last record (a crash during an
// append) is dropped and only it; corruption anywhere else is an error naming the file.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "serve/conversation_log.h"
#include "test_serve_util.h"

namespace nsa::serve {
namespace {

using testing::TempDir;

constexpr std::int64_t kRow = 5;

std::vector<float> rows_for(const std::vector<std::int32_t>& tokens) {
  std::vector<float> r;
  for (std::int32_t t : tokens)
    for (int i = 0; i < kRow; ++i) r.push_back(static_cast<float>(t) + 0.1f * static_cast<float>(i));
  return r;
}

LogHeader header() { return {0x1234, kRow, "conv-1"}; }

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
}

// Two turns (3 then 4 tokens), a rollback to 5, and one more token.
std::string three_records(const TempDir& dir) {
  const std::string path = dir.file("c.nsaconv");
  const std::vector<std::int32_t> a = {1, 2, 3}, b = {4, 5, 6, 7}, c = {9};
  create_log(path, header(), a, rows_for(a));
  append_rows(path, 3, b.data(), 4, rows_for(b).data(), kRow);
  append_truncate(path, 5);
  append_rows(path, 5, c.data(), 1, rows_for(c).data(), kRow);
  return path;
}

TEST(ConversationLog, RecordsReadBackWithTheirTruncations) {
  TempDir dir;
  const std::string path = three_records(dir);
  const LogHeader h = header();
  const LogContents got = read_log(path, &h);
  EXPECT_EQ(got.header.id, "conv-1");
  EXPECT_EQ(got.tokens, (std::vector<std::int32_t>{1, 2, 3, 4, 5, 9}));
  EXPECT_EQ(got.rows, rows_for({1, 2, 3, 4, 5, 9}));
  EXPECT_FALSE(got.torn_tail);
  EXPECT_EQ(got.valid_bytes, std::filesystem::file_size(path));
  EXPECT_EQ(read_log_header(path).id, "conv-1");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(ConversationLog, EveryTornTailDropsOnlyTheLastRecord) {
  TempDir dir;
  const std::string path = three_records(dir);
  const std::string whole = bytes_of(path);
  const std::vector<std::int32_t> c = {9};
  // Where the last record starts: the file without it.
  const std::size_t last = whole.size() - (24 + 16 + 4 + 4 * kRow + 8);
  for (std::size_t cut = last + 1; cut < whole.size(); ++cut) {
    write_bytes(path, whole.substr(0, cut));
    const LogContents got = read_log(path);
    EXPECT_TRUE(got.torn_tail) << "cut at " << cut;
    EXPECT_EQ(got.tokens, (std::vector<std::int32_t>{1, 2, 3, 4, 5})) << "cut at " << cut;
    EXPECT_EQ(got.valid_bytes, last);
  }
  // A torn tail of zeros (a file system that extended the file first) is torn too.
  write_bytes(path, whole.substr(0, last) + std::string(30, '\0'));
  EXPECT_TRUE(read_log(path).torn_tail);
  // Cut, the file takes appends again.
  cut_log(path, last);
  append_rows(path, 5, c.data(), 1, rows_for(c).data(), kRow);
  EXPECT_EQ(bytes_of(path), whole);
}

TEST(ConversationLog, CorruptionIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string path = three_records(dir);
  const std::string whole = bytes_of(path);
  const std::size_t last = whole.size() - (24 + 16 + 4 + 4 * kRow + 8);
  // Any flipped byte before the last record (header or an earlier record) is refused.
  for (std::size_t at = 0; at < last; at += 3) {
    std::string bad = whole;
    bad[at] = static_cast<char>(bad[at] ^ 0x40);
    write_bytes(path, bad);
    try {
      const LogContents got = read_log(path);
      ADD_FAILURE() << "a flipped byte at " << at << " was read as " << got.tokens.size() << " tokens";
    } catch (const LogError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  write_bytes(path, whole);
  const LogHeader other{0x9999, kRow, "conv-1"};
  EXPECT_THROW(read_log(path, &other), LogError);
  const LogHeader rows{0x1234, kRow + 1, "conv-1"};
  EXPECT_THROW(read_log(path, &rows), LogError);
  write_bytes(path, "NSACONV");
  EXPECT_THROW(read_log(path), LogError);
  EXPECT_THROW(read_log(dir.file("missing.nsaconv")), LogError);
}

}  // namespace
}  // namespace nsa::serve
