/* The decode cache through the C API (include/nsa/nsa_c.h), from C11.
 *
 *   test_c_api <scratch directory>
 *
 * Checks: prefill equals the same tokens fed step by step; batched steps; tokens read;
 * memory; save, load into a new handle and continue bitwise identically; and the error
 * paths: NULL handle and pointers, bad sizes and config, unknown or full sequence, NaN,
 * missing, corrupted and truncated files (the cache stays intact), unwritable target.
 * bf16 storage: outputs within the spec's bf16 tolerance of an fp32 cache's on the same
 * tokens, half the bytes per token, save/load, an fp32 cache refusing its file, and an
 * unknown storage value refused.
 * Exit status 0 when every check passes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nsa/nsa_c.h"

static int failures = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      ++failures;                                                                \
    }                                                                            \
  } while (0)

/* status == want, and the last error contains `text` (or is empty for NSA_OK). */
#define CHECK_STATUS(call, want, text)                                                         \
  do {                                                                                         \
    nsa_status got_ = (call);                                                                  \
    const char* msg_ = nsa_last_error();                                                       \
    if (got_ != (want) || ((want) == NSA_OK ? msg_[0] != '\0' : strstr(msg_, (text)) == NULL)) { \
      fprintf(stderr, "%s:%d: %s returned %s (\"%s\"), expected %s with \"%s\"\n", __FILE__,   \
              __LINE__, #call, nsa_status_name(got_), msg_, nsa_status_name(want), (text));    \
      ++failures;                                                                              \
    }                                                                                          \
  } while (0)

enum { H = 4, HKV = 2, DK = 16, DV = 8, L = 8, PROMPT = 20, STEPS = 60, MAXTOK = 200 };

static uint64_t rng_state = 88172645463325252ull;
static float uniform(void) { /* xorshift64, in (-1, 1) */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float* random_array(size_t n, float scale) {
  float* a = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) a[i] = scale * uniform();
  return a;
}

/* Tokens of `n` rows (each row: one token of one sequence). */
typedef struct {
  float *q, *k[3], *v[3], *gates;
} Tokens;

static Tokens make_tokens(size_t n) {
  Tokens t;
  t.q = random_array(n * H * DK, 1.0f);
  for (int b = 0; b < 3; ++b) {
    t.k[b] = random_array(n * HKV * DK, 1.0f);
    t.v[b] = random_array(n * HKV * DV, 1.0f);
  }
  t.gates = random_array(n * H * 3, 0.4f);
  for (size_t i = 0; i < n * H * 3; ++i) t.gates[i] += 0.5f;
  return t;
}
static void free_tokens(Tokens* t) {
  free(t->q);
  for (int b = 0; b < 3; ++b) free(t->k[b]), free(t->v[b]);
  free(t->gates);
}
/* The C view of rows [row, row + n) of t. */
static nsa_decode_tokens view(const Tokens* t, size_t row) {
  nsa_decode_tokens x;
  x.q = t->q + row * H * DK;
  x.k_cmp = t->k[0] + row * HKV * DK;
  x.v_cmp = t->v[0] + row * HKV * DV;
  x.k_slc = t->k[1] + row * HKV * DK;
  x.v_slc = t->v[1] + row * HKV * DV;
  x.k_win = t->k[2] + row * HKV * DK;
  x.v_win = t->v[2] + row * HKV * DV;
  x.gates = t->gates + row * H * 3;
  return x;
}

static double rel_diff(const float* a, const float* b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return sqrt(num / den);
}

static long file_size(const char* path) {
  FILE* f = fopen(path, "rb");
  long n;
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fclose(f);
  return n;
}
/* Copies src to dst, keeping `keep` bytes (-1: all) and xoring byte `flip` (-1: none). */
static void copy_file(const char* src, const char* dst, long keep, long flip) {
  long n = file_size(src), i;
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  char* buf = malloc((size_t)n);
  if (!in || !out || fread(buf, 1, (size_t)n, in) != (size_t)n) {
    fprintf(stderr, "cannot copy %s\n", src);
    exit(2);
  }
  if (flip >= 0) buf[flip] ^= 0x10;
  if (keep < 0) keep = n;
  for (i = 0; i < keep; ++i) fputc(buf[i], out);
  fclose(in);
  fclose(out);
  free(buf);
}

/* A bf16 cache against an fp32 one of the same shape (shape->storage is fp32 on entry):
 * PROMPT prompt tokens into sequence 0, then STEPS batched steps of sequences 0 and 1. */
static void check_bf16_storage(const nsa_config* config, const nsa_decode_shape* shape,
                               const nsa_phi_weights* phi_k, const nsa_phi_weights* phi_v,
                               const char* path) {
  nsa_decode_shape s16 = *shape, bad = *shape;
  nsa_decode_cache *c32 = NULL, *c16 = NULL, *restored = NULL;
  Tokens prompt = make_tokens(PROMPT), steps = make_tokens(2 * STEPS);
  const size_t prompt_n = (size_t)PROMPT * H * DV, steps_n = (size_t)2 * STEPS * H * DV;
  float *o32 = malloc(sizeof(float) * (prompt_n + steps_n)), *o16 = malloc(sizeof(float) * (prompt_n + steps_n));
  float *next_a = malloc(sizeof(float) * 2 * H * DV), *next_b = malloc(sizeof(float) * 2 * H * DV);
  int64_t ids[2] = {0, 1};
  uint64_t bytes32 = 0, bytes16 = 0;
  double per32 = 0.0, per16 = 0.0, err;
  nsa_decode_tokens x;
  int i;

  /* ---- unknown storage values are refused, naming the field and the choices ---- */
  bad.storage = 7;
  CHECK_STATUS(nsa_decode_create(config, &bad, phi_k, phi_v, &c16), NSA_ERR_INVALID_ARGUMENT,
               "shape.storage must be NSA_CACHE_FP32 (0) or NSA_CACHE_BF16 (1), got 7");
  bad.storage = -1;
  CHECK_STATUS(nsa_decode_create(config, &bad, phi_k, phi_v, &c16), NSA_ERR_INVALID_ARGUMENT, "got -1");
  CHECK(c16 == NULL);

  s16.storage = NSA_CACHE_BF16;
  CHECK_STATUS(nsa_decode_create(config, shape, phi_k, phi_v, &c32), NSA_OK, "");
  CHECK_STATUS(nsa_decode_create(config, &s16, phi_k, phi_v, &c16), NSA_OK, "");
  if (!c32 || !c16) return;

  /* ---- the same tokens through both: outputs within 1e-2 relative ---- */
  x = view(&prompt, 0);
  CHECK_STATUS(nsa_decode_prefill(c32, 0, PROMPT, &x, o32), NSA_OK, "");
  CHECK_STATUS(nsa_decode_prefill(c16, 0, PROMPT, &x, o16), NSA_OK, "");
  for (i = 0; i < STEPS; ++i) {
    const size_t at = prompt_n + (size_t)i * 2 * H * DV;
    x = view(&steps, (size_t)(2 * i));
    CHECK_STATUS(nsa_decode_step(c32, 2, ids, &x, o32 + at), NSA_OK, "");
    CHECK_STATUS(nsa_decode_step(c16, 2, ids, &x, o16 + at), NSA_OK, "");
  }
  err = rel_diff(o16, o32, prompt_n + steps_n);
  printf("c_api: bf16 cache vs fp32 cache, relative difference %.2e\n", err);
  CHECK(err < 1e-2);
  CHECK(err > 0.0); /* the values really were rounded */

  /* ---- half the bytes per stored token ---- */
  CHECK_STATUS(nsa_decode_memory(c32, &bytes32, &per32), NSA_OK, "");
  CHECK_STATUS(nsa_decode_memory(c16, &bytes16, &per16), NSA_OK, "");
  CHECK(per16 > 0.0 && per16 * 2.0 == per32);
  CHECK(bytes16 < bytes32);

  /* ---- save/load keeps bf16 bitwise; an fp32 cache refuses the file ---- */
  CHECK_STATUS(nsa_decode_save(c16, path), NSA_OK, "");
  CHECK_STATUS(nsa_decode_create(config, &s16, phi_k, phi_v, &restored), NSA_OK, "");
  CHECK_STATUS(nsa_decode_load(restored, path), NSA_OK, "");
  for (i = 0; i < 3; ++i) {
    x = view(&steps, (size_t)(2 * i));
    CHECK_STATUS(nsa_decode_step(c16, 2, ids, &x, next_a), NSA_OK, "");
    CHECK_STATUS(nsa_decode_step(restored, 2, ids, &x, next_b), NSA_OK, "");
    CHECK(memcmp(next_a, next_b, sizeof(float) * 2 * H * DV) == 0);
  }
  CHECK_STATUS(nsa_decode_load(c32, path), NSA_ERR_BAD_FILE, "bf16 storage");

  nsa_decode_free(c32);
  nsa_decode_free(c16);
  nsa_decode_free(restored);
  free(o32), free(o16), free(next_a), free(next_b);
  free_tokens(&prompt), free_tokens(&steps);
  remove(path);
}

/* nsa_decode_step_tokens: k tokens per sequence in one call (sequence s's rows are
 * s * k .. s * k + k - 1, the [count, k] layout) == k one-token steps, bitwise;
 * then nsa_decode_save_sequence / nsa_decode_load_sequence move one sequence between
 * caches (the other sequence untouched) and it continues bitwise as the original. */
static void check_k_tokens_and_sequence_files(const nsa_config* config, const nsa_decode_shape* shape,
                                              const nsa_phi_weights* phi_k, const nsa_phi_weights* phi_v,
                                              const char* dir) {
  enum { K = 3 };
  nsa_decode_cache *multi = NULL, *single = NULL, *target = NULL;
  Tokens prompt = make_tokens(PROMPT), draft = make_tokens(2 * K), next = make_tokens(2);
  float* out_prefill = malloc(sizeof(float) * PROMPT * H * DV);
  float* out_multi = malloc(sizeof(float) * 2 * K * H * DV);
  float* out_one = malloc(sizeof(float) * H * DV);
  float* out_a = malloc(sizeof(float) * H * DV);
  float* out_b = malloc(sizeof(float) * H * DV);
  int64_t ids[2] = {0, 1}, pos = -1, pos_other = -1;
  char seq_path[1024];
  nsa_decode_tokens x;
  int s, j;
  snprintf(seq_path, sizeof seq_path, "%s/c_api_sequence.nsa", dir);
  CHECK_STATUS(nsa_decode_create(config, shape, phi_k, phi_v, &multi), NSA_OK, "");
  CHECK_STATUS(nsa_decode_create(config, shape, phi_k, phi_v, &single), NSA_OK, "");
  CHECK_STATUS(nsa_decode_create(config, shape, phi_k, phi_v, &target), NSA_OK, "");
  if (!multi || !single || !target) return;
  x = view(&prompt, 0);
  for (s = 0; s < 2; ++s) {
    CHECK_STATUS(nsa_decode_prefill(multi, s, PROMPT - 10 * s, &x, out_prefill), NSA_OK, "");
    CHECK_STATUS(nsa_decode_prefill(single, s, PROMPT - 10 * s, &x, out_prefill), NSA_OK, "");
  }
  x = view(&draft, 0);
  CHECK_STATUS(nsa_decode_step_tokens(multi, 2, ids, K, &x, out_multi), NSA_OK, "");
  for (s = 0; s < 2; ++s)
    for (j = 0; j < K; ++j) {
      x = view(&draft, (size_t)(s * K + j));
      CHECK_STATUS(nsa_decode_step(single, 1, &ids[s], &x, out_one), NSA_OK, "");
      CHECK(memcmp(out_multi + (size_t)(s * K + j) * H * DV, out_one, sizeof(float) * H * DV) == 0);
    }
  CHECK_STATUS(nsa_decode_position(multi, 1, &pos), NSA_OK, "");
  CHECK(pos == PROMPT - 10 + K);
  x = view(&draft, 0);
  CHECK_STATUS(nsa_decode_step_tokens(multi, 2, ids, 0, &x, out_multi), NSA_ERR_INVALID_ARGUMENT, "tokens must be > 0");
  CHECK_STATUS(nsa_decode_step_tokens(multi, 2, NULL, K, &x, out_multi), NSA_ERR_INVALID_ARGUMENT, "seqs is NULL");
  CHECK_STATUS(nsa_decode_step_tokens(multi, 2, ids, K, &x, NULL), NSA_ERR_INVALID_ARGUMENT, "out is NULL");
  CHECK_STATUS(nsa_decode_position(multi, 0, &pos), NSA_OK, "");
  CHECK(pos == PROMPT + K);  /* refused calls appended nothing */

  /* Sequence 1 of `multi` into sequence 0 of `target`, which holds a sequence 1 of its own. */
  x = view(&prompt, 0);
  CHECK_STATUS(nsa_decode_prefill(target, 1, 20, &x, out_prefill), NSA_OK, "");
  CHECK_STATUS(nsa_decode_save_sequence(multi, 1, seq_path), NSA_OK, "");
  CHECK_STATUS(nsa_decode_load_sequence(target, 0, seq_path), NSA_OK, "");
  CHECK_STATUS(nsa_decode_position(target, 0, &pos), NSA_OK, "");
  CHECK_STATUS(nsa_decode_position(target, 1, &pos_other), NSA_OK, "");
  CHECK(pos == PROMPT - 10 + K && pos_other == 20);
  x = view(&next, 0);
  CHECK_STATUS(nsa_decode_step(multi, 1, &ids[1], &x, out_a), NSA_OK, "");
  CHECK_STATUS(nsa_decode_step(target, 1, &ids[0], &x, out_b), NSA_OK, "");
  CHECK(memcmp(out_a, out_b, sizeof(float) * H * DV) == 0);
  /* Errors: a missing file, an unknown sequence, NULLs; the target's sequence is kept. */
  CHECK_STATUS(nsa_decode_load_sequence(target, 0, "/nonexistent/seq.nsa"), NSA_ERR_IO, "cannot open");
  CHECK_STATUS(nsa_decode_position(target, 0, &pos), NSA_OK, "");
  CHECK(pos == PROMPT - 10 + K + 1);
  CHECK_STATUS(nsa_decode_save_sequence(multi, 9, seq_path), NSA_ERR_INVALID_ARGUMENT, "unknown sequence id 9");
  CHECK_STATUS(nsa_decode_save_sequence(NULL, 0, seq_path), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
  CHECK_STATUS(nsa_decode_load_sequence(target, 0, NULL), NSA_ERR_INVALID_ARGUMENT, "path is NULL");
  remove(seq_path);
  nsa_decode_free(multi), nsa_decode_free(single), nsa_decode_free(target);
  free(out_prefill), free(out_multi), free(out_one), free(out_a), free(out_b);
  free_tokens(&prompt), free_tokens(&draft), free_tokens(&next);
}

int main(int argc, char** argv) {
  char path[1024], bad[1024], nodir[1024];
  const char* dir = argc > 1 ? argv[1] : ".";
  nsa_config config;
  nsa_decode_shape shape;
  nsa_phi_weights phi_k, phi_v;
  nsa_decode_cache *cache = NULL, *restored = NULL, *other = NULL;
  float *pk[5], *pv[5];
  int i;
  snprintf(path, sizeof path, "%s/c_api_cache.nsa", dir);
  snprintf(bad, sizeof bad, "%s/c_api_bad.nsa", dir);
  snprintf(nodir, sizeof nodir, "%s/no_such_dir/c.nsa", dir);

  nsa_config_init(&config);
  CHECK(config.block_len == 32 && config.stride == 16 && config.sel_block == 64 && config.window == 512);
  config.block_len = L;
  config.stride = 4;
  config.sel_block = 16;
  config.top_n = 4;
  config.window = 32;
  memset(&shape, 0, sizeof shape); /* as callers written before nsa_decode_shape_init do */
  shape.heads = H;
  shape.kv_heads = HKV;
  shape.d_k = DK;
  shape.d_v = DV;
  shape.threads = 2;
  shape.max_seqs = 2;
  shape.max_tokens = MAXTOK;
  /* mlp phi weights: pe, w1, b1, w2, b2 with hidden = dim. */
  pk[0] = random_array(L * DK, 0.5f), pk[1] = random_array(DK * L * DK, 0.1f), pk[2] = random_array(DK, 0.1f);
  pk[3] = random_array(DK * DK, 0.25f), pk[4] = random_array(DK, 0.1f);
  pv[0] = random_array(L * DV, 0.5f), pv[1] = random_array(DV * L * DV, 0.1f), pv[2] = random_array(DV, 0.1f);
  pv[3] = random_array(DV * DV, 0.3f), pv[4] = random_array(DV, 0.1f);
  phi_k.pe = pk[0], phi_k.w1 = pk[1], phi_k.b1 = pk[2], phi_k.w2 = pk[3], phi_k.b2 = pk[4], phi_k.w = NULL;
  phi_v.pe = pv[0], phi_v.w1 = pv[1], phi_v.b1 = pv[2], phi_v.w2 = pv[3], phi_v.b2 = pv[4], phi_v.w = NULL;

  /* ---- creation errors ---- */
  CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, NULL), NSA_ERR_INVALID_ARGUMENT, "is NULL");
  CHECK_STATUS(nsa_decode_create(NULL, &shape, &phi_k, &phi_v, &cache), NSA_ERR_INVALID_ARGUMENT, "config is NULL");
  CHECK(cache == NULL);
  shape.heads = 3;
  CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, &cache), NSA_ERR_INVALID_ARGUMENT, "multiple");
  shape.heads = H;
  config.stride = 3;
  CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, &cache), NSA_ERR_INVALID_ARGUMENT, "must divide");
  config.stride = 4;
  CHECK_STATUS(nsa_decode_create(&config, &shape, NULL, &phi_v, &cache), NSA_ERR_INVALID_ARGUMENT, "phi_k.pe is null");
  CHECK(cache == NULL);

  {  /* nsa_decode_shape_init: nsa::DecodeShape's defaults */
    nsa_decode_shape d;
    memset(&d, 0xff, sizeof d);
    nsa_decode_shape_init(&d);
    CHECK(d.heads == 0 && d.threads == 0 && d.max_seqs == 1 && d.max_tokens == 0 && d.chunk_tokens == 0);
    CHECK(d.storage == NSA_CACHE_FP32 && d.max_pages == 0);
  }

  CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, &cache), NSA_OK, "");
  CHECK(cache != NULL);
  if (!cache) return 1;

  {
    Tokens prompt = make_tokens(PROMPT), steps = make_tokens(2 * STEPS), again = make_tokens(2 * 10);
    float* out_prefill = malloc(sizeof(float) * PROMPT * H * DV);
    float* out_steps = malloc(sizeof(float) * PROMPT * H * DV);
    float* out_a = malloc(sizeof(float) * 2 * H * DV);
    float* out_b = malloc(sizeof(float) * 2 * H * DV);
    int64_t ids[2] = {0, 1}, pos = -1;
    nsa_decode_tokens x;
    nsa_tokens_read read;
    uint64_t bytes = 0;
    double per_token = 0.0;

    /* ---- prefill of sequence 0 == the same tokens stepped into sequence 1 ---- */
    x = view(&prompt, 0);
    CHECK_STATUS(nsa_decode_prefill(cache, 0, PROMPT, &x, out_prefill), NSA_OK, "");
    for (i = 0; i < PROMPT; ++i) {
      x = view(&prompt, (size_t)i);
      CHECK_STATUS(nsa_decode_step(cache, 1, &ids[1], &x, out_steps + (size_t)i * H * DV), NSA_OK, "");
    }
    CHECK(rel_diff(out_steps, out_prefill, (size_t)PROMPT * H * DV) < 1e-5);
    CHECK_STATUS(nsa_decode_position(cache, 0, &pos), NSA_OK, "");
    CHECK(pos == PROMPT);

    /* ---- batched steps; tokens read ---- */
    for (i = 0; i < STEPS; ++i) {
      int64_t t = PROMPT + i, visible = t + 1 >= L ? (t + 1 - L) / 4 + 1 : 0;
      x = view(&steps, (size_t)(2 * i));
      CHECK_STATUS(nsa_decode_step(cache, 2, ids, &x, out_a), NSA_OK, "");
      CHECK_STATUS(nsa_decode_tokens_read(cache, 1, 1, &read), NSA_OK, "");
      CHECK(read.total == read.cmp + read.slc + read.win);
      CHECK(read.cmp == visible);
      CHECK(read.win == (t + 1 < 32 ? t + 1 : 32));
      CHECK(read.slc <= 4 * 16 && read.slc > 0);
    }
    CHECK(isfinite(out_a[0]) && isfinite(out_a[2 * H * DV - 1]));
    CHECK_STATUS(nsa_decode_memory(cache, &bytes, &per_token), NSA_OK, "");
    CHECK(bytes > 0 && per_token > 0.0);
    printf("c_api: %llu bytes, %.1f bytes/token\n", (unsigned long long)bytes, per_token);

    /* ---- save, load into a new handle, continue bitwise identically ---- */
    CHECK_STATUS(nsa_decode_save(cache, path), NSA_OK, "");
    CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, &restored), NSA_OK, "");
    CHECK_STATUS(nsa_decode_load(restored, path), NSA_OK, "");
    CHECK_STATUS(nsa_decode_position(restored, 1, &pos), NSA_OK, "");
    CHECK(pos == PROMPT + STEPS);
    for (i = 0; i < 10; ++i) {
      x = view(&again, (size_t)(2 * i));
      CHECK_STATUS(nsa_decode_step(cache, 2, ids, &x, out_a), NSA_OK, "");
      CHECK_STATUS(nsa_decode_step(restored, 2, ids, &x, out_b), NSA_OK, "");
      CHECK(memcmp(out_a, out_b, sizeof(float) * 2 * H * DV) == 0);
    }

    /* ---- fork and truncate: a fork continues exactly as its source; a truncated sequence
       continues as it did from that position ---- */
    {
      int64_t zero = 0, one = 1, p1 = 0;
      float* out_c = malloc(sizeof(float) * 2 * H * DV);
      CHECK_STATUS(nsa_decode_fork(cache, 0, 1), NSA_ERR_INVALID_ARGUMENT, "reset it first");
      CHECK_STATUS(nsa_decode_reset(cache, 1), NSA_OK, "");
      CHECK_STATUS(nsa_decode_fork(cache, 0, 1), NSA_OK, "");
      CHECK_STATUS(nsa_decode_position(cache, 1, &p1), NSA_OK, "");
      CHECK_STATUS(nsa_decode_position(cache, 0, &pos), NSA_OK, "");
      CHECK(p1 == pos);
      x = view(&steps, 0);
      CHECK_STATUS(nsa_decode_step(cache, 1, &zero, &x, out_a), NSA_OK, "");
      CHECK_STATUS(nsa_decode_step(cache, 1, &one, &x, out_b), NSA_OK, "");
      CHECK(memcmp(out_a, out_b, sizeof(float) * H * DV) == 0);
      CHECK_STATUS(nsa_decode_truncate(cache, 1, p1), NSA_OK, "");
      CHECK_STATUS(nsa_decode_step(cache, 1, &one, &x, out_c), NSA_OK, "");
      CHECK(memcmp(out_b, out_c, sizeof(float) * H * DV) == 0);
      CHECK_STATUS(nsa_decode_truncate(cache, 1, p1 + 5), NSA_ERR_INVALID_ARGUMENT, "cannot keep");
      CHECK_STATUS(nsa_decode_fork(NULL, 0, 1), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
      free(out_c);
    }
    {  /* a memory budget of one chunk (the default chunk holds 1024 tokens): refused past it */
      nsa_decode_shape tight = shape;
      nsa_decode_cache* small = NULL;
      int64_t zero = 0;
      tight.max_pages = 1;
      tight.max_tokens = 0;
      tight.max_seqs = 2;
      CHECK_STATUS(nsa_decode_create(&config, &tight, &phi_k, &phi_v, &small), NSA_OK, "");
      x = view(&prompt, 0);
      CHECK_STATUS(nsa_decode_prefill(small, 0, PROMPT, &x, out_prefill), NSA_OK, "");
      x = view(&steps, 0);
      CHECK_STATUS(nsa_decode_step(small, 2, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "memory budget");
      CHECK_STATUS(nsa_decode_position(small, 1, &pos), NSA_OK, "");
      CHECK(pos == 0);
      CHECK_STATUS(nsa_decode_step(small, 1, &zero, &x, out_a), NSA_OK, "");
      nsa_decode_free(small);
    }

    /* ---- error paths of the calls ---- */
    x = view(&steps, 0);
    CHECK_STATUS(nsa_decode_step(NULL, 2, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
    CHECK_STATUS(nsa_decode_prefill(NULL, 0, 1, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
    CHECK_STATUS(nsa_decode_save(NULL, path), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
    CHECK_STATUS(nsa_decode_load(NULL, path), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
    CHECK_STATUS(nsa_decode_position(NULL, 0, &pos), NSA_ERR_INVALID_ARGUMENT, "cache is NULL");
    CHECK_STATUS(nsa_decode_step(cache, 0, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "count must be > 0");
    CHECK_STATUS(nsa_decode_step(cache, -3, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "count must be > 0");
    CHECK_STATUS(nsa_decode_prefill(cache, 0, -1, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "tokens must be >= 0");
    CHECK_STATUS(nsa_decode_step(cache, 2, NULL, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "seqs is NULL");
    CHECK_STATUS(nsa_decode_step(cache, 2, ids, NULL, out_a), NSA_ERR_INVALID_ARGUMENT, "tokens is NULL");
    CHECK_STATUS(nsa_decode_step(cache, 2, ids, &x, NULL), NSA_ERR_INVALID_ARGUMENT, "out is NULL");
    {
      int64_t three[3] = {0, 1, 9};  /* the cache holds sequences 0 and 1 only */
      CHECK_STATUS(nsa_decode_step(cache, 3, three, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "unknown sequence id 9");
    }
    {
      int64_t unknown[2] = {0, 7}, twice[2] = {1, 1};
      CHECK_STATUS(nsa_decode_step(cache, 2, unknown, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "unknown sequence id 7");
      CHECK_STATUS(nsa_decode_step(cache, 2, twice, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "listed twice");
      CHECK_STATUS(nsa_decode_position(cache, 7, &pos), NSA_ERR_INVALID_ARGUMENT, "unknown sequence id 7");
      CHECK_STATUS(nsa_decode_tokens_read(cache, 0, 5, &read), NSA_ERR_INVALID_ARGUMENT, "kv head 5");
    }
    x.k_win = NULL;
    CHECK_STATUS(nsa_decode_step(cache, 2, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "tokens.k_win is NULL");
    x = view(&steps, 0);
    steps.q[3] = NAN;
    CHECK_STATUS(nsa_decode_step(cache, 2, ids, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "q: non-finite");
    steps.q[3] = 0.5f;
    {  /* a full sequence: fill sequence 0 up to max_tokens */
      int64_t zero = 0, p0 = 0;
      nsa_decode_position(cache, 0, &p0);
      for (; p0 < MAXTOK; ++p0) CHECK_STATUS(nsa_decode_step(cache, 1, &zero, &x, out_a), NSA_OK, "");
      CHECK_STATUS(nsa_decode_step(cache, 1, &zero, &x, out_a), NSA_ERR_INVALID_ARGUMENT, "is full");
      CHECK_STATUS(nsa_decode_reset(cache, 0), NSA_OK, "");
      CHECK_STATUS(nsa_decode_position(cache, 0, &pos), NSA_OK, "");
      CHECK(pos == 0);
    }

    /* ---- file errors: the cache keeps its contents ---- */
    CHECK_STATUS(nsa_decode_position(restored, 1, &pos), NSA_OK, "");
    CHECK(pos == PROMPT + STEPS + 10);
    CHECK_STATUS(nsa_decode_load(restored, "/nonexistent/dir/cache.nsa"), NSA_ERR_IO, "cannot open");
    copy_file(path, bad, -1, file_size(path) / 2); /* a flipped payload byte */
    CHECK_STATUS(nsa_decode_load(restored, bad), NSA_ERR_BAD_FILE, "checksum");
    copy_file(path, bad, -1, 50); /* a flipped header byte */
    CHECK_STATUS(nsa_decode_load(restored, bad), NSA_ERR_BAD_FILE, "corrupted");
    copy_file(path, bad, file_size(path) - 7, -1);
    CHECK_STATUS(nsa_decode_load(restored, bad), NSA_ERR_BAD_FILE, "truncated");
    copy_file(path, bad, 5, -1);
    CHECK_STATUS(nsa_decode_load(restored, bad), NSA_ERR_BAD_FILE, "truncated");
    CHECK_STATUS(nsa_decode_position(restored, 1, &pos), NSA_OK, "");
    CHECK(pos == PROMPT + STEPS + 10);
    CHECK_STATUS(nsa_decode_save(restored, nodir), NSA_ERR_IO, "cannot create a temporary file");
    /* A mismatched file: another window. */
    config.window = 40;
    CHECK_STATUS(nsa_decode_create(&config, &shape, &phi_k, &phi_v, &other), NSA_OK, "");
    CHECK_STATUS(nsa_decode_load(other, path), NSA_ERR_BAD_FILE, "another configuration");
    /* The good file still loads, and the error message is cleared by a success. */
    CHECK_STATUS(nsa_decode_load(restored, path), NSA_OK, "");
    CHECK(nsa_last_error()[0] == '\0');
    CHECK_STATUS(nsa_decode_position(restored, 1, &pos), NSA_OK, "");
    CHECK(pos == PROMPT + STEPS);

    free(out_prefill), free(out_steps), free(out_a), free(out_b);
    free_tokens(&prompt), free_tokens(&steps), free_tokens(&again);
  }
  nsa_decode_free(cache);
  nsa_decode_free(restored);
  nsa_decode_free(other);
  nsa_decode_free(NULL);

  config.window = 32;
  check_bf16_storage(&config, &shape, &phi_k, &phi_v, path);
  check_k_tokens_and_sequence_files(&config, &shape, &phi_k, &phi_v, dir);
  remove(path);
  remove(bad);
  for (i = 0; i < 5; ++i) free(pk[i]), free(pv[i]);
  if (failures) {
    fprintf(stderr, "c_api: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api: all checks passed\n");
  return 0;
}
