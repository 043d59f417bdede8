// The machine's own limits, measured with loom's thread pool: sustained memory read bandwidth
// (a STREAM-like sum over a buffer far larger than the last-level cache, or over the very memory
// a model's weights occupy, read as 1-8 streams per thread, the best counting) and the f32 GEMM
// rate of loom's own kernel (kernels/level/gemm.inl, the one prompts use) on 2048² matrices, both
// at the kernel level in use. loom-bench and generate report speeds as fractions of these; the
// model-side numbers (weight bytes read per decoded token, parameters in matrix products) are here
// too.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "loom/huge_pages.hpp"
#include "loom/kernels/levels.hpp"
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

/// Stream counts the probes try: a core reads one stream slower than several on some machines
/// (an Intel Xeon core of this project's: 15.8 GB/s from one, 16.7 from eight), and the decode
/// kernels read several rows side by side.
inline constexpr int probe_streams[] = {1, 2, 4, 8};

/// Σ of the 64-bit words of [p, p + n) (wrapping), plus its trailing n % 8 bytes, read as
/// `streams` (one of probe_streams) parts side by side at the kernel level in use
/// (kernels/level/probe.inl).
inline std::uint64_t sum_words(const std::byte* p, std::size_t n, int streams) {
  return kernels::level_kernels().sum_words(p, n, streams);
}
}  // namespace detail

/// Read rate over `ranges` (bytes/s): the best of `passes` passes for each stream count in
/// detail::probe_streams, each range split over the pool's threads the way matmul splits a weight
/// matrix by output rows, every piece read as that many streams side by side. Given a model's
/// weights (weight_ranges below) this is the bound for decoding from that very memory, whatever
/// its pages and placement.
inline double measure_read_bandwidth(kernels::ThreadPool& pool, std::span<const ByteRange> ranges, int passes = 3) {
  constexpr std::size_t chunk = 256;  // bytes per parallel_for index
  double bytes = 0;
  for (const ByteRange& r : ranges) bytes += double(r.size);
  std::vector<std::uint64_t> sums(std::size_t(pool.size()));
  double best = 0;
  for (int p = 0; p < passes; ++p)
    for (int streams : detail::probe_streams) {
      const auto t0 = std::chrono::steady_clock::now();
      for (const ByteRange& r : ranges)
        pool.parallel_for(std::int64_t((r.size + chunk - 1) / chunk), [&](std::int64_t b, std::int64_t e, int t) {
          const std::size_t lo = std::size_t(b) * chunk, hi = std::min(r.size, std::size_t(e) * chunk);
          sums[std::size_t(t)] += detail::sum_words(r.data + lo, hi - lo, streams);
        }, 64);
      best = std::max(best, bytes / detail::seconds_since(t0));
    }
  volatile std::uint64_t sink = sums[0];
  (void)sink;
  return best;
}

/// Bytes of the last-level cache as the C library reports it (0 when it does not).
inline std::size_t last_level_cache_bytes() {
  long bytes = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
  bytes = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (bytes <= 0) bytes = ::sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  return bytes > 0 ? std::size_t(bytes) : 0;
}

/// The probe buffer's default size: 1 GiB, or four times the last-level cache if that is more.
inline std::size_t default_probe_bytes() {
  const std::size_t llc = last_level_cache_bytes();
  return std::max(std::size_t(1) << 30, llc <= (SIZE_MAX >> 3) ? 4 * llc : std::size_t(1) << 30);
}

/// A STREAM-like read probe: a buffer many times the last-level cache (default_probe_bytes), backed by
/// huge pages where the OS allows (no TLB misses in the measurement) and touched by the threads
/// that read it. Kept alive so that a benchmark can re-measure between its runs: this machine's
/// bandwidth drifts with what its neighbours do.
class BandwidthProbe {
 public:
  explicit BandwidthProbe(kernels::ThreadPool& pool, std::size_t bytes = default_probe_bytes()) : buf_(bytes, false) {
    pool.parallel_for(std::int64_t(buf_.capacity() / 4096), [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) std::memset(buf_.data() + std::size_t(i) * 4096, int(i & 0x7f), 4096);
    }, 512);
  }
  /// Bytes/s, best of `passes` passes over the buffer.
  double measure(kernels::ThreadPool& pool, int passes = 3) const {
    const ByteRange range{buf_.data(), buf_.capacity()};
    return measure_read_bandwidth(pool, {&range, 1}, passes);
  }

 private:
  HugePageBuffer buf_;
};

