// Matrix products of f32 activations by stored weights: y[n, out] = x[n, in] · Wᵀ, with W kept
// in its stored type (f32 in place; f16/bf16 converted on the fly). n ≤ fused_dot_max_rows is the
// decode case: one pass over the weights, by dot products of rows read side by side for weights
// stored [out, in] and by row-by-row accumulation for [in, out]; larger n uses Eigen's blocked
// products on f32 or on converted 128-row blocks.
// Quantized weights (every quantized DType; [out, in] only): for small n the activations are
// quantized to 8-bit blocks once per thread and every output is an integer dot product on the
// weight blocks in place (kernels/quant.hpp); for larger n, 128-row blocks are dequantized to f32
// scratch and multiplied with Eigen's GEMM, which is faster there.
// Work is split over output rows across the thread pool, so results do not depend on the
// thread count. `matmul_reference` is the plain scalar version the optimized path is tested against.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/quant.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/tensor.hpp"

namespace loom::kernels {

namespace detail {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstStrided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Strided = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

/// Per-thread conversion buffer; grows once to the largest block and is reused after that.
inline float* conversion_buffer(std::size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

/// Per-thread buffer for quantized activations (float-aligned); reused like conversion_buffer.
inline std::byte* activation_buffer(std::size_t bytes) {
  thread_local std::vector<float> buf;
  if (buf.size() * sizeof(float) < bytes) buf.resize((bytes + sizeof(float) - 1) / sizeof(float));
  return reinterpret_cast<std::byte*>(buf.data());
}

/// Throws Error(unsupported) for weights matmul cannot read: f64, or quantized stored [in, out].
inline void check_weight(const TensorRef& w, bool in_out) {
  if (w.dtype != DType::f32 && w.dtype != DType::f16 && w.dtype != DType::bf16 && !is_quantized(w.dtype))
    fail(ErrorKind::unsupported, "kernels", "matmul with ", to_string(w.dtype), " weights is not implemented");
  if (in_out && is_quantized(w.dtype))
    fail(ErrorKind::unsupported, "kernels", "matmul with ", to_string(w.dtype),
         " weights stored [in, out] is not implemented (quantized weights must be [out, in])");
}

// ---- fused decode dots for f32 / f16 / bf16 rows --------------------------------------------------

/// Element i of a stored f32 / f16 / bf16 row as a float (the scalar tail of the dots).
template <DType T>
inline float stored_value(const std::byte* w, std::int64_t i) {
  if constexpr (T == DType::f32) {
    return reinterpret_cast<const float*>(w)[i];
  } else {
    const std::uint16_t bits = reinterpret_cast<const std::uint16_t*>(w)[i];
    if constexpr (T == DType::bf16)
      return to_float(bf16{bits});
    else
      return to_float(f16{bits});
  }
}

#if defined(__AVX512F__)
#define LOOM_FUSED_SIMD 1
/// The vector the fused decode kernels work in: 16 floats with AVX-512.
struct FusedVec {
  using V = __m512;
  static constexpr int lanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float sum(V v) { return hsum_512(v); }
  /// Stored elements i .. i+15 as floats (f16/bf16 converted on the fly).
  template <DType T>
  static V load_stored(const std::byte* w, std::int64_t i) {
    if constexpr (T == DType::f32) {
      return _mm512_loadu_ps(reinterpret_cast<const float*>(w) + i);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const std::uint16_t*>(w) + i));
      if constexpr (T == DType::bf16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      else
        return _mm512_cvtph_ps(h);
    }
  }
};
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define LOOM_FUSED_SIMD 1
/// The vector the fused decode kernels work in: 8 floats with AVX2.
struct FusedVec {
  using V = __m256;
  static constexpr int lanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(V v) { return hsum_avx2(v); }
  /// Stored elements i .. i+7 as floats (f16/bf16 converted on the fly).
  template <DType T>
  static V load_stored(const std::byte* w, std::int64_t i) {
    if constexpr (T == DType::f32) {
      return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + i);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint16_t*>(w) + i));
      if constexpr (T == DType::bf16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      else
        return _mm256_cvtph_ps(h);
    }
  }
};
#endif

