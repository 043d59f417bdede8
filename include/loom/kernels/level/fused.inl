// The decode kernels of f32 / f16 / bf16 weights (dot products of rows read side by side for
// [out, in] weights, row-by-row accumulation for [in, out]), compiled once per kernel level:
// kernels/levels.hpp includes this file in namespace loom::kernels::<level> with LOOM_LEVEL 0
// (portable), 1 (AVX2) or 2 (AVX-512), inside that level's target region. No include guard.

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

#if LOOM_LEVEL == 2
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
#elif LOOM_LEVEL == 1
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

#if LOOM_LEVEL == 1 && defined(__GNUC__)
/// Keeps a loaded vector in a register: an empty asm statement that "changes" it, so that the
/// compiler cannot fold its load into each use as a memory operand. GCC 12 folded each x load
/// of dot_rows' batch path into all K multiply-adds that use it (K loads instead of one; AMD
/// EPYC Zen 3, f16 TinyLlama shape, 8 sequences, 2 × 2: 32.0 / 33.4 -> 39.9 / 40.7 t/s with
/// it). AVX2 only: it has not been measured at AVX-512.
#define LOOM_IN_REGISTER(v) __asm__("" : "+x"(v))
#else
#define LOOM_IN_REGISTER(v) (void)0
#endif
/// out[k][t] = row w[k] · x[t] for K stored rows of n elements (type T) and N rows of x, read
/// side by side so that each load of x serves K rows and each load (and conversion) of a weight
/// serves N rows of x. Every sum is formed in the same order whatever K and N are (two vector
/// accumulators over alternate vectors, then the scalar tail), so results do not depend on how
/// rows are grouped: a sequence decoded in a batch gets the sums it gets alone.
template <DType T, int K, int N>
inline void dot_rows(const std::byte* const (&w)[K], const float* const (&x)[N], std::int64_t n,
                     float* const (&out)[K][N]) {
  std::int64_t i = 0;
  float sum[K][N] = {};
#if defined(LOOM_FUSED_SIMD)
  using S = FusedVec;
  constexpr int L = S::lanes;
  S::V a[K][N], b[K][N];
  for (int k = 0; k < K; ++k)
    for (int t = 0; t < N; ++t) a[k][t] = b[k][t] = S::zero();
  constexpr std::size_t element = T == DType::f32 ? 4 : 2;
  for (; i + 2 * L <= n; i += 2 * L) {
    for (int k = 0; k < K; ++k) prefetch_ahead(w[k] + i * element, 2 * L * element, dot_prefetch_distance);
    if constexpr (N == 1) {
      const S::V xa = S::load(x[0] + i), xb = S::load(x[0] + i + L);
      for (int k = 0; k < K; ++k) {
        a[k][0] = S::fmadd(S::load_stored<T>(w[k], i), xa, a[k][0]);
        b[k][0] = S::fmadd(S::load_stored<T>(w[k], i + L), xb, b[k][0]);
      }
    } else {
      // one half (a's vector, then b's) at a time: K weight registers, each serving N rows of x
      S::V wv[K];
      for (int k = 0; k < K; ++k) wv[k] = S::load_stored<T>(w[k], i);
      for (int t = 0; t < N; ++t) {
        S::V xa = S::load(x[t] + i);
        LOOM_IN_REGISTER(xa);
        for (int k = 0; k < K; ++k) a[k][t] = S::fmadd(wv[k], xa, a[k][t]);
      }
      for (int k = 0; k < K; ++k) wv[k] = S::load_stored<T>(w[k], i + L);
      for (int t = 0; t < N; ++t) {
        S::V xb = S::load(x[t] + i + L);
        LOOM_IN_REGISTER(xb);
        for (int k = 0; k < K; ++k) b[k][t] = S::fmadd(wv[k], xb, b[k][t]);
      }
    }
  }
  if (i + L <= n) {
    for (int k = 0; k < K; ++k) {
      const S::V wa = S::load_stored<T>(w[k], i);
      for (int t = 0; t < N; ++t) a[k][t] = S::fmadd(wa, S::load(x[t] + i), a[k][t]);
    }
    i += L;
  }
  for (int k = 0; k < K; ++k)
    for (int t = 0; t < N; ++t) sum[k][t] = S::sum(S::add(a[k][t], b[k][t]));
#endif
  for (int k = 0; k < K; ++k)
    for (int t = 0; t < N; ++t) {
      for (std::int64_t j = i; j < n; ++j) sum[k][t] += stored_value<T>(w[k], j) * x[t][j];
      *out[k][t] = sum[k][t];
    }
}

