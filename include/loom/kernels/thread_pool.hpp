// A persistent pool of worker threads. `parallel_for` splits [0, n) into one contiguous chunk
// per thread and runs them concurrently on the caller and the workers; no thread is created per
// call. An exception thrown by any chunk is rethrown on the calling thread.
//
// Results never depend on the thread count as long as each index's work is independent of how
// the range is split (true for every use in loom: rows of a matmul, heads of attention).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <mutex>
#include <thread>
#include <vector>

#include "loom/error.hpp"

namespace loom {

class ThreadPool {
 public:
  /// A pool running work on `n_threads` threads in total (the caller counts as one).
  explicit ThreadPool(int n_threads = 1) {
    if (n_threads < 1 || n_threads > 1024)
      fail(ErrorKind::invalid_argument, "threads", "thread count must be in [1, 1024], got ", n_threads);
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }
  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  /// Calls fn(begin, end, thread_index) on disjoint chunks covering [0, n). Chunks are multiples
  /// of `grain` (except the last) so that callers can keep cache-friendly blocks together.
  /// Allocates nothing: the callable is passed to the workers by reference.
  template <typename F>
  void parallel_for(std::int64_t n, F&& fn, std::int64_t grain = 1) {
    if (n <= 0) return;
    grain = std::max<std::int64_t>(grain, 1);
    const std::int64_t blocks = (n + grain - 1) / grain;
    const int used = int(std::min<std::int64_t>(size(), blocks));
    if (used == 1) {
      fn(std::int64_t(0), n, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    Job job{n, grain, blocks, used, const_cast<void*>(static_cast<const void*>(&fn)),
            [](void* f, std::int64_t b, std::int64_t e, int t) { (*static_cast<Fn*>(f))(b, e, t); }};
    {
      std::lock_guard lock(mutex_);
      job_ = &job;
      pending_ = used - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      job.run(0);
    } catch (...) {
      mine = std::current_exception();
    }
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Job {
    std::int64_t n, grain, blocks;
    int used;
    void* fn;
    void (*call)(void*, std::int64_t, std::int64_t, int);
    void run(int t) const {
      const std::int64_t b0 = blocks * t / used, b1 = blocks * (t + 1) / used;
      const std::int64_t b = std::min(n, b0 * grain), e = std::min(n, b1 * grain);
      if (b < e) call(fn, b, e, t);
    }
  };

  void worker_loop(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      const Job* job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (!job_ || index >= job_->used) continue;
        job = job_;
      }
      std::exception_ptr err;
      try {
        job->run(index);
      } catch (...) {
        err = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        if (err && !error_) error_ = err;
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const Job* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace loom
