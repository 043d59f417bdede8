// Matrix products of f32 activations by stored weights: y[n, out] = x[n, in] · Wᵀ, with W kept
// in its stored type (f32 in place; f16/bf16 converted on the fly). n ≤ fused_dot_max_rows (one
// or a batch of decoding sequences; fused_in_out_max_rows for [in, out]) is the decode case: one
// pass over the weights, by dot products of rows read side by side for weights stored [out, in]
// (each weight vector serving several rows of x) and by row-by-row accumulation for [in, out];
// larger n uses the blocked f32
// GEMM (kernels/level/gemm.inl) on f32 weights in place or on converted 128-row blocks.
// Quantized weights (every quantized DType; [out, in] only): for small n the activations are
// quantized to 8-bit blocks once per thread and every output is an integer dot product on the
// weight blocks in place (kernels/quant.hpp); for larger n, 128-row blocks are dequantized to f32
// scratch and multiplied with the GEMM, which is faster there. Every kernel runs at the kernel
// level chosen at run time (kernels/cpu.hpp): the type's row of kernels/type_traits.hpp.
// Work is split over output rows across the thread pool, so results do not depend on the
// thread count. `matmul_reference` is the plain scalar version the optimized path is tested against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/quant.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/tensor.hpp"

namespace loom::kernels {

namespace detail {


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

/// Slabs of input rows the [in, out] decode path sums separately: a fixed number, so that the
/// result is the same for any thread count; 6 splits evenly over 1, 2, 3 and 6 threads.
inline constexpr std::int64_t in_out_slabs = 6;

/// y[n, out] = x · W for W f32 / f16 / bf16 stored [in, out], n <= fused_in_out_max_rows: the
/// decode path. W's rows are cut into in_out_slabs slabs, each summed into its own partial
/// outputs by one thread reading its slab front to back; then the partials are added in slab
/// order. (Cutting the columns instead has every thread read a piece of every row: with 2
/// threads, GPT-2's blocks read ~55 % of a fast minute's bandwidth where one thread reads 80 %.)
inline void matmul_in_out_decode(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, float* y,
                                 std::int64_t ldy, ThreadPool* pool) {
  const auto axpy_rows = kernels_for(w.dtype).in_out_rows;
  const std::int64_t in = w.rows(), out = w.cols(), slab = n * out;
  float* partial = conversion_buffer(std::size_t(in_out_slabs * slab));  // the caller's; the decode paths use no other
  auto run = [&](std::int64_t s0, std::int64_t s1, int) {
    for (std::int64_t s = s0; s < s1; ++s)
      axpy_rows(w, x, n, ldx, partial + s * slab, out, in * s / in_out_slabs, in * (s + 1) / in_out_slabs);
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

/// Up to this many rows of x, weights of type t take the decode kernels (integer dot products
/// per output for quantized weights, fused dots for f32 / f16 / bf16); above it, 128-row blocks
/// are (dequantized to f32 and) multiplied by the GEMM. Per type and kernel level: the type
/// traits' decode_max_rows. Define LOOM_QUANT_DOT_MAX_ROWS to force one value for every
/// quantized type (benchmarking).
inline std::int64_t quant_dot_max_rows(DType t) {
#ifdef LOOM_QUANT_DOT_MAX_ROWS
  if (is_quantized(t)) return LOOM_QUANT_DOT_MAX_ROWS;
#endif
  return kernels_for(t).decode_max_rows;
}

namespace detail {

/// Output rows per unit of work the decode kernels hand to the thread pool.
inline constexpr std::int64_t row_block = 64;

/// Output rows per GEMM of the batched path (its fixed blocks, converted to f32 one at a time
/// for f16 / bf16 / quantized weights). Every block's product packs the whole input x again, so
/// longer blocks pay that less often (measurements: docs/performance-notes.md, "GEMM row blocks").
inline constexpr std::int64_t gemm_row_block = 128;

/// The decode input for n rows of x (row stride ldx) times weights of type t with `in` columns:
/// for quantized weights, the rows quantized for the integer dot products one after the other,
/// in the calling thread's activation buffer.
inline DecodeInput decode_input(DType t, const float* x, std::int64_t n, std::int64_t ldx, std::int64_t in) {
  DecodeInput d{x, ldx, n, nullptr, 0};
  if (!is_quantized(t)) return d;
  d.act_bytes = activation_bytes(t, in);
  std::byte* act = activation_buffer(d.act_bytes * std::size_t(n));
  const auto quantize = kernels_for(t).quantize_activation;
  for (std::int64_t r = 0; r < n; ++r) quantize(x + r * ldx, act + std::size_t(r) * d.act_bytes, in);
  d.act = act;
  return d;
}

/// Whether n input rows times a weight of type t (stored [in, out] when `in_out`) take the
/// decode kernels rather than a GEMM.
inline bool uses_row_dots(DType t, std::int64_t n, bool in_out = false) {
  return n <= (in_out ? fused_in_out_max_rows : quant_dot_max_rows(t));
}

/// Whether weights of type t with `in` values per output take the bf16 GEMM: bf16 weights at the
/// AVX-512 level with AVX512_BF16 (unless LOOM_BF16=0), f16 weights only with LOOM_BF16=1.
inline bool bf16_gemm(DType t, std::int64_t in) {
  const CpuFeatures& f = cpu_features();
  const bool type = t == DType::bf16 ? f.bf16_prompts : t == DType::f16 && f.bf16_for_f16;
  return type && in % 2 == 0 && level_kernels().gemm_bf16 != nullptr;
}

/// y[n, out] = x · Wᵀ (or x · W, `in_out`) for f16 / bf16 W by the bf16 GEMM
/// (kernels/level/gemm_bf16.inl): x rounded to bf16 once by the calling thread; the threads
/// divide the outputs in blocks aligned to 128, so results do not depend on threads.
inline void matmul_bf16(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, bool in_out, float* y,
                        std::int64_t ldy, ThreadPool* pool) {
  const LevelKernels& lk = level_kernels();
  const std::int64_t in = in_out ? w.rows() : w.cols(), out = in_out ? w.cols() : w.rows();
  auto* a = reinterpret_cast<std::uint32_t*>(activation_buffer(std::size_t(n * in) * 2));
  lk.rows_to_bf16(x, n, ldx, in, a);
  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    for (std::int64_t b0 = r0; b0 < r1; b0 += gemm_row_block) {
      const std::int64_t m = std::min(r1, b0 + gemm_row_block) - b0;
      lk.gemm_bf16(a, in / 2, n, in, w, in_out, b0, m, y + b0, ldy);
    }
  };
  if (pool)
    pool->parallel_for(out, run, gemm_row_block);
  else
    run(0, out, 0);
}

/// Whether quantized weights of type t take the integer GEMM at the level in use (AVX2 and AVX-512).
inline bool int8_gemm(DType t) { return level_kernels().gemm_int8 && kernels_for(t).to_int8; }

/// y[n, out] = x · Wᵀ for quantized W [out, in] by the integer GEMM (kernels/level/gemm_int8.inl):
/// x quantized once by the calling thread; each thread packs the 128-row blocks it multiplies
/// into its own int8 panel. Blocks are aligned to 128 rows, so results do not depend on threads.
inline void matmul_int8(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, float* y,
                        std::int64_t ldy, ThreadPool* pool) {
  const LevelKernels& lk = level_kernels();
  const LevelTypeKernels& tk = kernels_for(w.dtype);
  const Int8Form& form = tk.int8;
  const int s = form.subblock;
  const std::int64_t k = w.cols(), out = w.rows();
  // x: quants, then scales, corrections and sums (4-byte aligned: k is a multiple of 32)
  const std::int64_t padded = (n + int8_row_tile - 1) / int8_row_tile * int8_row_tile;
  const std::size_t q_bytes = std::size_t(padded * k), d_count = std::size_t(padded * (k / 32)),
                    s_count = std::size_t(padded * (k / s));
  std::byte* act = activation_buffer(q_bytes + 4 * (d_count + 2 * s_count));
  auto* q = reinterpret_cast<std::int8_t*>(act);
  auto* d = reinterpret_cast<float*>(act + q_bytes);
  auto* corr = reinterpret_cast<std::int32_t*>(d + d_count);
  auto* sums = reinterpret_cast<float*>(corr + s_count);
  lk.quantize_int8_rows(x, n, ldx, k, form, q, d, corr, sums);
  const Int8Rows xr{q, d, corr, sums, n, k};
  const std::size_t group_bytes = int8_panel_group_bytes(k, s, form.offsets);
  const std::size_t panel_bytes = group_bytes * std::size_t(gemm_row_block / 16);
  const std::size_t row_bytes = int8_pack_scratch_bytes(k);
  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    auto* buf = reinterpret_cast<std::byte*>(conversion_buffer((panel_bytes + row_bytes + 3) / 4));
    auto* row = reinterpret_cast<std::int8_t*>(buf + panel_bytes);
    for (std::int64_t b0 = r0; b0 < r1; b0 += gemm_row_block) {
      const std::int64_t m = std::min(r1, b0 + gemm_row_block) - b0;
      for (std::int64_t g = 0; g < m; g += 16)
        lk.pack_int8_group(w, b0 + g, int(std::min<std::int64_t>(16, m - g)), tk.to_int8, form,
                           buf + std::size_t(g / 16) * group_bytes, row);
      lk.gemm_int8(xr, buf, m, form, y + b0, ldy);
    }
  };
  if (pool)
    pool->parallel_for(out, run, gemm_row_block);
  else
    run(0, out, 0);
}

}  // namespace detail

/// y[n, out] (row stride ldy) = x[n, in] (row stride ldx) · Wᵀ where W is [out, in], or x · W
/// when `in_out` (W stored [in, out], GPT-2 Conv1D).
inline void matmul(const float* x, std::int64_t n, std::int64_t ldx, const TensorRef& w, bool in_out, float* y,
                   std::int64_t ldy, ThreadPool* pool = nullptr) {
  detail::check_weight(w, in_out);
  const std::int64_t in = in_out ? w.rows() : w.cols();
  const std::int64_t out = in_out ? w.cols() : w.rows();
  if (detail::uses_row_dots(w.dtype, n, in_out)) {
    // f32 / f16 / bf16: check_weight rejects quantized [in, out] weights
    if (in_out) return detail::matmul_in_out_decode(x, n, ldx, w, y, ldy, pool);
    // Quantized once, by the caller, for every thread and piece of the outputs.
    const DecodeInput input = detail::decode_input(w.dtype, x, n, ldx, in);
    const auto decode_rows = kernels_for(w.dtype).decode_rows;
    auto run_decode = [&](std::int64_t r0, std::int64_t r1, int) { decode_rows(input, w, y, ldy, r0, r1); };
    if (pool)
      pool->parallel_for(out, run_decode, detail::row_block);
    else
      run_decode(0, out, 0);
    return;
  }
  if (is_quantized(w.dtype) && detail::int8_gemm(w.dtype)) return detail::matmul_int8(x, n, ldx, w, y, ldy, pool);
  if (detail::bf16_gemm(w.dtype, in)) return detail::matmul_bf16(x, n, ldx, w, in_out, y, ldy, pool);
  // Weights the GEMM reads in place (f32; f16 / bf16 through gemm_half) need no conversion
  // buffer, so wide matrices take blocks twice as long (their count depends on the shape only,
  // never on the threads; docs/performance-notes.md).
  const auto gemm_half = level_kernels().gemm_half;
  const bool half = (w.dtype == DType::f16 || w.dtype == DType::bf16) && gemm_half != nullptr;
  const std::int64_t block =
      (w.dtype == DType::f32 || half) && out >= 1024 ? 2 * detail::gemm_row_block : detail::gemm_row_block;
  // Output features are computed in fixed blocks aligned to multiples of `block`, whichever
  // thread runs them, so that every output is computed the same way for any thread count.

  const auto gemm = level_kernels().gemm_f32;
  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    for (std::int64_t b0 = r0; b0 < r1; b0 += block) {
      const std::int64_t b1 = std::min(r1, b0 + block);
      const std::int64_t m = b1 - b0;
      if (half) {  // converted in registers as the GEMM packs it
        gemm_half(x, ldx, n, in, w, in_out, b0, m, y + b0, ldy);
        continue;
      }
      // B: the block's m weight rows (f32 in place, else converted into this thread's buffer).
      const float* bp;
      std::int64_t ldb;
      if (w.dtype == DType::f32) {
        bp = reinterpret_cast<const float*>(in_out ? w.data : w.row(b0)) + (in_out ? b0 : 0);
        ldb = in_out ? out : in;
      } else {
        float* buf = detail::conversion_buffer(std::size_t(m * in));
        if (in_out)
          for (std::int64_t i = 0; i < in; ++i)
            to_f32(w.dtype, w.row(i) + std::size_t(b0) * block_bytes(w.dtype), buf + i * m, m);
        else
          to_f32(w.dtype, w.row(b0), buf, m * in);
        bp = buf;
        ldb = in_out ? m : in;
      }
      gemm(x, ldx, n, in, bp, ldb, in_out, m, y + b0, ldy);
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
  bool shared = outputs.size() > 1 && detail::uses_row_dots(t, n);
  for (const MatmulOutput& o : outputs) {
    detail::check_weight(o.w, false);
    shared = shared && o.w.dtype == t && o.w.cols() == outputs[0].w.cols();
  }
  if (!shared) {
    for (const MatmulOutput& o : outputs) matmul(x, n, ldx, o.w, false, o.y, o.ldy, pool);
    return;
  }
  const DecodeInput input = detail::decode_input(t, x, n, ldx, outputs[0].w.cols());
  const auto decode_rows = kernels_for(t).decode_rows;
  std::int64_t total = 0;
  for (const MatmulOutput& o : outputs) total += o.w.rows();
  // Outputs [r0, r1) of the concatenation: the part of each product's range that falls inside.
  auto run = [&](std::int64_t r0, std::int64_t r1, int) {
    std::int64_t first = 0;
    for (const MatmulOutput& o : outputs) {
      const std::int64_t a = std::max(r0, first), b = std::min(r1, first + o.w.rows());
      if (a < b) decode_rows(input, o.w, o.y, o.ldy, a - first, b - first);
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

