#include "model/training/schedule.h"

#include <algorithm>
#include <cmath>

namespace nsa::model {
namespace {

int geometric(double from, double to, double fraction) {
  return static_cast<int>(std::llround(std::pow(from, 1 - fraction) * std::pow(to, fraction)));
}

}  // namespace

AttentionSchedule schedule_at(const ModelConfig& config, const TrainOptions& o, std::int64_t step) {
  AttentionSchedule s;
  if (config.attention == AttentionKind::full) return s;
  if (config.attention == AttentionKind::nsa && step < o.selection_delay + o.selection_ramp) {
    s.selection_gate = step < o.selection_delay
                           ? 0.0
                           : static_cast<double>(step - o.selection_delay + 1) / static_cast<double>(o.selection_ramp + 1);
  }
  if (step < o.sparsify_steps) {
    const double fraction = static_cast<double>(step) / static_cast<double>(o.sparsify_steps);
    const auto blocks = static_cast<int>((o.seq + config.nsa.sel_block - 1) / config.nsa.sel_block);
    const int top_n = config.nsa.top_n, window = config.nsa.window;
    if (config.attention == AttentionKind::nsa)
      s.top_n = std::max(top_n, geometric(std::max(blocks, top_n), top_n, fraction));
    s.window = std::max(window, geometric(std::max<double>(static_cast<double>(o.seq), window), window, fraction));
  }
  return s;
}

}  // namespace nsa::model
