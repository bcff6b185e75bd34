#include "progress.h"

#include <unistd.h>

#include <cstdio>

namespace nsa::cli {

Progress::Progress(std::int64_t total, std::int64_t done_at_start)
    : total_(total), start_done_(done_at_start), tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()) {}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  char buffer[32];
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60)
    std::snprintf(buffer, sizeof buffer, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buffer, sizeof buffer, "%lds", s);
  return buffer;
}

void Progress::update(std::int64_t done, const std::string& text) {
  const double elapsed = elapsed_seconds();
  const std::int64_t since = done - start_done_;
  const double eta = since > 0 ? elapsed / static_cast<double>(since) * static_cast<double>(total_ - done) : -1;
  const int width = 24;
  const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
  if (tty_) {
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld  %s  %s elapsed, ETA %s   ", bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), text.c_str(), format_duration(elapsed).c_str(),
                 format_duration(eta).c_str());
    std::fflush(stderr);
    return;
  }
  const std::int64_t every = total_ >= 20 ? total_ / 20 : 1;
  if (done == total_ || last_logged_ < 0 || done - last_logged_ >= every) {
    last_logged_ = done;
    std::fprintf(stderr, "%lld/%lld  %s  %s elapsed, ETA %s\n", static_cast<long long>(done),
                 static_cast<long long>(total_), text.c_str(), format_duration(elapsed).c_str(),
                 format_duration(eta).c_str());
  }
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace nsa::cli
