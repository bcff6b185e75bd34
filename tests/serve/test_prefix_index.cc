// PrefixIndex (serve/prefix_index.h): holders of the deepest whole block a request shares,
// updates that follow a conversation's tokens (grown, rolled back, changed), removal, and
// many conversations sharing one long prefix.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "serve/prefix_index.h"

namespace nsa::serve {
namespace {

using Index = PrefixIndex<int>;
constexpr std::size_t B = Index::kBlock;

std::vector<std::int32_t> seq(std::size_t n, std::int32_t start = 0) {
  std::vector<std::int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// The deepest level's holders (sorted) and its shared tokens; {} and 0 if none.
std::pair<std::vector<int>, std::size_t> deepest(const Index& index, const std::vector<std::int32_t>& req) {
  std::pair<std::vector<int>, std::size_t> out{{}, 0};
  index.visit_longest(req, [&](const std::vector<int>& holders, std::size_t tokens) {
    out = {holders, tokens};
    std::sort(out.first.begin(), out.first.end());
    return true;
  });
  return out;
}

TEST(PrefixIndex, FindsTheHoldersOfTheDeepestSharedBlock) {
  Index index;
  const std::vector<std::int32_t> a = seq(5 * B + 3);
  std::vector<std::int32_t> b = seq(3 * B + 7);
  b.insert(b.end(), {900, 901, 902});  // differs from a inside block 3
  index.update(1, a);
  index.update(2, b);
  // A request extending a: a holds 5 blocks, b only 3.
  std::vector<std::int32_t> req = a;
  req.push_back(7);
  EXPECT_EQ(deepest(index, req), (std::pair<std::vector<int>, std::size_t>{{1}, 5 * B}));
  // A request equal to a's first 3 blocks and then different: both.
  std::vector<std::int32_t> third = seq(3 * B);
  third.insert(third.end(), B, -5);
  EXPECT_EQ(deepest(index, third), (std::pair<std::vector<int>, std::size_t>{{1, 2}, 3 * B}));
  // Shorter than a block, or different from the first token: nothing.
  EXPECT_EQ(deepest(index, seq(B - 1)).second, 0u);
  EXPECT_EQ(deepest(index, seq(8 * B, 1)).second, 0u);
  // Every level is offered, deepest first, until the visitor takes one.
  std::vector<std::size_t> levels;
  index.visit_longest(req, [&](const std::vector<int>&, std::size_t tokens) {
    levels.push_back(tokens);
    return false;
  });
  EXPECT_EQ(levels, (std::vector<std::size_t>{5 * B, 4 * B, 3 * B, 2 * B, B}));
}

// The same block content at another position is another key: keys chain the whole prefix.
TEST(PrefixIndex, KeysChainThePrefixNotTheBlock) {
  Index index;
  std::vector<std::int32_t> a(2 * B, 4);  // two equal blocks
  index.update(1, a);
  std::vector<std::int32_t> req(B, 9);
  req.insert(req.end(), B, 4);  // block 1 equals a's, block 0 does not
  EXPECT_EQ(deepest(index, req).second, 0u);
  EXPECT_NE(Index::block_keys(a)[0], Index::block_keys(a)[1]);
}

TEST(PrefixIndex, UpdatesFollowTheTokensAndRemoveForgets) {
  Index index;
  std::vector<std::int32_t> a = seq(4 * B);
  index.update(1, a);
  a.resize(2 * B + 5);  // rolled back (a stop string, a fork's truncation)
  index.update(1, a);
  EXPECT_EQ(deepest(index, seq(4 * B)), (std::pair<std::vector<int>, std::size_t>{{1}, 2 * B}));
  a[B] = -1;  // a different second block
  index.update(1, a);
  EXPECT_EQ(deepest(index, seq(4 * B)).second, B);
  a = seq(6 * B);  // grown again
  index.update(1, a);
  EXPECT_EQ(deepest(index, seq(6 * B)).second, 6 * B);
  index.update(2, seq(3 * B));
  EXPECT_EQ(index.size(), 2u);
  index.remove(1);
  EXPECT_EQ(deepest(index, seq(6 * B)), (std::pair<std::vector<int>, std::size_t>{{2}, 3 * B}));
  index.update(2, seq(B - 1));  // under one block: not indexed
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(deepest(index, seq(6 * B)).second, 0u);
  index.remove(7);  // unknown: nothing happens
}

// 1000 conversations forked from one 4096-token prefix, each with its own continuation:
// a request extending one of them finds exactly it, beyond the shared prefix.
TEST(PrefixIndex, ThousandConversationsSharingAPrefix) {
  Index index;
  const std::vector<std::int32_t> prefix = seq(4096);
  for (int c = 0; c < 1000; ++c) {
    std::vector<std::int32_t> t = prefix;
    t.insert(t.end(), 2 * B, 100000 + c);
    index.update(c, t);
  }
  std::vector<std::int32_t> req = prefix;
  req.insert(req.end(), 2 * B, 100000 + 417);
  req.push_back(3);
  EXPECT_EQ(deepest(index, req), (std::pair<std::vector<int>, std::size_t>{{417}, 4096 + 2 * B}));
  std::vector<std::int32_t> other = prefix;
  other.push_back(1);
  const auto shared = deepest(index, other);
  EXPECT_EQ(shared.first.size(), 1000u);
  EXPECT_EQ(shared.second, 4096u);
  for (int c = 0; c < 1000; c += 2) index.remove(c);
  EXPECT_EQ(deepest(index, other).first.size(), 500u);
}

}  // namespace
}  // namespace nsa::serve
