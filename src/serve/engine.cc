// The engine: conversations, the scheduler thread, persistence and the metrics it keeps.
//
// Threads: HTTP handlers call submit() and the read-only queries under `mu`; the scheduler
// thread alone touches the Generator (and the conversations' slots and logs), and changes
// what the handlers read (a conversation's tokens, pending, slot, busy, the map) only under
// `mu`; its own reads of them need no lock, since no other thread writes them.
#include "serve/engine.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <deque>
#include <dirent.h>
#include <map>
#include <thread>

#include "common/fnv1a.h"
#include "model/data/corpus.h"
#include "model/data/rng.h"
#include "model/sampling.h"
#include "model/training/checkpoint_io.h"
#include "nsa/thread_pool.h"
#include "serve/conversation_log.h"
#include "serve/metrics.h"
#include "serve/prefix_index.h"

namespace nsa::serve {

// ---- Turn ---------------------------------------------------------------------------------

std::string Turn::next_text() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ || !ready_.empty(); });
  std::string out;
  out.swap(ready_);
  return out;
}

std::string Turn::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
  ready_.clear();
  return all_;
}

bool Turn::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}
std::string Turn::finish_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finish_;
}
int Turn::error_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}
std::string Turn::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}
std::string Turn::conversation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return conversation_;
}
std::int64_t Turn::prompt_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prompt_;
}
std::int64_t Turn::reused_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reused_;
}
std::int64_t Turn::completion_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completion_;
}

// ---- State --------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string str(std::int64_t v) { return std::to_string(v); }

constexpr const char* kLogSuffix = ".nsaconv";

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  return true;
}

std::int64_t file_bytes(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_size) : 0;
}

// The checkpoint's identity for its logs: config and every parameter.
std::uint64_t fingerprint(const model::Model<float>& m) {
  const model::ModelConfig& c = m.config();
  const std::string cfg = str(c.vocab) + "/" + str(c.d_model) + "/" + str(c.n_layers) + "/" + str(c.n_heads) + "/" +
                          str(c.n_kv_heads) + "/" + str(static_cast<int>(c.attention)) + "/" + str(c.token_shift);
  return fnv1a64(m.params(), m.num_params() * sizeof(float), fnv1a64(cfg.data(), cfg.size()));
}

}  // namespace

struct Conversation {
  std::string id;
  std::vector<std::int32_t> tokens;   // what its cache holds (in memory or in its log)
  std::vector<std::int32_t> pending;  // its last reply's final token: not in the cache yet
  index_t slot = -1;                  // generator slot, -1 when not in memory
  std::uint64_t last_used = 0;
  bool busy = false;                  // a turn is queued or running
  std::string error;                  // why it is refused (its log is corrupted)
  std::string path;                   // its log; "" without a state folder
  std::int64_t logged = 0;            // tokens in its log
  std::vector<model::LayerStep> last; // the last step (monitoring)
  std::int64_t last_position = 0;
};

// A turn the scheduler runs.
struct Running {
  std::shared_ptr<Turn> turn;
  TurnRequest request;
  Clock::time_point submitted;
  Conversation* conv = nullptr;
  model::Rng rng;
  std::string generated;
  std::size_t emitted = 0;
  std::int64_t reply_start = 0;  // cache position of the reply's first token
  std::int32_t next = -1;        // sampled, to be appended by the next step
  bool first_token = true;
  bool created = false;          // submit() made its conversation (explicit id)
};

struct EngineState {
  EngineOptions options;
  model::Model<float> model;
  LogHeader header;
  ThreadPool pool;
  model::Generator generator;
  const index_t vocab;

  mutable std::mutex mu;  // everything below except the scheduler's own fields
  std::condition_variable cv;
  std::map<std::string, std::unique_ptr<Conversation>> convs;
  PrefixIndex<Conversation*> prefixes;  // the tokens of idle conversations
  std::deque<std::shared_ptr<Running>> waiting;
  std::vector<index_t> to_release;  // slots of removed conversations (the scheduler resets them)
  int active = 0;                   // waiting + running turns
  bool stopping = false;
  std::uint64_t clock = 0;
  std::uint64_t next_id = 0;

  // Scheduler's own.
  std::vector<std::shared_ptr<Running>> running;
  std::vector<index_t> free_slots;
  std::thread scheduler;

