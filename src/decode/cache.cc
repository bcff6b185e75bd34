// DecodeCache: construction, validation, prefill / append / step, accessors.
#include <algorithm>
#include <limits>
#include <cstring>
#include <string>

#include "common/problem.h"
#include "decode/cache_state.h"
#include "decode/decode_token.h"
#include "nsa/error.h"
#include "nsa/thread_pool.h"

namespace nsa {

namespace {

std::string str(index_t x) { return std::to_string(x); }

// Copies the weights phi needs (validated: present and finite) into buf, returns views.
// round_bf16: the copies are rounded to bf16 values (a bf16 cache).
PhiWeights<float> copy_phi(const Config& config, const PhiWeights<float>& w, index_t dim,
                           const char* name, bool round_bf16, std::vector<float>* buf) {
  detail::check_phi(config, w, dim, name, /*check_values=*/true);
  const index_t l = config.block_len(), hidden = config.phi_hidden_for(dim);
  PhiWeights<float> out;
  for (PhiField f : kPhiFields) {
    if (!phi_field_used(config.phi(), f)) continue;
    std::vector<float>& copy = buf[static_cast<int>(f)];
    const float* p = phi_field(w, f);
    copy.assign(p, p + phi_field_size(f, l, dim, hidden));
    if (round_bf16)
      for (float& x : copy) x = static_cast<float>(bf16(x));
    phi_field(out, f) = copy.data();
  }
  return out;
}

bool same_view(const TensorView<const float>& a, const TensorView<const float>& b) {
  return a.data == b.data && a.shape == b.shape && a.stride == b.stride;
}

// Checks the views of `x` for B sequences of T tokens. queries: q and gates are used.
void check_tokens(const DecodeCache::State& st, const DecodeTokens& x, index_t B, index_t T,
                  bool queries) {
  using detail::check_shape;
  using detail::check_view;
  const DecodeShape& s = st.shape;
  struct Item {
    const TensorView<const float>* v;
    const char* name;
    index_t heads, dim;
  };
  std::vector<Item> items = {{&x.k_cmp, "k_cmp", s.kv_heads, s.d_k}, {&x.v_cmp, "v_cmp", s.kv_heads, s.d_v}};
  if (queries) {
    items.push_back({&x.q, "q", s.heads, s.d_k});
    items.push_back({&x.gates, "gates", s.heads, 3});
  }
  const Item other[] = {{&x.k_slc, "k_slc", s.kv_heads, s.d_k}, {&x.v_slc, "v_slc", s.kv_heads, s.d_v},
                        {&x.k_win, "k_win", s.kv_heads, s.d_k}, {&x.v_win, "v_win", s.kv_heads, s.d_v}};
  for (const Item& it : other) {
    if (s.shared_kv) {
      const auto& base = it.name[0] == 'k' ? x.k_cmp : x.v_cmp;
      if (!it.v->empty() && !same_view(*it.v, base))
        throw Error(std::string("this cache shares K/V between branches: ") + it.name +
                    " must be left empty or be the same view as " + (it.name[0] == 'k' ? "k_cmp" : "v_cmp"));
    } else {
      if (it.v->empty())
        throw Error(std::string(it.name) + " is empty but this cache keeps independent K/V per branch");
      items.push_back(it);
    }
  }
  for (const Item& it : items) {
    check_view(*it.v, it.name);
    check_shape(*it.v, it.name, B, T, it.heads, it.dim);
  }
  for (const Item& it : items) detail::check_finite(*it.v, it.name);
}

void check_out(const DecodeCache::State& st, const TensorView<float>& out, index_t B, index_t T) {
  detail::check_view(out, "out");
  detail::check_shape(out, "out", B, T, st.shape.heads, st.shape.d_v);
}

void check_room(const DecodeCache::State& st, const DecodeSequence& q, index_t seq, index_t more) {
  if (st.shape.max_tokens > 0 && q.pos + more > st.shape.max_tokens)
    throw Error("sequence " + str(seq) + " is full: it holds " + str(q.pos) + " tokens, " +
                str(more) + " more would exceed max_tokens = " + str(st.shape.max_tokens));
}

// Throws, before anything changes, when the pool cannot supply `pages` more pages.
void check_budget(const DecodeCache::State& st, index_t pages, const char* what) {
  if (pages <= st.pool.available()) return;
  const double mb = static_cast<double>(st.pool.page_bytes()) * 1e-6;
  throw Error(std::string(what) + ": the cache's memory budget is exceeded: this call needs " + str(pages) +
              " more pages of " + std::to_string(mb) + " MB, " + str(st.pool.available()) + " of max_pages = " +
              str(st.pool.max_pages()) + " are free (reset, truncate or release a sequence, or raise max_pages)");
}

// The inputs and output of token index `tok` of batch item b of the views, for kv head h.
void point_work(const DecodeCache::State& st, decode::TokenWork& w, const DecodeTokens& x, index_t b, index_t tok,
                index_t h, TensorView<float> out) {
  const index_t G = st.group;
  const TensorView<const float>* ks[kNumBranches] = {&x.k_cmp, &x.k_slc, &x.k_win};
  const TensorView<const float>* vs[kNumBranches] = {&x.v_cmp, &x.v_slc, &x.v_win};
  w.h = h;
  w.in.q = x.q.ptr(b, tok, h * G);
  w.in.q_head_stride = x.q.stride[2];
  for (int i = 0; i < st.kv_streams; ++i) {
    w.in.k[i] = ks[i]->ptr(b, tok, h);
    w.in.v[i] = vs[i]->ptr(b, tok, h);
  }
  w.in.gates = x.gates.ptr(b, tok, h * G);
  w.in.gates_head_stride = x.gates.stride[2];
  w.out = out.ptr(b, tok, h * G);
  w.out_head_stride = out.stride[2];
}

// Key slices per branch of a step with `tasks` (sequence, kv head) pairs: with fewer pairs
// than workers (one long sequence, say) each branch's keys are split into `parts` slices,
// attended in parallel, then merged. A chunk of tokens uses the same number per token, so
// that its rows have the bits of single steps.
index_t key_parts(const ThreadPool& pool, index_t tasks) { return std::max<index_t>(1, pool.size() / tasks); }

// A token's stages back to back on one worker, its `parts` key slices one after another.
void run_token(const DecodeCache::State& st, decode::TokenWork& w, index_t parts, DecodeScratch& s) {
  decode::begin_token(st, w, parts, s);
  for (index_t i = 0; i < parts; ++i) decode::attend_part(st, w, kCmp, i, parts);
  decode::select_token(st, w, s);
  for (index_t i = 0; i < parts; ++i) {
    decode::attend_part(st, w, kSlc, i, parts);
    decode::attend_part(st, w, kWin, i, parts);
  }
  decode::finish_token(st, w);
}

// The sequence's selection and tokens read become those of w's token (its latest).
void keep_selection(const DecodeCache::State& st, const decode::TokenWork& w) {
  std::copy(w.sel.begin(), w.sel.end(), w.q->sel.begin() + w.h * st.config.top_n());
  w.q->read[w.h] = w.read;
}

// The sequences ids[0..count) advance by k tokens (their compressed blocks follow).
void advance(DecodeCache::State& st, const index_t* ids, index_t count, index_t k) {
  for (index_t b = 0; b < count; ++b) {
    DecodeSequence& q = st.seqs[ids[b]];
    q.pos += k;
    q.num_cmp = st.config.num_cmp_blocks(q.pos);
  }
}

// Runs the decode step of token index `tok` of the views for the sequences ids[0..count)
// (sequence b's inputs at batch item b). The caller has validated everything.
void run_step(DecodeCache::State& st, const index_t* ids, index_t count, const DecodeTokens& x,
              index_t tok, TensorView<float> out, ThreadPool& pool) {
  const index_t H_kv = st.shape.kv_heads;
  for (index_t b = 0; b < count; ++b) {
    DecodeSequence& q = st.seqs[ids[b]];
    st.prepare_write(q, q.pos + 1);  // the budget was checked for the whole call
  }
  if (st.scratch.size() < static_cast<size_t>(pool.size())) st.scratch.resize(pool.size());
  const index_t tasks = count * H_kv;
  st.work.resize(static_cast<size_t>(tasks));
  for (index_t task = 0; task < tasks; ++task) {
    const index_t b = task / H_kv, h = task % H_kv;
    decode::TokenWork& w = st.work[static_cast<size_t>(task)];
    w.q = &st.seqs[ids[b]];
    w.t = w.q->pos;
    w.store = true;
    point_work(st, w, x, b, tok, h, out);
  }
  auto work = [&](std::int64_t task) -> decode::TokenWork& { return st.work[static_cast<size_t>(task)]; };
  auto scratch = [&](int worker) -> DecodeScratch& { return st.scratch[static_cast<size_t>(worker)]; };
  const index_t parts = key_parts(pool, tasks);
  if (parts == 1) {
    pool.parallel_tasks(tasks, [&](std::int64_t task, int worker) { run_token(st, work(task), 1, scratch(worker)); });
  } else if (tasks == 1) {
    // One (sequence, kv head): its serial stages run on this thread, only the attention
    // parts go to the pool (two synchronisations per step instead of five).
    decode::TokenWork& w = work(0);
    decode::begin_token(st, w, parts, scratch(0));
    pool.parallel_tasks(parts, [&](std::int64_t i, int) { decode::attend_part(st, w, kCmp, i, parts); });
    decode::select_token(st, w, scratch(0));
    pool.parallel_tasks(parts * 2, [&](std::int64_t i, int) {
      decode::attend_part(st, w, i % 2 == 0 ? kSlc : kWin, i / 2, parts);
    });
    decode::finish_token(st, w);
  } else {
    pool.parallel_tasks(tasks, [&](std::int64_t task, int worker) {
      decode::begin_token(st, work(task), parts, scratch(worker));
    });
    pool.parallel_tasks(tasks * parts, [&](std::int64_t i, int) {
      decode::attend_part(st, work(i / parts), kCmp, i % parts, parts);
    });
    pool.parallel_tasks(tasks, [&](std::int64_t task, int worker) {
      decode::select_token(st, work(task), scratch(worker));
    });
    pool.parallel_tasks(tasks * parts * 2, [&](std::int64_t i, int) {
      const int branch = i % 2 == 0 ? kSlc : kWin;
      decode::attend_part(st, work(i / 2 / parts), branch, (i / 2) % parts, parts);
    });
    pool.parallel_tasks(tasks, [&](std::int64_t task, int) { decode::finish_token(st, work(task)); });
  }
  for (index_t task = 0; task < tasks; ++task) {
    keep_selection(st, work(task));
    st.total_read += work(task).read.total();
  }
  advance(st, ids, count, 1);
}

// Copies tokens [0, T) of batch item b of the raw views into sequence q at positions
// q.pos .. q.pos+T-1.
void store_raw(const DecodeCache::State& st, DecodeSequence& q, const DecodeTokens& x, index_t T, index_t b = 0) {
  const TensorView<const float>* ks[kNumBranches] = {&x.k_cmp, &x.k_slc, &x.k_win};
  const TensorView<const float>* vs[kNumBranches] = {&x.v_cmp, &x.v_slc, &x.v_win};
  const index_t d_k = st.shape.d_k, d_v = st.shape.d_v;
  for (int i = 0; i < st.kv_streams; ++i)
    for (index_t h = 0; h < st.shape.kv_heads; ++h)
      for (index_t s = 0; s < T; ++s) {
        const float* k = ks[i]->ptr(b, s, h);
        const float* v = vs[i]->ptr(b, s, h);
        st.put(st.key(q, i, h, q.pos + s), k, d_k);
        st.put(st.value(q, i, h, q.pos + s), v, d_v);
      }
}



// The NsaInputs of a prompt (B = 1) over the cache's phi weights.
template <class T>
NsaInputs<T> prompt_inputs(const DecodeCache::State& st, const TensorView<const T>* views,
                           const PhiWeights<T>& phi_k, const PhiWeights<T>& phi_v) {
  const bool sh = st.shape.shared_kv;
  NsaInputs<T> in;
  in.q = views[0];
  in.k_cmp = views[1];
  in.v_cmp = views[2];
  in.k_slc = sh ? views[1] : views[3];
  in.v_slc = sh ? views[2] : views[4];
  in.k_win = sh ? views[1] : views[5];
  in.v_win = sh ? views[2] : views[6];
  in.gates = views[7];
  in.phi_k = phi_k;
  in.phi_v = phi_v;
  return in;
}

// The prompt of an empty sequence, fp32 cache: nsa_forward on the caller's views.
void forward_fp32(const DecodeCache::State& st, const DecodeTokens& x, TensorView<float> out,
                  NsaSaved<float>& saved, ThreadPool& pool) {
  const TensorView<const float> views[8] = {x.q, x.k_cmp, x.v_cmp, x.k_slc, x.v_slc, x.k_win, x.v_win, x.gates};
  nsa_forward(st.config, prompt_inputs(st, views, st.phi_k, st.phi_v), out, &saved, pool);
}

// The prompt of an empty sequence, bf16 cache: nsa_forward on bf16 copies of the views
// (contiguous [1, T, heads, dim]) and of phi's weights. Kc/Vc in saved are bf16 values.
void forward_bf16(const DecodeCache::State& st, const DecodeTokens& x, TensorView<float> out,
                  NsaSaved<float>& saved, ThreadPool& pool) {
  const TensorView<const float>* src[8] = {&x.q, &x.k_cmp, &x.v_cmp, &x.k_slc, &x.v_slc, &x.k_win, &x.v_win, &x.gates};
  std::vector<bf16> copies[8];
  TensorView<const bf16> views[8];
  for (int i = 0; i < 8; ++i) {
    const TensorView<const float>& v = *src[i];
    if (v.empty()) continue;  // a shared cache's unused streams
    const index_t T = v.shape[1], heads = v.shape[2], dim = v.shape[3];
    copies[i].resize(static_cast<size_t>(T * heads * dim));
    for (index_t t = 0; t < T; ++t)
      for (index_t h = 0; h < heads; ++h)
        to_bf16(v.ptr(0, t, h), copies[i].data() + (t * heads + h) * dim, static_cast<size_t>(dim));
    views[i] = contiguous_view(static_cast<const bf16*>(copies[i].data()), 1, T, heads, dim);
  }
  std::vector<bf16> phi_bufs[2][kPhiFields.size()];
  PhiWeights<bf16> phi[2];
  const std::vector<float>* bufs[2] = {st.phi_k_buf, st.phi_v_buf};
  for (int kind = 0; kind < 2; ++kind)
    for (PhiField f : kPhiFields) {
      const auto i = static_cast<std::size_t>(f);
      const std::vector<float>& w = bufs[kind][i];
      if (w.empty()) continue;
      phi_bufs[kind][i].resize(w.size());
      to_bf16(w.data(), phi_bufs[kind][i].data(), w.size());  // exact: already bf16 values
      phi_field(phi[kind], f) = phi_bufs[kind][i].data();
    }
  nsa_forward(st.config, prompt_inputs(st, views, phi[0], phi[1]), out, &saved, pool);
}

// Compressed blocks [first, last) of every kv head of q from its stored rows.
void compress_blocks(DecodeCache::State& st, const DecodeSequence& q, index_t first, index_t last, ThreadPool& pool) {
  const index_t H_kv = st.shape.kv_heads;
  if (st.scratch.size() < static_cast<size_t>(pool.size())) st.scratch.resize(pool.size());
  pool.parallel_tasks((last - first) * H_kv, [&](std::int64_t task, int worker) {
    decode::compress_block(st, q, task % H_kv, first + task / H_kv, st.scratch[static_cast<size_t>(worker)]);
  });
}

// Appends k >= 2 tokens (token indices 0 .. k-1 of the views) to each of the sequences
// ids[0..count) as one chunk: every token's K/V is stored and the blocks they complete are
// compressed first, then the tokens' attention runs in parallel over (sequence, token, kv
// head). Each token reads only what it sees and splits its keys as a single step would,
// so the rows equal those of k single steps bitwise. The caller has validated everything.
void run_chunk(DecodeCache::State& st, const index_t* ids, index_t count, const DecodeTokens& x, index_t k,
               TensorView<float> out, ThreadPool& pool) {
  const index_t H_kv = st.shape.kv_heads;
  std::vector<index_t> first(static_cast<size_t>(count));
  for (index_t b = 0; b < count; ++b) {
    DecodeSequence& q = st.seqs[ids[b]];
    first[b] = q.pos;
    st.prepare_write(q, q.pos + k);  // the budget was checked for the whole call
    store_raw(st, q, x, k, b);
    compress_blocks(st, q, q.num_cmp, st.config.num_cmp_blocks(q.pos + k), pool);
  }
  if (st.scratch.size() < static_cast<size_t>(pool.size())) st.scratch.resize(pool.size());
  const index_t parts = key_parts(pool, count * H_kv);
  // One TokenWork per worker (a chunk may hold thousands of tokens), its read per worker.
  std::vector<decode::TokenWork> work(static_cast<size_t>(pool.size()));
  std::vector<std::int64_t> read(static_cast<size_t>(pool.size()), 0);
  pool.parallel_tasks(count * k * H_kv, [&](std::int64_t task, int worker) {
    const index_t b = task / (k * H_kv), tok = task / H_kv % k, h = task % H_kv;
    decode::TokenWork& w = work[static_cast<size_t>(worker)];
    DecodeSequence& q = st.seqs[ids[b]];
    w.q = &q;
    w.t = first[b] + tok;
    w.store = false;
    point_work(st, w, x, b, tok, h, out);
    run_token(st, w, parts, st.scratch[static_cast<size_t>(worker)]);
    read[static_cast<size_t>(worker)] += w.read.total();
    if (tok == k - 1) keep_selection(st, w);  // the sequence's last token
  });
  for (std::int64_t r : read) st.total_read += r;
  advance(st, ids, count, k);
}

}  // namespace

// ---- State --------------------------------------------------------------------------------

DecodeCache::State::State(const Config& c, const DecodeShape& s, const PhiWeights<float>& pk,
                          const PhiWeights<float>& pv)
    : config(c), shape(s), spread(c) {
  if (s.heads <= 0 || s.kv_heads <= 0 || s.d_k <= 0 || s.d_v <= 0)
    throw Error("DecodeShape: heads, kv_heads, d_k and d_v must be positive, got H=" + str(s.heads) +
                " H_kv=" + str(s.kv_heads) + " d_k=" + str(s.d_k) + " d_v=" + str(s.d_v));
  if (s.heads % s.kv_heads != 0)
    throw Error("DecodeShape: query heads H = " + str(s.heads) +
                " must be a multiple of key/value heads H_kv = " + str(s.kv_heads));
  if (s.max_seqs <= 0) throw Error("DecodeShape: max_seqs must be positive, got " + str(s.max_seqs));
  if (s.max_tokens < 0) throw Error("DecodeShape: max_tokens must be >= 0 (0 = unbounded), got " + str(s.max_tokens));
  if (s.max_pages < 0 || s.max_pages > std::numeric_limits<std::int32_t>::max())
    throw Error("DecodeShape: max_pages must be >= 0 (0 = no limit) and below 2^31, got " + str(s.max_pages));
  if (s.storage != CacheStorage::fp32 && s.storage != CacheStorage::bf16)
    throw Error("DecodeShape: storage must be CacheStorage::fp32 or CacheStorage::bf16, got " +
                str(static_cast<int>(s.storage)));
  const index_t lp = c.sel_block();
  if (s.chunk_tokens < 0 || s.chunk_tokens % lp != 0)
    throw Error("DecodeShape: chunk_tokens must be 0 or a positive multiple of sel_block = " + str(lp) +
                ", got " + str(s.chunk_tokens));
  shape.chunk_tokens = s.chunk_tokens > 0 ? s.chunk_tokens : lp * ((1024 + lp - 1) / lp);
  group = s.heads / s.kv_heads;
  chunk = shape.chunk_tokens;
  cmp_per_chunk = chunk / c.stride();
  kv_streams = s.shared_kv ? 1 : kNumBranches;
  elem_bytes = decode::element_bytes(s.storage);
  index_t off = 0;
  for (int b = 0; b < kNumBranches; ++b) {
    off_k[b] = b < kv_streams ? off : off_k[0];
    if (b < kv_streams) off += s.kv_heads * chunk * s.d_k;
  }
  for (int b = 0; b < kNumBranches; ++b) {
    off_v[b] = b < kv_streams ? off : off_v[0];
    if (b < kv_streams) off += s.kv_heads * chunk * s.d_v;
  }
  off_kc = off;
  off += s.kv_heads * cmp_per_chunk * s.d_k;
  off_vc = off;
  off += s.kv_heads * cmp_per_chunk * s.d_v;
  chunk_elems = off;
  pool = decode::PagePool(static_cast<std::size_t>(chunk_elems * elem_bytes), s.max_pages);
  scale = static_cast<float>(c.scale_for(s.d_k));

  phi_k = copy_phi(c, pk, s.d_k, "phi_k", is_bf16(), phi_k_buf);
  phi_v = copy_phi(c, pv, s.d_v, "phi_v", is_bf16(), phi_v_buf);
  std::uint64_t h = fnv1a64(nullptr, 0);
  for (const auto* bufs : {phi_k_buf, phi_v_buf})
    for (std::size_t i = 0; i < kPhiFields.size(); ++i) {
      const std::uint64_t n = bufs[i].size();
      h = fnv1a64(&n, sizeof n, h);
      h = fnv1a64(bufs[i].data(), n * sizeof(float), h);
    }
  phi_fingerprint = h;

  seqs.resize(static_cast<size_t>(s.max_seqs));
  for (auto& q : seqs) init_sequence(q);
}

std::unique_ptr<DecodeCache::State> DecodeCache::State::empty_copy() const {
  DecodeShape s = shape;
  return std::make_unique<State>(config, s, phi_k, phi_v);
}

// The first page that storing tokens from q.pos on writes: the page of token q.pos, or an
// earlier one holding the compressed block q.num_cmp (it completes in a later page).
static index_t first_written_page(const DecodeCache::State& st, const DecodeSequence& q) {
  return std::min(q.pos / st.chunk, q.num_cmp / st.cmp_per_chunk);
}

index_t DecodeCache::State::pages_needed(const DecodeSequence& q, index_t tokens,
                                         std::vector<std::pair<std::int32_t, std::int32_t>>* copies) const {
  const index_t have = static_cast<index_t>(q.pages.size()), need = chunks_for(tokens);
  index_t n = std::max<index_t>(0, need - have);
  for (index_t p = first_written_page(*this, q); p < have; ++p) {
    const std::int32_t id = q.pages[static_cast<size_t>(p)];
    std::int32_t* done = nullptr;  // copies of this page earlier in the call
    if (copies != nullptr) {
      for (auto& [page, count] : *copies)
        if (page == id) done = &count;
      if (done == nullptr) done = &copies->emplace_back(id, 0).second;
    }
    if (pool.refs(id) - (done ? *done : 0) > 1) {
      ++n;
      if (done) ++*done;
    }
  }
  return n;
}

void DecodeCache::State::prepare_write(DecodeSequence& q, index_t tokens) {
  const index_t have = static_cast<index_t>(q.pages.size());
  for (index_t p = first_written_page(*this, q); p < have; ++p) {
    std::int32_t& id = q.pages[static_cast<size_t>(p)];
    if (pool.refs(id) <= 1) continue;
    const std::int32_t copy = pool.take();
    std::memcpy(pool.data(copy), pool.data(id), pool.page_bytes());
    pool.release(id);
    id = copy;
  }
  const auto need = static_cast<size_t>(chunks_for(tokens));
  while (q.pages.size() < need) q.pages.push_back(pool.take());
}

void DecodeCache::State::release_pages(DecodeSequence& q, size_t keep) {
  while (q.pages.size() > keep) {
    pool.release(q.pages.back());
    q.pages.pop_back();
  }
}

void DecodeCache::State::init_sequence(DecodeSequence& q) {
  release_pages(q, 0);
  q.pos = q.num_cmp = 0;
  q.read.assign(static_cast<size_t>(shape.kv_heads), TokensRead{});
  q.sel.assign(static_cast<size_t>(shape.kv_heads * config.top_n()), -1);
}

DecodeSequence& DecodeCache::State::sequence(index_t seq, const char* what) {
  return const_cast<DecodeSequence&>(static_cast<const State*>(this)->sequence(seq, what));
}

const DecodeSequence& DecodeCache::State::sequence(index_t seq, const char* what) const {
  if (seq < 0 || seq >= static_cast<index_t>(seqs.size()))
    throw Error(std::string(what) + ": unknown sequence id " + str(seq) + " (this cache holds ids 0.." +
                str(static_cast<index_t>(seqs.size()) - 1) + ")");
  return seqs[static_cast<size_t>(seq)];
}

// ---- DecodeCache ------------------------------------------------------------------------------

DecodeCache::DecodeCache(const Config& config, const DecodeShape& shape,
                         const PhiWeights<float>& phi_k, const PhiWeights<float>& phi_v)
    : state_(std::make_unique<State>(config, shape, phi_k, phi_v)) {}
DecodeCache::~DecodeCache() = default;
DecodeCache::DecodeCache(DecodeCache&&) noexcept = default;
DecodeCache& DecodeCache::operator=(DecodeCache&&) noexcept = default;
void DecodeCache::swap(DecodeCache& other) noexcept { state_.swap(other.state_); }

const Config& DecodeCache::config() const { return state_->config; }
const DecodeShape& DecodeCache::shape() const { return state_->shape; }

void DecodeCache::prefill(index_t seq, const DecodeTokens& x, TensorView<float> out, ThreadPool& pool) {
  State& st = *state_;
  DecodeSequence& q = st.sequence(seq, "prefill");
  const index_t T = x.q.shape[1];
  if (T == 0) return;  // an empty prompt
  check_tokens(st, x, 1, T, true);
  check_out(st, out, 1, T);
  check_room(st, q, seq, T);
  check_budget(st, st.pages_needed(q, q.pos + T), "prefill");

  if (q.pos > 0) {  // continue a sequence: the decode path, all T tokens as one chunk
    if (T == 1)
      run_step(st, &seq, 1, x, 0, out, pool);
    else
      run_chunk(st, &seq, 1, x, T, out, pool);
    return;
  }
  NsaSaved<float> saved;
  if (st.is_bf16())
    forward_bf16(st, x, out, saved, pool);
  else
    forward_fp32(st, x, out, saved, pool);

  st.init_sequence(q);  // empty already (pos = 0); its pages, if any, go back first
  DecodeSequence fresh;
  st.init_sequence(fresh);
  st.prepare_write(fresh, T);
  store_raw(st, fresh, x, T);
  const index_t H_kv = st.shape.kv_heads, n = st.config.top_n(), N = st.config.num_cmp_blocks(T);
  // The stored Kc/Vc are the decode's phi of the stored rows, not the forward's (which sum
  // in another order): whichever path fills a cache (this prefill, steps, append), the
  // same tokens leave the same bits, so a conversation restored by append continues
  // exactly as the one that never left memory.
  compress_blocks(st, fresh, 0, N, pool);
  std::int64_t read = 0;
  for (index_t t = 0; t < T; ++t)
    for (index_t h = 0; h < H_kv; ++h) {
      const std::int32_t* sel = saved.sel_blocks.data() + (t * H_kv + h) * n;
      const TokensRead r = nsa::tokens_read(st.config, t, sel);
      read += r.total();
      if (t == T - 1) {
        fresh.read[h] = r;
        std::copy(sel, sel + n, fresh.sel.begin() + h * n);
      }
    }
  fresh.pos = T;
  fresh.num_cmp = N;
  q = std::move(fresh);
  st.total_read += read;
}

void DecodeCache::append(index_t seq, const DecodeTokens& x, ThreadPool& pool) {
  State& st = *state_;
  DecodeSequence& q = st.sequence(seq, "append");
  const index_t T = x.k_cmp.shape[1];
  if (T == 0) return;
  check_tokens(st, x, 1, T, false);
  check_room(st, q, seq, T);
  check_budget(st, st.pages_needed(q, q.pos + T), "append");
  st.prepare_write(q, q.pos + T);
  store_raw(st, q, x, T);
  const index_t last = st.config.num_cmp_blocks(q.pos + T);
  compress_blocks(st, q, q.num_cmp, last, pool);
  q.pos += T;
  q.num_cmp = last;
  std::fill(q.read.begin(), q.read.end(), TokensRead{});
  std::fill(q.sel.begin(), q.sel.end(), -1);
}

void DecodeCache::step(const index_t* seqs, index_t count, const DecodeTokens& x, TensorView<float> out,
                       ThreadPool& pool) {
  State& st = *state_;
  if (count <= 0) throw Error("step: the number of sequences must be positive, got " + str(count));
  if (seqs == nullptr) throw Error("step: the sequence id array is null");
  // Tokens per sequence: the views' T (1 for a plain step; k for k draft tokens).
  const index_t k = x.q.data != nullptr ? x.q.shape[1] : 1;
  if (k < 1) throw Error("step: the views hold T = " + str(k) + " tokens per sequence, need at least 1");
  std::vector<std::uint8_t> seen(st.seqs.size(), 0);
  index_t pages = 0;
  std::vector<std::pair<std::int32_t, std::int32_t>> copies;  // shared pages copied by this step
  for (index_t b = 0; b < count; ++b) {
    const DecodeSequence& q = st.sequence(seqs[b], "step");
    if (seen[seqs[b]]++) throw Error("step: sequence id " + str(seqs[b]) + " is listed twice");
    check_room(st, q, seqs[b], k);
    pages += st.pages_needed(q, q.pos + k, &copies);
  }
  check_budget(st, pages, "step");
  check_tokens(st, x, count, k, true);
  check_out(st, out, count, k);
  if (k == 1)
    run_step(st, seqs, count, x, 0, out, pool);
  else
    run_chunk(st, seqs, count, x, k, out, pool);
}

void DecodeCache::reset(index_t seq) { state_->init_sequence(state_->sequence(seq, "reset")); }

void DecodeCache::fork(index_t src, index_t dst) {
  State& st = *state_;
  const DecodeSequence& from = st.sequence(src, "fork");
  DecodeSequence& to = st.sequence(dst, "fork");
  if (src == dst) throw Error("fork: source and destination are the same sequence " + str(src));
  if (to.pos > 0)
    throw Error("fork: destination sequence " + str(dst) + " holds " + str(to.pos) + " tokens; reset it first");
  st.init_sequence(to);
  to.pages = from.pages;
  for (std::int32_t id : to.pages) st.pool.retain(id);
  to.pos = from.pos;
  to.num_cmp = from.num_cmp;
  to.read = from.read;
  to.sel = from.sel;
}

void DecodeCache::truncate(index_t seq, index_t tokens) {
  State& st = *state_;
  DecodeSequence& q = st.sequence(seq, "truncate");
  if (tokens < 0 || tokens > q.pos)
    throw Error("truncate: sequence " + str(seq) + " holds " + str(q.pos) + " tokens, cannot keep " + str(tokens));
  if (tokens == q.pos) return;
  st.release_pages(q, static_cast<size_t>(st.chunks_for(tokens)));
  q.pos = tokens;
  q.num_cmp = st.config.num_cmp_blocks(tokens);
  std::fill(q.read.begin(), q.read.end(), TokensRead{});
  std::fill(q.sel.begin(), q.sel.end(), -1);
}

index_t DecodeCache::position(index_t seq) const { return state_->sequence(seq, "position").pos; }

index_t DecodeCache::num_cmp_blocks(index_t seq) const {
  return state_->sequence(seq, "num_cmp_blocks").num_cmp;
}

TokensRead DecodeCache::tokens_read(index_t seq, index_t kv_head) const {
  const DecodeSequence& q = state_->sequence(seq, "tokens_read");
  if (kv_head < 0 || kv_head >= state_->shape.kv_heads)
    throw Error("tokens_read: kv head " + str(kv_head) + " out of range [0, " + str(state_->shape.kv_heads) + ")");
  return q.read[kv_head];
}

std::vector<std::int32_t> DecodeCache::selected_blocks(index_t seq, index_t kv_head) const {
  const DecodeSequence& q = state_->sequence(seq, "selected_blocks");
  if (kv_head < 0 || kv_head >= state_->shape.kv_heads)
    throw Error("selected_blocks: kv head " + str(kv_head) + " out of range [0, " + str(state_->shape.kv_heads) + ")");
  std::vector<std::int32_t> out;
  const index_t n = state_->config.top_n();
  for (index_t k = 0; k < n && q.sel[kv_head * n + k] >= 0; ++k) out.push_back(q.sel[kv_head * n + k]);
  return out;
}

std::int64_t DecodeCache::total_tokens_read() const { return state_->total_read; }

DecodeMemory DecodeCache::memory() const {
  const State& st = *state_;
  DecodeMemory m;
  m.chunk_tokens = st.chunk;
  m.chunk_bytes = static_cast<std::size_t>(st.chunk_elems * st.elem_bytes);
  std::size_t bytes = sizeof(State);
  for (const auto* bufs : {st.phi_k_buf, st.phi_v_buf})
    for (std::size_t i = 0; i < kPhiFields.size(); ++i) bytes += bufs[i].capacity() * sizeof(float);
  for (const DecodeSequence& q : st.seqs) {
    m.tokens += q.pos;
    bytes += sizeof(DecodeSequence) + q.pages.capacity() * sizeof(q.pages[0]) +
             q.read.capacity() * sizeof(TokensRead) + q.sel.capacity() * sizeof(std::int32_t);
  }
  m.chunks = st.pool.in_use();
  m.shared_chunks = st.pool.shared();
  m.max_chunks = st.pool.max_pages();
  m.bytes = bytes + static_cast<std::size_t>(m.chunks) * m.chunk_bytes;
  return m;
}

TokensRead tokens_read(const Config& config, index_t t, const std::int32_t* sel) {
  TokensRead r;
  r.cmp = config.visible_cmp_blocks(t);
  for (index_t k = 0; k < config.top_n() && sel[k] >= 0; ++k)
    r.slc += std::min<index_t>(config.sel_block(), t + 1 - sel[k] * index_t{config.sel_block()});
  r.win = std::min<index_t>(config.window(), t + 1);
  return r;
}

}  // namespace nsa
