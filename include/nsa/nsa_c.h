/* nsa_c.h: the C API of the NSA decode cache (include/nsa/decode.h), for C programs and
 * other languages' FFI (ctypes, cffi, Rust, Go, Julia...).
 *
 * - Handles are opaque; every function returns an nsa_status and never lets a C++
 *   exception escape. On failure, nsa_last_error() returns a message naming the cause
 *   (thread-local, valid until the thread's next nsa_* call; "" after a success).
 * - Arrays are contiguous, row-major, fp32 (also with a bf16 cache, which converts them):
 *     prefill (T tokens of one sequence):   q [T, H, d_k], k_* [T, H_kv, d_k],
 *                                           v_* [T, H_kv, d_v], gates [T, H, 3], out [T, H, d_v]
 *     step (one token of each of B seqs):   the same with B in place of T.
 *   When the cache shares K/V between branches, k_slc/v_slc/k_win/v_win must be NULL (or
 *   equal to k_cmp/v_cmp); otherwise all six are required.
 * - A handle may be used from one thread at a time; it runs its own worker threads.
 */
#ifndef NSA_NSA_C_H_
#define NSA_NSA_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nsa_status {
  NSA_OK = 0,
  NSA_ERR_INVALID_ARGUMENT = 1, /* null handle or pointer, bad sizes or config, unknown or full
                                   sequence, NaN/Inf input */
  NSA_ERR_IO = 2,               /* a file cannot be opened, written or renamed */
  NSA_ERR_BAD_FILE = 3,         /* truncated or corrupted cache file, or one written by a cache
                                   of another config, shape, storage or phi */
  NSA_ERR_OUT_OF_MEMORY = 4,
  NSA_ERR_INTERNAL = 5
} nsa_status;

typedef enum nsa_phi_kind { NSA_PHI_MLP = 0, NSA_PHI_LINEAR = 1, NSA_PHI_MEAN = 2 } nsa_phi_kind;

/* The NSA parameters (see nsa::ConfigOptions). nsa_config_init sets the paper's defaults. */
typedef struct nsa_config {
  int32_t block_len;  /* l   */
  int32_t stride;     /* d   */
  int32_t sel_block;  /* l'  */
  int32_t top_n;      /* n   */
  int32_t n_init;
  int32_t n_local;
  int32_t window;     /* w   */
  int32_t phi;        /* nsa_phi_kind */
  int32_t phi_hidden; /* 0 = the head dim */
  double scale;       /* 0 = 1/sqrt(d_k) */
} nsa_config;

/* Weights of one compression function phi; pointers the phi kind does not use may be NULL.
 *   mlp: pe [l, dim], w1 [hidden, l*dim], b1 [hidden], w2 [dim, hidden], b2 [dim]
 *   linear: pe [l, dim], w [dim, l*dim];  mean: none.  They are copied by nsa_decode_create. */
typedef struct nsa_phi_weights {
  const float* pe;
  const float* w1;
  const float* b1;
  const float* w2;
  const float* b2;
  const float* w;
} nsa_phi_weights;

/* The element type of a cache's stored K/V and Kc/Vc (nsa::CacheStorage, decode.h). bf16
 * halves the cache's memory; q, gates and phi's weights are then rounded to bf16 as they
 * come in (the arrays passed in and out stay fp32), and outputs are within the spec's bf16
 * tolerance (1e-2 relative) of an fp32 cache's. */
typedef enum nsa_cache_storage { NSA_CACHE_FP32 = 0, NSA_CACHE_BF16 = 1 } nsa_cache_storage;

/* Sizes of one layer's cache. Zero every field first (memset, `= {0}`, or
 * nsa_decode_shape_init): a field added later is then 0, which keeps the old behaviour. */
typedef struct nsa_decode_shape {
  int64_t heads, kv_heads, d_k, d_v;
  int32_t shared_kv;    /* nonzero: one K/V for the three branches */
  int32_t threads;      /* worker threads; 0 = all cores */
  int64_t max_seqs;     /* sequence ids 0 .. max_seqs - 1 */
  int64_t max_tokens;   /* per sequence; 0 = unbounded */
  int64_t chunk_tokens; /* growth granularity; 0 = default */
  int32_t storage;      /* nsa_cache_storage: NSA_CACHE_FP32 (0) or NSA_CACHE_BF16 (1); after
                           the fields above, so positional initialisers written before it
                           still mean fp32 */
  int64_t max_pages;    /* memory budget in chunks of the whole cache; 0 = no limit. A call
                           that would need more fails (NSA_ERR_INVALID_ARGUMENT, the
                           message names the budget) and changes nothing */
} nsa_decode_shape;

