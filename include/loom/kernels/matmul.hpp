// Matrix products of f32 activations by stored weights: y[n, out] = x[n, in] · Wᵀ, with W kept
// in its stored type (f32 in place; f16/bf16 converted block by block on the fly). n = 1 is the
// decode case (matrix-vector), n > 1 the prompt case (matrix-matrix, Eigen's blocked GEMM).
// Quantized weights (q8_0, q4_0, q4_k, q6_k; [out, in] only): for small n the activations are
// quantized to 8-bit blocks once per thread and every output is an integer dot product on the
// weight blocks in place (kernels/quant.hpp); for larger n, 64-row blocks are dequantized to f32
// scratch and multiplied with Eigen's GEMM, which is faster there.
// Work is split over output rows across the thread pool, so results do not depend on the
// thread count. `matmul_reference` is the plain scalar version the optimized path is tested against.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
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

}  // namespace detail

namespace detail {

/// Dot product of a stored f16 (bf = false) or bf16 (bf = true) row with f32 activations,
/// converting on the fly (no intermediate buffer): the decode path for 16-bit weights.
template <bool bf>
inline float dot_half(const std::uint16_t* w, const float* x, std::int64_t n) {
  std::int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  auto load16 = [&](std::int64_t k) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
    if constexpr (bf)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  };
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(load16(i), _mm512_loadu_ps(x + i), acc0);
    acc1 = _mm512_fmadd_ps(load16(i + 16), _mm512_loadu_ps(x + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(load16(i), _mm512_loadu_ps(x + i), acc0);
  sum = hsum_512(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto load8 = [&](std::int64_t k) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k));
    if constexpr (bf)
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else
      return _mm256_cvtph_ps(h);
  };
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(x + i), acc0);
    acc1 = _mm256_fmadd_ps(load8(i + 8), _mm256_loadu_ps(x + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(load8(i), _mm256_loadu_ps(x + i), acc0);
  const __m256 a = _mm256_add_ps(acc0, acc1);
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  sum = _mm_cvtss_f32(r);
#endif
  for (; i < n; ++i) sum += (bf ? to_float(bf16{w[i]}) : to_float(f16{w[i]})) * x[i];
  return sum;
}

/// Dot product of a stored f32 row with f32 activations: the decode path for f32 weights. Four
/// independent accumulators over 64 floats per step read the row as one stream; measured on this
/// project's machine (1 thread, 5632×2048 rows from DRAM) at 92 % of the read probe where Eigen's
/// GEMV reached 81 %.
inline float dot_f32(const float* w, const float* x, std::int64_t n) {
  std::int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
  sum = hsum_512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  sum = hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < n; ++i) sum += w[i] * x[i];
  return sum;
}

}  // namespace detail

/// Up to this many rows of x, f32/f16/bf16 weights stored [out, in] use one fused (convert-and-)
/// dot product per output; above it, blocks are (converted to f32 and) multiplied with Eigen's GEMM.
inline constexpr std::int64_t fused_dot_max_rows = 2;

/// Up to this many rows of x, quantized weights of type t use integer dot products per output;
/// above it, 64-row blocks are dequantized to f32 and multiplied with Eigen's GEMM. Crossovers
/// measured with bench/bench_quant.cpp at 2048×2048 on one AVX-512 core (the scalar
/// dequantization dominates the GEMM path, most for Q6_K). Define LOOM_QUANT_DOT_MAX_ROWS to
/// force one value for every type (benchmarking).
constexpr std::int64_t quant_dot_max_rows(DType t) noexcept {
#ifdef LOOM_QUANT_DOT_MAX_ROWS
  (void)t;
  return LOOM_QUANT_DOT_MAX_ROWS;
#else
  switch (t) {
    case DType::q8_0:
    case DType::q4_0: return 32;
    case DType::q4_k: return 6;
    case DType::q6_k: return 128;
    default: return 0;
  }
#endif
}

namespace detail {

/// The integer path for quantized weights: outputs [r0, r1) of y[n, out] = x[n, in] · Wᵀ. Every
/// output is one dot product whatever range it falls in, so results do not depend on threads.
inline void matmul_quant_rows(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, float* y,
                              std::int64_t ldy, std::int64_t r0, std::int64_t r1) {
  const std::int64_t in = w.cols();
  const std::size_t abytes = activation_bytes(w.dtype, in);
  std::byte* act = activation_buffer(abytes * std::size_t(n));  // (n, quantized in)
  for (std::int64_t t = 0; t < n; ++t) quantize_activation(w.dtype, x + t * ldx, act + std::size_t(t) * abytes, in);
  for (std::int64_t o = r0; o < r1; ++o) {
    const std::byte* wr = w.row(o);
    for (std::int64_t t = 0; t < n; ++t) y[t * ldy + o] = dot_quantized(w.dtype, in, wr, act + std::size_t(t) * abytes);
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
  constexpr std::int64_t block = 64;
  if (is_quantized(w.dtype) && n <= quant_dot_max_rows(w.dtype)) {
    auto run_q = [&](std::int64_t r0, std::int64_t r1, int) { detail::matmul_quant_rows(x, n, ldx, w, y, ldy, r0, r1); };
    if (pool)
      pool->parallel_for(out, run_q, block);
    else
      run_q(0, out, 0);
    return;
  }
  if ((w.dtype == DType::f16 || w.dtype == DType::bf16 || w.dtype == DType::f32) && !in_out &&
      n <= fused_dot_max_rows) {
    auto run_h = [&](std::int64_t r0, std::int64_t r1, int) {
      for (std::int64_t o = r0; o < r1; ++o) {
        const std::byte* wr = w.row(o);
        const auto* wh = reinterpret_cast<const std::uint16_t*>(wr);
        for (std::int64_t t = 0; t < n; ++t)
          y[t * ldy + o] = w.dtype == DType::f32    ? detail::dot_f32(reinterpret_cast<const float*>(wr), x + t * ldx, in)
                           : w.dtype == DType::bf16 ? detail::dot_half<true>(wh, x + t * ldx, in)
                                                    : detail::dot_half<false>(wh, x + t * ldx, in);
      }
    };
    if (pool)
      pool->parallel_for(out, run_h, block);
    else
      run_h(0, out, 0);
    return;
  }
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
