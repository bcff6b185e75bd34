// Scoring a model on the recall tasks (data/needle.h, data/mqar.h): teacher-forced argmax
// accuracy on the answers, for `nsa eval --task`, the trainer's tests and the experiment.
#pragma once

#include <cstdint>
#include <vector>

#include "model/data/mqar.h"
#include "model/data/needle.h"
#include "model/model.h"

namespace nsa {
class ThreadPool;
}

namespace nsa::model {

// Of the last forward of `model`: the share of the targets >= 0 (one per row of the
// forward's batch x seq) whose token is the argmax of its logits (0 when none is scored).
double argmax_accuracy(const Model<float>& model, const std::int32_t* targets);

struct NeedleScore {
  std::int64_t exact = 0;         // examples with every digit right
  std::int64_t digits_right = 0;  // digits right, over all examples
  std::int64_t digits = 0;
};

// `trials` passkey examples at (context, depth), run as one batch: how many have every
// digit of the answer as the model's argmax (digit i predicted after digits < i), and how
// many digits are right.
NeedleScore needle_score(Model<float>& model, const std::vector<std::int32_t>& filler, index_t context,
                         double depth, std::int64_t trials, Rng& rng, ThreadPool& pool);

struct MqarScore {
  std::int64_t right = 0, answers = 0;                // all answers
  std::int64_t right_within = 0, within = 0;          // answers with distance < window
  std::int64_t right_beyond = 0, beyond = 0;          // answers with distance >= window
  double accuracy() const { return answers ? static_cast<double>(right) / static_cast<double>(answers) : 0; }
  double accuracy_within() const { return within ? static_cast<double>(right_within) / static_cast<double>(within) : 0; }
  double accuracy_beyond() const { return beyond ? static_cast<double>(right_beyond) / static_cast<double>(beyond) : 0; }
  void add(const MqarScore& other);
};

// `trials` MQAR examples of `options` (filler from `text`, or random bytes when null), in
// batches of at most `batch` rows: the answers whose value is the argmax, split by whether
// the answer lies within a sliding window of `window` tokens (distance < window).
MqarScore mqar_score(Model<float>& model, const std::vector<std::int32_t>* text, const MqarOptions& options,
                     std::int64_t trials, index_t window, Rng& rng, ThreadPool& pool, std::int64_t batch = 16);

}  // namespace nsa::model
