// Conversation logs: writing (create, append, cut) and reading with checks.
#include "serve/conversation_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "common/fnv1a.h"

namespace nsa::serve {
namespace {

constexpr char kMagic[8] = {'N', 'S', 'A', 'C', 'O', 'N', 'V', '1'};
constexpr std::uint32_t kVersion = 1, kByteOrder = 0x01020304;
constexpr std::uint32_t kRows = 1, kTruncate = 2, kPending = 3;
constexpr std::uint32_t kMaxIdBytes = 256;

std::string errno_text() { return std::strerror(errno); }

template <class T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// Writes all of `bytes` to fd, then fsyncs; throws LogError naming `path` on failure.
void write_all(int fd, const std::string& bytes, const std::string& path) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw LogError("conversation log " + path + ": write failed: " + errno_text());
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) throw LogError("conversation log " + path + ": fsync failed: " + errno_text());
}

// kind, 0, payload length, the checksum of those 16 bytes; the payload; its checksum. The
// head has its own checksum so that a corrupted length is told from a torn last record.
std::string record(std::uint32_t kind, const std::string& payload) {
  std::string r;
  put(r, kind);
  put(r, std::uint32_t{0});
  put(r, static_cast<std::uint64_t>(payload.size()));
  put(r, fnv1a64(r.data(), r.size()));
  r += payload;
  put(r, fnv1a64(payload.data(), payload.size()));
  return r;
}

bool all_zero(const std::string& bytes, std::size_t from) {
  for (std::size_t i = from; i < bytes.size(); ++i)
    if (bytes[i] != 0) return false;
  return true;
}

std::string rows_payload(std::int64_t first, const std::int32_t* tokens, std::int64_t n, const float* rows,
                         std::int64_t row_floats) {
  std::string p;
  put(p, first);
  put(p, n);
  p.append(reinterpret_cast<const char*>(tokens), static_cast<std::size_t>(n) * sizeof(std::int32_t));
  p.append(reinterpret_cast<const char*>(rows), static_cast<std::size_t>(n * row_floats) * sizeof(float));
  return p;
}

