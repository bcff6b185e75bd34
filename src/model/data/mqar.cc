#include "model/data/mqar.h"

#include <cmath>
#include <numeric>
#include <string>

#include "nsa/error.h"

namespace nsa::model {

MqarExample make_mqar(const std::vector<std::int32_t>* text, const MqarOptions& options, Rng& rng) {
  const int P = options.pairs;
  const index_t C = options.context;
  if (P < 1 || P > kMqarRange)
    throw Error("make_mqar: pairs = " + std::to_string(P) + " is not in 1.." + std::to_string(kMqarRange));
  if (C < 4 * static_cast<index_t>(P))
    throw Error("make_mqar: context = " + std::to_string(C) + " cannot hold " + std::to_string(P) +
                " pairs and their queries (4 * pairs = " + std::to_string(4 * P) + " tokens)");
  if (!(options.depth >= 0.0 && options.depth <= 1.0))
    throw Error("make_mqar: depth = " + std::to_string(options.depth) + " is not in [0, 1]");
  const index_t F = C - 4 * static_cast<index_t>(P);
  if (text && static_cast<index_t>(text->size()) < F)
    throw Error("make_mqar: the filler text has " + std::to_string(text->size()) + " tokens, fewer than the " +
                std::to_string(F) + " the example needs");

  // P distinct keys: a partial Fisher-Yates shuffle of the key range.
  std::vector<std::int32_t> keys(kMqarRange);
  std::iota(keys.begin(), keys.end(), kMqarKeyFirst);
  for (int i = 0; i < P; ++i)
    std::swap(keys[static_cast<std::size_t>(i)],
              keys[static_cast<std::size_t>(i + static_cast<int>(rng.uniform_int(kMqarRange - i)))]);
  keys.resize(static_cast<std::size_t>(P));
  std::vector<std::int32_t> values(static_cast<std::size_t>(P));
  for (auto& v : values) v = kMqarValueFirst + static_cast<std::int32_t>(rng.uniform_int(kMqarRange));
  std::vector<int> order(static_cast<std::size_t>(P));
  std::iota(order.begin(), order.end(), 0);
  for (int i = P - 1; i > 0; --i)
    std::swap(order[static_cast<std::size_t>(i)], order[rng.uniform_int(static_cast<std::uint64_t>(i) + 1)]);

  std::vector<std::int32_t> filler(static_cast<std::size_t>(F));
  if (text) {
    const auto start = static_cast<std::size_t>(rng.uniform_int(text->size() - static_cast<std::size_t>(F) + 1));
    std::copy(text->begin() + static_cast<std::ptrdiff_t>(start),
              text->begin() + static_cast<std::ptrdiff_t>(start) + F, filler.begin());
  } else {
    for (auto& t : filler) t = 32 + static_cast<std::int32_t>(rng.uniform_int(95));
  }

  const index_t p = std::llround(options.depth * static_cast<double>(F));
  MqarExample ex;
  ex.tokens.reserve(static_cast<std::size_t>(C));
  ex.tokens.insert(ex.tokens.end(), filler.begin(), filler.begin() + p);
  const index_t pairs_at = p;
  for (int i = 0; i < P; ++i) {
    ex.tokens.push_back(keys[static_cast<std::size_t>(i)]);
    ex.tokens.push_back(values[static_cast<std::size_t>(i)]);
  }
  ex.tokens.insert(ex.tokens.end(), filler.begin() + p, filler.end());
  ex.targets.assign(static_cast<std::size_t>(C), -1);
  for (int i = 0; i < P; ++i) {
    const int pair = order[static_cast<std::size_t>(i)];
    MqarAnswer a;
    a.position = static_cast<index_t>(ex.tokens.size());
    a.value = values[static_cast<std::size_t>(pair)];
    a.distance = a.position - (pairs_at + 2 * pair + 1);
    ex.tokens.push_back(keys[static_cast<std::size_t>(pair)]);
    ex.tokens.push_back(a.value);
    ex.targets[static_cast<std::size_t>(a.position)] = a.value;
    ex.answers.push_back(a);
  }
  return ex;
}

}  // namespace nsa::model
