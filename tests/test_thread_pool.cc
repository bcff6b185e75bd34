// ThreadPool: parallel_for hands out the static ith/nth partition of [0, n), each index
// exactly once; parallel_tasks runs every task exactly once; an exception from any worker
// (or the calling thread) comes back to the caller and the pool stays usable.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "nsa/thread_pool.h"

namespace nsa {
namespace {

TEST(ThreadPool, Size) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(ThreadPool(0).size(), hw);
  EXPECT_EQ(ThreadPool(-4).size(), hw);
}

TEST(ThreadPool, ParallelForCoversEachIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (std::int64_t n : {1, 2, 3, 7, 8, 9, 100, 1001}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n));
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<std::atomic<int>> calls_per_worker(static_cast<size_t>(threads));
      std::mutex m;
      std::vector<std::pair<std::int64_t, std::int64_t>> ranges(static_cast<size_t>(threads), {-1, -1});
      pool.parallel_for(n, [&](std::int64_t begin, std::int64_t end, int worker) {
        ASSERT_GE(worker, 0);
        ASSERT_LT(worker, threads);
        ASSERT_LT(begin, end);
        ASSERT_GE(begin, 0);
        ASSERT_LE(end, n);
        calls_per_worker[worker]++;
        {
          std::lock_guard<std::mutex> lock(m);
          ranges[worker] = {begin, end};
        }
        for (std::int64_t i = begin; i < end; ++i) hits[i]++;
      });
      for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i;
      // The static ith/nth split: worker w gets [n*w/nth, n*(w+1)/nth), called once at most.
      for (int w = 0; w < threads; ++w) {
        const std::int64_t begin = n * w / threads, end = n * (w + 1) / threads;
        if (begin < end) {
          EXPECT_EQ(calls_per_worker[w].load(), 1) << "worker " << w;
          EXPECT_EQ(ranges[w].first, begin) << "worker " << w;
          EXPECT_EQ(ranges[w].second, end) << "worker " << w;
        } else {
          EXPECT_EQ(calls_per_worker[w].load(), 0) << "worker " << w << " got an empty range";
        }
      }
    }
  }
}

TEST(ThreadPool, ParallelForOfNothingCallsNothing) {
  ThreadPool pool(3);
  std::atomic<int> calls{0};
  pool.parallel_for(0, [&](std::int64_t, std::int64_t, int) { calls++; });
  pool.parallel_for(-5, [&](std::int64_t, std::int64_t, int) { calls++; });
  pool.parallel_tasks(0, [&](std::int64_t, int) { calls++; });
  EXPECT_EQ(calls.load(), 0);
}

TEST(ThreadPool, ParallelTasksRunsEachTaskOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (std::int64_t n : {1, 2, 5, 64, 777}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n));
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_tasks(n, [&](std::int64_t task, int worker) {
        ASSERT_GE(task, 0);
        ASSERT_LT(task, n);
        ASSERT_GE(worker, 0);
        ASSERT_LT(worker, threads);
        if (task % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));  // uneven
        hits[task]++;
      });
      for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "task " << i;
    }
  }
}

TEST(ThreadPool, ManyCallsInARow) {  // wake-up / completion handshake under repetition
  ThreadPool pool(4);
  std::atomic<std::int64_t> sum{0};
  for (int round = 0; round < 2000; ++round) {
    pool.parallel_for(10, [&](std::int64_t b, std::int64_t e, int) { sum += e - b; });
    pool.parallel_tasks(3, [&](std::int64_t, int) { sum += 1; });
  }
  EXPECT_EQ(sum.load(), 2000 * 13);
}

TEST(ThreadPool, ExceptionFromAWorkerPropagates) {
  ThreadPool pool(3);
  for (int thrower = 0; thrower < 3; ++thrower) {  // 0 is the calling thread
    SCOPED_TRACE(thrower);
    try {
      pool.parallel_for(30, [&](std::int64_t, std::int64_t, int worker) {
        if (worker == thrower) throw std::runtime_error("boom from worker " + std::to_string(worker));
      });
      ADD_FAILURE() << "parallel_for swallowed the exception";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "boom from worker " + std::to_string(thrower));
    }
    // the pool is still usable, and the old error does not come back
    std::atomic<int> covered{0};
    EXPECT_NO_THROW(pool.parallel_for(30, [&](std::int64_t b, std::int64_t e, int) { covered += int(e - b); }));
    EXPECT_EQ(covered.load(), 30);
  }
}

TEST(ThreadPool, ExceptionFromATaskPropagates) {
  ThreadPool pool(2);
  std::atomic<int> ran{0};
  EXPECT_THROW(pool.parallel_tasks(100,
                                   [&](std::int64_t task, int) {
                                     ran++;
                                     if (task == 41) throw std::logic_error("task 41");
                                   }),
               std::logic_error);
  EXPECT_GE(ran.load(), 42);  // tasks up to the thrower were handed out
  std::atomic<int> after{0};
  EXPECT_NO_THROW(pool.parallel_tasks(10, [&](std::int64_t, int) { after++; }));
  EXPECT_EQ(after.load(), 10);
}

TEST(ThreadPool, SingleThreadRunsOnCaller) {
  ThreadPool pool(1);
  const auto caller = std::this_thread::get_id();
  pool.parallel_for(5, [&](std::int64_t b, std::int64_t e, int w) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 5);
    EXPECT_EQ(w, 0);
  });
}

}  // namespace
}  // namespace nsa
