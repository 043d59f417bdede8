// The prompt path's bf16 GEMM for f16 / bf16 weights: C[n, m] = A[n, k] · Bᵀ with A (the
// activations) rounded to bf16 once per product and B (the weights) converted to bf16 in
// registers while it is packed, multiplied with AVX512_BF16 `vdpbf16ps` (32 multiply-adds per
// instruction, twice an f32 FMA), accumulated in f32. kernels/levels.hpp includes this file in
// every level's namespace; the product exists at the AVX-512 level only, compiled for
// AVX512_BF16 in addition to the level's features and used only where the CPU has it
// (cpu_features().bf16_prompts). No include guard.
//
// Precision: bf16 keeps 8 bits of mantissa, so every product carries a relative rounding of up to
// 2^-9 from each side (f16 weights lose 3 bits, bf16 weights none); sums stay f32. It runs for
// bf16 weights by default (llama.cpp rounds activations to bf16 for them too) and for f16 weights
// only with LOOM_BF16=1 (llama.cpp rounds to f16 there, 8 times finer); LOOM_BF16=0 keeps both
// exact (converted to f32 for the f32 GEMM). On tiny-llama (f16, logits ≈ ±3), prompt logits
// through bf16 differ from the exact path by up to 2.1e-3 (f32: 1e-5 from llama.cpp's reference).
//
// The register tile is the f32 GEMM's (gemm.inl): 12 rows of A × 32 columns of B, 24 zmm
// accumulators. B is packed per 32 columns and KC = 512 values of k as [KC / 2][32][2] bf16 (32
// KiB, in L1 while every row tile of A passes over it); one step of the inner loop loads two
// vectors of packed B (16 columns × a pair of k each), broadcasts a pair of A per row and issues
// 24 vdpbf16ps: 64 multiply-adds per 4 bytes of B per row of A. Every element of C is summed over
// k in pairs, in KC pieces in order, whatever n, m and its tile: results depend on the sizes only.

#if LOOM_LEVEL == 2

#if defined(__GNUC__) || defined(__clang__)
#define LOOM_BF16 __attribute__((target("avx512bf16")))
#else
#define LOOM_BF16
#endif

inline constexpr int bf16_kc = 512;  ///< values of k per packed piece of B
inline constexpr int bf16_nr = 32;   ///< columns of C per register tile

/// Rows of x (n × k, k even) → bf16, rounded to nearest even, as pairs of k: dst row t holds
/// k / 2 32-bit words.
LOOM_BF16 inline void rows_to_bf16(const float* x, std::int64_t n, std::int64_t ldx, std::int64_t k,
                                   std::uint32_t* dst) {
  for (std::int64_t t = 0; t < n; ++t) {
    const float* src = x + t * ldx;
    auto* out = reinterpret_cast<std::uint16_t*>(dst + t * (k / 2));
    std::int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
      const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
      _mm512_storeu_si512(out + i, reinterpret_cast<const __m512i&>(h));
    }
    for (; i < k; ++i) out[i] = to_bf16(src[i]).bits;
  }
}

/// packed[q][j] = the bf16 pair (B(j0 + j, p0 + 2q), B(j0 + j, p0 + 2q + 1)) for q < kc / 2 and
/// j < nr, zero for j >= nr; B(j, p) is weight row j's value p (w stored [out, in]) or row p's
/// value j (`in_out`), f16 or bf16.
LOOM_BF16 inline void pack_bf16(const TensorRef& w, bool in_out, std::int64_t j0, int nr, std::int64_t p0, int kc,
                                std::uint32_t* packed) {
  const bool f16w = w.dtype == DType::f16;
  auto bf16_of = [&](const std::byte* row, std::int64_t i) -> std::uint16_t {
    std::uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return f16w ? to_bf16(loom::detail::f16_to_f32_scalar(h)).bits : h;
  };
  if (!in_out) {
    // Each row converted to bf16 pairs into rows[j], then every 16 columns of a pair step are one
    // gather across the rows.
    alignas(64) std::uint32_t rows[bf16_nr][bf16_kc / 2];
    for (int j = 0; j < bf16_nr; ++j) {
      auto* row = reinterpret_cast<std::uint16_t*>(rows[j]);
      if (j >= nr) {
        std::memset(row, 0, std::size_t(kc) * 2);
        continue;
      }
      const std::byte* src = w.row(j0 + j) + 2 * p0;
      int p = 0;
      if (f16w) {
        for (; p + 32 <= kc; p += 32) {
          const __m512 lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * p)));
          const __m512 hi = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * p + 32)));
          const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
          _mm512_store_si512(row + p, reinterpret_cast<const __m512i&>(h));
        }
      } else {
        for (; p + 32 <= kc; p += 32) _mm512_store_si512(row + p, _mm512_loadu_si512(src + 2 * p));
      }
      for (; p < kc; ++p) row[p] = bf16_of(src, p);
    }
    const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(bf16_kc / 2));
    for (int q = 0; q < kc / 2; ++q) {
      _mm512_store_si512(packed + q * bf16_nr, _mm512_i32gather_epi32(at, &rows[0][q], 4));
      _mm512_store_si512(packed + q * bf16_nr + 16, _mm512_i32gather_epi32(at, &rows[16][q], 4));
    }
    return;
  }
  for (int q = 0; q < kc / 2; ++q) {  // [in, out]: a pair is two rows' values of a column
    const std::byte* r0 = w.row(p0 + 2 * q) + 2 * j0;
    const std::byte* r1 = w.row(p0 + 2 * q + 1) + 2 * j0;
    for (int j = 0; j < nr; ++j)
      packed[q * bf16_nr + j] = std::uint32_t(bf16_of(r0, j)) | std::uint32_t(bf16_of(r1, j)) << 16;
  }
  for (int q = 0; q < kc / 2; ++q)
    for (int j = nr; j < bf16_nr; ++j) packed[q * bf16_nr + j] = 0;
}

