// ThreadPool: the threading context, passed explicitly to every CPU kernel.
//
// parallel_for splits [0, n) into `size()` contiguous ranges, range i to worker i
// (the ith/nth split): the assignment depends only on n and the thread count, so any
// kernel that writes per-task outputs is bitwise reproducible at a fixed thread count.
//
// Hand-off: a worker that has finished a short job (under kShortJob) spins for a while
// (kSpin) watching for the next one before it sleeps on a condition variable, and so does
// the caller waiting for the workers. Back-to-back short jobs (a decode step is five) then
// start within microseconds instead of a futex wake-up each; after long jobs (a forward
// pass's phases), and in an idle pool, threads sleep (spinning beside long jobs measured
// ~5% slower forward passes on 2 cores).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nsa {

class ThreadPool {
 public:
  // threads <= 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // fn(begin, end, worker) for a static partition of [0, n). The calling thread is worker 0.
  // An exception thrown by any worker is rethrown here after all workers finish.
  void parallel_for(std::int64_t n,
                    const std::function<void(std::int64_t begin, std::int64_t end, int worker)>& fn);

  // fn(task, worker) for every task in [0, n), handed out one at a time from a shared
  // counter: balances uneven tasks. Which worker runs a task varies; results must not
  // depend on it (each task writes only its own outputs).
  void parallel_tasks(std::int64_t n, const std::function<void(std::int64_t task, int worker)>& fn);

 private:
  void worker_loop(int worker);
  void run(const std::function<void(int worker)>& job);

  static constexpr std::chrono::microseconds kSpin{200}, kShortJob{1000};

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;  // written under mutex_ before generation_
  std::atomic<std::uint64_t> generation_{0};        // one more per job
  std::atomic<int> pending_{0};                     // workers still running the job
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
};

}  // namespace nsa
