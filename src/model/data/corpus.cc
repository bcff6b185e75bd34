#include "model/data/corpus.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sys/stat.h>

#include "nsa/error.h"

namespace nsa::model {
namespace {

void check_sizes(const char* where, index_t batch, index_t seq) {
  if (batch < 1 || seq < 1)
    throw Error(std::string(where) + ": batch and seq must be >= 1, got batch " + std::to_string(batch) +
                ", seq " + std::to_string(seq));
}

// Row b of `out` from split[offset, offset + seq] (tokens) and one later (targets).
void fill_row(Batch& out, index_t b, const std::vector<std::int32_t>& split, std::size_t offset) {
  const std::size_t seq = static_cast<std::size_t>(out.seq);
  const std::size_t row = static_cast<std::size_t>(b) * seq;
  std::copy(split.begin() + static_cast<std::ptrdiff_t>(offset),
            split.begin() + static_cast<std::ptrdiff_t>(offset + seq), out.tokens.begin() + static_cast<std::ptrdiff_t>(row));
  std::copy(split.begin() + static_cast<std::ptrdiff_t>(offset + 1),
            split.begin() + static_cast<std::ptrdiff_t>(offset + seq + 1),
            out.targets.begin() + static_cast<std::ptrdiff_t>(row));
}

Batch empty_batch(index_t batch, index_t seq) {
  Batch out;
  out.batch = batch;
  out.seq = seq;
  out.tokens.resize(static_cast<std::size_t>(batch * seq));
  out.targets.resize(out.tokens.size());
  return out;
}

}  // namespace

std::vector<std::int32_t> encode_bytes(const std::string& text) {
  std::vector<std::int32_t> tokens(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

std::string decode_bytes(const std::int32_t* tokens, index_t n) {
  if (n < 0) throw Error("decode_bytes: n = " + std::to_string(n) + " is negative");
  std::string text(static_cast<std::size_t>(n), '?');
  for (index_t i = 0; i < n; ++i) {
    if (tokens[i] >= 0 && tokens[i] <= 255) text[static_cast<std::size_t>(i)] = static_cast<char>(tokens[i]);
  }
  return text;
}

Corpus Corpus::from_file(const std::string& path, double val_fraction) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    throw Error("corpus " + path + ": " + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) throw Error("corpus " + path + ": is a directory, not a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw Error("corpus " + path + ": cannot open: " + std::strerror(err));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error("corpus " + path + ": read error");
  if (text.empty()) throw Error("corpus " + path + ": file is empty");
  try {
    return from_text(text, val_fraction);
  } catch (const Error& e) {
    throw Error("corpus " + path + ": " + std::string(e.what()).substr(5));  // drop the "nsa: " prefix
  }
}

Corpus Corpus::from_text(const std::string& text, double val_fraction) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw Error("val_fraction = " + std::to_string(val_fraction) + " is not in [0, 1)");
  const std::vector<std::int32_t> tokens = encode_bytes(text);
  const auto val = static_cast<std::size_t>(std::floor(static_cast<double>(tokens.size()) * val_fraction));
  const auto split = tokens.begin() + static_cast<std::ptrdiff_t>(tokens.size() - val);
  Corpus corpus;
  corpus.train_.assign(tokens.begin(), split);
  corpus.val_.assign(split, tokens.end());
  return corpus;
}

Batch sample_batch(const std::vector<std::int32_t>& split, index_t batch, index_t seq, Rng& rng) {
  check_sizes("sample_batch", batch, seq);
  if (split.size() < static_cast<std::size_t>(seq) + 1)
    throw Error("sample_batch: the split has " + std::to_string(split.size()) + " tokens, fewer than seq + 1 = " +
                std::to_string(seq + 1));
  Batch out = empty_batch(batch, seq);
  const std::uint64_t offsets = split.size() - static_cast<std::size_t>(seq);  // 0 .. size - seq - 1
  for (index_t b = 0; b < batch; ++b) fill_row(out, b, split, static_cast<std::size_t>(rng.uniform_int(offsets)));
  return out;
}

index_t num_windows(const std::vector<std::int32_t>& split, index_t seq) {
  if (seq < 1) throw Error("num_windows: seq = " + std::to_string(seq) + " must be >= 1");
  if (split.size() < 2) return 0;
  return static_cast<index_t>((split.size() - 1) / static_cast<std::size_t>(seq));
}

Batch window_batch(const std::vector<std::int32_t>& split, index_t first_window, index_t batch, index_t seq) {
  check_sizes("window_batch", batch, seq);
  const index_t count = num_windows(split, seq);
  if (first_window < 0 || first_window > count - batch)
    throw Error("window_batch: windows " + std::to_string(first_window) + ".." +
                std::to_string(first_window + batch - 1) + " are not all within the " + std::to_string(count) +
                " windows of seq " + std::to_string(seq) + " in a split of " + std::to_string(split.size()) +
                " tokens");
  Batch out = empty_batch(batch, seq);
  for (index_t b = 0; b < batch; ++b)
    fill_row(out, b, split, static_cast<std::size_t>((first_window + b) * seq));
  return out;
}

}  // namespace nsa::model
