// A persistent pool of worker threads. `parallel_for` splits [0, n) into one contiguous range
// per thread and runs them concurrently on the caller and the workers; no thread is created per
// call. An exception thrown by any chunk is rethrown on the calling thread.
//
// Decoding calls parallel_for a few hundred times per token, so hand-off latency matters: idle
// workers spin briefly on an atomic counter before they sleep on a condition variable, and the
// caller spins while waiting for the last chunk.
//
// Each thread works through its range front to back in pieces of three quarters of what it has
// left (long pieces first, so kernels that read a piece as a few long streams keep doing so),
// and a thread that runs out takes the back half of the largest range left to another thread.
// On a shared machine a thread is often descheduled or slowed for tens of microseconds to
// milliseconds; with fixed ranges the other thread waited for it at the end of every call.
// Measured on this project's machine (tinyllama-1.1b shape, 2 threads, tg16 @ d512, fixed
// ranges): the time one thread waited for the other summed to 2-6 % of decoding in quiet
// minutes and 12-36 % in busy ones (per call: median 1.4 us, 99th percentile 25-45 us, at most
// milliseconds). Tokens alternating between fixed ranges and these pieces in one run, steal /
// fixed t/s: q8_0 1.05-1.07, q4_0 0.99-1.25 (busy minutes gain most), bf16 0.99-1.11, f16, q4_k
// and q6_k 0.97-1.05; first pieces of half instead of three quarters measured 1-2 % slower for
// the quantized types.
//
// Results never depend on the thread count or on which thread runs a piece as long as each
// index's work is independent of how the range is split (true for every use in loom: rows of a
// matmul, heads of attention, fixed slabs).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "loom/error.hpp"

namespace loom::kernels {
namespace detail {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}
}  // namespace detail

