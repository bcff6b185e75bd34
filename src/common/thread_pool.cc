#include "nsa/thread_pool.h"

#include <algorithm>
#include <atomic>

namespace nsa {

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {

// Spins until done() or kSpin has passed; returns done().
template <class Done>
bool spin_until(Done done, std::chrono::microseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return done();
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

}  // namespace

void ThreadPool::worker_loop(int worker) {
  std::uint64_t seen = 0;
  bool spin = false;  // after a short job only: the next one is likely to follow at once
  for (;;) {
    auto ready = [&] { return stopping_.load() || generation_.load() != seen; };
    const std::function<void(int)>* job;
    {
      if (spin) spin_until(ready, kSpin);
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, ready);
      if (stopping_) return;
      seen = generation_.load();
      job = job_;
    }
    std::exception_ptr error;
    const auto start = std::chrono::steady_clock::now();
    try {
      (*job)(worker);
    } catch (...) {
      error = std::current_exception();
    }
    spin = std::chrono::steady_clock::now() - start < kShortJob;
    if (error) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = error;
    }
    if (pending_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);  // the caller checks pending_ under the lock
      done_.notify_one();
    }
  }
}

void ThreadPool::run(const std::function<void(int)>& job) {
  if (workers_.empty()) {
    job(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &job;
    pending_ = static_cast<int>(workers_.size());
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  std::exception_ptr error;
  const auto start = std::chrono::steady_clock::now();
  try {
    job(0);
  } catch (...) {
    error = std::current_exception();
  }
  auto finished = [&] { return pending_.load() == 0; };
  if (std::chrono::steady_clock::now() - start < kShortJob) spin_until(finished, kSpin);
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, finished);
  if (!error) error = error_;
  error_ = nullptr;
  if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(
    std::int64_t n, const std::function<void(std::int64_t, std::int64_t, int)>& fn) {
  if (n <= 0) return;
  const int nth = size();
  run([&](int worker) {
    const std::int64_t begin = n * worker / nth, end = n * (worker + 1) / nth;
    if (begin < end) fn(begin, end, worker);
  });
}

void ThreadPool::parallel_tasks(std::int64_t n,
                                const std::function<void(std::int64_t, int)>& fn) {
  if (n <= 0) return;
  std::atomic<std::int64_t> next{0};
  run([&](int worker) {
    for (std::int64_t task = next++; task < n; task = next++) fn(task, worker);
  });
}

}  // namespace nsa
