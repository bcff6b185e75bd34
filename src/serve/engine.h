// The engine of `nsa serve`: conversations whose caches live across requests, decoded by
// one scheduler thread in batched steps (continuous batching), persisted turn by turn.
//
// A turn is a request to continue a conversation: tokens to append, then up to max_tokens
// sampled ones. Which conversation:
//   - an explicit id: the tokens are the new part (appended after what the conversation
//     holds, including its last reply's final token); an unknown id starts a conversation;
//   - none (automatic prefix reuse, for clients that resend the whole history): the
//     conversation whose tokens share the longest prefix with the request is continued in
//     place when the request extends all of it, or forked at the common prefix (its pages
//     shared, a new conversation) when they part earlier; with no common prefix, a new one.
//     Either way only the tokens past the common prefix are prefilled. The candidates
//     come from a PrefixIndex of the idle conversations (serve/prefix_index.h).
// Scheduling: each loop of the scheduler starts the waiting turns (prefill, first token),
// then runs one batched Generator::step for every turn that is decoding.
// Persistence (state_dir): every conversation has a log (conversation_log.h). A turn counts
// as finished once its rows are appended and fsync'ed; at start the folder's logs are
// listed, and a conversation's cache is restored from its log when it is first used.
// Memory: at most max_resident conversations hold a generator slot, and their caches stay
// under max_memory bytes; beyond either, the least recently used idle ones leave memory
// (their logs are on disk) and come back, restored bitwise, on their next turn.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/generator.h"
#include "nsa/error.h"

namespace nsa::serve {

// A request the engine refuses, with the HTTP status it maps to.
class RequestError : public Error {
 public:
  RequestError(int status, const std::string& message) : Error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct Sampling {
  std::int64_t max_tokens = 16;
  double temperature = 1.0;
  int top_k = 0;
  std::uint64_t seed = 0;
  std::vector<std::string> stop;  // the reply ends before the first occurrence of any
};

struct TurnRequest {
  std::string conversation;  // "" = automatic prefix reuse
  std::vector<std::int32_t> tokens;
  Sampling sampling;
};

// A turn in flight: the scheduler fills it, the HTTP handler drains it.
class Turn {
 public:
  // Waits until text is ready or the turn is done; returns the new text ("" once done).
  std::string next_text();
  // Waits for the end; the whole reply.
  std::string wait();
  void cancel() { cancelled_ = true; }  // the client is gone: stop at the next step

  // Valid once done (wait() returned or next_text() gave "" with done()).
  bool done() const;
  std::string finish_reason() const;  // "stop", "length", "cancelled", "error"
  int error_status() const;           // 0, or the HTTP status of the error
  std::string error() const;
  std::string conversation() const;   // the id the turn continued or started
  std::int64_t prompt_tokens() const;   // tokens of the request
  std::int64_t reused_tokens() const;   // of them, found in the cache (not prefilled)
  std::int64_t completion_tokens() const;

 private:
  friend class Engine;
  friend struct EngineState;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string ready_, all_;
  bool done_ = false;
  std::string finish_ = "", error_ = "", conversation_ = "";
  int status_ = 0;
  std::int64_t prompt_ = 0, reused_ = 0, completion_ = 0;
  std::atomic<bool> cancelled_{false};
};

struct EngineOptions {
  std::string checkpoint;
  std::string state_dir;            // "" = no persistence
  std::size_t max_memory = 0;       // cache bytes in memory; 0 = no limit
  int max_resident = 32;            // conversations holding a generator slot
  int max_active = 64;              // turns running or waiting; more get 429
  std::int64_t max_context = 4096;  // tokens per conversation
  int threads = 1;
};

struct ConversationInfo {
  std::string id;
  std::int64_t tokens = 0;
  bool resident = false;
  bool busy = false;
  std::string error;  // a conversation whose log is corrupted: why it is refused
  std::string text;   // its tokens as bytes (conversation(id) only)
};

// The last step of a conversation, per layer (Generator::last_step) and its position.
struct AttentionSnapshot {
  std::string id;
  std::int64_t position = 0;
  std::vector<model::LayerStep> layers;
  std::int64_t tokens_read = 0, dense_tokens = 0;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options);  // loads the checkpoint, lists state_dir
  ~Engine();                                      // stops the scheduler (turns end "cancelled")

  // Queues a turn; throws RequestError (400 bad tokens or context, 404, 409 busy, 429 full).
  std::shared_ptr<Turn> submit(TurnRequest request);

  std::vector<ConversationInfo> conversations() const;
  ConversationInfo conversation(const std::string& id) const;   // 404 if unknown
  void remove(const std::string& id);                           // 404, 409 while busy
  AttentionSnapshot attention(const std::string& id) const;     // 404
  std::string metrics_text() const;                             // Prometheus text format
  const model::ModelConfig& model_config() const;
  std::string model_name() const;
  std::int64_t max_context() const;

 private:
  std::unique_ptr<struct EngineState> s_;
};

}  // namespace nsa::serve
