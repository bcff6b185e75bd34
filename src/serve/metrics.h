// Prometheus text exposition (format 0.0.4) for the server's /metrics: histograms with fixed
// buckets, and a writer of counter / gauge / histogram families. Not thread-safe by itself:
// the server's metrics live under its lock.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nsa::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // ascending; +Inf is implicit
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<std::uint64_t>& counts() const { return counts_; }  // per bucket, not cumulative
  std::uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // bounds_.size() + 1 (the last: above every bound)
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

// Bounds a, a*f, a*f^2, ... up to and including the first >= b.
std::vector<double> geometric_bounds(double a, double b, double f);

using Labels = std::vector<std::pair<std::string, std::string>>;

// Appends families to a text body: each family's HELP and TYPE once, then its samples.
class PromWriter {
 public:
  void counter(const std::string& name, const std::string& help, double value, const Labels& labels = {});
  void gauge(const std::string& name, const std::string& help, double value, const Labels& labels = {});
  // Several samples of one family (e.g. one per label set).
  void family(const std::string& name, const std::string& type, const std::string& help);
  void sample(const std::string& name, double value, const Labels& labels = {});
  void histogram(const std::string& name, const std::string& help, const Histogram& h);
  const std::string& text() const { return out_; }

 private:
  std::string out_;
};

}  // namespace nsa::serve
