// The C API (include/nsa/nsa_c.h): a thin adapter over nsa::DecodeCache. Every entry point
// catches everything; the message goes to a thread-local string, the kind to the status.
#include <cmath>
#include <memory>
#include <new>
#include <string>

#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/nsa_c.h"
#include "nsa/thread_pool.h"

struct nsa_decode_cache {
  nsa::DecodeCache cache;
  nsa::ThreadPool pool;
  nsa_decode_cache(nsa::DecodeCache c, int threads) : cache(std::move(c)), pool(threads) {}
};

namespace {

thread_local std::string g_last_error;

template <class Fn>
nsa_status guarded(Fn&& fn) {
  try {
    fn();
    g_last_error.clear();
    return NSA_OK;
  } catch (const nsa::DecodeFileError& e) {
    g_last_error = e.what();
    return e.kind() == nsa::DecodeFileError::Kind::io ? NSA_ERR_IO : NSA_ERR_BAD_FILE;
  } catch (const nsa::Error& e) {
    g_last_error = e.what();
    return NSA_ERR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    g_last_error = "nsa: out of memory";
    return NSA_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = std::string("nsa: internal error: ") + e.what();
    return NSA_ERR_INTERNAL;
  } catch (...) {
    g_last_error = "nsa: internal error (unknown exception)";
    return NSA_ERR_INTERNAL;
  }
}

template <class T>
void need(const T* p, const char* name) {
  if (p == nullptr) throw nsa::Error(std::string(name) + " is NULL");
}

void need_count(int64_t n, const char* name, bool allow_zero) {
  if (n < 0 || (!allow_zero && n == 0))
    throw nsa::Error(std::string(name) + " must be " + (allow_zero ? ">= 0" : "> 0") + ", got " + std::to_string(n));
}

nsa::PhiWeights<float> phi_of(const nsa_phi_weights* w) {
  nsa::PhiWeights<float> p;
  if (w)  // nsa_phi_weights has PhiWeights' fields (nsa/phi_fields.h)
    for (nsa::PhiField f : nsa::kPhiFields) nsa::phi_field(p, f) = nsa::phi_field(*w, f);
  return p;
}

// Contiguous views for B x T tokens (queries: q and gates too).
nsa::DecodeTokens views_of(const nsa::DecodeShape& s, const nsa_decode_tokens* x, int64_t B, int64_t T,
                           bool queries) {
  need(x, "tokens");
  auto view = [&](const float* p, const char* name, int64_t heads, int64_t dim) {
    need(p, name);
    return nsa::contiguous_view(p, B, T, heads, dim);
  };
  nsa::DecodeTokens v;
  if (queries) {
    v.q = view(x->q, "tokens.q", s.heads, s.d_k);
    v.gates = view(x->gates, "tokens.gates", s.heads, 3);
  }
  v.k_cmp = view(x->k_cmp, "tokens.k_cmp", s.kv_heads, s.d_k);
  v.v_cmp = view(x->v_cmp, "tokens.v_cmp", s.kv_heads, s.d_v);
  const float* other[4] = {x->k_slc, x->v_slc, x->k_win, x->v_win};
  const char* names[4] = {"tokens.k_slc", "tokens.v_slc", "tokens.k_win", "tokens.v_win"};
  nsa::TensorView<const float>* dst[4] = {&v.k_slc, &v.v_slc, &v.k_win, &v.v_win};
  for (int i = 0; i < 4; ++i) {
    const bool is_k = i % 2 == 0;
    if (s.shared_kv) {
      const float* base = is_k ? x->k_cmp : x->v_cmp;
      if (other[i] != nullptr && other[i] != base)
        throw nsa::Error(std::string("this cache shares K/V between branches: ") + names[i] +
                         " must be NULL or equal to " + (is_k ? "tokens.k_cmp" : "tokens.v_cmp"));
    } else {
      *dst[i] = view(other[i], names[i], s.kv_heads, is_k ? s.d_k : s.d_v);
    }
  }
  return v;
}

}  // namespace

