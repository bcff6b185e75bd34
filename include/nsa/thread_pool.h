// ThreadPool: the threading context, passed explicitly to every CPU kernel.
//
// parallel_for splits [0, n) into `size()` contiguous ranges, range i to worker i
// (the ith/nth split): the assignment depends only on n and the thread count, so any
// kernel that writes per-task outputs is bitwise reproducible at a fixed thread count.
#pragma once

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

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

}  // namespace nsa