/// How far ahead the fused decode dots ask for each row's bytes (see prefetch_ahead). One core
/// of an Intel Xeon (Emerald Rapids), 2048-wide rows from DRAM (probe: 17 GB/s): f16 12.7 -> 16.2
/// GB/s with 1024 bytes ahead (16.1 with 2048), bf16 13.2 -> 16.0, f32 15.6 -> 16.4 (16.0).
inline constexpr std::size_t dot_prefetch_distance = 1024;

/// out[k] = row w[k] · x for K stored rows of n elements (type T), read side by side so that
/// each load of x serves K rows. Every row's sum is formed in the same order whatever K is (two
/// vector accumulators, then the scalar tail), so results do not depend on how rows are grouped.
template <DType T, int K>
inline void dot_rows(const std::byte* const (&w)[K], const float* x, std::int64_t n, float* const (&out)[K]) {
  std::int64_t i = 0;
  float sum[K] = {};
#if defined(LOOM_FUSED_SIMD)
  using S = FusedVec;
  constexpr int L = S::lanes;
  S::V a[K], b[K];
  for (int k = 0; k < K; ++k) a[k] = b[k] = S::zero();
  constexpr std::size_t element = T == DType::f32 ? 4 : 2;
  for (; i + 2 * L <= n; i += 2 * L) {
    for (int k = 0; k < K; ++k) prefetch_ahead(w[k] + i * element, 2 * L * element, dot_prefetch_distance);
    const S::V xa = S::load(x + i), xb = S::load(x + i + L);
    for (int k = 0; k < K; ++k) {
      a[k] = S::fmadd(S::load_stored<T>(w[k], i), xa, a[k]);
      b[k] = S::fmadd(S::load_stored<T>(w[k], i + L), xb, b[k]);
    }
  }
  if (i + L <= n) {
    const S::V xa = S::load(x + i);
    for (int k = 0; k < K; ++k) a[k] = S::fmadd(S::load_stored<T>(w[k], i), xa, a[k]);
    i += L;
  }
  for (int k = 0; k < K; ++k) sum[k] = S::sum(S::add(a[k], b[k]));
#endif
  for (int k = 0; k < K; ++k) {
    for (std::int64_t j = i; j < n; ++j) sum[k] += stored_value<T>(w[k], j) * x[j];
    *out[k] = sum[k];
  }
}

/// Rows first, first + stride, ... (K of them) of y[n, out] = x · Wᵀ for f32 / f16 / bf16 W.
template <DType T, int K>
inline void dot_row_group(const TensorRef& w, std::size_t row_bytes, const float* x, std::int64_t n, std::int64_t ldx,
                          float* y, std::int64_t ldy, std::int64_t first, std::int64_t stride) {
  const std::byte* rows[K];
  for (int k = 0; k < K; ++k) rows[k] = w.data + std::size_t(first + k * stride) * row_bytes;
  for (std::int64_t t = 0; t < n; ++t) {
    float* out[K];
    for (int k = 0; k < K; ++k) out[k] = y + t * ldy + first + k * stride;
    dot_rows<T, K>(rows, x + t * ldx, w.cols(), out);
  }
}

/// Outputs [r0, r1) of y[n, out] = x · Wᵀ, W f32 / f16 / bf16 stored [out, in], by fused dots:
/// the decode path. The range is cut into K equal parts read side by side (row r0 + i with
/// r0 + q + i, ...), which this project measured faster than one row at a time on its machine
/// (1 core, rows from DRAM; bench/bench_kernels.cpp): two streams far apart read at the full
/// rate while two adjacent rows do not, and when x outgrows L1 beside a row's weights (long
/// rows, e.g. the FFN down projection: 5632 f16 weights 17.5 → 25.3 GB/s with K = 4) sharing
/// x's loads over K rows cuts the traffic it costs.
///
/// f16 / bf16 rows convert every load, so a core's out-of-order window spans half as many bytes
/// of each stream as with f32; with 32 vector registers they read 5 streams (short rows) and 6
/// (long rows) instead of 2 and 4, more misses in flight. loom-bench tinyllama-1.1b tg16 @ d512,
/// 1 thread, runs alternated: f16 13.20-13.56 -> 13.80-14.33 t/s, bf16 13.66-13.76 ->
/// 14.05-14.40; f32 with 5 / 6 fell from 7.81-7.85 to 7.44 (it already reads at the probe's
/// rate), and 3, 4, 6 or 7 short-row streams measured below 5.
template <DType T>
inline void dot_rows_range(const TensorRef& w, const float* x, std::int64_t n, std::int64_t ldx, float* y,
                           std::int64_t ldy, std::int64_t r0, std::int64_t r1) {
  const std::size_t rb = w.row_bytes();
  const bool long_rows = w.cols() * std::int64_t(sizeof(float)) > 16 * 1024;
#if defined(LOOM_FUSED_SIMD)
  constexpr bool more_streams = T != DType::f32 && FusedVec::lanes == 16;
#else
  constexpr bool more_streams = false;
#endif
  constexpr std::int64_t short_streams = more_streams ? 5 : 2, long_streams = more_streams ? 6 : 4;
  const std::int64_t streams = long_rows ? long_streams : short_streams, q = (r1 - r0) / streams;
  for (std::int64_t i = 0; i < q; ++i) {
    if (long_rows)
      dot_row_group<T, long_streams>(w, rb, x, n, ldx, y, ldy, r0 + i, q);
    else
      dot_row_group<T, short_streams>(w, rb, x, n, ldx, y, ldy, r0 + i, q);
  }
  for (std::int64_t o = r0 + streams * q; o < r1; ++o) dot_row_group<T, 1>(w, rb, x, n, ldx, y, ldy, o, 0);
}

