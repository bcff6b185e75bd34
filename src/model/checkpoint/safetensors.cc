// safetensors: the writer lays tensors out in the order they were added, with the header
// padded by spaces so that the data section starts at a multiple of 8 bytes; the reader
// accepts any valid file and checks every field before it trusts a number from it.
#include "model/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "model/checkpoint/json.h"

namespace nsa::model {
namespace {

// Tensors are stored little-endian and copied byte for byte.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

// The reference implementation refuses headers above 100 MB; so do we.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::string errno_text(int err) { return std::strerror(err); }

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool parse_dtype(const std::string& name, DType* out) {
  for (const DType d : {DType::f32, DType::f64, DType::i32, DType::i64, DType::u8}) {
    if (name == dtype_name(d)) {
      *out = d;
      return true;
    }
  }
  return false;
}

// Bytes of a tensor, or false when the count overflows 64 bits.
bool tensor_bytes(const std::vector<std::int64_t>& shape, DType dtype, std::uint64_t* bytes) {
  unsigned __int128 n = dtype_size(dtype);
  for (const std::int64_t d : shape) {
    if (d < 0) return false;
    n *= static_cast<std::uint64_t>(d);
    if (n > std::numeric_limits<std::uint64_t>::max()) return false;
  }
  *bytes = static_cast<std::uint64_t>(n);
  return true;
}

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// Reads exactly n bytes; returns how many were read before end of file (or -1 on error).
std::int64_t read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::read(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return static_cast<std::int64_t>(done);
}

// The permissions an ordinary new file would get: 0666 minus the process umask, read
// from /proc (querying umask() would change it, racing other threads); 0644 without /proc.
mode_t new_file_mode() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(0666 & ~std::stoul(line.substr(6), nullptr, 8));
  }
  return 0644;
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  throw Error("dtype_name: invalid DType " + std::to_string(static_cast<int>(dtype)));
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  throw Error("dtype_size: invalid DType " + std::to_string(static_cast<int>(dtype)));
}

// ---- writer ------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
                            const void* data) {
  if (name.empty()) throw Error("SafetensorsWriter::add: empty tensor name");
  if (name == "__metadata__") throw Error("SafetensorsWriter::add: '__metadata__' is reserved, not a tensor name");
  if (!json::valid_utf8(name)) throw Error("SafetensorsWriter::add: tensor name is not valid UTF-8");
  for (const Entry& e : entries_) {
    if (e.name == name) throw Error("SafetensorsWriter::add: tensor '" + name + "' added twice");
  }
  std::uint64_t bytes = 0;
  if (!tensor_bytes(shape, dtype, &bytes) || bytes > std::numeric_limits<std::size_t>::max())
    throw Error("SafetensorsWriter::add: tensor '" + name + "' has an invalid shape " + shape_text(shape));
  if (bytes > 0 && data == nullptr) throw Error("SafetensorsWriter::add: tensor '" + name + "' has null data");
  Entry entry{name, dtype, shape, std::vector<std::uint8_t>(bytes)};
  if (bytes > 0) std::memcpy(entry.bytes.data(), data, bytes);
  entries_.push_back(std::move(entry));
}

