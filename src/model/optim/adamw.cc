#include "model/optim/adamw.h"

#include <cmath>
#include <numbers>
#include <string>

#include "nsa/error.h"

namespace nsa::model {

void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n, std::int64_t t, double lr,
                const AdamWOptions& options, const std::uint8_t* decay) {
  if (t < 1) throw Error("adamw_step: step t = " + std::to_string(t) + " must be >= 1 (1-based)");
  const double b1 = options.beta1, b2 = options.beta2;
  const double correction1 = 1.0 - std::pow(b1, static_cast<double>(t));
  const double correction2 = 1.0 - std::pow(b2, static_cast<double>(t));
  const double shrink = lr * options.weight_decay;
  for (std::size_t i = 0; i < n; ++i) {
    const double g = grads[i];
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    double p = params[i];
    const double step = lr * (mi / correction1) / (std::sqrt(vi / correction2) + options.eps);
    if (decay == nullptr || decay[i]) p -= shrink * p;
    params[i] = static_cast<float>(p - step);
  }
}

double learning_rate(std::int64_t step, std::int64_t warmup, std::int64_t total, double max_lr, double min_lr) {
  if (step < 0) throw Error("learning_rate: step = " + std::to_string(step) + " must be >= 0");
  if (step >= total) return min_lr;
  if (step < warmup) return max_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const std::int64_t start = warmup > 0 ? warmup : 0;
  const double progress = static_cast<double>(step - start) / static_cast<double>(total - start);
  return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

double clip_grad_norm(float* grads, std::size_t n, double max_norm) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(grads[i]) * grads[i];
  const double norm = std::sqrt(sum);
  if (!std::isfinite(norm) || max_norm <= 0.0 || norm <= max_norm) return norm;
  const double scale = max_norm / norm;
  for (std::size_t i = 0; i < n; ++i) grads[i] = static_cast<float>(grads[i] * scale);
  return norm;
}

}  // namespace nsa::model