/// y[0, m) += a[0] · w[0][0, m) + a[1] · w[1][0, m) + ... for R stored f32 / f16 / bf16 vectors:
/// per element one chain of fused multiply-adds in the order k = 0, 1, ..., exactly as R passes
/// over y would compute it, but y is loaded and stored once per R vectors.
template <DType T, int R>
inline void axpy_stored(const float (&a)[R], const std::byte* const (&w)[R], float* y, std::int64_t m) {
  std::int64_t i = 0;
#if defined(LOOM_FUSED_SIMD)
  using S = FusedVec;
  S::V va[R];
  for (int k = 0; k < R; ++k) va[k] = S::set1(a[k]);
  // Two vectors of y per step: two independent chains of R FMAs (one chain is latency-bound for
  // f16/bf16, whose loads need a conversion; GPT-2 shape, 1 thread: f16 69.6-70.6 -> 71.0-73.8
  // t/s, f32 50.1-51.5 -> 52.7-52.8; four per step measured slower than one).
  constexpr int U = 2;
  constexpr std::size_t element = T == DType::f32 ? 4 : 2;
  for (; i + U * S::lanes <= m; i += U * S::lanes) {
    for (int k = 0; k < R; ++k) prefetch_ahead(w[k] + i * element, U * S::lanes * element, dot_prefetch_distance);
    S::V acc[U];
    for (int u = 0; u < U; ++u) acc[u] = S::load(y + i + u * S::lanes);
    for (int k = 0; k < R; ++k)
      for (int u = 0; u < U; ++u) acc[u] = S::fmadd(va[k], S::load_stored<T>(w[k], i + u * S::lanes), acc[u]);
    for (int u = 0; u < U; ++u) S::store(y + i + u * S::lanes, acc[u]);
  }
  for (; i + S::lanes <= m; i += S::lanes) {
    S::V acc = S::load(y + i);
    for (int k = 0; k < R; ++k) acc = S::fmadd(va[k], S::load_stored<T>(w[k], i), acc);
    S::store(y + i, acc);
  }
#endif
  for (; i < m; ++i) {
    float acc = y[i];
    for (int k = 0; k < R; ++k) acc = std::fma(a[k], stored_value<T>(w[k], i), acc);
    y[i] = acc;
  }
}