class ThreadPool {
 public:
  /// A pool running work on `n_threads` threads in total (the caller counts as one).
  explicit ThreadPool(int n_threads = 1) {
    if (n_threads < 1 || n_threads > 1024)
      fail(ErrorKind::invalid_argument, "threads", "thread count must be in [1, 1024], got ", n_threads);
    ranges_ = std::vector<Range>(std::size_t(n_threads));
    try {
      for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    } catch (const std::exception& e) {  // e.g. no memory for more thread stacks (ulimit -v)
      stop_workers();
      fail(ErrorKind::capacity, "threads", "cannot start ", n_threads, " threads (", workers_.size() + 1,
           " started): ", e.what());
    }
  }
  ~ThreadPool() { stop_workers(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  /// Calls fn(begin, end, thread_index) on disjoint chunks covering [0, n), each chunk on one
  /// thread, a thread possibly called several times (fn must not assume one chunk per thread).
  /// Chunks are multiples of `grain` (except the one at n) so that callers can keep
  /// cache-friendly blocks together. Allocates nothing: the callable is passed to the workers by
  /// reference. Not reentrant: one parallel_for at a time per pool.
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
            [](void* f, std::int64_t b, std::int64_t e, int t) { (*static_cast<Fn*>(f))(b, e, t); },
            blocks <= std::int64_t(max_blocks) ? ranges_.data() : nullptr};  // (ranges are packed in 32 bits)
    if (job.ranges)
      for (int t = 0; t < used; ++t)
        job.ranges[t].left.store(pack(std::uint32_t(blocks * t / used), std::uint32_t(blocks * (t + 1) / used)),
                                 std::memory_order_relaxed);
    error_ = nullptr;
    job_ = &job;
    pending_.store(used - 1, std::memory_order_relaxed);
    {
      // Publish generation and participant count in one atomic word (so a late worker can never
      // pair one call's generation with another call's count). Under the mutex, to pair with the
      // sleepers' predicate check.
      std::lock_guard lock(mutex_);
      const std::uint64_t generation = (state_.load(std::memory_order_relaxed) >> 16) + 1;
      state_.store(generation << 16 | std::uint64_t(used), std::memory_order_release);
    }
    wake_.notify_all();
    std::exception_ptr mine;
    try {
      job.run(0);
    } catch (...) {
      mine = std::current_exception();
    }
    // Wait for the other chunks: spin briefly, then yield so that an oversubscribed machine can
    // run the worker we are waiting for.
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < 4000)
        detail::cpu_relax();
      else
        std::this_thread::yield();
    }
    job_ = nullptr;
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  /// Stops and joins the started workers.
  void stop_workers() {
    {
      std::lock_guard lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }
  static constexpr std::uint32_t max_blocks = 0x7fffffff;

  /// The blocks [first, end) a thread has not started yet, packed first | end << 32 so that the
  /// owner (taking from the front) and a thief (taking from the back) change it with one CAS.
  struct alignas(64) Range {
    std::atomic<std::uint64_t> left{0};
  };
  static std::uint64_t pack(std::uint32_t first, std::uint32_t end) { return std::uint64_t(end) << 32 | first; }
  static std::uint32_t first_of(std::uint64_t r) { return std::uint32_t(r); }
  static std::uint32_t end_of(std::uint64_t r) { return std::uint32_t(r >> 32); }

  struct Job {
    std::int64_t n, grain, blocks;
    int used;
    void* fn;
    void (*call)(void*, std::int64_t, std::int64_t, int);
    Range* ranges;  // one per participant; null: fixed ranges (too many blocks to pack)

    void run_blocks(std::int64_t b0, std::int64_t b1, int t) const {
      const std::int64_t b = std::min(n, b0 * grain), e = std::min(n, b1 * grain);
      if (b < e) call(fn, b, e, t);
    }
    /// Takes the front three quarters (rounded up) of thread t's blocks left: false when none are.
    bool take_front(int t, std::uint32_t& b, std::uint32_t& e) const {
      std::uint64_t r = ranges[t].left.load(std::memory_order_acquire);
      for (;;) {
        const std::uint32_t first = first_of(r), end = end_of(r);
        if (first >= end) return false;
        const auto take = std::uint32_t((std::uint64_t(end - first) * 3 + 3) / 4);
        if (ranges[t].left.compare_exchange_weak(r, pack(first + take, end), std::memory_order_acq_rel)) {
          b = first, e = first + take;
          return true;
        }
      }
    }
    /// Moves the back half (rounded up) of the largest range left to another thread into thread
    /// t's own: false when every range is empty.
    bool steal(int t) const {
      for (;;) {
        int victim = -1;
        std::uint32_t most = 0;
        std::uint64_t seen = 0;
        for (int v = 0; v < used; ++v) {
          const std::uint64_t r = ranges[v].left.load(std::memory_order_acquire);
          if (v != t && end_of(r) > first_of(r) && end_of(r) - first_of(r) > most)
            victim = v, most = end_of(r) - first_of(r), seen = r;
        }
        if (victim < 0) return false;
        const std::uint32_t first = first_of(seen), end = end_of(seen), take = (end - first + 1) / 2;
        if (ranges[victim].left.compare_exchange_strong(seen, pack(first, end - take), std::memory_order_acq_rel)) {
          ranges[t].left.store(pack(end - take, end), std::memory_order_release);
          return true;
        }
      }
    }
    void run(int t) const {
      if (!ranges) return run_blocks(blocks * t / used, blocks * (t + 1) / used, t);
      std::uint32_t b, e;
      do {
        while (take_front(t, b, e)) run_blocks(b, e, t);
      } while (steal(t));
    }
  };

  void worker_loop(int index) {
    std::uint64_t seen = 0;
    for (;;) {
      // Spin a little (a new job usually follows within microseconds while decoding), then sleep.
      std::uint64_t s = state_.load(std::memory_order_acquire);
      for (int spin = 0; s == seen && spin < 6000 && !stop_.load(std::memory_order_relaxed); ++spin) {
        if (spin < 4000)
          detail::cpu_relax();
        else
          std::this_thread::yield();
        s = state_.load(std::memory_order_acquire);
      }
      if (s == seen) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] {
          return stop_.load(std::memory_order_relaxed) || state_.load(std::memory_order_relaxed) != seen;
        });
        s = state_.load(std::memory_order_acquire);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = s;
      // Only participants touch the job; the caller waits for each of them before returning.
      if (index >= int(s & 0xffff)) continue;
      try {
        job_->run(index);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const Job* job_ = nullptr;  // written by the caller before the state is published
  std::vector<Range> ranges_;
  std::atomic<std::uint64_t> state_{0};  // generation << 16 | number of participating threads
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

}  // namespace loom::kernels
