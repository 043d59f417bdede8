// The machine's own limits, measured with loom's thread pool: sustained memory read bandwidth
// (a STREAM-like sum over a buffer far larger than the last-level cache, or over the very memory
// a model's weights occupy, read as 1-8 streams per thread, the best counting) and Eigen's f32 GEMM rate on 2048² matrices. loom-bench and generate report speeds as fractions of these; the
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

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

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

/// Σ of the 64-bit words of [p, p + n) (wrapping), plus its trailing n % 8 bytes, read as S
/// contiguous parts side by side, 256 bytes of each per step. The sum is exact so that tests can
/// check the reads; the probes use it to keep the loads alive.
template <int S>
inline std::uint64_t sum_streams(const std::byte* p, std::size_t n) {
  const std::size_t part = n / S / 256 * 256;  // bytes of each stream; the rest is read after them
  std::uint64_t total = 0;
#if defined(__AVX512F__)
  __m512i acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm512_setzero_si512();
  for (std::size_t i = 0; i < part; i += 256)
    for (int s = 0; s < S; ++s) {
      const std::byte* q = p + std::size_t(s) * part + i;
      const __m512i a = _mm512_add_epi64(_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64));
      const __m512i b = _mm512_add_epi64(_mm512_loadu_si512(q + 128), _mm512_loadu_si512(q + 192));
      acc[s] = _mm512_add_epi64(acc[s], _mm512_add_epi64(a, b));
    }
  for (int s = 0; s < S; ++s) {
    alignas(64) std::uint64_t lanes[8];
    _mm512_store_si512(lanes, acc[s]);
    for (std::uint64_t l : lanes) total += l;
  }
#elif defined(__AVX2__)
  __m256i acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm256_setzero_si256();
  for (std::size_t i = 0; i < part; i += 256)
    for (int s = 0; s < S; ++s) {
      const auto* q = reinterpret_cast<const __m256i*>(p + std::size_t(s) * part + i);
      __m256i a = _mm256_add_epi64(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1));
      a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 2), _mm256_loadu_si256(q + 3)));
      a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 4), _mm256_loadu_si256(q + 5)));
      acc[s] = _mm256_add_epi64(acc[s], _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 6), _mm256_loadu_si256(q + 7))));
    }
  for (int s = 0; s < S; ++s) {
    alignas(32) std::uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[s]);
    for (std::uint64_t l : lanes) total += l;
  }
#else
  std::uint64_t acc[S][8] = {};
  for (std::size_t i = 0; i < part; i += 64)
    for (int s = 0; s < S; ++s) {
      std::uint64_t w[8];
      std::memcpy(w, p + std::size_t(s) * part + i, sizeof w);
      for (int k = 0; k < 8; ++k) acc[s][k] += w[k];
    }
  for (auto& a : acc)
    for (std::uint64_t l : a) total += l;
#endif
  std::size_t i = S * part;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, sizeof w);
    total += w;
  }
  for (; i < n; ++i) total += std::uint64_t(p[i]);
  return total;
}

/// Stream counts the probes try: a core reads one stream slower than several on some machines
/// (an Intel Xeon core of this project's: 15.8 GB/s from one, 16.7 from eight), and the decode
/// kernels read several rows side by side.
inline constexpr int probe_streams[] = {1, 2, 4, 8};

/// sum_streams with S chosen at run time (one of probe_streams).
inline std::uint64_t sum_words(const std::byte* p, std::size_t n, int streams) {
  switch (streams) {
    case 1: return sum_streams<1>(p, n);
    case 2: return sum_streams<2>(p, n);
    case 4: return sum_streams<4>(p, n);
    default: return sum_streams<8>(p, n);
  }
}
}  // namespace detail

/// Read rate over `ranges` (bytes/s): the best of `passes` passes for each stream count in
/// detail::probe_streams, each range split over the pool's threads the way matmul splits a weight
/// matrix by output rows, every piece read as that many streams side by side. Given a model's
/// weights (weight_ranges below) this is the bound for decoding from that very memory, whatever
/// its pages and placement.
inline double measure_read_bandwidth(ThreadPool& pool, std::span<const ByteRange> ranges, int passes = 3) {
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
  explicit BandwidthProbe(ThreadPool& pool, std::size_t bytes = default_probe_bytes()) : buf_(bytes, false) {
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
inline double measure_read_bandwidth(ThreadPool& pool, std::size_t bytes = default_probe_bytes(), int passes = 3) {
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
