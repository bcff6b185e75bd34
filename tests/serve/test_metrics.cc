// The Prometheus text of histograms, counters and labelled gauges.
#include <gtest/gtest.h>

#include "nsa/error.h"
#include "serve/metrics.h"

namespace nsa::serve {
namespace {

TEST(Metrics, HistogramTextIsCumulative) {
  Histogram h({1, 2, 4});
  for (double v : {0.5, 1.0, 1.5, 3.0, 100.0}) h.observe(v);
  PromWriter w;
  w.histogram("x_seconds", "a test", h);
  EXPECT_EQ(w.text(),
            "# HELP x_seconds a test\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{le=\"1\"} 2\nx_seconds_bucket{le=\"2\"} 3\nx_seconds_bucket{le=\"4\"} 4\n"
            "x_seconds_bucket{le=\"+Inf\"} 5\nx_seconds_sum 106\nx_seconds_count 5\n");
}

TEST(Metrics, LabelsAreEscaped) {
  PromWriter w;
  w.gauge("g", "help", 0.25, {{"layer", "0"}, {"name", "a\"b\\c\nd"}});
  EXPECT_EQ(w.text(), "# HELP g help\n# TYPE g gauge\ng{layer=\"0\",name=\"a\\\"b\\\\c\\nd\"} 0.25\n");
}

TEST(Metrics, GeometricBounds) {
  EXPECT_EQ(geometric_bounds(1, 8, 2), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(geometric_bounds(1, 9, 2), (std::vector<double>{1, 2, 4, 8, 16}));
  EXPECT_THROW(geometric_bounds(0, 8, 2), Error);
}

}  // namespace
}  // namespace nsa::serve