/// y[n, out] = Σ_{i0 <= i < i1} x[:, i] · W[i, :] for W f32 / f16 / bf16 stored [in, out] (GPT-2's
/// Conv1D): one slab of the decode path. The slab's rows are cut into R equal regions, and pass j
/// adds rows i0 + j, i0 + L + j, ..., i0 + (R−1)·L + j (L = the region length) to the outputs,
/// which stay in L1; rows past R·L follow one at a time. Each region is one contiguous stream, and
/// each output sums its rows in a fixed order that depends only on the slab (so not on the thread
/// count). Measured on this project's machine (1 core, weights from DRAM, bench harness): GPT-2's
/// 768×2304 f32 13 GB/s with Eigen's GEMV, 14 with one row at a time, 27–29 reading 16 adjacent
/// rows per pass; 16 adjacent rows against R regions (f16 / f32, slabs of 128 rows): f16 24–26 ->
/// 30–32 GB/s with 4 regions (29 with 8, 18 with 16: too many streams), f32 30–32 -> 36–39 with
/// 12; rows of 768 f16 (GPT-2's MLP projection) 12 -> 28.
template <DType T>
inline void axpy_rows(const TensorRef& w, const float* x, std::int64_t n, std::int64_t ldx, float* y, std::int64_t ldy,
                      std::int64_t i0, std::int64_t i1) {
#if defined(LOOM_FUSED_SIMD)
  constexpr int R = T != DType::f32 ? 4 : FusedVec::lanes == 16 ? 12 : 8;  // AVX2 has 16 vector registers
#else
  constexpr int R = 4;
#endif
  const std::int64_t out = w.cols();
  const std::size_t rb = w.row_bytes();
  for (std::int64_t t = 0; t < n; ++t) std::fill(y + t * ldy, y + t * ldy + out, 0.0f);
  auto group = [&]<int K>(std::int64_t i, std::int64_t stride) {
    const std::byte* wr[K];
    for (int k = 0; k < K; ++k) wr[k] = w.data + std::size_t(i + k * stride) * rb;
    for (std::int64_t t = 0; t < n; ++t) {
      float a[K];
      for (int k = 0; k < K; ++k) a[k] = x[t * ldx + i + k * stride];
      axpy_stored<T, K>(a, wr, y + t * ldy, out);
    }
  };
  const std::int64_t region = (i1 - i0) / R;
  for (std::int64_t j = 0; j < region; ++j) group.template operator()<R>(i0 + j, region);
  for (std::int64_t i = i0 + R * region; i < i1; ++i) group.template operator()<1>(i, 0);
}

/// Slabs of input rows the [in, out] decode path sums separately: a fixed number, so that the
/// result is the same for any thread count; 6 splits evenly over 1, 2, 3 and 6 threads.
inline constexpr std::int64_t in_out_slabs = 6;

/// y[n, out] = x · W for W f32 / f16 / bf16 stored [in, out], n <= fused_dot_max_rows: the
/// decode path. W's rows are cut into in_out_slabs slabs, each summed into its own partial
/// outputs by one thread reading its slab front to back; then the partials are added in slab
/// order. (Cutting the columns instead has every thread read a piece of every row: with 2
/// threads, GPT-2's blocks read ~55 % of a fast minute's bandwidth where one thread reads 80 %.)
template <DType T>
inline void matmul_in_out_decode(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, float* y,
                                 std::int64_t ldy, ThreadPool* pool) {
  const std::int64_t in = w.rows(), out = w.cols(), slab = n * out;
  float* partial = conversion_buffer(std::size_t(in_out_slabs * slab));  // the caller's; the decode paths use no other
  auto run = [&](std::int64_t s0, std::int64_t s1, int) {
    for (std::int64_t s = s0; s < s1; ++s)
      axpy_rows<T>(w, x, n, ldx, partial + s * slab, out, in * s / in_out_slabs, in * (s + 1) / in_out_slabs);
  };
  if (pool)
    pool->parallel_for(in_out_slabs, run);
  else
    run(0, in_out_slabs, 0);
  for (std::int64_t t = 0; t < n; ++t) {
    float* yt = y + t * ldy;
    std::copy_n(partial + t * out, out, yt);
    for (std::int64_t s = 1; s < in_out_slabs; ++s) {
      const float* p = partial + s * slab + t * out;
      for (std::int64_t o = 0; o < out; ++o) yt[o] += p[o];
    }
  }
}

}  // namespace detail

/// Up to this many rows of x, f32/f16/bf16 weights are read once by fused (convert-and-) kernels:
/// dot products for weights stored [out, in], row-by-row accumulation for [in, out]; above it,
/// blocks are (converted to f32 and) multiplied with Eigen's GEMM.
inline constexpr std::int64_t fused_dot_max_rows = 2;