  // Metrics (under mu).
  Histogram tokens_read{geometric_bounds(16, 1 << 20, 2)};
  Histogram dense_tokens{geometric_bounds(16, 1 << 20, 2)};
  Histogram block_distance{geometric_bounds(16, 1 << 20, 2)};
  Histogram ttft{geometric_bounds(0.001, 60, 2)};
  Histogram step_seconds{geometric_bounds(0.0001, 10, 2)};
  Histogram batch_size{geometric_bounds(1, 256, 2)};
  std::vector<double> gate_sum;  // [layer][3]
  std::uint64_t gate_count = 0;
  std::uint64_t generated_total = 0, prompt_total = 0, reused_total = 0, prefilled_total = 0, steps_total = 0;
  std::uint64_t evicted_total = 0, restored_total = 0, turns_total = 0, turns_failed = 0;
  double decode_seconds = 0;
  std::size_t cache_bytes = 0;

  explicit EngineState(const EngineOptions& o);
  ~EngineState();

  // Scheduler.
  void loop();
  void start(const std::shared_ptr<Running>& r);
  void step_all();
  void take(Running& r, std::int32_t token);
  void finish(Running& r, const std::string& reason, int status = 0, const std::string& error = "");
  void persist(Conversation& c);
  void make_resident(Conversation& c, const Conversation* keep);
  index_t take_slot(const Conversation* keep);
  // The idle conversation in memory used longest ago, other than `keep`; null if none.
  Conversation* least_recently_used_idle(const Conversation* keep);
  void evict(Conversation& c);
  void enforce_memory();
  void observe_step(Conversation& c);
  Conversation& new_conversation(const std::string& id);  // under mu
  // Under mu: the idle conversation sharing the longest prefix with `tokens` (null if none
  // shares a token), and the prefix's length. Candidates come from `prefixes`; only the
  // pick's tokens are compared (a hash collision falls back to comparing every one).
  Conversation* longest_prefix(const std::vector<std::int32_t>& tokens, std::size_t* common);
  // Under mu: `prefixes` follows c's tokens (idle and usable) or forgets c.
  void index_prefix(Conversation& c) {
    if (c.busy || !c.error.empty()) prefixes.remove(&c);
    else prefixes.update(&c, c.tokens);
  }
  std::string path_for(const std::string& id) const {
    return options.state_dir.empty() ? "" : options.state_dir + "/" + id + kLogSuffix;
  }
  void list_state_dir();
};

EngineState::EngineState(const EngineOptions& o)
    : options(o),
      model(model::load_model(o.checkpoint)),
      pool(o.threads),
      generator(model, o.max_context, o.max_resident + 1, 0, /*journal=*/true),
      vocab(model.config().vocab) {
  if (o.max_resident < 1) throw Error("serve: max_resident must be >= 1");
  if (o.max_active < 1) throw Error("serve: max_active must be >= 1");
  // A running turn holds its slot; one more is kept for the fork of a starting turn.
  options.max_active = std::min(o.max_active, o.max_resident);
  header.model_fingerprint = fingerprint(model);
  header.row_floats = generator.row_floats();
  for (index_t s = generator.max_seqs() - 1; s >= 0; --s) free_slots.push_back(s);
  gate_sum.assign(static_cast<std::size_t>(model.config().n_layers * 3), 0.0);
  if (!options.state_dir.empty()) list_state_dir();
  scheduler = std::thread([this] { loop(); });
}

EngineState::~EngineState() {
  {
    std::lock_guard<std::mutex> lock(mu);
    stopping = true;
  }
  cv.notify_all();
  if (scheduler.joinable()) scheduler.join();
}

void EngineState::list_state_dir() {
  ::mkdir(options.state_dir.c_str(), 0755);
  DIR* dir = ::opendir(options.state_dir.c_str());
  if (!dir) throw Error("serve: cannot open the state folder " + options.state_dir);
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    const std::size_t n = std::string(kLogSuffix).size();
    if (name.size() > n && name.compare(name.size() - n, n, kLogSuffix) == 0) names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string id = name.substr(0, name.size() - std::string(kLogSuffix).size());
    if (!valid_id(id)) continue;
    Conversation& c = new_conversation(id);
    try {
      LogContents log = read_log(c.path, &header);
      if (log.header.id != id) throw LogError("conversation log " + c.path + " holds conversation " + log.header.id);
      if (log.torn_tail) cut_log(c.path, log.valid_bytes);  // the turn a crash interrupted
      c.tokens = std::move(log.tokens);
      c.pending = std::move(log.pending);
      c.logged = static_cast<std::int64_t>(c.tokens.size());
    } catch (const std::exception& e) {
      c.error = e.what();
    }
    index_prefix(c);
  }
}