void SafetensorsWriter::add_metadata(const std::string& key, const std::string& value) {
  if (!json::valid_utf8(key) || !json::valid_utf8(value))
    throw Error("SafetensorsWriter::add_metadata: key or value of '" + key + "' is not valid UTF-8");
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  const std::string where = "checkpoint " + path + ": ";

  // Header JSON (nlohmann's dump; names and metadata were checked to be UTF-8), padded
  // with spaces to a multiple of 8 bytes. ordered_json keeps the tensors in the order they
  // were added and each entry's fields as the format lists them.
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata_.empty()) root["__metadata__"] = metadata_;
  std::uint64_t offset = 0;
  for (const Entry& e : entries_) {
    const std::uint64_t begin = offset;
    offset += e.bytes.size();
    root[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {begin, offset}}};
  }
  std::string header = root.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(header.size()) >> (8 * i));

  // Temporary file in the target's folder, so that rename() is atomic.
  const std::size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::string temp = path + ".tmp.XXXXXX";
  Fd out;
  out.fd = ::mkstemp(temp.data());
  if (out.fd < 0) {
    const int err = errno;
    throw CheckpointError(where + "cannot create a temporary file in " + dir + ": " + errno_text(err));
  }
  const auto fail = [&](const std::string& what, int err) {
    if (out.fd >= 0) {
      ::close(out.fd);
      out.fd = -1;
    }
    ::unlink(temp.c_str());
    throw CheckpointError(where + what + " " + temp + ": " + errno_text(err));
  };
  if (!write_all(out.fd, length, 8) || !write_all(out.fd, header.data(), header.size())) fail("cannot write", errno);
  for (const Entry& e : entries_) {
    if (!write_all(out.fd, e.bytes.data(), e.bytes.size())) fail("cannot write", errno);
  }
  struct stat existing;
  const mode_t mode = ::stat(path.c_str(), &existing) == 0 && S_ISREG(existing.st_mode)
                          ? (existing.st_mode & 07777)
                          : new_file_mode();
  if (::fchmod(out.fd, mode) != 0) fail("cannot set the permissions of", errno);
  if (::fsync(out.fd) != 0) fail("cannot fsync", errno);
  const int fd = out.fd;
  out.fd = -1;
  if (::close(fd) != 0) fail("cannot close", errno);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    throw CheckpointError(where + "cannot rename the temporary file " + temp + " to it: " + errno_text(err));
  }
  // Make the rename itself durable; a failure here leaves a complete file, so it is ignored.
  Fd folder;
  folder.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (folder.fd >= 0) ::fsync(folder.fd);
}