/// Up to this many rows of x, quantized weights of type t use integer dot products per output;
/// above it, 128-row blocks are dequantized to f32 and multiplied with Eigen's GEMM. Crossovers
/// measured with bench/bench_quant.cpp at 2048×2048 on one AVX-512 core (the scalar
/// dequantization dominates the GEMM path). Q6_K dequantizes with AVX-512 where compiled:
/// loom-bench tinyllama-1.1b q6_k, 2 threads (Intel Xeon), dots / dequantize + GEMM: pp8 52.6 /
/// 36.6 t/s, pp16 53.0 / 55.6, pp128 52.2 / 108.1. Define LOOM_QUANT_DOT_MAX_ROWS to force one
/// value for every type (benchmarking).
constexpr std::int64_t quant_dot_max_rows(DType t) noexcept {
#ifdef LOOM_QUANT_DOT_MAX_ROWS
  (void)t;
  return LOOM_QUANT_DOT_MAX_ROWS;
#else
  switch (t) {
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::q5_0:
    case DType::q5_1:
    case DType::iq4_nl:
    case DType::iq4_xs: return 32;
    case DType::q2_k:
    case DType::q3_k:
    case DType::q4_k:
    case DType::q5_k: return 6;
#if defined(LOOM_QUANT_AVX512)
    case DType::q6_k: return 12;
#else
    case DType::q6_k: return 128;  // the scalar dequantization is slower than the dots
#endif
    default: return 0;
  }
#endif
}

namespace detail {

/// Output rows per unit of work the decode kernels hand to the thread pool.
inline constexpr std::int64_t row_block = 64;

/// Output rows per GEMM of the batched path (its fixed blocks, converted to f32 one at a time
/// for f16 / bf16 / quantized weights). Every block's product packs the whole input x again, so
/// longer blocks pay that less often. loom-bench tinyllama-1.1b pp128, Intel Xeon (Emerald
/// Rapids), 1 / 2 threads, 64 -> 128 rows: f32 55.1 / 105.2 -> 58.0 / 113.9 t/s, f16 51.1 / 97.8
/// -> 52.8 / 103.0, q4_0 46.6 / 90.4 -> 49.6 / 95.4 (256: f32 60.7 / 109.8, f16 53.4 / 100.0).
inline constexpr std::int64_t gemm_row_block = 128;

/// The n rows of x (row stride ldx) quantized for the integer dot products with weights of type
/// t and `in` columns, one after the other (activation_bytes(t, in) each), in the calling
/// thread's activation buffer.
inline const std::byte* quantize_rows(DType t, const float* x, std::int64_t n, std::int64_t ldx, std::int64_t in) {
  const std::size_t abytes = activation_bytes(t, in);
  std::byte* act = activation_buffer(abytes * std::size_t(n));
  for (std::int64_t r = 0; r < n; ++r) quantize_activation(t, x + r * ldx, act + std::size_t(r) * abytes, in);
  return act;
}

/// The integer path for quantized weights: outputs [r0, r1) of y[n, out] = x[n, in] · Wᵀ, with
/// act = quantize_rows(x). Every output is one dot product whatever range it falls in, so
/// results do not depend on threads. Kept out of line: GCC 12 inlined it into matmul's thread
/// callback, where the same loops ran slower (loom-bench tinyllama q4_0 tg32 @ d512, 1 thread,
/// 4 runs alternated: 35.4 t/s inlined, 38.4-39.3 out of line).
#if defined(__GNUC__)
__attribute__((noinline))
#endif
inline void matmul_quant_rows(const std::byte* act, std::int64_t n, const TensorRef& w, float* y, std::int64_t ldy,
                              std::int64_t r0, std::int64_t r1) {
  const std::int64_t in = w.cols();
  const std::size_t abytes = activation_bytes(w.dtype, in);
  const std::size_t rb = w.row_bytes();
  auto row = [&](std::int64_t o) {
    const std::byte* wr = w.data + std::size_t(o) * rb;
    for (std::int64_t t = 0; t < n; ++t) y[t * ldy + o] = dot_quantized(w.dtype, in, wr, act + std::size_t(t) * abytes);
  };
  // Rows alternate between the two halves of the range: two streams far apart, as the
  // f32/f16 decode reads them. Measured on this project's machine with loom-bench (tinyllama
  // shape, 1 thread, tg32 @ d512, runs alternated): Q4_0 33.0-36.0 -> 39.1-39.4 t/s; Q4_K 32.4
  // -> 28.0 ms per token (whole forward); Q8_0 (once its dot product read DRAM at the probe's
  // rate) 26.2-26.7 -> 27.0-29.4 t/s.
  const std::int64_t q = (r1 - r0) / 2;
  for (std::int64_t i = 0; i < q; ++i) {
    row(r0 + i);
    row(r0 + q + i);
  }
  for (std::int64_t o = r0 + 2 * q; o < r1; ++o) row(o);
}

/// Whether n input rows times a weight of type t take the decode kernels (the integer dot
/// products for quantized weights, the fused dots for f32 / f16 / bf16) rather than a GEMM.
inline bool decodes(DType t, std::int64_t n) {
  if (is_quantized(t)) return n <= quant_dot_max_rows(t);
  return (t == DType::f32 || t == DType::f16 || t == DType::bf16) && n <= fused_dot_max_rows;
}

/// Outputs [r0, r1) of y[n, out] = x · Wᵀ, W stored [out, in], by the decode kernels; `act` is
/// quantize_rows(x) for quantized weights (unused otherwise).
inline void decode_rows(const std::byte* act, const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w,
                        float* y, std::int64_t ldy, std::int64_t r0, std::int64_t r1) {
  switch (w.dtype) {
    case DType::f32: return dot_rows_range<DType::f32>(w, x, n, ldx, y, ldy, r0, r1);
    case DType::f16: return dot_rows_range<DType::f16>(w, x, n, ldx, y, ldy, r0, r1);
    case DType::bf16: return dot_rows_range<DType::bf16>(w, x, n, ldx, y, ldy, r0, r1);
    default: return matmul_quant_rows(act, n, w, y, ldy, r0, r1);
  }
}

}  // namespace detail

