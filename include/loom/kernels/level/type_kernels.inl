// Each weight type's kernels at one kernel level, as the row entries of kernels/type_traits.hpp:
// the decode rows (integer dot products on quantized blocks, fused dots on f32 / f16 / bf16),
// activation quantization, and conversion of stored rows to f32. kernels/levels.hpp includes this
// file in namespace loom::kernels::<level> with LOOM_LEVEL 0 (portable), 1 (AVX2) or 2 (AVX-512),
// inside that level's target region, after quant/activation.inl and fused.inl. No include guard.

/// The activations of a quantized weight type's dot product: a row of n values (a multiple of
/// its block size) into dst, in the order its dot product reads.
template <DType T>
void quantize_activation_for(const float* x, std::byte* dst, std::int64_t n) {
  if constexpr (activation_format_of(T) == ActivationFormat::q8_grouped)
    quantize_row_q8_grouped(x, reinterpret_cast<block_q8_grouped*>(dst), n, nibble_halves(T));
  else
    quantize_row_q8_k(x, reinterpret_cast<block_q8_k*>(dst), n, T == DType::q4_k || T == DType::q5_k);
}

/// A dot product with its weight and activation blocks behind plain bytes.
template <auto Dot, typename Block, typename Act>
float dot_bytes(std::int64_t n, const std::byte* w, const std::byte* act) {
  return Dot(n, reinterpret_cast<const Block*>(w), reinterpret_cast<const Act*>(act));
}

/// The integer path for quantized weights: outputs [r0, r1) of y[n, out] = x[n, in] · Wᵀ, with
/// `act` the n rows of x quantized by quantize_activation_for<T>. Every output is one dot product
/// whatever range it falls in, so results do not depend on threads. Rows alternate between the
/// two halves of the range: two streams far apart, as the f32/f16 decode reads them
/// (docs/performance-notes.md, "Two row streams in the integer decode").
template <auto Dot, typename Block, typename Act>
void quant_rows(const DecodeInput& in, const TensorRef& w, float* y, std::int64_t ldy, std::int64_t r0,
                std::int64_t r1) {
  const std::int64_t cols = w.cols();
  const std::size_t rb = w.row_bytes();
  const auto* act = reinterpret_cast<const Act*>(in.act);
  const std::size_t act_blocks = in.act_bytes / sizeof(Act);
  using Multi = detail::MultiRowDot<Dot>;
  auto row = [&](std::int64_t o) {
    const auto* wr = reinterpret_cast<const Block*>(w.data + std::size_t(o) * rb);
    std::int64_t t = 0;
    // Several rows of activations per pass over the weight row where the dot has such a version.
    auto rows_of_x = [&]<int N>() {
      if constexpr (Multi::rows > 1)
        for (; t + N <= in.n; t += N) {
          const Act* a[N];
          float out[N];
          for (int j = 0; j < N; ++j) a[j] = act + std::size_t(t + j) * act_blocks;
          Multi::template run<N>(cols, wr, a, out);
          for (int j = 0; j < N; ++j) y[(t + j) * ldy + o] = out[j];
        }
    };
    if constexpr (Multi::rows > 1) rows_of_x.template operator()<Multi::rows>();
    if constexpr (Multi::rows > 2) rows_of_x.template operator()<2>();
    for (; t < in.n; ++t) y[t * ldy + o] = Dot(cols, wr, act + std::size_t(t) * act_blocks);
  };
  const std::int64_t q = (r1 - r0) / 2;
  for (std::int64_t i = 0; i < q; ++i) {
    row(r0 + i);
    row(r0 + q + i);
  }
  for (std::int64_t o = r0 + 2 * q; o < r1; ++o) row(o);
}

/// The decode rows of f32 / f16 / bf16 weights stored [out, in] (fused.inl).
template <DType T>
void fused_rows(const DecodeInput& in, const TensorRef& w, float* y, std::int64_t ldy, std::int64_t r0,
                std::int64_t r1) {
  dot_rows_range<T>(w, in.x, in.n, in.ldx, y, ldy, r0, r1);
}

/// n stored f16 / bf16 values → f32 (F16C where the level has it; the compiler vectorizes bf16's
/// shifts at every level).
template <DType T>
void half_to_f32(const std::byte* src, float* dst, std::int64_t n) {
  const auto* h = reinterpret_cast<const std::uint16_t*>(src);
  std::int64_t i = 0;
  if constexpr (T == DType::f16) {
#if LOOM_LEVEL >= 1
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
#endif
    for (; i < n; ++i) dst[i] = loom::detail::f16_to_f32_scalar(h[i]);
  } else {
    for (; i < n; ++i) dst[i] = to_float(bf16{h[i]});
  }
}

/// f32 → f16 with round-to-nearest-even (the inverse of half_to_f32<f16>).
inline void f32_to_f16(const float* src, f16* dst, std::int64_t n) {
  std::int64_t i = 0;
#if LOOM_LEVEL >= 1
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) dst[i] = f16{loom::detail::f32_to_f16_scalar(src[i])};
}

/// A row conversion with its blocks behind plain bytes.
template <auto Convert, typename Block>
void typed_row_to_f32(const std::byte* src, float* dst, std::int64_t n) {
  Convert(reinterpret_cast<const Block*>(src), dst, n);
}

inline void copy_f32(const std::byte* src, float* dst, std::int64_t n) { std::memcpy(dst, src, std::size_t(n) * 4); }

/// A quantized type's kernels at this level: Dot its dot product, Dequantize its row → f32
/// conversion, both at this level (or the reference where the level has none of its own).
template <DType T, auto Dot, auto Dequantize>
constexpr LevelTypeKernels quant_kernels(std::int64_t decode_max_rows) {
  using Block = block_of_t<T>;
  using Act = std::conditional_t<activation_format_of(T) == ActivationFormat::q8_grouped, block_q8_grouped, block_q8_k>;
  LevelTypeKernels k;
  k.decode_rows = &quant_rows<Dot, Block, Act>;
  k.dot = &dot_bytes<Dot, Block, Act>;
  k.quantize_activation = &quantize_activation_for<T>;
  k.to_f32 = &typed_row_to_f32<Dequantize, Block>;
  k.decode_max_rows = decode_max_rows;
  k.to_int8 = &to_int8_row<T>;
  k.int8 = int8_form_of(T);
  return k;
}

/// An f32 / f16 / bf16 type's kernels at this level: fused decode dots for [out, in] weights,
/// row-by-row accumulation for [in, out] ones, conversion to f32.
template <DType T>
constexpr LevelTypeKernels float_kernels() {
  LevelTypeKernels k;
  k.decode_rows = &fused_rows<T>;
  k.in_out_rows = &axpy_rows<T>;
  if constexpr (T == DType::f32)
    k.to_f32 = &copy_f32;
  else
    k.to_f32 = &half_to_f32<T>;
  k.decode_max_rows = fused_dot_max_rows;
  return k;
}
