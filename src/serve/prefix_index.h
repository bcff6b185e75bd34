// PrefixIndex: which conversations hold a given prefix of tokens, found without comparing
// the request with every conversation (the engine's automatic prefix reuse; vLLM's
// automatic prefix caching keys its cache blocks the same way).
//
// A conversation's tokens are cut into blocks of kBlock tokens; block k's key is the hash
// of blocks 0..k (a chain: FNV-1a 64 over the token bytes, continued block after block),
// so equal keys mean equal prefixes of (k + 1) * kBlock tokens up to a hash collision,
// which the caller rules out by comparing the tokens of the one conversation it picks.
// A lookup hashes the request's blocks until one has no holder: O(request length), and
// the holders of the deepest key found are the conversations sharing the most whole
// blocks with it. Prefixes shorter than one block are not indexed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "common/fnv1a.h"

namespace nsa::serve {

template <class Key>
class PrefixIndex {
 public:
  static constexpr std::size_t kBlock = 16;

  // The chained keys of the whole blocks of tokens.
  static std::vector<std::uint64_t> block_keys(const std::vector<std::int32_t>& tokens) {
    std::vector<std::uint64_t> keys;
    std::uint64_t h = kFnv1a64Basis;
    for (std::size_t b = 0; b < tokens.size() / kBlock; ++b) {
      h = fnv1a64(tokens.data() + b * kBlock, kBlock * sizeof(std::int32_t), h);
      keys.push_back(h);
    }
    return keys;
  }

  // Indexes `key` as holding `tokens` (replacing what it held before).
  void update(Key key, const std::vector<std::int32_t>& tokens) {
    const std::vector<std::uint64_t> now = block_keys(tokens);
    std::vector<std::uint64_t>& had = blocks_[key];
    std::size_t same = 0;
    while (same < had.size() && same < now.size() && had[same] == now[same]) ++same;
    for (std::size_t b = same; b < had.size(); ++b) drop(had[b], key);
    for (std::size_t b = same; b < now.size(); ++b) holders_[now[b]].push_back(key);
    had = now;
    if (had.empty()) blocks_.erase(key);
  }

  void remove(Key key) {
    auto it = blocks_.find(key);
    if (it == blocks_.end()) return;
    for (std::uint64_t h : it->second) drop(h, key);
    blocks_.erase(it);
  }

  // The keys that hold the most whole blocks `tokens` starts with, deepest level first:
  // calls visit(holders, tokens_shared) for each level that has holders, from the
  // deepest down, until visit returns true. tokens_shared = blocks * kBlock.
  template <class Visit>
  void visit_longest(const std::vector<std::int32_t>& tokens, Visit visit) const {
    std::vector<const std::vector<Key>*> levels;
    std::uint64_t h = kFnv1a64Basis;
    for (std::size_t b = 0; b < tokens.size() / kBlock; ++b) {
      h = fnv1a64(tokens.data() + b * kBlock, kBlock * sizeof(std::int32_t), h);
      auto it = holders_.find(h);
      if (it == holders_.end()) break;  // no one holds this block, so no one holds the next
      levels.push_back(&it->second);
    }
    for (std::size_t k = levels.size(); k > 0; --k)
      if (visit(*levels[k - 1], k * kBlock)) return;
  }

  std::size_t size() const { return blocks_.size(); }  // keys indexed (holding >= one block)

 private:
  void drop(std::uint64_t h, Key key) {
    auto it = holders_.find(h);
    if (it == holders_.end()) return;
    std::vector<Key>& v = it->second;
    for (std::size_t i = 0; i < v.size(); ++i)
      if (v[i] == key) {
        v[i] = v.back();
        v.pop_back();
        break;
      }
    if (v.empty()) holders_.erase(it);
  }

  std::unordered_map<std::uint64_t, std::vector<Key>> holders_;  // block key -> its holders
  std::unordered_map<Key, std::vector<std::uint64_t>> blocks_;   // holder -> its block keys
};

}  // namespace nsa::serve
