// DecodeCache::save / load: the file format is described in include/nsa/decode.h.
//
// save: header + payload go to "<path>.tmp.XXXXXX" in the same directory (same file
// system), which is flushed, fsync'ed and renamed over <path>: the old file is replaced
// atomically or not at all.
// load: every check (size, magic, version, header checksum, config and shape, payload
// size, payload checksum) runs while reading into a fresh State; the cache's own state is
// swapped with it only at the very end.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "decode/cache_state.h"
#include "nsa/error.h"

namespace nsa {
namespace {

constexpr char kMagic[8] = {'N', 'S', 'A', 'D', 'C', 'A', 'C', 'H'};
constexpr std::uint32_t kVersion = 2;  // 2: the storage field (bf16 caches)
constexpr std::uint32_t kByteOrder = 0x01020304;
constexpr int kConfigFields = 10;  // l, d, l', n, n_init, n_local, w, phi, phi_hidden, scale
constexpr int kShapeFields = 8;    // H, H_kv, d_k, d_v, shared_kv, max_seqs, max_tokens, storage

// Bytes of a header for max_seqs sequences.
std::uint64_t header_size(index_t max_seqs) {
  return 8 + 4 + 4 + 8 + 8 * kConfigFields + 8 * kShapeFields + 8 + 8 * static_cast<std::uint64_t>(max_seqs) +
         8 + 8 + 8;
}

struct Writer {
  std::vector<unsigned char> b;
  void raw(const void* p, std::size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    b.insert(b.end(), c, c + n);
  }
  void u32(std::uint32_t x) { raw(&x, 4); }
  void u64(std::uint64_t x) { raw(&x, 8); }
  void i64(std::int64_t x) { raw(&x, 8); }
  void f64(double x) { raw(&x, 8); }
};

struct Reader {
  const unsigned char* p;
  std::size_t n, at = 0;
  template <class T>
  T get() {
    T x;
    std::memcpy(&x, p + at, sizeof(T));  // bounds were checked against the header size
    at += sizeof(T);
    return x;
  }
};

// The fields a cache file must match.
struct FileMeta {
  ConfigOptions options;
  DecodeShape shape;
  std::uint64_t phi_fingerprint = 0;
  std::vector<index_t> positions;
  std::uint64_t payload_bytes = 0, payload_hash = 0;
};

// The header of a file holding the sequences `seqs` (all of a cache's, or one).
std::vector<unsigned char> encode_header(const DecodeCache::State& st, const std::vector<const DecodeSequence*>& seqs,
                                         std::uint64_t payload_bytes, std::uint64_t payload_hash) {
  const ConfigOptions& o = st.config.options();
  const DecodeShape& s = st.shape;
  const auto count = static_cast<index_t>(seqs.size());
  Writer w;
  w.raw(kMagic, 8);
  w.u32(kVersion);
  w.u32(kByteOrder);
  w.u64(header_size(count));
  for (std::int64_t x : {std::int64_t{o.block_len}, std::int64_t{o.stride}, std::int64_t{o.sel_block},
                         std::int64_t{o.top_n}, std::int64_t{o.n_init}, std::int64_t{o.n_local},
                         std::int64_t{o.window}, static_cast<std::int64_t>(o.phi), std::int64_t{o.phi_hidden}})
    w.i64(x);
  w.f64(o.scale);
  for (std::int64_t x : {s.heads, s.kv_heads, s.d_k, s.d_v, std::int64_t{s.shared_kv}, count, s.max_tokens,
                         static_cast<std::int64_t>(s.storage)})
    w.i64(x);
  w.u64(st.phi_fingerprint);
  for (const DecodeSequence* q : seqs) w.i64(q->pos);
  w.u64(payload_bytes);
  w.u64(payload_hash);
  w.u64(fnv1a64(w.b.data(), w.b.size()));
  return w.b;
}

// Visits the payload of sequence q holding `pos` tokens as contiguous runs of stored
// elements (fn(bytes, element count)), in file order: raw K streams, raw V streams (per
// kv head, chunk by chunk), then Kc and Vc.
template <class Fn>
void for_each_run(const DecodeCache::State& st, const DecodeSequence& q, index_t pos, Fn&& fn) {
  const index_t C = st.chunk, H_kv = st.shape.kv_heads;
  for (int kind = 0; kind < 2; ++kind) {
    const index_t dim = kind == 0 ? st.shape.d_k : st.shape.d_v;
    for (int b = 0; b < st.kv_streams; ++b)
      for (index_t h = 0; h < H_kv; ++h)
        for (index_t s0 = 0; s0 < pos; s0 += C)
          fn(kind == 0 ? st.key(q, b, h, s0) : st.value(q, b, h, s0), std::min(C, pos - s0) * dim);
  }
  const index_t ncmp = st.config.num_cmp_blocks(pos), per = st.cmp_per_chunk;
  for (int kind = 0; kind < 2; ++kind) {
    const index_t dim = kind == 0 ? st.shape.d_k : st.shape.d_v;
    for (index_t h = 0; h < H_kv; ++h)
      for (index_t i0 = 0; i0 < ncmp; i0 += per)
        fn(kind == 0 ? st.kc(q, h, i0) : st.vc(q, h, i0), std::min(per, ncmp - i0) * dim);
  }
}

// Bytes of the payload of a sequence holding `pos` tokens.
std::uint64_t payload_bytes(const DecodeCache::State& st, index_t pos) {
  const index_t ncmp = st.config.num_cmp_blocks(pos);
  return static_cast<std::uint64_t>(st.elem_bytes) * st.shape.kv_heads *
         (static_cast<std::uint64_t>(st.kv_streams) * pos * (st.shape.d_k + st.shape.d_v) +
          static_cast<std::uint64_t>(ncmp) * (st.shape.d_k + st.shape.d_v));
}

// The config's integer fields in file order: block_len, stride, sel_block, top_n, n_init,
// n_local, window, phi, phi_hidden (then the double scale).
constexpr int kConfigInts = 9;
std::array<std::int64_t, kConfigInts> config_ints(const ConfigOptions& o) {
  return {o.block_len, o.stride, o.sel_block, o.top_n, o.n_init, o.n_local, o.window, static_cast<std::int64_t>(o.phi),
          o.phi_hidden};
}

std::string describe_options(const std::array<std::int64_t, kConfigInts>& x, double scale) {
  return "l=" + std::to_string(x[0]) + " d=" + std::to_string(x[1]) + " l'=" + std::to_string(x[2]) +
         " n=" + std::to_string(x[3]) + " n_init=" + std::to_string(x[4]) + " n_local=" + std::to_string(x[5]) +
         " w=" + std::to_string(x[6]) + " phi=" + std::to_string(x[7]) + " phi_hidden=" + std::to_string(x[8]) +
         " scale=" + std::to_string(scale);
}

std::string describe_shape(const DecodeShape& s) {
  return "H=" + std::to_string(s.heads) + " H_kv=" + std::to_string(s.kv_heads) + " d_k=" +
         std::to_string(s.d_k) + " d_v=" + std::to_string(s.d_v) + (s.shared_kv ? " shared" : " independent") +
         " K/V";
}

const char* storage_name(CacheStorage s) {
  switch (s) {
    case CacheStorage::fp32: return "fp32";
    case CacheStorage::bf16: return "bf16";
  }
  return "an unknown storage type";
}

// Closes the file and removes the temporary on every path out of save().
struct TempFile {
  std::string path;
  FILE* f = nullptr;
  bool keep = false;
  ~TempFile() {
    if (f) std::fclose(f);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

namespace {

// Writes the sequences `seqs` of st to `path` (a temporary file renamed into place).
void write_file(const DecodeCache::State& st, const std::vector<const DecodeSequence*>& seqs, const std::string& path) {
  auto fail = [&](const std::string& what) {
    throw DecodeFileError(DecodeFileError::Kind::io, "save '" + path + "': " + what +
                                                         (errno ? std::string(": ") + std::strerror(errno) : ""));
  };
  TempFile tmp;
  std::string templ = path + ".tmp.XXXXXX";
  errno = 0;
  const int fd = ::mkstemp(templ.data());
  if (fd < 0) fail("cannot create a temporary file next to it");
  tmp.path = templ;
  tmp.f = ::fdopen(fd, "wb");
  if (!tmp.f) {
    ::close(fd);
    fail("cannot open the temporary file");
  }
  // Placeholder header (same size), then the payload, then the real header.
  std::vector<unsigned char> header = encode_header(st, seqs, 0, 0);
  if (std::fwrite(header.data(), 1, header.size(), tmp.f) != header.size()) fail("write failed");
  std::uint64_t hash = fnv1a64(nullptr, 0), bytes = 0;
  bool ok = true;
  for (const DecodeSequence* q : seqs)
    for_each_run(st, *q, q->pos, [&](const std::byte* p, index_t n) {
      const std::size_t nb = static_cast<std::size_t>(n * st.elem_bytes);
      if (!ok) return;
      hash = fnv1a64(p, nb, hash);
      bytes += nb;
      ok = std::fwrite(p, 1, nb, tmp.f) == nb;
    });
  if (!ok) fail("write failed");
  header = encode_header(st, seqs, bytes, hash);
  if (std::fseek(tmp.f, 0, SEEK_SET) != 0 || std::fwrite(header.data(), 1, header.size(), tmp.f) != header.size())
    fail("write failed");
  if (std::fflush(tmp.f) != 0 || ::fsync(::fileno(tmp.f)) != 0) fail("flush failed");
  const int rc = std::fclose(tmp.f);
  tmp.f = nullptr;
  if (rc != 0) fail("close failed");
  if (std::rename(tmp.path.c_str(), path.c_str()) != 0) fail("cannot rename the temporary file into place");
  tmp.keep = true;
  // Make the rename durable (best effort: not every file system supports it).
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

void DecodeCache::save(const std::string& path) const {
  std::vector<const DecodeSequence*> all;
  for (const DecodeSequence& q : state_->seqs) all.push_back(&q);
  write_file(*state_, all, path);
}

void DecodeCache::save_sequence(index_t seq, const std::string& path) const {
  write_file(*state_, {&state_->sequence(seq, "save_sequence")}, path);
}

namespace {

// Reads and checks the file at `path` into a fresh state like st's (every sequence the file
// holds, from id 0 on); throws DecodeFileError, st untouched, on any error.
std::unique_ptr<DecodeCache::State> read_file(const DecodeCache::State& st, const std::string& path) {
  using State = DecodeCache::State;
  auto fail = [&](const std::string& what) -> void {
    throw DecodeFileError(DecodeFileError::Kind::bad_file, "load '" + path + "': " + what);
  };
  auto io_fail = [&](const std::string& what) -> void {
    throw DecodeFileError(DecodeFileError::Kind::io, "load '" + path + "': " + what);
  };
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) io_fail(std::string("cannot open: ") + std::strerror(errno));
  FILE* f = file.get();
  if (std::fseek(f, 0, SEEK_END) != 0) io_fail("cannot seek");
  const long end = std::ftell(f);
  if (end < 0) io_fail("cannot tell the file size");
  const auto file_size = static_cast<std::uint64_t>(end);
  std::fseek(f, 0, SEEK_SET);

  // Fixed prefix: magic, version, byte order, header size.
  constexpr std::size_t kPrefix = 24;
  if (file_size < kPrefix)
    fail("truncated: " + std::to_string(file_size) + " bytes, too short for a cache file header");
  unsigned char prefix[kPrefix];
  if (std::fread(prefix, 1, kPrefix, f) != kPrefix) io_fail("read failed");
  if (std::memcmp(prefix, kMagic, 8) != 0) fail("not an NSA decode cache file (bad magic)");
  Reader pr{prefix, kPrefix, 8};
  const auto version = pr.get<std::uint32_t>();
  const auto order = pr.get<std::uint32_t>();
  const auto hsize = pr.get<std::uint64_t>();
  if (version != kVersion)
    fail("unsupported file version " + std::to_string(version) + " (this build reads version " +
         std::to_string(kVersion) + ")");
  if (order != kByteOrder) fail("written with another byte order");
  if (hsize < header_size(1) || (hsize - header_size(0)) % 8 != 0 || hsize > (1ull << 32))
    fail("corrupted: impossible header size " + std::to_string(hsize));
  if (hsize > file_size)
    fail("truncated: the header needs " + std::to_string(hsize) + " bytes, the file has " +
         std::to_string(file_size));
  std::vector<unsigned char> header(static_cast<std::size_t>(hsize));
  std::memcpy(header.data(), prefix, kPrefix);
  if (std::fread(header.data() + kPrefix, 1, hsize - kPrefix, f) != hsize - kPrefix) io_fail("read failed");
  std::uint64_t stored_hash;
  std::memcpy(&stored_hash, header.data() + hsize - 8, 8);
  if (fnv1a64(header.data(), hsize - 8) != stored_hash) fail("corrupted: header checksum mismatch");

  // Config, shape, weights: must be those of this cache.
  Reader r{header.data(), header.size(), kPrefix};
  FileMeta m;
  // The config's fields are compared as the int64 they are stored as: a cast to int first
  // would read block_len = 2^32 + 8 as 8.
  std::array<std::int64_t, kConfigInts> file_ints{};
  for (std::int64_t& x : file_ints) x = r.get<std::int64_t>();
  const double file_scale = r.get<double>();
  DecodeShape& s = m.shape;
  s.heads = r.get<std::int64_t>();
  s.kv_heads = r.get<std::int64_t>();
  s.d_k = r.get<std::int64_t>();
  s.d_v = r.get<std::int64_t>();
  s.shared_kv = r.get<std::int64_t>() != 0;
  s.max_seqs = r.get<std::int64_t>();
  s.max_tokens = r.get<std::int64_t>();
  const std::int64_t storage = r.get<std::int64_t>();
  s.storage = static_cast<CacheStorage>(storage);
  m.phi_fingerprint = r.get<std::uint64_t>();
  if (s.max_seqs <= 0 || header_size(s.max_seqs) != hsize) fail("corrupted: header size does not match its sequence count");

  const ConfigOptions& mine = st.config.options();
  if (file_ints != config_ints(mine) || file_scale != mine.scale)
    fail("written for another configuration: file has " + describe_options(file_ints, file_scale) +
         ", this cache has " + describe_options(config_ints(mine), mine.scale));
  m.options = mine;  // equal field by field
  if (s.heads != st.shape.heads || s.kv_heads != st.shape.kv_heads || s.d_k != st.shape.d_k ||
      s.d_v != st.shape.d_v || s.shared_kv != st.shape.shared_kv)
    fail("written for another shape: file has " + describe_shape(s) + ", this cache has " +
         describe_shape(st.shape));
  if (storage != static_cast<std::int64_t>(CacheStorage::fp32) && storage != static_cast<std::int64_t>(CacheStorage::bf16))
    fail("corrupted: unknown storage type " + std::to_string(storage));
  if (s.storage != st.shape.storage)
    fail(std::string("written by a cache with ") + storage_name(s.storage) + " storage, this cache stores " +
         storage_name(st.shape.storage));
  if (m.phi_fingerprint != st.phi_fingerprint)
    fail("written with other phi weights (the compressed keys would not match this layer)");
  if (s.max_seqs > st.shape.max_seqs)
    fail("holds " + std::to_string(s.max_seqs) + " sequences, this cache has room for " +
         std::to_string(st.shape.max_seqs));

  std::uint64_t expect = 0;
  for (index_t i = 0; i < s.max_seqs; ++i) {
    const index_t pos = r.get<std::int64_t>();
    if (pos < 0) fail("corrupted: sequence " + std::to_string(i) + " holds a negative token count " + std::to_string(pos));
    if ((st.shape.max_tokens > 0 && pos > st.shape.max_tokens) || pos > (index_t{1} << 40))
      fail("sequence " + std::to_string(i) + " holds " + std::to_string(pos) +
           " tokens, more than this cache's max_tokens = " + std::to_string(st.shape.max_tokens));
    m.positions.push_back(pos);
    expect += payload_bytes(st, pos);
  }
  m.payload_bytes = r.get<std::uint64_t>();
  m.payload_hash = r.get<std::uint64_t>();
  if (m.payload_bytes != expect) fail("corrupted: payload size does not match the sequence lengths");
  if (file_size != hsize + expect)
    fail((file_size < hsize + expect ? "truncated: expected " : "corrupted: trailing bytes, expected ") +
         std::to_string(hsize + expect) + " bytes, the file has " + std::to_string(file_size));

  // Payload, into a fresh state (shared chunks were saved once per sequence: they load
  // unshared, which the cache's budget must hold).
  std::unique_ptr<State> fresh = st.empty_copy();
  index_t pages = 0;
  for (index_t i = 0; i < s.max_seqs; ++i) pages += st.chunks_for(m.positions[i]);
  if (pages > fresh->pool.available())
    fail("needs " + std::to_string(pages) + " chunks, more than this cache's max_pages = " +
         std::to_string(st.shape.max_pages));
  std::uint64_t hash = fnv1a64(nullptr, 0);
  bool ok = true;
  for (index_t i = 0; i < s.max_seqs; ++i) {
    DecodeSequence& q = fresh->seqs[static_cast<size_t>(i)];
    fresh->prepare_write(q, m.positions[i]);
    for_each_run(*fresh, q, m.positions[i], [&](std::byte* p, index_t n) {
      const std::size_t nb = static_cast<std::size_t>(n * fresh->elem_bytes);
      if (!ok) return;
      ok = std::fread(p, 1, nb, f) == nb;
      hash = fnv1a64(p, nb, hash);
    });
    q.pos = m.positions[i];
    q.num_cmp = fresh->config.num_cmp_blocks(q.pos);
  }
  if (!ok) io_fail("read failed (the file changed while it was read?)");
  if (hash != m.payload_hash) fail("corrupted: payload checksum mismatch");
  fresh->total_read = st.total_read;
  return fresh;
}

}  // namespace

void DecodeCache::load(const std::string& path) {
  std::unique_ptr<State> fresh = read_file(*state_, path);
  state_.swap(fresh);
}

void DecodeCache::load_sequence(index_t seq, const std::string& path) {
  State& st = *state_;
  DecodeSequence& target = st.sequence(seq, "load_sequence");
  std::unique_ptr<State> fresh = read_file(st, path);
  const DecodeSequence* from = nullptr;  // the file's one non-empty sequence, if any
  index_t holding = 0;
  for (const DecodeSequence& q : fresh->seqs)
    if (q.pos > 0) from = &q, ++holding;
  if (holding > 1)
    throw DecodeFileError(DecodeFileError::Kind::bad_file,
                          "load_sequence '" + path + "': the file holds " + std::to_string(holding) +
                              " sequences (save_sequence writes one; load reads a whole cache)");
  // The target's own pages come back when it is replaced; shared ones stay with the others.
  index_t freed = 0;
  for (std::int32_t id : target.pages) freed += st.pool.refs(id) == 1;
  const index_t need = from ? static_cast<index_t>(from->pages.size()) : 0;
  if (need > st.pool.available() + freed)
    throw DecodeFileError(DecodeFileError::Kind::bad_file,
                          "load_sequence '" + path + "': needs " + std::to_string(need) +
                              " chunks, more than the cache's budget leaves (max_pages = " +
                              std::to_string(st.shape.max_pages) + ")");
  st.init_sequence(target);
  if (from == nullptr) return;  // an empty sequence
  for (std::int32_t id : from->pages) {
    const std::int32_t mine = st.pool.take();
    std::memcpy(st.pool.data(mine), fresh->pool.data(id), st.pool.page_bytes());
    target.pages.push_back(mine);
  }
  target.pos = from->pos;
  target.num_cmp = from->num_cmp;
}

}  // namespace nsa