/// y[n, out] (row stride ldy) = x[n, in] (row stride ldx) · Wᵀ where W is [out, in], or x · W
/// when `in_out` (W stored [in, out], GPT-2 Conv1D).
inline void matmul(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, bool in_out, float* y,
                   std::int64_t ldy, ThreadPool* pool = nullptr) {
  detail::check_weight(w, in_out);
  const std::int64_t in = in_out ? w.rows() : w.cols();
  const std::int64_t out = in_out ? w.cols() : w.rows();
  const detail::ConstStrided X(x, n, in, Eigen::OuterStride<>(ldx));
  if (detail::decodes(w.dtype, n)) {
    if (in_out) {  // f32 / f16 / bf16: check_weight rejects quantized [in, out] weights
      switch (w.dtype) {
        case DType::f32: return detail::matmul_in_out_decode<DType::f32>(x, n, ldx, w, y, ldy, pool);
        case DType::f16: return detail::matmul_in_out_decode<DType::f16>(x, n, ldx, w, y, ldy, pool);
        default: return detail::matmul_in_out_decode<DType::bf16>(x, n, ldx, w, y, ldy, pool);
      }
    }
    // Quantized once, by the caller, for every thread and piece of the outputs.
    const std::byte* act = is_quantized(w.dtype) ? detail::quantize_rows(w.dtype, x, n, ldx, in) : nullptr;
    auto run_decode = [&](std::int64_t r0, std::int64_t r1, int) {
      detail::decode_rows(act, x, n, ldx, w, y, ldy, r0, r1);
    };
    if (pool)
      pool->parallel_for(out, run_decode, detail::row_block);
    else
      run_decode(0, out, 0);
    return;
  }
  // f32 weights need no conversion buffer, so wide matrices take blocks twice as long (their
  // count depends on the shape only, never on the threads). tinyllama-1.1b f32 pp128 @ d0, Intel
  // Xeon, runs alternated, 1 / 2 threads: 57.0-57.5 / 112.0-114.2 -> 58.9-59.1 / 114.8-117.2 t/s.
  const std::int64_t block = w.dtype == DType::f32 && out >= 1024 ? 2 * detail::gemm_row_block : detail::gemm_row_block;
  // Output features are computed in fixed blocks aligned to multiples of `block`, whichever
  // thread runs them, so that every output is computed the same way for any thread count.

  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    for (std::int64_t b0 = r0; b0 < r1; b0 += block) {
      const std::int64_t b1 = std::min(r1, b0 + block);
      const std::int64_t m = b1 - b0;
      detail::Strided Y(y + b0, n, m, Eigen::OuterStride<>(ldy));
      if (!in_out) {
        const float* wp;
        if (w.dtype == DType::f32) {
          wp = reinterpret_cast<const float*>(w.row(b0));
        } else {
          float* buf = detail::conversion_buffer(std::size_t(m * in));
          to_f32(w.dtype, w.row(b0), buf, m * in);
          wp = buf;
        }
        const Eigen::Map<const detail::RowMat> W(wp, m, in);
        if (n == 1)
          Y.row(0).noalias() = W * X.row(0).transpose();
        else
          Y.noalias() = X * W.transpose();
      } else {
        if (w.dtype == DType::f32) {
          const detail::ConstStrided W(reinterpret_cast<const float*>(w.data) + b0, in, m, Eigen::OuterStride<>(out));
          Y.noalias() = X * W;
        } else {
          float* buf = detail::conversion_buffer(std::size_t(m * in));
          for (std::int64_t i = 0; i < in; ++i)
            to_f32(w.dtype, w.row(i) + std::size_t(b0) * block_bytes(w.dtype), buf + i * m, m);
          const Eigen::Map<const detail::RowMat> W(buf, in, m);
          Y.noalias() = X * W;
        }
      }
    }
  };
  if (pool)
    pool->parallel_for(out, run, block);
  else
    run(0, out, 0);
}