Conversation* EngineState::longest_prefix(const std::vector<std::int32_t>& req, std::size_t* common) {
  auto shared = [&](const Conversation& c, std::size_t from) {
    const std::size_t n = std::min(c.tokens.size(), req.size());
    std::size_t p = from;
    while (p < n && c.tokens[p] == req[p]) ++p;
    return p;
  };
  auto better = [](const Conversation& c, std::size_t p, const Conversation* best, std::size_t best_p) {
    if (p != best_p) return p > best_p;
    // Equal prefixes: one that the request extends whole (continued in place, no fork)
    // first, then the most recently used.
    const bool whole = p == c.tokens.size(), best_whole = best_p == best->tokens.size();
    return whole != best_whole ? whole : c.last_used > best->last_used;
  };
  Conversation* best = nullptr;
  std::size_t best_p = 0;
  prefixes.visit_longest(req, [&](const std::vector<Conversation*>& holders, std::size_t blocks) {
    for (Conversation* h : holders) {
      Conversation& c = *h;
      if (c.busy || !c.error.empty()) continue;
      const std::size_t p = shared(c, blocks);  // the block prefix is taken as equal here
      if (!best || better(c, p, best, best_p)) best = &c, best_p = p;
    }
    return best != nullptr;
  });
  if (best && shared(*best, 0) != best_p) best = nullptr;  // a hash collision: compare all
  if (!best) {
    // Nothing indexed shares a whole block (or a collision): every idle conversation.
    for (auto& [id, c] : convs) {
      if (c->busy || !c->error.empty()) continue;
      const std::size_t p = shared(*c, 0);
      if (p > 0 && (!best || better(*c, p, best, best_p))) best = c.get(), best_p = p;
    }
  }
  *common = best_p;
  return best;
}

Conversation& EngineState::new_conversation(const std::string& id) {
  auto c = std::make_unique<Conversation>();
  c->id = id;
  c->path = path_for(id);
  Conversation& ref = *c;
  convs[id] = std::move(c);
  return ref;
}

// ---- Scheduler ----------------------------------------------------------------------------

void EngineState::loop() {
  for (;;) {
    std::vector<std::shared_ptr<Running>> starting;
    std::vector<index_t> release;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return stopping || !waiting.empty() || !running.empty() || !to_release.empty(); });
      if (stopping) break;
      starting.assign(waiting.begin(), waiting.end());
      waiting.clear();
      release.swap(to_release);
    }
    for (index_t slot : release) {
      generator.reset(slot);
      free_slots.push_back(slot);
    }
    for (const auto& r : starting) {
      try {
        start(r);
      } catch (const RequestError& e) {
        finish(*r, "error", e.status(), e.what());
      } catch (const std::exception& e) {
        finish(*r, "error", 500, e.what());
      }
    }
    if (!running.empty()) {
      try {
        step_all();
      } catch (const std::exception& e) {
        // A failed batched step changes nothing (Generator's all-or-nothing): end its turns.
        std::vector<std::shared_ptr<Running>> failed;
        failed.swap(running);
        for (const auto& r : failed) finish(*r, "error", 500, e.what());
      }
    }
  }
  // Stopping: every turn ends, cancelled.
  std::vector<std::shared_ptr<Running>> left = running;
  {
    std::lock_guard<std::mutex> lock(mu);
    left.insert(left.end(), waiting.begin(), waiting.end());
    waiting.clear();
  }
  running.clear();
  for (const auto& r : left) finish(*r, "cancelled");
}

Conversation* EngineState::least_recently_used_idle(const Conversation* keep) {
  std::lock_guard<std::mutex> lock(mu);
  Conversation* lru = nullptr;
  for (auto& [id, c] : convs)
    if (c->slot >= 0 && !c->busy && c.get() != keep && (!lru || c->last_used < lru->last_used)) lru = c.get();
  return lru;
}

index_t EngineState::take_slot(const Conversation* keep) {
  std::int64_t resident = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [id, c] : convs) resident += c->slot >= 0;
  }
  // At max_resident, an idle one leaves memory; the spare slot is for a fork whose
  // source is the only idle one.
  if (free_slots.empty() || resident >= options.max_resident) {
    // The least recently used idle conversation in memory leaves it.
    Conversation* lru = least_recently_used_idle(keep);
    if (lru)
      evict(*lru);
    else if (free_slots.empty())
      throw RequestError(503, "every generator slot is held by a running turn; retry");
  }
  const index_t slot = free_slots.back();
  free_slots.pop_back();
  return slot;
}

void EngineState::evict(Conversation& c) {
  generator.reset(c.slot);
  free_slots.push_back(c.slot);
  std::lock_guard<std::mutex> lock(mu);
  c.slot = -1;
  ++evicted_total;
  // Without a state folder nothing could bring it back: it is forgotten.
  if (c.path.empty()) {
    prefixes.remove(&c);
    convs.erase(c.id);
  }
}