/// Rows of x side by side in dot_rows for a batch (dot_rows_batch), and the weight rows read
/// side by side with them. AVX-512: 3 weight rows × 4 rows of x (24 vector accumulators, 3
/// weights and x in 32 registers), so that each converted weight vector serves 4 rows of x; AMD
/// EPYC Zen 4, f16 TinyLlama shape, 2 threads, B = 4 / 8 sequences, two alternated rounds:
/// 48.3 / 53.8 and 44.3 / 49.8 t/s, against 41.4 / 49.3 and 38.8 / 44.7 with 2 × 4, 40.7 / 49.5
/// with 2 × 6, 39.4 / 36.4 with 1 × 8. AVX2 (16 registers): 3 × 2 (12 accumulators, 3 weights,
/// x); AMD EPYC Zen 3, B = 4 / 8, two alternated rounds: 33.9 / 47.3 and 40.1 / 44.2 t/s, against
/// 28.4 / 32.8 and 34.8 / 38.4 with 2 × 2, 31.6 / 31.9 and 32.5 / 36.3 with 2 × 3 (each with x
/// kept in registers, LOOM_IN_REGISTER; without it 2 × 2 measured best, at 32-33 for B = 8).
#if LOOM_LEVEL == 2
inline constexpr int fused_x_rows = 4, fused_batch_streams = 3;
#elif LOOM_LEVEL == 1
inline constexpr int fused_x_rows = 2, fused_batch_streams = 3;
#else
inline constexpr int fused_x_rows = 2, fused_batch_streams = 2;
#endif

/// Outputs first, first + stride, ... (K of them) of y[n, out] = x · Wᵀ for f32 / f16 / bf16 W,
/// given those outputs' stored rows of `cols` elements: the rows of x N at a time (then one at a
/// time).
template <DType T, int K, int N = 1>
inline void dot_row_group(const std::byte* const (&rows)[K], std::int64_t cols, const float* x, std::int64_t n,
                          std::int64_t ldx, float* y, std::int64_t ldy, std::int64_t first, std::int64_t stride) {
  std::int64_t t = 0;
  if constexpr (N > 1)
    for (; t + N <= n; t += N) {
      const float* xs[N];
      float* out[K][N];
      for (int j = 0; j < N; ++j) {
        xs[j] = x + (t + j) * ldx;
        for (int k = 0; k < K; ++k) out[k][j] = y + (t + j) * ldy + first + k * stride;
      }
      dot_rows<T, K, N>(rows, xs, cols, out);
    }
  for (; t < n; ++t) {
    const float* xs[1] = {x + t * ldx};
    float* out[K][1];
    for (int k = 0; k < K; ++k) out[k][0] = y + t * ldy + first + k * stride;
    dot_rows<T, K, 1>(rows, xs, cols, out);
  }
}

/// Stored rows first, first + stride, ... (K of them) of W.
template <int K>
inline void stored_rows(const TensorRef& w, std::size_t row_bytes, std::int64_t first, std::int64_t stride,
                        const std::byte* (&rows)[K]) {
  for (int k = 0; k < K; ++k) rows[k] = w.data + std::size_t(first + k * stride) * row_bytes;
}

/// Outputs [r0, r1) of y[n, out] = x · Wᵀ for n >= 2 rows of x (a batch of decoding sequences):
/// the range cut into fused_batch_streams parts read side by side, as in dot_rows_range, each
/// group of rows against the rows of x fused_x_rows at a time. Measured alternatives (AMD EPYC
/// Zen 3, AVX2, f16 TinyLlama shape, 8 sequences, 2 threads; 32-34 t/s with this at 2 × 2,
/// before LOOM_IN_REGISTER): blocks of 64-256 KiB of rows kept in L2 while x's rows pass over
/// them, 30-33; f16 rows converted to f32 once per group into a buffer (one conversion instead of
/// one per fused_x_rows rows of x), 24-28.
template <DType T>
inline void dot_rows_batch(const TensorRef& w, const float* x, std::int64_t n, std::int64_t ldx, float* y,
                           std::int64_t ldy, std::int64_t r0, std::int64_t r1) {
  constexpr int K = fused_batch_streams, N = fused_x_rows;
  const std::size_t rb = w.row_bytes();
  auto group = [&]<int G>(std::int64_t first, std::int64_t stride) {
    const std::byte* rows[G];
    stored_rows<G>(w, rb, first, stride, rows);
    dot_row_group<T, G, N>(rows, w.cols(), x, n, ldx, y, ldy, first, stride);
  };
  const std::int64_t q = (r1 - r0) / K;
  for (std::int64_t i = 0; i < q; ++i) group.template operator()<K>(r0 + i, q);
  for (std::int64_t o = r0 + K * q; o < r1; ++o) group.template operator()<1>(o, 0);
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
  if (n >= 2) return dot_rows_batch<T>(w, x, n, ldx, y, ldy, r0, r1);
  const std::int64_t streams = long_rows ? long_streams : short_streams, q = (r1 - r0) / streams;
  auto group = [&]<int K>(std::int64_t first, std::int64_t stride) {
    const std::byte* rows[K];
    stored_rows<K>(w, rb, first, stride, rows);
    dot_row_group<T, K>(rows, w.cols(), x, n, ldx, y, ldy, first, stride);
  };
  for (std::int64_t i = 0; i < q; ++i) {
    if (long_rows)
      group.template operator()<long_streams>(r0 + i, q);
    else
      group.template operator()<short_streams>(r0 + i, q);
  }
  for (std::int64_t o = r0 + streams * q; o < r1; ++o) group.template operator()<1>(o, 0);
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


#undef LOOM_FUSED_SIMD
#undef LOOM_IN_REGISTER
