#include "plot/axis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "nsa/error.h"

namespace nsa::plot {
namespace {

double transform(Scale s, double v) {
  switch (s) {
    case Scale::kLog2: return std::log2(v);
    case Scale::kLog10: return std::log10(v);
    default: return v;
  }
}

// The smallest step from {1, 2, 2.5, 5} x 10^k that splits `span` into at most `n` parts.
double nice_step(double span, int n) {
  const double raw = span / std::max(n, 1);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  return 10 * p;
}

// Digits after the point that labels of multiples of `step` need.
int decimals_for(double step) {
  int d = 0;
  while (d < 9 && std::fabs(step * std::pow(10.0, d) - std::round(step * std::pow(10.0, d))) > 1e-6 * step * std::pow(10.0, d))
    ++d;
  return d;
}

std::string pow2_label(double v) {
  char buf[32];
  const double k = v / 1024, m = v / 1048576;
  if (v >= 1048576 && m == std::floor(m)) std::snprintf(buf, sizeof buf, "%.0fM", m);
  else if (v >= 1024 && k == std::floor(k)) std::snprintf(buf, sizeof buf, "%.0fk", k);
  else if (v >= 1) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "1/%.0f", 1 / v);
  return buf;
}

std::string pow10_label(double v) {
  char buf[32];
  const int e = static_cast<int>(std::floor(std::log10(v) + 1e-9));
  if (e >= -3 && e <= 4) return format_fixed(v, std::max(0, -e));
  std::snprintf(buf, sizeof buf, "%.0fe%d", v / std::pow(10.0, e), e);
  return buf;
}

}  // namespace

bool Axis::plottable(double v) const { return std::isfinite(v) && (scale == Scale::kLinear || v > 0); }

double Axis::fraction(double v) const {
  if (!plottable(v)) return std::nan("");
  const double a = transform(scale, lo), b = transform(scale, hi);
  return b > a ? (transform(scale, v) - a) / (b - a) : 0.5;
}

std::string format_fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  std::string s = buf;
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);
  return s;
}

Axis auto_axis(Scale scale, double min, double max, int max_ticks) {
  if (scale == Scale::kLinear) {
    if (!(min <= max)) return {scale, 0, 1};
    if (min == max) {
      const double pad = min == 0 ? 1 : std::fabs(min) * 0.1;
      min -= pad, max += pad;
    }
    const double step = nice_step(max - min, max_ticks);
    return {scale, std::floor(min / step + 1e-9) * step, std::ceil(max / step - 1e-9) * step};
  }
  const double base = scale == Scale::kLog2 ? 2.0 : 10.0;
  if (!(min <= max)) return {scale, 1, base};
  if (!(min > 0)) throw Error("plot: a log axis needs positive values (got " + format_fixed(min, 6) + ")");
  double e0 = std::floor(transform(scale, min) + 1e-9), e1 = std::ceil(transform(scale, max) - 1e-9);
  if (e0 == e1) e0 -= 1, e1 += 1;
  return {scale, std::pow(base, e0), std::pow(base, e1)};
}

std::vector<Tick> axis_ticks(const Axis& a, int max_ticks) {
  std::vector<Tick> ticks;
  max_ticks = std::max(max_ticks, 2);
  if (!(a.hi > a.lo)) return ticks;
  if (a.scale == Scale::kLinear) {
    const double step = nice_step(a.hi - a.lo, max_ticks);
    const int digits = decimals_for(step);
    for (double k = std::ceil(a.lo / step - 1e-9); k * step <= a.hi + 1e-9 * step; k += 1)
      ticks.push_back({k * step, format_fixed(k * step, digits)});
    return ticks;
  }
  const bool log2 = a.scale == Scale::kLog2;
  const double base = log2 ? 2.0 : 10.0;
  const double e0 = std::ceil(transform(a.scale, a.lo) - 1e-9), e1 = std::floor(transform(a.scale, a.hi) + 1e-9);
  const int every = std::max(1, static_cast<int>(std::ceil((e1 - e0 + 1) / max_ticks)));
  for (double e = e0; e <= e1; e += every) {
    const double v = std::pow(base, e);
    ticks.push_back({v, log2 ? pow2_label(v) : pow10_label(v)});
  }
  if (!log2 && e1 - e0 <= 2) {  // few decades: 2x and 5x as well
    std::vector<Tick> dense;
    for (double e = e0 - 1; e <= e1; ++e)
      for (const double m : {1.0, 2.0, 5.0}) {
        const double v = m * std::pow(10.0, e);
        if (v >= a.lo * (1 - 1e-9) && v <= a.hi * (1 + 1e-9)) dense.push_back({v, pow10_label(v)});
      }
    if (static_cast<int>(dense.size()) <= max_ticks + 2) ticks = dense;
  }
  return ticks;
}

}  // namespace nsa::plot
