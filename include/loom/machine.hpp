// The machine's own limits, measured with loom's thread pool: sustained memory read bandwidth
// (a STREAM-like sum over a buffer far larger than the last-level cache) and Eigen's f32 GEMM
// rate on 2048² matrices. loom-bench and generate report speeds as fractions of these; the
// model-side numbers (weight bytes read per decoded token, parameters in matrix products) are here
// too.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "loom/kernels/thread_pool.hpp"
#include "loom/model/model.hpp"

namespace loom {

struct MachineLimits {
  double read_bytes_per_second = 0;  ///< median of several passes
  double gemm_flops_per_second = 0;  ///< median of several 2048³ products
};

namespace detail {
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace detail

/// Read bandwidth: every thread sums its share of a `bytes`-sized buffer (default 1 GiB, many
/// times any last-level cache), with 64 independent accumulators.
inline double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes = std::size_t(1) << 30, int passes = 5) {
  const std::size_t n = bytes / sizeof(float);
  std::vector<float> buf(n);
  pool.parallel_for(std::int64_t(n), [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t i = b; i < e; ++i) buf[std::size_t(i)] = float(i & 1023) * 1e-3f;  // touch pages on their thread
  }, 1 << 16);
  std::vector<double> rates;
  std::vector<double> sums(std::size_t(pool.size()));
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(std::int64_t(n), [&](std::int64_t b, std::int64_t e, int t) {
      // 64 independent accumulators (four 512-bit chains) so the adds never limit the reads.
      float acc[64] = {};
      std::int64_t i = b;
      for (; i + 64 <= e; i += 64)
        for (int k = 0; k < 64; ++k) acc[k] += buf[std::size_t(i + k)];
      for (; i < e; ++i) acc[0] += buf[std::size_t(i)];
      double s = 0;
      for (float a : acc) s += a;
      sums[std::size_t(t)] += s;
    }, 1 << 16);
    rates.push_back(double(bytes) / detail::seconds_since(t0));
  }
  volatile double sink = sums[0];
  (void)sink;
  return detail::median(rates);
}

/// f32 GEMM rate: C[2048, 2048] = A · Bᵀ, columns of C split over the pool's threads in fixed
/// blocks (the same way loom's matmul splits its work).
inline double measure_gemm_rate(ThreadPool& pool, int size = 2048, int reps = 5) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(size, size), b = M::Random(size, size), c(size, size);
  std::vector<double> rates;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(size, [&](std::int64_t c0, std::int64_t c1, int) {
      c.middleCols(c0, c1 - c0).noalias() = a * b.middleRows(c0, c1 - c0).transpose();
    }, 64);
    if (r > 0) rates.push_back(2.0 * double(size) * size * size / detail::seconds_since(t0));  // first run warms up
  }
  return detail::median(rates);
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