/// Read bandwidth of the machine: best of `passes` passes over a fresh `bytes`-sized buffer.
inline double measure_read_bandwidth(kernels::ThreadPool& pool, std::size_t bytes = default_probe_bytes(), int passes = 3) {
  return BandwidthProbe(pool, bytes).measure(pool, passes);
}

/// f32 GEMM rate (FLOP/s, best of `reps` after a warm-up) of the prompt path's kernel:
/// C[2048, 2048] = A · Bᵀ, columns of C split over the pool's threads in fixed blocks (the same way
/// loom's matmul splits its work).
inline double measure_gemm_rate(kernels::ThreadPool& pool, int size = 2048, int reps = 5) {
  const std::size_t elems = std::size_t(size) * std::size_t(size);
  std::vector<float> a(elems), b(elems), c(elems);
  for (std::size_t i = 0; i < elems; ++i) a[i] = float(i % 17) * 0.125f - 1.0f, b[i] = float(i % 13) * 0.25f - 1.5f;
  const auto gemm = kernels::level_kernels().gemm_f32;  // the prompt path's own kernel
  double best = 0;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(size, [&](std::int64_t c0, std::int64_t c1, int) {
      gemm(a.data(), size, size, size, b.data() + c0 * size, size, false, c1 - c0, c.data() + c0, size);
    }, 64);
    if (r > 0) best = std::max(best, 2.0 * double(size) * size * size / detail::seconds_since(t0));
  }
  return best;
}

/// Peak rate of arithmetic `a` (multiply-adds per second, all of pool's threads together) at the
/// kernel level in use: every thread runs register-only chains of its widest instruction for it
/// (kernels/level/probe.inl: f32 FMA, int8 vpdpbusd or bf16 vdpbf16ps) for about `seconds`; the
/// best of `reps` runs. 0 where the level has no such instruction (int8 below AVX-512, bf16 below
/// AVX-512 or without AVX512_BF16).
inline double measure_peak(kernels::ThreadPool& pool, kernels::Arithmetic a, double seconds = 0.02, int reps = 3) {
  const auto probe = kernels::level_kernels().peak_multiply_adds;
  if (probe(a, 1) == 0) return 0;
  std::int64_t steps = 1 << 12;
  for (;;) {  // calibrate on one thread: at least a quarter of `seconds`
    const auto t0 = std::chrono::steady_clock::now();
    probe(a, steps);
    const double dt = detail::seconds_since(t0);
    if (dt >= seconds / 4 || steps >= (std::int64_t(1) << 34)) {
      steps = std::max<std::int64_t>(1, std::int64_t(double(steps) * seconds / std::max(dt, 1e-9)));
      break;
    }
    steps *= 4;
  }
  const int n = pool.size();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    double done = 0;
    std::vector<double> per(std::size_t(n), 0.0);
    pool.parallel_for(n, [&](std::int64_t t0_, std::int64_t t1_, int) {
      for (std::int64_t t = t0_; t < t1_; ++t) per[std::size_t(t)] = probe(a, steps);
    });
    const double dt = detail::seconds_since(t0);
    for (double d : per) done += d;
    best = std::max(best, done / dt);
  }
  return best;
}

inline MachineLimits measure_machine(kernels::ThreadPool& pool) {
  return {measure_read_bandwidth(pool), measure_gemm_rate(pool)};
}

/// Bytes of weights one decoded token reads: every matrix of every linear layer and the output
/// projection (the embedding lookup reads one row, which is negligible).
inline double weight_bytes_per_token(const Model& m) {
  double bytes = 0;
  auto add = [&](const nn::Linear& l) {
    if (!l.empty()) bytes += double(l.weight.nbytes);
  };
  for (const auto& l : m.weights().layers)
    for (const nn::Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return bytes;
}

/// The weight matrices one decoded token reads (see weight_bytes_per_token), as memory ranges.
inline std::vector<ByteRange> weight_ranges(const Model& m) {
  std::vector<ByteRange> r;
  auto add = [&](const nn::Linear& l) {
    if (!l.empty()) r.push_back({l.weight.data, l.weight.nbytes});
  };
  for (const auto& l : m.weights().layers)
    for (const nn::Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return r;
}

/// Parameters taking part in matrix products per token (2 FLOPs each).
inline double matmul_params(const Model& m) {
  double n = 0;
  auto add = [&](const nn::Linear& l) {
    if (!l.empty()) n += double(l.weight.numel());
  };
  for (const auto& l : m.weights().layers)
    for (const nn::Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*x);
  add(m.weights().output);
  return n;
}

}  // namespace loom