extern "C" {

void nsa_config_init(nsa_config* c) {
  if (!c) return;
  const nsa::ConfigOptions o;
  c->block_len = o.block_len;
  c->stride = o.stride;
  c->sel_block = o.sel_block;
  c->top_n = o.top_n;
  c->n_init = o.n_init;
  c->n_local = o.n_local;
  c->window = o.window;
  c->phi = NSA_PHI_MLP;
  c->phi_hidden = o.phi_hidden;
  c->scale = o.scale;
}

void nsa_decode_shape_init(nsa_decode_shape* s) {
  if (!s) return;
  *s = nsa_decode_shape{};
  s->max_seqs = 1;
  s->storage = NSA_CACHE_FP32;
}

const char* nsa_status_name(nsa_status status) {
  switch (status) {
    case NSA_OK: return "NSA_OK";
    case NSA_ERR_INVALID_ARGUMENT: return "NSA_ERR_INVALID_ARGUMENT";
    case NSA_ERR_IO: return "NSA_ERR_IO";
    case NSA_ERR_BAD_FILE: return "NSA_ERR_BAD_FILE";
    case NSA_ERR_OUT_OF_MEMORY: return "NSA_ERR_OUT_OF_MEMORY";
    case NSA_ERR_INTERNAL: return "NSA_ERR_INTERNAL";
  }
  return "unknown nsa_status";
}

const char* nsa_last_error(void) { return g_last_error.c_str(); }

nsa_status nsa_decode_create(const nsa_config* config, const nsa_decode_shape* shape,
                             const nsa_phi_weights* phi_k, const nsa_phi_weights* phi_v,
                             nsa_decode_cache** cache) {
  return guarded([&] {
    need(cache, "cache (the output handle pointer)");
    *cache = nullptr;
    need(config, "config");
    need(shape, "shape");
    if (config->phi < NSA_PHI_MLP || config->phi > NSA_PHI_MEAN)
      throw nsa::Error("config.phi must be NSA_PHI_MLP, NSA_PHI_LINEAR or NSA_PHI_MEAN, got " +
                       std::to_string(config->phi));
    if (shape->threads < 0) throw nsa::Error("shape.threads must be >= 0, got " + std::to_string(shape->threads));
    if (shape->storage != NSA_CACHE_FP32 && shape->storage != NSA_CACHE_BF16)
      throw nsa::Error("shape.storage must be NSA_CACHE_FP32 (0) or NSA_CACHE_BF16 (1), got " +
                       std::to_string(shape->storage));
    nsa::ConfigOptions o;
    o.block_len = config->block_len;
    o.stride = config->stride;
    o.sel_block = config->sel_block;
    o.top_n = config->top_n;
    o.n_init = config->n_init;
    o.n_local = config->n_local;
    o.window = config->window;
    o.phi = static_cast<nsa::PhiKind>(config->phi);
    o.phi_hidden = config->phi_hidden;
    o.scale = config->scale;
    nsa::DecodeShape s;
    s.heads = shape->heads;
    s.kv_heads = shape->kv_heads;
    s.d_k = shape->d_k;
    s.d_v = shape->d_v;
    s.shared_kv = shape->shared_kv != 0;
    s.max_seqs = shape->max_seqs;
    s.max_tokens = shape->max_tokens;
    s.chunk_tokens = shape->chunk_tokens;
    s.storage = shape->storage == NSA_CACHE_BF16 ? nsa::CacheStorage::bf16 : nsa::CacheStorage::fp32;
    s.max_pages = shape->max_pages;
    auto handle = std::make_unique<nsa_decode_cache>(
        nsa::DecodeCache(nsa::Config(o), s, phi_of(phi_k), phi_of(phi_v)), shape->threads);
    *cache = handle.release();
  });
}

void nsa_decode_free(nsa_decode_cache* cache) { delete cache; }

nsa_status nsa_decode_prefill(nsa_decode_cache* cache, int64_t seq, int64_t tokens,
                              const nsa_decode_tokens* x, float* out) {
  return guarded([&] {
    need(cache, "cache");
    need_count(tokens, "tokens", true);
    if (tokens == 0) {
      cache->cache.position(seq);  // still reports an unknown sequence
      return;
    }
    need(out, "out");
    const nsa::DecodeShape& s = cache->cache.shape();
    cache->cache.prefill(seq, views_of(s, x, 1, tokens, true),
                         nsa::contiguous_view(out, 1, tokens, s.heads, s.d_v), cache->pool);
  });
}

nsa_status nsa_decode_append(nsa_decode_cache* cache, int64_t seq, int64_t tokens, const nsa_decode_tokens* x) {
  return guarded([&] {
    need(cache, "cache");
    need_count(tokens, "tokens", true);
    if (tokens == 0) {
      cache->cache.position(seq);
      return;
    }
    cache->cache.append(seq, views_of(cache->cache.shape(), x, 1, tokens, false), cache->pool);
  });
}

nsa_status nsa_decode_step(nsa_decode_cache* cache, int64_t count, const int64_t* seqs,
                           const nsa_decode_tokens* x, float* out) {
  return guarded([&] {
    need(cache, "cache");
    need_count(count, "count", false);
    need(seqs, "seqs");
    need(out, "out");
    const nsa::DecodeShape& s = cache->cache.shape();
    static_assert(sizeof(int64_t) == sizeof(nsa::index_t), "sequence ids are 64-bit");
    cache->cache.step(reinterpret_cast<const nsa::index_t*>(seqs), count, views_of(s, x, count, 1, true),
                      nsa::contiguous_view(out, count, 1, s.heads, s.d_v), cache->pool);
  });
}

nsa_status nsa_decode_step_tokens(nsa_decode_cache* cache, int64_t count, const int64_t* seqs, int64_t tokens,
                                  const nsa_decode_tokens* x, float* out) {
  return guarded([&] {
    need(cache, "cache");
    need_count(count, "count", false);
    need_count(tokens, "tokens", false);
    need(seqs, "seqs");
    need(out, "out");
    const nsa::DecodeShape& s = cache->cache.shape();
    cache->cache.step(reinterpret_cast<const nsa::index_t*>(seqs), count, views_of(s, x, count, tokens, true),
                      nsa::contiguous_view(out, count, tokens, s.heads, s.d_v), cache->pool);
  });
}

nsa_status nsa_decode_reset(nsa_decode_cache* cache, int64_t seq) {
  return guarded([&] {
    need(cache, "cache");
    cache->cache.reset(seq);
  });
}

nsa_status nsa_decode_fork(nsa_decode_cache* cache, int64_t src, int64_t dst) {
  return guarded([&] {
    need(cache, "cache");
    cache->cache.fork(src, dst);
  });
}

nsa_status nsa_decode_truncate(nsa_decode_cache* cache, int64_t seq, int64_t tokens) {
  return guarded([&] {
    need(cache, "cache");
    cache->cache.truncate(seq, tokens);
  });
}

nsa_status nsa_decode_position(const nsa_decode_cache* cache, int64_t seq, int64_t* position) {
  return guarded([&] {
    need(cache, "cache");
    need(position, "position");
    *position = cache->cache.position(seq);
  });
}

nsa_status nsa_decode_tokens_read(const nsa_decode_cache* cache, int64_t seq, int64_t kv_head,
                                  nsa_tokens_read* read) {
  return guarded([&] {
    need(cache, "cache");
    need(read, "read");
    const nsa::TokensRead r = cache->cache.tokens_read(seq, kv_head);
    *read = {r.cmp, r.slc, r.win, r.total()};
  });
}

nsa_status nsa_decode_memory(const nsa_decode_cache* cache, uint64_t* bytes, double* bytes_per_token) {
  return guarded([&] {
    need(cache, "cache");
    const nsa::DecodeMemory m = cache->cache.memory();
    if (bytes) *bytes = m.bytes;
    if (bytes_per_token) *bytes_per_token = m.bytes_per_token();
  });
}

nsa_status nsa_decode_save(const nsa_decode_cache* cache, const char* path) {
  return guarded([&] {
    need(cache, "cache");
    need(path, "path");
    cache->cache.save(path);
  });
}

nsa_status nsa_decode_load(nsa_decode_cache* cache, const char* path) {
  return guarded([&] {
    need(cache, "cache");
    need(path, "path");
    cache->cache.load(path);
  });
}

nsa_status nsa_decode_save_sequence(const nsa_decode_cache* cache, int64_t seq, const char* path) {
  return guarded([&] {
    need(cache, "cache");
    need(path, "path");
    cache->cache.save_sequence(seq, path);
  });
}

nsa_status nsa_decode_load_sequence(nsa_decode_cache* cache, int64_t seq, const char* path) {
  return guarded([&] {
    need(cache, "cache");
    need(path, "path");
    cache->cache.load_sequence(seq, path);
  });
}

}  // extern "C"