void EngineState::make_resident(Conversation& c, const Conversation* keep) {
  if (c.slot >= 0) return;
  const index_t slot = take_slot(keep);
  try {
    if (!c.tokens.empty()) {
      const LogContents log = read_log(c.path, &header);
      if (log.tokens != c.tokens) throw LogError("conversation log " + c.path + " changed on disk");
      generator.restore(slot, log.rows.data(), static_cast<index_t>(log.tokens.size()), pool);
    }
  } catch (...) {
    generator.reset(slot);
    free_slots.push_back(slot);
    throw;
  }
  std::lock_guard<std::mutex> lock(mu);
  c.slot = slot;
  if (!c.tokens.empty()) ++restored_total;
}

void EngineState::persist(Conversation& c) {
  const std::vector<float> rows = generator.take_journal(c.slot);
  const auto n = static_cast<std::int64_t>(c.tokens.size());
  if (c.path.empty()) {
    c.logged = n;
    return;
  }
  // The journal holds the tokens [first, n); a turn that rolled back (a stop string, a
  // re-asked last token) left the log ahead of that: the log rolls back too.
  const std::int64_t first = n - static_cast<std::int64_t>(rows.size()) / header.row_floats;
  if (first != c.logged) {
    append_truncate(c.path, first);
    c.logged = first;
  }
  append_rows(c.path, first, c.tokens.data() + first, n - first, rows.data(), header.row_floats);
  if (!c.pending.empty()) append_pending(c.path, c.pending);
  c.logged = n;
}

void EngineState::start(const std::shared_ptr<Running>& rp) {
  Running& r = *rp;
  const std::vector<std::int32_t>& req = r.request.tokens;
  Conversation* conv = nullptr;
  std::vector<std::int32_t> fresh;  // the tokens to prefill
  std::int64_t reused = 0;
  if (!r.request.conversation.empty()) {
    {
      std::lock_guard<std::mutex> lock(mu);
      conv = convs.at(r.request.conversation).get();  // made and marked busy by submit()
      r.conv = conv;
    }
    if (r.created && !conv->path.empty()) {
      LogHeader h = header;
      h.id = conv->id;
      create_log(conv->path, h, {}, {});
    }
    make_resident(*conv, nullptr);
    reused = static_cast<std::int64_t>(conv->tokens.size());
    fresh = conv->pending;
    fresh.insert(fresh.end(), req.begin(), req.end());
    std::lock_guard<std::mutex> lock(mu);
    conv->pending.clear();
  } else {
    // The idle conversation sharing the longest prefix with the request.
    Conversation* best = nullptr;
    std::size_t common = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      best = longest_prefix(req, &common);
      if (best) best->busy = true;  // held while it is continued or forked
    }
    if (best && common == best->tokens.size()) {
      conv = best;  // the request extends all of it: continue in place
      make_resident(*conv, nullptr);
    } else {
      std::string id;
      {
        std::lock_guard<std::mutex> lock(mu);
        do {
          char buf[32];
          std::snprintf(buf, sizeof(buf), "c%08llx", static_cast<unsigned long long>(++next_id));
          id = buf;
        } while (convs.count(id));
        conv = &new_conversation(id);
        conv->busy = true;
        r.conv = conv;
      }
      try {
        if (best) {
          // Forked at the common prefix: the new conversation shares the source's pages.
          make_resident(*best, nullptr);
          const index_t slot = take_slot(best);
          generator.fork(best->slot, slot);
          generator.truncate(slot, static_cast<index_t>(common));
          generator.take_journal(slot);
          std::lock_guard<std::mutex> lock(mu);
          conv->slot = slot;
          conv->tokens.assign(req.begin(), req.begin() + static_cast<std::ptrdiff_t>(common));
        }
        if (!conv->path.empty()) {
          std::vector<float> rows;
          if (best) {
            LogContents src = read_log(best->path, &header);
            rows.assign(src.rows.begin(), src.rows.begin() + static_cast<std::ptrdiff_t>(common) * header.row_floats);
          }
          LogHeader h = header;
          h.id = id;
          create_log(conv->path, h, conv->tokens, rows);
        }
        conv->logged = static_cast<std::int64_t>(conv->tokens.size());
        if (!best) make_resident(*conv, nullptr);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (best) {
          best->busy = false;
          index_prefix(*best);
        }
        throw;
      }
      std::lock_guard<std::mutex> lock(mu);
      if (best) {
        best->busy = false;
        best->last_used = ++clock;
        index_prefix(*best);
      }
    }
    reused = static_cast<std::int64_t>(common);
    fresh.assign(req.begin() + static_cast<std::ptrdiff_t>(common), req.end());
    std::lock_guard<std::mutex> lock(mu);
    conv->pending.clear();
  }
  r.conv = conv;  // (auto mode: in place)
  {
    std::lock_guard<std::mutex> lock(r.turn->mu_);
    r.turn->conversation_ = conv->id;
    r.turn->prompt_ = static_cast<std::int64_t>(req.size());
  }
  // Nothing new (the request is exactly the cache): the last token again, for its logits.
  if (fresh.empty()) {
    if (conv->tokens.empty()) throw RequestError(400, "the prompt is empty");
    fresh.push_back(conv->tokens.back());
    {
      std::lock_guard<std::mutex> lock(mu);
      conv->tokens.pop_back();
    }
    generator.truncate(conv->slot, static_cast<index_t>(conv->tokens.size()));
    --reused;
  }
  if (static_cast<std::int64_t>(conv->tokens.size() + fresh.size()) + 1 > options.max_context)
    throw RequestError(400, "conversation " + conv->id + " would hold " + str(static_cast<std::int64_t>(conv->tokens.size() + fresh.size())) +
                                " tokens, over the context limit of " + str(options.max_context));
  const float* logits = generator.prefill(conv->slot, fresh.data(), static_cast<index_t>(fresh.size()), pool);
  {
    std::lock_guard<std::mutex> lock(mu);
    conv->tokens.insert(conv->tokens.end(), fresh.begin(), fresh.end());
  }
  r.reply_start = static_cast<std::int64_t>(conv->tokens.size());
  {
    std::lock_guard<std::mutex> lock(mu);
    prompt_total += req.size();
    reused_total += static_cast<std::uint64_t>(std::max<std::int64_t>(0, reused));
    prefilled_total += fresh.size();
    cache_bytes = generator.cache_bytes();
  }
  {
    std::lock_guard<std::mutex> lock(r.turn->mu_);
    r.turn->reused_ = std::max<std::int64_t>(0, reused);
  }
  observe_step(*conv);
  if (r.request.sampling.max_tokens == 0) {
    finish(r, "length");
    return;
  }
  running.push_back(rp);
  take(r, model::sample_token(logits, static_cast<int>(vocab), r.request.sampling.temperature,
                              r.request.sampling.top_k, r.rng));
}

