// Histograms and the Prometheus text format.
#include "serve/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "nsa/error.h"

namespace nsa::serve {
namespace {

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// A label value with \, " and newline escaped.
std::string escaped(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string label_text(const Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i) s += ',';
    s += labels[i].first + "=\"" + escaped(labels[i].second) + '"';
  }
  return s + '}';
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end())) throw Error("histogram bounds must ascend");
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double value) {
  const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[i];
  ++count_;
  sum_ += value;
}

std::vector<double> geometric_bounds(double a, double b, double f) {
  if (!(a > 0) || !(f > 1)) throw Error("geometric_bounds: need a > 0 and f > 1");
  std::vector<double> out;
  for (double x = a;; x *= f) {
    out.push_back(x);
    if (x >= b) break;
  }
  return out;
}

void PromWriter::family(const std::string& name, const std::string& type, const std::string& help) {
  out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void PromWriter::sample(const std::string& name, double value, const Labels& labels) {
  out_ += name + label_text(labels) + " " + number(value) + "\n";
}

void PromWriter::counter(const std::string& name, const std::string& help, double value, const Labels& labels) {
  family(name, "counter", help);
  sample(name, value, labels);
}

void PromWriter::gauge(const std::string& name, const std::string& help, double value, const Labels& labels) {
  family(name, "gauge", help);
  sample(name, value, labels);
}

void PromWriter::histogram(const std::string& name, const std::string& help, const Histogram& h) {
  family(name, "histogram", help);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    sample(name + "_bucket", static_cast<double>(cumulative), {{"le", number(h.bounds()[i])}});
  }
  sample(name + "_bucket", static_cast<double>(h.count()), {{"le", "+Inf"}});
  sample(name + "_sum", h.sum());
  sample(name + "_count", static_cast<double>(h.count()));
}

}  // namespace nsa::serve
