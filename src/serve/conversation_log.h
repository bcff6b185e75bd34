// The file of one conversation: an append-only log, so that a finished turn costs a write
// of its own tokens only, however long the history.
//
//   header:  magic "NSACONV1", u32 version (1), u32 byte-order mark 0x01020304,
//            u64 model fingerprint (model_fingerprint: the checkpoint's config and weights),
//            i64 row floats (Generator::row_floats), u32 id length, the id's bytes,
//            u64 FNV-1a 64 of everything before it;
//   records: u32 kind (1 rows, 2 truncate, 3 pending), u32 0, u64 payload bytes, u64 FNV-1a 64 of those
//            16 bytes, the payload, u64 FNV-1a 64 of the payload.
//            rows:     i64 first position, i64 n, n i32 tokens, n x row-floats f32 (the
//                      Generator journal's rows of those tokens);
//            truncate: i64 tokens kept;
//            pending:  i64 n, n i32 tokens: sampled but not in the cache yet (the last
//                      reply's final token), until the next rows or truncate record.
// Each append is written, then fsync'ed, before the turn counts as finished. A crash during
// an append leaves a torn last record: read() drops it (the interrupted turn is absent) and
// the next append starts where the last whole record ends. Anything else that does not
// check out (a bad header, a bad record followed by more bytes, rows that do not continue
// the tokens before them) is corruption: read() throws LogError naming the file and byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nsa/error.h"

namespace nsa::serve {

class LogError : public Error {
 public:
  using Error::Error;
};

struct LogHeader {
  std::uint64_t model_fingerprint = 0;
  std::int64_t row_floats = 0;
  std::string id;
};

// What replaying a log gives: the tokens and rows of the conversation now, after its
// truncations (rows [tokens.size(), row_floats]).
struct LogContents {
  LogHeader header;
  std::vector<std::int32_t> tokens;
  std::vector<float> rows;
  std::vector<std::int32_t> pending;
  std::uint64_t valid_bytes = 0;   // where the whole records end
  bool torn_tail = false;          // a torn last record was dropped
};

// Creates the log (temporary file, fsync, rename: the file exists whole or not at all),
// with `tokens` / `rows` as its first record when non-empty.
void create_log(const std::string& path, const LogHeader& header, const std::vector<std::int32_t>& tokens,
                const std::vector<float>& rows);
// Appends a rows record for tokens [first, first + n) (fsync before returning). The
// file must end in whole records (cut it to read()'s valid_bytes after a torn tail).
void append_rows(const std::string& path, std::int64_t first, const std::int32_t* tokens, std::int64_t n,
                 const float* rows, std::int64_t row_floats);
void append_truncate(const std::string& path, std::int64_t keep);
void append_pending(const std::string& path, const std::vector<std::int32_t>& tokens);
// Reads and checks a log; `expect` (if non-null) must match its fingerprint and row size.
LogContents read_log(const std::string& path, const LogHeader* expect = nullptr);
// Reads only the header (fast: for listing a state folder at start).
LogHeader read_log_header(const std::string& path);
// Cuts the file to `bytes` (a torn tail), fsync'ed.
void cut_log(const std::string& path, std::uint64_t bytes);

}  // namespace nsa::serve
