// Reading and writing the safetensors format (https://github.com/huggingface/safetensors):
//   u64 little-endian N, then N bytes of JSON header, then the raw tensor bytes.
//   header: {"__metadata__": {"key": "value", ...},
//            "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   offsets are relative to the start of the data section; tensors are little-endian,
//   row-major, contiguous, and together cover the data section exactly.
// Python's `safetensors` package reads what SafetensorsWriter writes
// (tests/model/read_safetensors.py checks it). The JSON is checkpoint/json.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nsa/error.h"

namespace nsa::model {

// Thrown for a missing, truncated, corrupted or mismatched file; the message names the
// file and the problem ("checkpoint run/ckpt.safetensors: truncated: header says 1200
// bytes of data, file has 800").
class CheckpointError : public Error {
 public:
  using Error::Error;
};

enum class DType { f32, f64, i32, i64, u8 };
const char* dtype_name(DType dtype);   // "F32", "F64", "I32", "I64", "U8"
std::size_t dtype_size(DType dtype);

class SafetensorsWriter {
 public:
  // Copies the data (shape-product x dtype_size bytes; data may be null when that is 0).
  // Names must be unique, non-empty, valid UTF-8, and not "__metadata__"; throws nsa::Error
  // otherwise. Tensors are laid out in the order they were added.
  void add(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
           const void* data);
  // Sets (or replaces) a metadata entry; key and value must be valid UTF-8 (nsa::Error).
  void add_metadata(const std::string& key, const std::string& value);
  // Writes to "<path>.tmp.<random>" in the same folder, fsyncs, then renames over `path`:
  // a crash or error never leaves a half-written file at `path`, and an existing file is
  // replaced only by a complete one (keeping its permissions). Throws CheckpointError on
  // failure, after removing the temporary file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsFile {
 public:
  // Reads and validates the whole file (header length against the file size, header JSON,
  // dtypes, shapes against offsets, offsets covering the data exactly with no overlap, gap
  // or trailing byte). Throws CheckpointError; never trusts a size before checking it
  // against the file, so garbage cannot make it allocate more than the file's size.
  static SafetensorsFile read(const std::string& path);

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Metadata value; throws CheckpointError naming the key when it is absent.
  const std::string& metadata(const std::string& key) const;
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // in the order of their data (the writer's order)
  // dtype and shape of a tensor; throw CheckpointError naming it when it is absent.
  DType dtype(const std::string& name) const;
  const std::vector<std::int64_t>& shape(const std::string& name) const;
  // Copies tensor `name` into out, checking that dtype and shape match exactly; throws
  // CheckpointError naming the tensor, the expected and the found dtype/shape otherwise.
  void copy_to(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
               void* out) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::size_t begin = 0, end = 0;
  };
  std::string path_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> order_;
  std::map<std::string, Entry> entries_;
  std::vector<std::uint8_t> data_;
};

}  // namespace nsa::model
