// TaskMix: which task each training step draws its batch from, with what probability.
//
//   spec  "text:0.5,mqar:0.5"   parts "name:weight" separated by commas; a part without a
//                               weight ("mqar") weighs 1; the weights are normalised
//   text    next-token prediction on the corpus (loss on every token)
//   needle  the passkey task (data/needle.h; loss on the answer digits only)
//   mqar    multi-query associative recall (data/mqar.h; loss on the answers only)
// A step draws one task (a whole batch of it): spread over the rows of one batch, the few
// answer targets of a recall task would vanish in the text loss; as steps of their own
// (Adam normalises each step) they train at full strength.
#pragma once

#include <string>
#include <vector>

namespace nsa::model {

enum class Task { text, needle, mqar };
const char* task_name(Task task);
bool is_recall(Task task);  // scored on answers only: needle, mqar

class TaskMix {
 public:
  TaskMix() = default;
  // Throws nsa::Error naming the part: unknown task, a weight that is not a finite
  // number >= 0, a task given twice, an empty spec, or weights that sum to 0.
  static TaskMix parse(const std::string& spec);

  // The canonical spec: parts in the given order, weights normalised ("text:0.75,needle:0.25").
  std::string spec() const;
  // The task of a step whose uniform draw is u in [0, 1): parts in order, cumulative weights.
  Task draw(double u) const;
  // More than one task with weight > 0 (only then does a step consume a draw).
  bool mixed() const;
  double weight(Task task) const;  // 0 when absent

 private:
  struct Part {
    Task task;
    double weight;
  };
  std::vector<Part> parts_;
};

}  // namespace nsa::model
