// The machine's own limits, measured with loom's thread pool: sustained memory read bandwidth
// (a STREAM-like sum over a buffer far larger than the last-level cache, or over the very memory
// a model's weights occupy) and Eigen's f32 GEMM rate on 2048² matrices. loom-bench and generate report speeds as fractions of these; the
// model-side numbers (weight bytes read per decoded token, parameters in matrix products) are here
// too.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "loom/huge_pages.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/model/model.hpp"

namespace loom {

struct MachineLimits {
  double read_bytes_per_second = 0;  ///< best of several passes (as STREAM reports)
  double gemm_flops_per_second = 0;  ///< best of several 2048³ products
};

/// A region of memory a bandwidth probe reads.
struct ByteRange {
  const std::byte* data = nullptr;
  std::size_t size = 0;
};

namespace detail {
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// Sums [p, p + n) as 64-bit words with 32 independent accumulators (four 512-bit vectors once
/// vectorized) so that the adds never limit the reads; the result only keeps the loads alive.
inline std::uint64_t sum_words(const std::byte* p, std::size_t n) {
  std::uint64_t acc[32] = {};
  std::size_t i = 0;
  for (; i + sizeof acc <= n; i += sizeof acc) {
    std::uint64_t w[32];
    std::memcpy(w, p + i, sizeof w);
    for (int k = 0; k < 32; ++k) acc[k] += w[k];
  }
  std::uint64_t s = 0;
  for (; i < n; ++i) s += std::uint64_t(p[i]);
  for (std::uint64_t a : acc) s += a;
  return s;
}
}  // namespace detail

/// Read rate over `ranges` (bytes/s, best of `passes` passes), each range split over the pool's
/// threads in contiguous chunks, the way matmul splits a weight matrix by output rows. Given a
/// model's weights (weight_ranges below) this is the bound for decoding from that very memory,
/// whatever its pages and placement.
inline double measure_read_bandwidth(ThreadPool& pool, std::span<const ByteRange> ranges, int passes = 3) {
  constexpr std::size_t chunk = 256;  // bytes per parallel_for index
  double bytes = 0;
  for (const ByteRange& r : ranges) bytes += double(r.size);
  std::vector<std::uint64_t> sums(std::size_t(pool.size()));
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const ByteRange& r : ranges)
      pool.parallel_for(std::int64_t((r.size + chunk - 1) / chunk), [&](std::int64_t b, std::int64_t e, int t) {
        const std::size_t lo = std::size_t(b) * chunk, hi = std::min(r.size, std::size_t(e) * chunk);
        sums[std::size_t(t)] += detail::sum_words(r.data + lo, hi - lo);
      }, 64);
    best = std::max(best, bytes / detail::seconds_since(t0));
  }
  volatile std::uint64_t sink = sums[0];
  (void)sink;
  return best;
}

/// A STREAM-like read probe: a buffer many times any last-level cache (default 1 GiB), backed by
/// huge pages where the OS allows (no TLB misses in the measurement) and touched by the threads
/// that read it. Kept alive so that a benchmark can re-measure between its runs: this machine's
/// bandwidth drifts with what its neighbours do.
class BandwidthProbe {
 public:
  explicit BandwidthProbe(ThreadPool& pool, std::size_t bytes = std::size_t(1) << 30) : buf_(bytes, false) {
    pool.parallel_for(std::int64_t(buf_.capacity() / 4096), [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) std::memset(buf_.data() + std::size_t(i) * 4096, int(i & 0x7f), 4096);
    }, 512);
  }
  /// Bytes/s, best of `passes` passes over the buffer.
  double measure(ThreadPool& pool, int passes = 3) const {
    const ByteRange range{buf_.data(), buf_.capacity()};
    return measure_read_bandwidth(pool, {&range, 1}, passes);
  }

 private:
  HugePageBuffer buf_;
};

/// Read bandwidth of the machine: best of `passes` passes over a fresh `bytes`-sized buffer.
inline double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes = std::size_t(1) << 30, int passes = 5) {
  return BandwidthProbe(pool, bytes).measure(pool, passes);
}

/// f32 GEMM rate (FLOP/s, best of `reps` after a warm-up): C[2048, 2048] = A · Bᵀ, columns of C
/// split over the pool's threads in fixed blocks (the same way loom's matmul splits its work).
inline double measure_gemm_rate(ThreadPool& pool, int size = 2048, int reps = 5) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(size, size), b = M::Random(size, size), c(size, size);
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(size, [&](std::int64_t c0, std::int64_t c1, int) {
      c.middleCols(c0, c1 - c0).noalias() = a * b.middleRows(c0, c1 - c0).transpose();
    }, 64);
    if (r > 0) best = std::max(best, 2.0 * double(size) * size * size / detail::seconds_since(t0));
  }
  return best;
}

inline MachineLimits measure_machine(ThreadPool& pool) {
  return {measure_read_bandwidth(pool), measure_gemm_rate(pool)};
}

/// Bytes of weights one decoded token reads: every matrix of every linear layer and the output
/// projection (the embedding lookup reads one row, which is negligible).
inline double weight_bytes_per_token(const Model& m) {
  double bytes = 0;
  auto add = [&](const Linear& l) {
    if (!l.empty()) bytes += double(l.weight.nbytes);
  };
  for (const auto& l : m.weights().layers)
    for (const Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return bytes;
}

/// The weight matrices one decoded token reads (see weight_bytes_per_token), as memory ranges.
inline std::vector<ByteRange> weight_ranges(const Model& m) {
  std::vector<ByteRange> r;
  auto add = [&](const Linear& l) {
    if (!l.empty()) r.push_back({l.weight.data, l.weight.nbytes});
  };
  for (const auto& l : m.weights().layers)
    for (const Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return r;
}

/// Parameters taking part in matrix products per token (2 FLOPs each).
inline double matmul_params(const Model& m) {
  double n = 0;
  auto add = [&](const Linear& l) {
    if (!l.empty()) n += double(l.weight.numel());
  };
  for (const auto& l : m.weights().layers)
    for (const Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return n;
}

}  // namespace loom