void EngineState::observe_step(Conversation& c) {
  const std::vector<model::LayerStep> last = generator.last_step(c.slot);
  const model::ModelConfig& cfg = model.config();
  const std::int64_t pos = generator.position(c.slot);
  std::lock_guard<std::mutex> lock(mu);
  c.last = last;
  c.last_position = pos;
  if (last.empty()) return;
  std::int64_t read = 0;
  for (std::size_t l = 0; l < last.size(); ++l) {
    read += last[l].tokens_read;
    for (int b = 0; b < 3; ++b) gate_sum[l * 3 + static_cast<std::size_t>(b)] += last[l].gates[b];
    for (const auto& blocks : last[l].selected)
      for (std::int32_t blk : blocks)
        if (blk >= 0) block_distance.observe(static_cast<double>(pos - 1 - blk * static_cast<std::int64_t>(cfg.nsa.sel_block)));
  }
  ++gate_count;
  tokens_read.observe(static_cast<double>(read));
  dense_tokens.observe(static_cast<double>(pos * cfg.n_layers * cfg.n_kv_heads));
}

void EngineState::step_all() {
  // Turns whose client left end here.
  for (std::size_t i = 0; i < running.size();) {
    if (running[i]->turn->cancelled_) {
      auto r = running[i];
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      finish(*r, "cancelled");
    } else {
      ++i;
    }
  }
  if (running.empty()) return;
  std::vector<index_t> seqs;
  std::vector<std::int32_t> tokens;
  for (const auto& r : running) {
    seqs.push_back(r->conv->slot);
    tokens.push_back(r->next);
  }
  const auto t0 = Clock::now();
  const float* logits = generator.step(seqs.data(), tokens.data(), static_cast<index_t>(seqs.size()), pool);
  const double dt = seconds_since(t0);
  {
    std::lock_guard<std::mutex> lock(mu);
    step_seconds.observe(dt);
    batch_size.observe(static_cast<double>(seqs.size()));
    decode_seconds += dt;
    ++steps_total;
    cache_bytes = generator.cache_bytes();
  }
  const std::vector<std::shared_ptr<Running>> batch = running;
  std::vector<float> mine(static_cast<std::size_t>(vocab));
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Running& r = *batch[i];
    {
      std::lock_guard<std::mutex> lock(mu);
      r.conv->tokens.push_back(r.next);
    }
    observe_step(*r.conv);
    std::copy(logits + static_cast<index_t>(i) * vocab, logits + static_cast<index_t>(i + 1) * vocab, mine.begin());
    take(r, model::sample_token(mine.data(), static_cast<int>(vocab), r.request.sampling.temperature,
                                r.request.sampling.top_k, r.rng));
  }
}

