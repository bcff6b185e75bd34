// A one-line progress display on stderr: a bar with the caller's text, redrawn in place
// on a terminal; on a pipe or file, one plain line every ~5% so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace nsa::cli {

class Progress {
 public:
  // total: units of work (steps); done_at_start: units already done (a resumed run).
  Progress(std::int64_t total, std::int64_t done_at_start = 0);
  // `done` units finished; text: what to show beside the bar ("loss 2.31  12.4k tok/s").
  // Shows the elapsed time and the ETA from the rate since this Progress was made.
  void update(std::int64_t done, const std::string& text);
  void finish();  // ends the line on a terminal

  double elapsed_seconds() const;

 private:
  std::int64_t total_, start_done_;
  std::int64_t last_logged_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

std::string format_duration(double seconds);  // "1h02m", "3m12s", "45s"

}  // namespace nsa::cli
