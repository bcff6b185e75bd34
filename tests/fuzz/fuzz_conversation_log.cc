// libFuzzer: conversation logs (src/serve/conversation_log.h) from untrusted bytes.
// fuzz_conversation_log reads the input as the file. fuzz_conversation_log_fixed
// (NSA_FUZZ_FIX_CHECKSUMS) first recomputes every checksum the input's layout implies, so
// that mutations reach the record parsing behind them: the header's, then each record's
// head and payload checksums, walking the records by their stated lengths.
#include <cstring>

#include "common/fnv1a.h"
#include "fuzz_util.h"
#include "serve/conversation_log.h"

namespace {

using nsa::fnv1a64;

void fix_checksums(std::string& b) {
  const std::size_t fixed = 8 + 4 + 4 + 8 + 8 + 4;
  if (b.size() < fixed + 8) return;
  std::uint32_t id_bytes;
  std::memcpy(&id_bytes, b.data() + fixed - 4, 4);
  if (id_bytes > 256 || b.size() < fixed + id_bytes + 8) return;
  std::size_t at = fixed + id_bytes;
  const std::uint64_t h = fnv1a64(b.data(), at);
  std::memcpy(b.data() + at, &h, 8);
  at += 8;
  while (b.size() - at >= 24) {
    const std::uint64_t head = fnv1a64(b.data() + at, 16);
    std::memcpy(b.data() + at + 16, &head, 8);
    std::uint64_t len;
    std::memcpy(&len, b.data() + at + 8, 8);
    if (b.size() - at - 24 < 8 || len > b.size() - at - 32) return;
    const std::uint64_t p = fnv1a64(b.data() + at + 24, static_cast<std::size_t>(len));
    std::memcpy(b.data() + at + 24 + len, &p, 8);
    at += 32 + static_cast<std::size_t>(len);
  }
}

}  // namespace

std::vector<std::string> nsa_fuzz_seeds() {
  using namespace nsa::serve;
  const std::string path = nsa::fuzz::scratch_dir() + "/nsa_fuzz_seed_log";
  const std::vector<std::int32_t> a = {72, 105, 33}, b = {10, 65};
  const std::vector<float> ra(3 * 4, 0.5f), rb(2 * 4, -1.0f);
  create_log(path, {7, 4, "seed"}, a, ra);
  append_rows(path, 3, b.data(), 2, rb.data(), 4);
  append_truncate(path, 4);
  append_pending(path, {66});
  std::string bytes = nsa::fuzz::read_all(path);
  std::remove(path.c_str());
  return {bytes};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = nsa::fuzz::input_file(data, size, fix_checksums);
  try {
    const nsa::serve::LogContents c = nsa::serve::read_log(path);
    // What a valid log gives is consistent: a row per token.
    if (c.rows.size() != c.tokens.size() * static_cast<std::size_t>(c.header.row_floats)) __builtin_trap();
    if (c.valid_bytes > size) __builtin_trap();
  } catch (const nsa::serve::LogError&) {
  }
  return 0;
}
