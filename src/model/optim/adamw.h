// The optimizer: AdamW (decoupled weight decay), a warm-up + cosine learning-rate
// schedule, and clipping by the global gradient norm. All on flat fp32 buffers.
#pragma once

#include <cstdint>
#include <vector>

namespace nsa::model {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// One update of every parameter: t is the 1-based step (bias correction), lr this step's
// learning rate. decay[i] says whether parameter i gets weight decay (may be null: all).
//   m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
//   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)  +  lr wd p   (wd where decay[i])
// computed in double per element, stored in fp32. Throws nsa::Error when t < 1.
void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n,
                std::int64_t t, double lr, const AdamWOptions& options,
                const std::uint8_t* decay);

// Linear warm-up over `warmup` steps to max_lr, then cosine decay to min_lr at `total`.
// step is 0-based; steps >= total give min_lr:
//   step >= total         min_lr
//   step < warmup         max_lr (step + 1) / warmup      (the last warm-up step is max_lr)
//   otherwise             min_lr + (max_lr - min_lr) (1 + cos(pi (step - warmup) / (total - warmup))) / 2
// warmup <= 0 means no warm-up. Throws nsa::Error when step < 0.
double learning_rate(std::int64_t step, std::int64_t warmup, std::int64_t total, double max_lr,
                     double min_lr);

// Scales grads so that their global L2 norm is at most max_norm (no-op when max_norm <= 0
// or the norm is smaller; the sum of squares is accumulated in double); returns the norm
// before clipping. A non-finite norm is
// returned as is and the gradients are left untouched (the trainer stops on it).
double clip_grad_norm(float* grads, std::size_t n, double max_norm);

}  // namespace nsa::model