/// C[R rows, nr <= 32 columns] (+)= A[R rows, kc values as pairs] · one packed piece.
template <int R>
LOOM_BF16 void bf16_tile(const std::uint32_t* a, std::int64_t lda, const std::uint32_t* bp, int kq, float* c,
                         std::int64_t ldc, int nr, bool accumulate) {
  const __mmask16 m0 = __mmask16(nr >= 16 ? 0xffff : (1u << nr) - 1);
  const __mmask16 m1 = __mmask16(nr >= 32 ? 0xffff : nr <= 16 ? 0 : (1u << (nr - 16)) - 1);
  __m512 acc[R][2];
  LOOM_UNROLL
  for (int i = 0; i < R; ++i) {
    acc[i][0] = accumulate ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
    acc[i][1] = accumulate ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int q = 0; q < kq; ++q) {
    const __m512i b0 = _mm512_load_si512(bp + q * bf16_nr), b1 = _mm512_load_si512(bp + q * bf16_nr + 16);
    LOOM_UNROLL
    for (int i = 0; i < R; ++i) {
      const __m512i ai = _mm512_set1_epi32(std::int32_t(a[i * lda + q]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], reinterpret_cast<const __m512bh&>(ai), reinterpret_cast<const __m512bh&>(b0));
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], reinterpret_cast<const __m512bh&>(ai), reinterpret_cast<const __m512bh&>(b1));
    }
  }
  LOOM_UNROLL
  for (int i = 0; i < R; ++i) {
    _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
    _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][1]);
  }
}

/// C[n, m] (row stride ldc) = A · Bᵀ for A n rows of k / 2 bf16 pairs (row stride lda pairs) and B
/// the m weights from row (or, `in_out`, column) j0 of w, f16 or bf16; k even.
LOOM_BF16 inline void gemm_bf16(const std::uint32_t* a, std::int64_t lda, std::int64_t n, std::int64_t k,
                                const TensorRef& w, bool in_out, std::int64_t j0, std::int64_t m, float* c,
                                std::int64_t ldc) {
  alignas(64) std::uint32_t packed[bf16_kc / 2 * bf16_nr];  // 32 KiB
  for (std::int64_t jj = 0; jj < m; jj += bf16_nr) {
    const int nr = int(std::min<std::int64_t>(bf16_nr, m - jj));
    for (std::int64_t p0 = 0; p0 < k; p0 += bf16_kc) {
      const int kc = int(std::min<std::int64_t>(bf16_kc, k - p0));
      pack_bf16(w, in_out, j0 + jj, nr, p0, kc, packed);
      const std::uint32_t* ap = a + p0 / 2;
      float* cp = c + jj;
      std::int64_t i = 0;
      for (; i + 12 <= n; i += 12) bf16_tile<12>(ap + i * lda, lda, packed, kc / 2, cp + i * ldc, ldc, nr, p0 > 0);
      if (n - i >= 8) bf16_tile<8>(ap + i * lda, lda, packed, kc / 2, cp + i * ldc, ldc, nr, p0 > 0), i += 8;
      if (n - i >= 4) bf16_tile<4>(ap + i * lda, lda, packed, kc / 2, cp + i * ldc, ldc, nr, p0 > 0), i += 4;
      if (n - i >= 2) bf16_tile<2>(ap + i * lda, lda, packed, kc / 2, cp + i * ldc, ldc, nr, p0 > 0), i += 2;
      if (n - i >= 1) bf16_tile<1>(ap + i * lda, lda, packed, kc / 2, cp + i * ldc, ldc, nr, p0 > 0);
    }
  }
}

#undef LOOM_BF16

#endif