void append_bytes(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) throw LogError("conversation log " + path + ": cannot open for appending: " + errno_text());
  try {
    write_all(fd, bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

std::string header_bytes(const LogHeader& h) {
  if (h.id.size() > kMaxIdBytes) throw LogError("conversation id longer than " + std::to_string(kMaxIdBytes) + " bytes");
  std::string b(kMagic, sizeof(kMagic));
  put(b, kVersion);
  put(b, kByteOrder);
  put(b, h.model_fingerprint);
  put(b, h.row_floats);
  put(b, static_cast<std::uint32_t>(h.id.size()));
  b += h.id;
  put(b, fnv1a64(b.data(), b.size()));
  return b;
}

// A cursor over the file's bytes.
struct Reader {
  const std::string& bytes;
  const std::string& path;
  std::size_t at = 0;
  bool has(std::size_t n) const { return bytes.size() - at >= n; }
  template <class T>
  T get() {
    T v;
    std::memcpy(&v, bytes.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw LogError("conversation log " + path + " is corrupted at byte " + std::to_string(at) + ": " + why);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LogError("conversation log " + path + ": cannot open: " + errno_text());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

LogHeader parse_header(Reader& r) {
  const std::size_t fixed = sizeof(kMagic) + 4 + 4 + 8 + 8 + 4;
  if (!r.has(fixed)) r.fail("the header is truncated (" + std::to_string(r.bytes.size()) + " bytes)");
  if (std::memcmp(r.bytes.data(), kMagic, sizeof(kMagic)) != 0) r.fail("not a conversation log (bad magic)");
  r.at = sizeof(kMagic);
  const auto version = r.get<std::uint32_t>();
  if (version != kVersion) r.fail("version " + std::to_string(version) + ", this build reads version 1");
  if (r.get<std::uint32_t>() != kByteOrder) r.fail("written with another byte order");
  LogHeader h;
  h.model_fingerprint = r.get<std::uint64_t>();
  h.row_floats = r.get<std::int64_t>();
  const auto id_bytes = r.get<std::uint32_t>();
  if (id_bytes > kMaxIdBytes || !r.has(id_bytes + 8u)) r.fail("the header is truncated or its id length is wrong");
  h.id.assign(r.bytes.data() + r.at, id_bytes);
  r.at += id_bytes;
  const std::uint64_t want = fnv1a64(r.bytes.data(), r.at);
  if (r.get<std::uint64_t>() != want) r.fail("the header's checksum does not match");
  // A row is a token's K/V over every layer: far below 2^28 floats for any model here.
  if (h.row_floats <= 0 || h.row_floats > (std::int64_t{1} << 28)) r.fail("row size " + std::to_string(h.row_floats));
  return h;
}

void check_expected(const LogHeader& got, const LogHeader* expect, const std::string& path) {
  if (!expect) return;
  if (got.model_fingerprint != expect->model_fingerprint)
    throw LogError("conversation log " + path + " was written by another model (fingerprint differs)");
  if (got.row_floats != expect->row_floats)
    throw LogError("conversation log " + path + " has rows of " + std::to_string(got.row_floats) +
                   " floats, this model's are " + std::to_string(expect->row_floats));
}

}  // namespace

void create_log(const std::string& path, const LogHeader& header, const std::vector<std::int32_t>& tokens,
                const std::vector<float>& rows) {
  std::string bytes = header_bytes(header);
  const auto n = static_cast<std::int64_t>(tokens.size());
  if (static_cast<std::int64_t>(rows.size()) != n * header.row_floats)
    throw LogError("conversation log " + path + ": " + std::to_string(rows.size()) + " row floats for " +
                   std::to_string(n) + " tokens of " + std::to_string(header.row_floats));
  if (n > 0) bytes += record(kRows, rows_payload(0, tokens.data(), n, rows.data(), header.row_floats));
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw LogError("conversation log " + tmp + ": cannot create: " + errno_text());
  try {
    write_all(fd, bytes, tmp);
  } catch (...) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw LogError("conversation log " + path + ": cannot rename into place: " + errno_text());
  }
}

void append_rows(const std::string& path, std::int64_t first, const std::int32_t* tokens, std::int64_t n,
                 const float* rows, std::int64_t row_floats) {
  if (n <= 0) return;
  append_bytes(path, record(kRows, rows_payload(first, tokens, n, rows, row_floats)));
}

void append_truncate(const std::string& path, std::int64_t keep) {
  std::string p;
  put(p, keep);
  append_bytes(path, record(kTruncate, p));
}

void append_pending(const std::string& path, const std::vector<std::int32_t>& tokens) {
  std::string p;
  put(p, static_cast<std::int64_t>(tokens.size()));
  p.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(std::int32_t));
  append_bytes(path, record(kPending, p));
}

LogHeader read_log_header(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw LogError("conversation log " + path + ": cannot open: " + errno_text());
  std::string head(sizeof(kMagic) + 4 + 4 + 8 + 8 + 4 + kMaxIdBytes + 8, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  Reader r{head, path};
  return parse_header(r);
}

LogContents read_log(const std::string& path, const LogHeader* expect) {
  const std::string bytes = read_file(path);
  Reader r{bytes, path};
  LogContents c;
  c.header = parse_header(r);
  check_expected(c.header, expect, path);
  const std::int64_t rf = c.header.row_floats;
  c.valid_bytes = r.at;
  while (r.at < bytes.size()) {
    const std::size_t start = r.at;
    // A torn append leaves a prefix of one record (or zeros) at the end of the file.
    if (!r.has(24) || all_zero(bytes, start)) {
      c.torn_tail = true;
      break;
    }
    const auto kind = r.get<std::uint32_t>();
    r.get<std::uint32_t>();
    const auto len = r.get<std::uint64_t>();
    if (r.get<std::uint64_t>() != fnv1a64(bytes.data() + start, 16)) {
      r.at = start;
      r.fail("a record's head checksum does not match");
    }
    if (!r.has(8) || bytes.size() - r.at - 8 < len) {
      c.torn_tail = true;
      break;
    }
    const std::size_t payload = r.at;
    r.at += static_cast<std::size_t>(len);
    if (r.get<std::uint64_t>() != fnv1a64(bytes.data() + payload, static_cast<std::size_t>(len))) {
      if (r.at == bytes.size()) {  // the last record, half written
        c.torn_tail = true;
        break;
      }
      r.at = start;
      r.fail("a record's checksum does not match");
    }
    Reader p{bytes, path, payload};
    const auto have = static_cast<std::int64_t>(c.tokens.size());
    if (kind == kRows) {
      if (len < 16) r.fail("a rows record of " + std::to_string(len) + " bytes");
      const auto first = p.get<std::int64_t>();
      const auto n = p.get<std::int64_t>();
      // Compared by division: n and len come from the file, their product could wrap.
      const std::uint64_t per_token = 4 + 4 * static_cast<std::uint64_t>(rf);
      if (n <= 0 || (len - 16) % per_token != 0 || (len - 16) / per_token != static_cast<std::uint64_t>(n))
        r.fail("a rows record's length does not match its token count");
      if (first != have)
        r.fail("rows from position " + std::to_string(first) + " after " + std::to_string(have) + " tokens");
      c.tokens.resize(static_cast<std::size_t>(have + n));
      std::memcpy(c.tokens.data() + have, bytes.data() + p.at, static_cast<std::size_t>(n) * 4);
      p.at += static_cast<std::size_t>(n) * 4;
      c.rows.resize(static_cast<std::size_t>((have + n) * rf));
      std::memcpy(c.rows.data() + have * rf, bytes.data() + p.at, static_cast<std::size_t>(n * rf) * 4);
      c.pending.clear();
    } else if (kind == kPending) {
      if (len < 8) r.fail("a pending record of " + std::to_string(len) + " bytes");
      const auto n = p.get<std::int64_t>();
      if (n < 0 || (len - 8) % 4 != 0 || (len - 8) / 4 != static_cast<std::uint64_t>(n))
        r.fail("a pending record's length does not match");
      c.pending.resize(static_cast<std::size_t>(n));
      std::memcpy(c.pending.data(), bytes.data() + p.at, static_cast<std::size_t>(n) * 4);
    } else if (kind == kTruncate) {
      if (len != 8) r.fail("a truncate record of " + std::to_string(len) + " bytes");
      const auto keep = p.get<std::int64_t>();
      if (keep < 0 || keep > have) r.fail("truncate to " + std::to_string(keep) + " of " + std::to_string(have) + " tokens");
      c.tokens.resize(static_cast<std::size_t>(keep));
      c.rows.resize(static_cast<std::size_t>(keep * rf));
      c.pending.clear();
    } else {
      r.fail("unknown record kind " + std::to_string(kind));
    }
    c.valid_bytes = r.at;
  }
  return c;
}

void cut_log(const std::string& path, std::uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw LogError("conversation log " + path + ": cannot open: " + errno_text());
  const bool ok = ::ftruncate(fd, static_cast<off_t>(bytes)) == 0 && ::fsync(fd) == 0;
  const std::string why = ok ? "" : errno_text();
  ::close(fd);
  if (!ok) throw LogError("conversation log " + path + ": cannot cut the torn tail: " + why);
}

}  // namespace nsa::serve