// One sampled token: emitted (minus what may begin a stop string), or the end of the turn.
void EngineState::take(Running& r, std::int32_t token) {
  Conversation& c = *r.conv;
  if (r.first_token) {
    r.first_token = false;
    std::lock_guard<std::mutex> lock(mu);
    ttft.observe(seconds_since(r.submitted));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ++generated_total;
  }
  r.generated += static_cast<char>(token);
  const Sampling& s = r.request.sampling;
  // A stop string the reply now ends with (checked at every token: the first to complete).
  std::size_t stop_at = std::string::npos;
  for (const std::string& stop : s.stop) {
    const std::size_t n = r.generated.size();
    if (!stop.empty() && n >= stop.size() && r.generated.compare(n - stop.size(), stop.size(), stop) == 0)
      stop_at = std::min(stop_at, n - stop.size());
  }
  auto emit = [&](std::size_t upto) {
    if (upto <= r.emitted) return;
    std::lock_guard<std::mutex> lock(r.turn->mu_);
    r.turn->ready_ += r.generated.substr(r.emitted, upto - r.emitted);
    r.turn->all_ += r.generated.substr(r.emitted, upto - r.emitted);
    r.turn->completion_ = static_cast<std::int64_t>(upto);
    r.emitted = upto;
    r.turn->cv_.notify_all();
  };
  auto drop_running = [&] {
    running.erase(std::remove_if(running.begin(), running.end(), [&](const auto& p) { return p.get() == &r; }),
                  running.end());
  };
  if (stop_at != std::string::npos) {
    emit(stop_at);
    // The cache keeps the reply up to the stop string (byte tokens: stop_at of them).
    const auto keep = static_cast<index_t>(r.reply_start) + static_cast<index_t>(stop_at);
    if (keep < generator.position(c.slot)) generator.truncate(c.slot, keep);
    {
      std::lock_guard<std::mutex> lock(mu);
      c.tokens.resize(static_cast<std::size_t>(generator.position(c.slot)));
      c.pending.clear();
    }
    drop_running();
    finish(r, "stop");
    return;
  }
  const auto produced = static_cast<std::int64_t>(r.generated.size());
  if (produced >= s.max_tokens || static_cast<std::int64_t>(c.tokens.size()) + 1 >= options.max_context) {
    emit(r.generated.size());
    {
      std::lock_guard<std::mutex> lock(mu);
      c.pending = {token};
    }
    drop_running();
    finish(r, "length");
    return;
  }
  // Hold back the longest tail that could begin a stop string.
  std::size_t hold = 0;
  for (const std::string& stop : s.stop)
    for (std::size_t k = std::min(stop.size() - 1, r.generated.size()); k > hold; --k)
      if (r.generated.compare(r.generated.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  // and an incomplete UTF-8 character at the end (a stream's chunks stay valid text).
  std::size_t upto = r.generated.size() - hold;
  for (std::size_t k = 1; k <= 3 && k <= upto; ++k) {
    const auto b = static_cast<unsigned char>(r.generated[upto - k]);
    if ((b & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const std::size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (need > k && b >= 0xC0) upto -= k;
    break;
  }
  emit(upto);
  r.next = token;
}

void EngineState::finish(Running& r, const std::string& reason, int status, const std::string& error) {
  std::string fail = error;
  int code = status;
  Conversation* c = r.conv;
  if (c && c->slot >= 0) {
    try {
      persist(*c);
    } catch (const std::exception& e) {
      // The log no longer matches the cache: the conversation is refused from now on.
      fail = e.what();
      code = 500;
      std::lock_guard<std::mutex> lock(mu);
      c->error = std::string("its log could not be written: ") + e.what();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    if (c) {
      c->busy = false;
      c->last_used = ++clock;
      index_prefix(*c);
    }
    --active;
    ++turns_total;
    if (code) ++turns_failed;
    cache_bytes = generator.cache_bytes();
  }
  // Memory is settled before the client hears the turn is done.
  if (c && !c->error.empty() && c->slot >= 0) evict(*c);
  enforce_memory();
  {
    std::lock_guard<std::mutex> lock(r.turn->mu_);
    r.turn->done_ = true;
    r.turn->finish_ = code ? "error" : reason;
    r.turn->status_ = code;
    r.turn->error_ = fail;
    if (c) r.turn->conversation_ = c->id;
  }
  r.turn->cv_.notify_all();
}

void EngineState::enforce_memory() {
  if (options.max_memory == 0) return;
  while (generator.cache_bytes() > options.max_memory) {
    Conversation* lru = least_recently_used_idle(nullptr);
    if (!lru) break;
    evict(*lru);
  }
  std::lock_guard<std::mutex> lock(mu);
  cache_bytes = generator.cache_bytes();
}

// ---- Engine -------------------------------------------------------------------------------

Engine::Engine(const EngineOptions& options) : s_(std::make_unique<EngineState>(options)) {}
Engine::~Engine() = default;

std::shared_ptr<Turn> Engine::submit(TurnRequest request) {
  EngineState& s = *s_;
  for (std::size_t i = 0; i < request.tokens.size(); ++i)
    if (request.tokens[i] < 0 || request.tokens[i] >= s.vocab)
      throw RequestError(400, "token " + str(request.tokens[i]) + " at index " + str(static_cast<std::int64_t>(i)) +
                                  " is outside the vocabulary [0, " + str(s.vocab) + ")");
  const Sampling& sp = request.sampling;
  if (sp.max_tokens < 0) throw RequestError(400, "max_tokens must be >= 0, got " + str(sp.max_tokens));
  if (!(sp.temperature >= 0) || sp.temperature > 100)
    throw RequestError(400, "temperature must be in [0, 100]");
  if (sp.top_k < 0) throw RequestError(400, "top_k must be >= 0, got " + str(sp.top_k));
  if (sp.stop.size() > 4) throw RequestError(400, "at most 4 stop strings, got " + str(static_cast<std::int64_t>(sp.stop.size())));
  if (!request.conversation.empty() && !valid_id(request.conversation))
    throw RequestError(400, "conversation ids are 1 to 64 letters, digits, '-' or '_'");
  auto r = std::make_shared<Running>();
  r->turn = std::make_shared<Turn>();
  r->submitted = Clock::now();
  r->rng = model::Rng(sp.seed);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.stopping) throw RequestError(503, "the server is stopping");
  if (s.active >= s.options.max_active)
    throw RequestError(429, "too many concurrent requests (" + str(s.active) + " running or waiting, the limit is " +
                                str(s.options.max_active) + "); retry later");
  std::int64_t total = static_cast<std::int64_t>(request.tokens.size());
  Conversation* c = nullptr;
  if (!request.conversation.empty()) {
    auto it = s.convs.find(request.conversation);
    if (it != s.convs.end()) {
      c = it->second.get();
      if (!c->error.empty()) throw RequestError(500, "conversation " + c->id + " cannot be served: " + c->error);
      if (c->busy) throw RequestError(409, "conversation " + c->id + " has a turn running; wait for it to finish");
      total += static_cast<std::int64_t>(c->tokens.size() + c->pending.size());
    }
  } else if (request.tokens.empty()) {
    throw RequestError(400, "the prompt is empty");
  }
  if (total + sp.max_tokens > s.options.max_context)
    throw RequestError(400, "the conversation would hold " + str(total) + " tokens + max_tokens " + str(sp.max_tokens) +
                                ", over the context limit of " + str(s.options.max_context) + " tokens");
  if (!request.conversation.empty()) {
    if (!c) {
      c = &s.new_conversation(request.conversation);
      r->created = true;
    }
    c->busy = true;  // until its turn finishes
  }
  r->request = std::move(request);
  ++s.active;
  s.waiting.push_back(r);
  s.cv.notify_all();
  return r->turn;
}

std::vector<ConversationInfo> Engine::conversations() const {
  std::lock_guard<std::mutex> lock(s_->mu);
  std::vector<ConversationInfo> out;
  for (const auto& [id, c] : s_->convs)
    out.push_back({id, static_cast<std::int64_t>(c->tokens.size()), c->slot >= 0, c->busy, c->error, ""});
  return out;
}

ConversationInfo Engine::conversation(const std::string& id) const {
  std::lock_guard<std::mutex> lock(s_->mu);
  auto it = s_->convs.find(id);
  if (it == s_->convs.end()) throw RequestError(404, "no conversation '" + id + "'");
  const Conversation& c = *it->second;
  ConversationInfo info{id, static_cast<std::int64_t>(c.tokens.size()), c.slot >= 0, c.busy, c.error, ""};
  info.text = model::decode_bytes(c.tokens.data(), static_cast<index_t>(c.tokens.size()));
  info.text += model::decode_bytes(c.pending.data(), static_cast<index_t>(c.pending.size()));
  return info;
}

void Engine::remove(const std::string& id) {
  EngineState& s = *s_;
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.convs.find(id);
  if (it == s.convs.end()) throw RequestError(404, "no conversation '" + id + "'");
  if (it->second->busy) throw RequestError(409, "conversation " + id + " has a turn running");
  if (it->second->slot >= 0) s.to_release.push_back(it->second->slot);
  if (!it->second->path.empty()) std::remove(it->second->path.c_str());
  s.prefixes.remove(it->second.get());
  s.convs.erase(it);
  s.cv.notify_all();
}

AttentionSnapshot Engine::attention(const std::string& id) const {
  std::lock_guard<std::mutex> lock(s_->mu);
  auto it = s_->convs.find(id);
  if (it == s_->convs.end()) throw RequestError(404, "no conversation '" + id + "'");
  const Conversation& c = *it->second;
  AttentionSnapshot a;
  a.id = id;
  a.position = c.last_position;
  a.layers = c.last;
  for (const auto& l : c.last) a.tokens_read += l.tokens_read;
  a.dense_tokens = c.last.empty() ? 0 : c.last_position * s_->model.config().n_layers * s_->model.config().n_kv_heads;
  return a;
}

std::string Engine::metrics_text() const {
  const EngineState& s = *s_;
  std::lock_guard<std::mutex> lock(s.mu);
  PromWriter w;
  w.histogram("nsa_step_tokens_read", "attention tokens read by one decoded token, all layers and kv heads", s.tokens_read);
  w.histogram("nsa_step_dense_tokens", "what dense attention would read for the same token", s.dense_tokens);
  w.histogram("nsa_selected_block_distance_tokens", "distance from the query to the start of each selected block",
              s.block_distance);
  w.histogram("nsa_time_to_first_token_seconds", "from a request's arrival to its first sampled token", s.ttft);
  w.histogram("nsa_step_seconds", "one batched decode step", s.step_seconds);
  w.histogram("nsa_step_batch_size", "sequences in one batched decode step", s.batch_size);
  const model::ModelConfig& cfg = s.model.config();
  w.family("nsa_gate_mean", "gauge", "mean gate of each layer and branch over the decoded tokens");
  const char* names[3] = {"cmp", "slc", "win"};
  for (int l = 0; l < cfg.n_layers; ++l)
    for (int b = 0; b < 3; ++b)
      w.sample("nsa_gate_mean",
               s.gate_count ? s.gate_sum[static_cast<std::size_t>(l * 3 + b)] / static_cast<double>(s.gate_count) : 0.0,
               {{"layer", str(l)}, {"branch", names[b]}});
  std::int64_t disk = 0, resident = 0, on_disk = 0, broken = 0;
  for (const auto& [id, c] : s.convs) {
    if (!c->path.empty()) disk += file_bytes(c->path);
    (c->slot >= 0 ? resident : on_disk) += 1;
    broken += c->error.empty() ? 0 : 1;
  }
  w.gauge("nsa_cache_bytes", "bytes of K/V and compressed blocks in memory", static_cast<double>(s.cache_bytes));
  w.gauge("nsa_state_bytes", "bytes of the conversation logs on disk", static_cast<double>(disk));
  w.family("nsa_conversations", "gauge", "conversations by where their cache is");
  w.sample("nsa_conversations", static_cast<double>(resident), {{"state", "memory"}});
  w.sample("nsa_conversations", static_cast<double>(on_disk), {{"state", "disk"}});
  w.sample("nsa_conversations", static_cast<double>(broken), {{"state", "refused"}});
  w.gauge("nsa_active_turns", "turns running or waiting", s.active);
  w.counter("nsa_conversations_evicted_total", "conversations moved out of memory", static_cast<double>(s.evicted_total));
  w.counter("nsa_conversations_restored_total", "conversations brought back into memory from their logs", static_cast<double>(s.restored_total));
  w.counter("nsa_turns_total", "turns finished (any reason)", static_cast<double>(s.turns_total));
  w.counter("nsa_turns_failed_total", "turns that ended in an error", static_cast<double>(s.turns_failed));
  w.counter("nsa_decode_steps_total", "batched decode steps", static_cast<double>(s.steps_total));
  w.counter("nsa_generated_tokens_total", "tokens sampled", static_cast<double>(s.generated_total));
  w.counter("nsa_prompt_tokens_total", "tokens of the requests", static_cast<double>(s.prompt_total));
  w.counter("nsa_prompt_tokens_reused_total", "request tokens found in a cache", static_cast<double>(s.reused_total));
  w.counter("nsa_prompt_tokens_prefilled_total", "request tokens run through the model", static_cast<double>(s.prefilled_total));
  w.gauge("nsa_decode_tokens_per_second", "decoded tokens per second of batched steps",
          s.decode_seconds > 0 ? s.batch_size.sum() / s.decode_seconds : 0.0);
  return w.text();
}

const model::ModelConfig& Engine::model_config() const { return s_->model.config(); }
std::string Engine::model_name() const {
  const std::string& p = s_->options.checkpoint;
  const std::size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}
std::int64_t Engine::max_context() const { return s_->options.max_context; }

}  // namespace nsa::serve
