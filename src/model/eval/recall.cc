#include "model/eval/recall.h"

#include <algorithm>

namespace nsa::model {
namespace {

std::int32_t argmax_at(const Model<float>& model, index_t row) {
  const int V = model.config().vocab;
  const float* logits = model.logits() + row * V;
  return static_cast<std::int32_t>(std::max_element(logits, logits + V) - logits);
}

}  // namespace

double argmax_accuracy(const Model<float>& model, const std::int32_t* targets) {
  const index_t N = model.batch() * model.seq();
  std::int64_t right = 0, scored = 0;
  for (index_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    right += argmax_at(model, n) == targets[n] ? 1 : 0;
    ++scored;
  }
  return scored ? static_cast<double>(right) / static_cast<double>(scored) : 0.0;
}

NeedleScore needle_score(Model<float>& m, const std::vector<std::int32_t>& filler, index_t context, double depth,
                         std::int64_t trials, Rng& rng, ThreadPool& pool) {
  std::vector<NeedleExample> examples;
  std::vector<std::int32_t> tokens, targets;
  for (std::int64_t i = 0; i < trials; ++i) {
    NeedleOptions options;
    options.context = context;
    options.depth = depth;
    examples.push_back(make_needle(filler, options, rng));
    tokens.insert(tokens.end(), examples.back().tokens.begin(), examples.back().tokens.end());
    targets.insert(targets.end(), examples.back().targets.begin(), examples.back().targets.end());
  }
  m.forward(tokens.data(), targets.data(), trials, context, pool);
  NeedleScore score;
  for (std::int64_t i = 0; i < trials; ++i) {
    bool all = true;
    for (index_t t = 0; t < context; ++t) {
      const std::int32_t want = examples[static_cast<std::size_t>(i)].targets[static_cast<std::size_t>(t)];
      if (want < 0) continue;
      const bool right = argmax_at(m, i * context + t) == want;
      all = all && right;
      score.digits_right += right ? 1 : 0;
      ++score.digits;
    }
    score.exact += all ? 1 : 0;
  }
  return score;
}

void MqarScore::add(const MqarScore& o) {
  right += o.right;
  answers += o.answers;
  right_within += o.right_within;
  within += o.within;
  right_beyond += o.right_beyond;
  beyond += o.beyond;
}

MqarScore mqar_score(Model<float>& m, const std::vector<std::int32_t>* text, const MqarOptions& options,
                     std::int64_t trials, index_t window, Rng& rng, ThreadPool& pool, std::int64_t batch) {
  MqarScore score;
  const index_t C = options.context;
  for (std::int64_t first = 0; first < trials; first += batch) {
    const std::int64_t rows = std::min(batch, trials - first);
    std::vector<MqarExample> examples;
    std::vector<std::int32_t> tokens, targets;
    for (std::int64_t r = 0; r < rows; ++r) {
      examples.push_back(make_mqar(text, options, rng));
      tokens.insert(tokens.end(), examples.back().tokens.begin(), examples.back().tokens.end());
      targets.insert(targets.end(), examples.back().targets.begin(), examples.back().targets.end());
    }
    m.forward(tokens.data(), targets.data(), rows, C, pool);
    for (std::int64_t r = 0; r < rows; ++r)
      for (const MqarAnswer& a : examples[static_cast<std::size_t>(r)].answers) {
        const int right = argmax_at(m, r * C + a.position) == a.value ? 1 : 0;
        score.right += right;
        ++score.answers;
        if (a.distance < window) {
          score.right_within += right;
          ++score.within;
        } else {
          score.right_beyond += right;
          ++score.beyond;
        }
      }
  }
  return score;
}

}  // namespace nsa::model
