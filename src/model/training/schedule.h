// The progressive-training schedule of a run (TrainOptions): what the attention operator
// looks like at step s, a pure function of (model config, options, s), so that a resumed
// run continues it exactly.
//
// Compression first (selection_delay D, selection_ramp R; nsa only): the selection gate is
//   scaled by 0 for s < D, by (s - D + 1) / (R + 1) for D <= s < D + R, and by 1 after.
// Full -> NSA (sparsify_steps A; nsa and window): top_n and window start at what covers
//   the whole training sequence (ceil(seq / l') blocks, seq tokens) and shrink
//   geometrically to the model's own over A steps:
//     x(s) = round(x_full^(1 - s/A) * x_model^(s/A)) for s < A, x_model after,
//   never below the model's value (and top_n never below n_init + n_local).
#pragma once

#include <cstdint>

#include "model/model_config.h"
#include "model/training/train_options.h"

namespace nsa::model {

AttentionSchedule schedule_at(const ModelConfig& config, const TrainOptions& options, std::int64_t step);

}  // namespace nsa::model