/// One product of `matmul_same_input`: y[n, w.rows()] (row stride ldy) = x · Wᵀ, W stored
/// [out, in].
struct MatmulOutput {
  TensorRef w;
  float* y;
  std::int64_t ldy;
};

/// Several products of the same input rows x (a layer's q, k and v projections; its gate and
/// up projections) in one parallel call when they decode: the activations are quantized once and
/// the threads divide the outputs of all the weights between them, one hand-off (and one wait
/// for the slowest thread) instead of one per weight. Each output is computed exactly as
/// `matmul` computes it. Products that cannot share one call (weights of different types, or
/// more rows than the decode kernels take) run one `matmul` each.
inline void matmul_same_input(const float* x, std::int64_t n, std::int64_t ldx, std::span<const MatmulOutput> outputs,
                              ThreadPool* pool = nullptr) {
  if (outputs.empty()) return;
  const DType t = outputs[0].w.dtype;
  bool shared = outputs.size() > 1 && detail::decodes(t, n);
  for (const MatmulOutput& o : outputs) {
    detail::check_weight(o.w, false);
    shared = shared && o.w.dtype == t && o.w.cols() == outputs[0].w.cols();
  }
  if (!shared) {
    for (const MatmulOutput& o : outputs) matmul(x, n, ldx, o.w, false, o.y, o.ldy, pool);
    return;
  }
  const std::byte* act = is_quantized(t) ? detail::quantize_rows(t, x, n, ldx, outputs[0].w.cols()) : nullptr;
  std::int64_t total = 0;
  for (const MatmulOutput& o : outputs) total += o.w.rows();
  // Outputs [r0, r1) of the concatenation: the part of each product's range that falls inside.
  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    std::int64_t first = 0;
    for (const MatmulOutput& o : outputs) {
      const std::int64_t a = std::max(r0, first), b = std::min(r1, first + o.w.rows());
      if (a < b) detail::decode_rows(act, x, n, ldx, o.w, o.y, o.ldy, a - first, b - first);
      first += o.w.rows();
    }
  };
  if (pool)
    pool->parallel_for(total, run, detail::row_block);
  else
    run(0, total, 0);
}

/// Scalar reference for `matmul`: plain loops, double accumulation; quantized weights are
/// dequantized with the scalar reference and multiplied by the unquantized x.
inline void matmul_reference(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, bool in_out,
                             float* y, std::int64_t ldy) {
  detail::check_weight(w, in_out);
  const std::int64_t in = in_out ? w.rows() : w.cols();
  const std::int64_t out = in_out ? w.cols() : w.rows();
  std::vector<float> wf(std::size_t(w.numel()));
  to_f32(w.dtype, w.data, wf.data(), w.numel());
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = 0.0;
      for (std::int64_t i = 0; i < in; ++i)
        acc += double(x[t * ldx + i]) * double(in_out ? wf[std::size_t(i * out + o)] : wf[std::size_t(o * in + i)]);
      y[t * ldy + o] = float(acc);
    }
}

}  // namespace loom::kernels

#undef LOOM_FUSED_SIMD
