#include "model/data/needle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "nsa/error.h"

namespace nsa::model {
namespace {

constexpr const char* kNeedleHead = " The passkey is ";
constexpr const char* kNeedleTail = ". ";
constexpr const char* kQuestion = " What is the passkey? The passkey is ";
constexpr const char* kQuestionTail = ".";
constexpr index_t kLineSearch = 256;   // how far the haystack start may move to a line start
constexpr index_t kWordSearch = 8;     // how far the needle may move to a word end

bool is_space(std::int32_t token) { return token == ' ' || token == '\n'; }

void append(std::vector<std::int32_t>& out, const std::string& text) {
  for (const char c : text) out.push_back(static_cast<unsigned char>(c));
}

}  // namespace

NeedleExample make_needle(const std::vector<std::int32_t>& filler, const NeedleOptions& options, Rng& rng) {
  const int d = options.digits;
  if (d < 1 || d > 18) throw Error("make_needle: digits = " + std::to_string(d) + " is not in 1..18");
  if (!(options.depth >= 0.0 && options.depth <= 1.0))
    throw Error("make_needle: depth = " + std::to_string(options.depth) + " is not in [0, 1]");
  const index_t fixed = static_cast<index_t>(std::string(kNeedleHead).size() + std::string(kNeedleTail).size() +
                                             std::string(kQuestion).size() + std::string(kQuestionTail).size()) +
                        2 * d;
  if (options.context < fixed)
    throw Error("make_needle: context = " + std::to_string(options.context) + " is too short for the needle and " +
                "the question of a " + std::to_string(d) + "-digit passkey (" + std::to_string(fixed) + " tokens)");
  const index_t hay = options.context - fixed;
  if (static_cast<index_t>(filler.size()) < hay)
    throw Error("make_needle: the filler has " + std::to_string(filler.size()) + " tokens, fewer than the " +
                std::to_string(hay) + " of the haystack");

  // The passkey: exactly d digits.
  std::uint64_t low = 1;
  for (int i = 1; i < d; ++i) low *= 10;
  const std::string key = std::to_string(low + rng.uniform_int(9 * low));

  // The haystack: filler[start, start + hay), starting at a line start when one is near.
  const index_t last_start = static_cast<index_t>(filler.size()) - hay;
  index_t start = static_cast<index_t>(rng.uniform_int(static_cast<std::uint64_t>(last_start) + 1));
  const auto line_start = [&](index_t s) { return s == 0 || filler[static_cast<std::size_t>(s - 1)] == '\n'; };
  if (!line_start(start)) {
    index_t moved = -1;
    for (index_t s = start + 1; s <= std::min(last_start, start + kLineSearch) && moved < 0; ++s)
      if (line_start(s)) moved = s;
    for (index_t s = start - 1; s >= std::max<index_t>(0, start - kLineSearch) && moved < 0; --s)
      if (line_start(s)) moved = s;
    if (moved >= 0) start = moved;
  }
  const auto hay_at = [&](index_t i) { return filler[static_cast<std::size_t>(start + i)]; };

  // The needle's position: depth * hay, moved to the nearest word end within kWordSearch.
  const index_t target = std::llround(options.depth * static_cast<double>(hay));
  index_t p = target;
  for (index_t dist = 0; dist <= kWordSearch; ++dist) {
    bool found = false;
    for (const index_t c : {target - dist, target + dist}) {
      if (c < 0 || c > hay) continue;
      if (c == 0 || c == hay || is_space(hay_at(c))) {
        p = c;
        found = true;
        break;
      }
    }
    if (found) break;
  }

  NeedleExample ex;
  ex.tokens.reserve(static_cast<std::size_t>(options.context));
  for (index_t i = 0; i < p; ++i) ex.tokens.push_back(hay_at(i));
  ex.needle_position = p;
  append(ex.tokens, kNeedleHead + key + kNeedleTail);
  for (index_t i = p; i < hay; ++i) ex.tokens.push_back(hay_at(i));
  append(ex.tokens, kQuestion + key + kQuestionTail);

  const index_t c = options.context;
  ex.answer = encode_bytes(key);
  ex.answer_start = c - 2 - d;
  ex.targets.assign(static_cast<std::size_t>(c), -1);
  for (index_t t = ex.answer_start; t < c - 2; ++t)
    ex.targets[static_cast<std::size_t>(t)] = ex.tokens[static_cast<std::size_t>(t + 1)];
  return ex;
}

Batch needle_batch(const std::vector<std::int32_t>& filler, index_t batch, index_t seq, Rng& rng) {
  if (batch < 1) throw Error("needle_batch: batch = " + std::to_string(batch) + " must be >= 1");
  Batch out;
  out.batch = batch;
  out.seq = seq;
  out.tokens.reserve(static_cast<std::size_t>(batch * seq));
  out.targets.reserve(out.tokens.capacity());
  for (index_t b = 0; b < batch; ++b) {
    NeedleOptions options;
    options.context = seq;
    options.depth = rng.uniform();
    options.digits = 5;
    const NeedleExample ex = make_needle(filler, options, rng);
    out.tokens.insert(out.tokens.end(), ex.tokens.begin(), ex.tokens.end());
    for (index_t t = 0; t + 1 < seq; ++t) out.targets.push_back(ex.tokens[static_cast<std::size_t>(t + 1)]);
    out.targets.push_back(-1);
  }
  return out;
}

}  // namespace nsa::model