// ---- reader ------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  const std::string where = "checkpoint " + path + ": ";
  const auto bad = [&](const std::string& what) { return CheckpointError(where + what); };

  Fd in;
  in.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in.fd < 0) {
    const int err = errno;
    throw bad("cannot open: " + errno_text(err));
  }
  struct stat st;
  if (::fstat(in.fd, &st) != 0) {
    const int err = errno;
    throw bad("cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) throw bad("not a regular file");
  const std::uint64_t file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 8)
    throw bad("truncated: " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");

  std::uint8_t length_bytes[8];
  if (read_all(in.fd, length_bytes, 8) != 8) throw bad("cannot read the header length");
  std::uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<std::uint64_t>(length_bytes[i]) << (8 * i);
  if (header_len > file_size - 8)
    throw bad("truncated: header says " + std::to_string(header_len) + " bytes of JSON, file has " +
              std::to_string(file_size - 8) + " after the length");
  if (header_len > kMaxHeaderBytes)
    throw bad("header of " + std::to_string(header_len) + " bytes is larger than the " +
              std::to_string(kMaxHeaderBytes) + " allowed");
  if (header_len < 2) throw bad("header of " + std::to_string(header_len) + " bytes cannot hold a JSON object");

  std::string header(header_len, '\0');
  if (read_all(in.fd, header.data(), header.size()) != static_cast<std::int64_t>(header.size()))
    throw bad("cannot read the " + std::to_string(header_len) + "-byte header (file shrank?)");
  if (header[0] != '{') throw bad("header does not start with '{'");
  json::Json root;
  try {
    root = json::parse(header);
  } catch (const json::ParseError& e) {
    std::string message = e.what();
    if (message.rfind("nsa: ", 0) == 0) message = message.substr(5);
    throw bad("bad header: " + message);
  }
  if (!root.is_object()) throw bad("header is not a JSON object");

  const std::uint64_t data_size = file_size - 8 - header_len;
  SafetensorsFile file;
  file.path_ = path;
  for (const auto& [name, v] : root.items()) {
    if (name == "__metadata__") {
      if (!v.is_object())
        throw bad("__metadata__ is a JSON " + std::string(v.type_name()) + ", not an object of strings");
      for (const auto& [key, value] : v.items()) {
        if (!value.is_string())
          throw bad("metadata '" + key + "' is a JSON " + value.type_name() + ", not a string");
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string tensor = "tensor '" + name + "': ";
    if (name.empty()) throw bad("a tensor has an empty name (the writer refuses one, so the file could not be saved again)");
    if (!v.is_object()) throw bad(tensor + "entry is not a JSON object");
    for (const auto& [field, unused] : v.items())
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        throw bad(tensor + "unknown field '" + field + "'");
    if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw bad(tensor + "needs dtype, shape and data_offsets");
    const json::Json& dtype = v["dtype"];
    const json::Json& shape = v["shape"];
    const json::Json& offsets = v["data_offsets"];
    Entry entry;
    if (!dtype.is_string()) throw bad(tensor + "dtype is not a string");
    if (!parse_dtype(dtype.get<std::string>(), &entry.dtype))
      throw bad(tensor + "unsupported dtype '" + dtype.get<std::string>() + "' (F32, F64, I32, I64 or U8)");
    if (!shape.is_array()) throw bad(tensor + "shape is not an array");
    for (const json::Json& d : shape) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        throw bad(tensor + "shape entry " + (d.is_number() ? d.dump() : d.type_name()) + " is not a non-negative integer");
      entry.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw bad(tensor + "data_offsets is not [begin, end] of non-negative integers");
    const std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end)
      throw bad(tensor + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] run backwards");
    if (end > data_size)
      throw bad(tensor + "data_offsets end " + std::to_string(end) + " is past the " + std::to_string(data_size) +
                " bytes of data (truncated?)");
    std::uint64_t bytes = 0;
    if (!tensor_bytes(entry.shape, entry.dtype, &bytes) || bytes != end - begin)
      throw bad(tensor + dtype_name(entry.dtype) + " " + shape_text(entry.shape) + " does not fit its " +
                std::to_string(end - begin) + " bytes of data_offsets [" + std::to_string(begin) + ", " +
                std::to_string(end) + "]");
    entry.begin = static_cast<std::size_t>(begin);
    entry.end = static_cast<std::size_t>(end);
    file.order_.push_back(name);  // by name (nlohmann's objects iterate so); by data below
    file.entries_.emplace(name, std::move(entry));  // names are unique: the parser rejects duplicate keys
  }

  // The tensors must tile the data section: no gap, no overlap, nothing after the last.
  std::vector<const std::string*> by_offset;
  for (const std::string& name : file.order_) by_offset.push_back(&name);
  std::stable_sort(by_offset.begin(), by_offset.end(), [&](const std::string* a, const std::string* b) {
    const Entry& x = file.entries_.at(*a);
    const Entry& y = file.entries_.at(*b);
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  std::uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const std::string* name : by_offset) {
    const Entry& e = file.entries_.at(*name);
    if (e.begin < covered)
      throw bad("tensors '" + *previous + "' and '" + *name + "' overlap (" + std::to_string(e.begin) + " < " +
                std::to_string(covered) + ")");
    if (e.begin > covered)
      throw bad("gap of " + std::to_string(e.begin - covered) + " bytes of data before tensor '" + *name + "'");
    covered = e.end;
    previous = name;
  }
  std::vector<std::string> in_data_order;
  for (const std::string* name : by_offset) in_data_order.push_back(*name);
  file.order_ = std::move(in_data_order);
  if (covered != data_size)
    throw bad(std::to_string(data_size - covered) + " bytes of data after the last tensor (the header covers " +
              std::to_string(covered) + " of " + std::to_string(data_size) + ")");

  file.data_.resize(static_cast<std::size_t>(data_size));
  if (read_all(in.fd, file.data_.data(), file.data_.size()) != static_cast<std::int64_t>(data_size))
    throw bad("cannot read the " + std::to_string(data_size) + " bytes of data (file shrank?)");
  return file;
}

const std::string& SafetensorsFile::metadata(const std::string& key) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end()) throw CheckpointError("checkpoint " + path_ + ": metadata '" + key + "' is missing");
  return it->second;
}

bool SafetensorsFile::has(const std::string& name) const { return entries_.count(name) != 0; }

std::vector<std::string> SafetensorsFile::names() const { return order_; }

DType SafetensorsFile::dtype(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError("checkpoint " + path_ + ": tensor '" + name + "' is missing");
  return it->second.dtype;
}

const std::vector<std::int64_t>& SafetensorsFile::shape(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError("checkpoint " + path_ + ": tensor '" + name + "' is missing");
  return it->second.shape;
}

void SafetensorsFile::copy_to(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
                              void* out) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw CheckpointError("checkpoint " + path_ + ": tensor '" + name + "' is missing");
  const Entry& e = it->second;
  if (e.dtype != dtype || e.shape != shape)
    throw CheckpointError("checkpoint " + path_ + ": tensor '" + name + "' is " + dtype_name(e.dtype) + " " +
                          shape_text(e.shape) + ", expected " + dtype_name(dtype) + " " + shape_text(shape));
  if (e.end > e.begin) std::memcpy(out, data_.data() + e.begin, e.end - e.begin);
}

}  // namespace nsa::model
