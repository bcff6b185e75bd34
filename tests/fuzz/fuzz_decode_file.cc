// libFuzzer: decode cache files (DecodeCache::load / load_sequence, include/nsa/decode.h)
// from untrusted bytes, into a cache of a fixed small layer. fuzz_decode_file reads the
// input as the file; fuzz_decode_file_fixed (NSA_FUZZ_FIX_CHECKSUMS) first writes, at
// the places the input's header size implies, the payload's length and checksum and the
// header's checksum, so that mutations reach the checks behind them. Each input is given
// to load_sequence and to load: either succeeds or throws DecodeFileError, and the cache
// stays consistent.
#include <cstring>

#include "common/fnv1a.h"
#include "fuzz_util.h"
#include "nsa/decode.h"
#include "nsa/thread_pool.h"

namespace {

constexpr nsa::index_t kH = 2, kHkv = 1, kD = 4;

nsa::Config config() {
  nsa::ConfigOptions o;
  o.block_len = 4;
  o.stride = 2;
  o.sel_block = 4;
  o.top_n = 2;
  o.n_init = 1;
  o.n_local = 1;
  o.window = 4;
  o.phi = nsa::PhiKind::mean;
  return nsa::Config(o);
}

nsa::DecodeCache make_cache() {
  nsa::DecodeShape s;
  s.heads = kH;
  s.kv_heads = kHkv;
  s.d_k = kD;
  s.d_v = kD;
  s.shared_kv = true;
  s.max_seqs = 2;
  s.max_tokens = 64;
  return nsa::DecodeCache(config(), s, {}, {});
}

void fix_checksums(std::string& b) {
  if (b.size() < 24) return;
  std::uint64_t hsize;
  std::memcpy(&hsize, b.data() + 16, 8);
  if (hsize < 48 || hsize > b.size()) return;
  const std::uint64_t payload = b.size() - hsize;
  std::memcpy(b.data() + hsize - 24, &payload, 8);
  const std::uint64_t ph = nsa::fnv1a64(b.data() + hsize, static_cast<std::size_t>(payload));
  std::memcpy(b.data() + hsize - 16, &ph, 8);
  const std::uint64_t hh = nsa::fnv1a64(b.data(), static_cast<std::size_t>(hsize - 8));
  std::memcpy(b.data() + hsize - 8, &hh, 8);
}

}  // namespace

std::vector<std::string> nsa_fuzz_seeds() {
  nsa::ThreadPool pool(1);
  nsa::DecodeCache cache = make_cache();
  for (nsa::index_t seq = 0; seq < 2; ++seq) {
    const nsa::index_t T = 5 + 4 * seq;
    std::vector<float> kv(static_cast<std::size_t>(T * kHkv * kD), 0.25f);
    nsa::DecodeTokens t;
    t.k_cmp = nsa::contiguous_view<const float>(kv.data(), 1, T, kHkv, kD);
    t.v_cmp = t.k_cmp;
    cache.append(seq, t, pool);
  }
  const std::string path = nsa::fuzz::scratch_dir() + "/nsa_fuzz_seed_cache";
  cache.save(path);
  std::string whole = nsa::fuzz::read_all(path);
  cache.save_sequence(1, path);
  std::string one = nsa::fuzz::read_all(path);
  std::remove(path.c_str());
  return {whole, one};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = nsa::fuzz::input_file(data, size, fix_checksums);
  static nsa::DecodeCache cache = make_cache();
  try {
    cache.load_sequence(1, path);
  } catch (const nsa::DecodeFileError&) {
  }
  try {
    cache.load(path);
  } catch (const nsa::DecodeFileError&) {
  }
  // Whatever happened, the cache is consistent: positions within the shape's limit.
  for (nsa::index_t s = 0; s < 2; ++s)
    if (cache.position(s) < 0 || cache.position(s) > 64) __builtin_trap();
  return 0;
}