typedef struct nsa_decode_tokens {
  const float* q;
  const float* k_cmp;
  const float* v_cmp;
  const float* k_slc;
  const float* v_slc;
  const float* k_win;
  const float* v_win;
  const float* gates;
} nsa_decode_tokens;

typedef struct nsa_tokens_read {
  int64_t cmp, slc, win, total;
} nsa_tokens_read;

typedef struct nsa_decode_cache nsa_decode_cache;

void nsa_config_init(nsa_config* config);
/* Zeroes every field, then max_seqs = 1 (nsa::DecodeShape's defaults: fp32 storage). */
void nsa_decode_shape_init(nsa_decode_shape* shape);
const char* nsa_status_name(nsa_status status);
const char* nsa_last_error(void);

nsa_status nsa_decode_create(const nsa_config* config, const nsa_decode_shape* shape,
                             const nsa_phi_weights* phi_k, const nsa_phi_weights* phi_v,
                             nsa_decode_cache** cache);
void nsa_decode_free(nsa_decode_cache* cache); /* NULL is a no-op */

/* Appends T >= 0 prompt tokens to sequence `seq`; out [T, H, d_v] receives their outputs. */
nsa_status nsa_decode_prefill(nsa_decode_cache* cache, int64_t seq, int64_t tokens,
                              const nsa_decode_tokens* x, float* out);
/* Stores the K/V of T tokens (q and gates unused, may be NULL) without computing outputs. */
nsa_status nsa_decode_append(nsa_decode_cache* cache, int64_t seq, int64_t tokens,
                             const nsa_decode_tokens* x);
/* One token for each of the `count` distinct sequences seqs[0..count); out [count, H, d_v]. */
nsa_status nsa_decode_step(nsa_decode_cache* cache, int64_t count, const int64_t* seqs,
                           const nsa_decode_tokens* x, float* out);
/* `tokens` = k >= 1 tokens for each of the `count` distinct sequences (x holds [count, k]
 * rows, sequence-major); out [count, k, H, d_v]. Token j of a sequence sees the ones before
 * it and makes its own selection, exactly as k single steps would (speculative decoding's
 * draft tokens; nsa_decode_truncate drops the rejected ones). All-or-nothing. */
nsa_status nsa_decode_step_tokens(nsa_decode_cache* cache, int64_t count, const int64_t* seqs, int64_t tokens,
                                  const nsa_decode_tokens* x, float* out);
nsa_status nsa_decode_reset(nsa_decode_cache* cache, int64_t seq);
/* Makes the empty sequence `dst` a copy of `src` sharing its chunks (copied on their first
 * write): a common prefix stored once. */
nsa_status nsa_decode_fork(nsa_decode_cache* cache, int64_t src, int64_t dst);
/* Keeps the first `tokens` tokens of `seq` (0 <= tokens <= its position), dropping the rest:
 * the rollback of rejected speculative tokens. */
nsa_status nsa_decode_truncate(nsa_decode_cache* cache, int64_t seq, int64_t tokens);

nsa_status nsa_decode_position(const nsa_decode_cache* cache, int64_t seq, int64_t* position);
/* Of the last token appended to `seq`, for kv head `kv_head`. */
nsa_status nsa_decode_tokens_read(const nsa_decode_cache* cache, int64_t seq, int64_t kv_head,
                                  nsa_tokens_read* read);
nsa_status nsa_decode_memory(const nsa_decode_cache* cache, uint64_t* bytes, double* bytes_per_token);

/* Atomic: the file at `path` is replaced only once the new one is complete. */
nsa_status nsa_decode_save(const nsa_decode_cache* cache, const char* path);
/* On failure the cache keeps its contents. */
nsa_status nsa_decode_load(nsa_decode_cache* cache, const char* path);
/* One sequence as a file (atomic like nsa_decode_save; nsa_decode_load reads it as sequence
 * 0), and back into sequence `seq` (the others untouched; on failure `seq` is kept). */
nsa_status nsa_decode_save_sequence(const nsa_decode_cache* cache, int64_t seq, const char* path);
nsa_status nsa_decode_load_sequence(nsa_decode_cache* cache, int64_t seq, const char* path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NSA_NSA_C_H_ */
