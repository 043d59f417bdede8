// The f32 matrix product of the prompt path, C[n, m] = A[n, k] · Bᵀ, compiled once per kernel
// level (kernels/levels.hpp includes this file in namespace loom::kernels::<level>, LOOM_LEVEL 0,
// 1 or 2, inside that level's target region). No include guard.
//
// B is m rows of k values: row j at b + j·ldb (`b_k_major` false: weights stored [out, in]), or
// column j of a [k, m] matrix, b[p·ldb + j] (true: weights stored [in, out], GPT-2's Conv1D).
//
// SIMD levels: a register tile of MR rows of A by NR = 2 vectors of columns of B (AVX-512: 12 × 32,
// 24 accumulators of the 32 zmm registers; AVX2: 6 × 16, 12 of the 16 ymm). Per step p of the
// inner loop the tile loads two vectors of packed B and broadcasts MR values of A into 2·MR FMAs:
// (2 + MR) loads for 2·MR·L multiply-adds, 8 bytes of B per FMA shared by MR rows. B is packed
// per NR columns and KC = 256 steps ([KC][NR] floats, 32 KiB with AVX-512: it stays in L1 while
// every row tile of A passes over it); A is read in place (MR rows of KC floats each, from L2).
// Every element of C is summed over p in order, in KC-sized pieces in order, whatever n, m and
// the tile it falls in: results depend on the sizes alone. The portable level runs the same
// driver with a tile of plain arrays (4 × 16, which compilers vectorize with the includer's
// flags); on machines without loom's x86 levels, where it is the only level, it multiplies with
// Eigen instead.

#if LOOM_LEVEL == 0 && !LOOM_X86

inline void gemm_f32(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const float* b,
                     std::int64_t ldb, bool b_k_major, std::int64_t m, float* c, std::int64_t ldc) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Strided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  const Strided A(a, n, k, Eigen::OuterStride<>(lda));
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> C(c, n, m, Eigen::OuterStride<>(ldc));
  if (b_k_major)
    C.noalias() = A * Strided(b, k, m, Eigen::OuterStride<>(ldb));
  else
    C.noalias() = A * Strided(b, m, k, Eigen::OuterStride<>(ldb)).transpose();
}

#else

#if LOOM_LEVEL == 0
/// The portable tile: rows × 2 "vectors" of 8 floats held in arrays.
struct GemmVec {
  static constexpr int lanes = 8, rows = 4;
};
#elif LOOM_LEVEL == 2
/// The GEMM's vectors: 16 floats, with masks for a partial last panel.
struct GemmVec {
  using V = __m512;
  static constexpr int lanes = 16, rows = 12;
  static __mmask16 mask(int n) { return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, int n, V v) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
#else
/// The GEMM's vectors: 8 floats, with masks for a partial last panel.
struct GemmVec {
  using V = __m256;
  static constexpr int lanes = 8, rows = 6;
  static __m256i mask(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const float* p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, int n, V v) {
    if (n >= 8)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, mask(n), v);
  }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
#endif

inline constexpr int gemm_nr = 2 * GemmVec::lanes;  ///< columns of C per register tile
inline constexpr int gemm_kc = 256;                 ///< steps of p per packed piece of B

/// C[R rows, nr <= gemm_nr columns] (+)= A[R rows, kc] · packed B piece ([kc][gemm_nr]); adds to
/// C's values when `accumulate`.
template <int R>
void gemm_tile(const float* a, std::int64_t lda, const float* bp, int kc, float* c, std::int64_t ldc, int nr,
               bool accumulate) {
#if LOOM_LEVEL == 0
  float acc[R][gemm_nr] = {};
  if (accumulate)
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < nr; ++j) acc[i][j] = c[i * ldc + j];
  for (int p = 0; p < kc; ++p)
    for (int i = 0; i < R; ++i) {
      const float ai = a[i * lda + p];
      for (int j = 0; j < gemm_nr; ++j) acc[i][j] += ai * bp[p * gemm_nr + j];
    }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = acc[i][j];
#else
  using S = GemmVec;
  constexpr int L = S::lanes;
  S::V acc[R][2];
  LOOM_UNROLL
  for (int i = 0; i < R; ++i) {
    acc[i][0] = accumulate ? S::load(c + i * ldc, nr) : S::zero();
    acc[i][1] = accumulate ? S::load(c + i * ldc + L, nr - L) : S::zero();
  }
  for (int p = 0; p < kc; ++p) {
    const S::V b0 = S::load(bp + p * gemm_nr), b1 = S::load(bp + p * gemm_nr + L);
    LOOM_UNROLL
    for (int i = 0; i < R; ++i) {
      const S::V ai = S::set1(a[i * lda + p]);
      acc[i][0] = S::fmadd(ai, b0, acc[i][0]);
      acc[i][1] = S::fmadd(ai, b1, acc[i][1]);
    }
  }
  LOOM_UNROLL
  for (int i = 0; i < R; ++i) {
    S::store(c + i * ldc, nr, acc[i][0]);
    S::store(c + i * ldc + L, nr - L, acc[i][1]);
  }
#endif
}

/// C rows [0, rows) (rows <= GemmVec::rows) by tiles of GemmVec::rows, 8, 4, 2 and 1 rows: five
/// compiled tiles at most, not one per row count.
inline void gemm_tile_rows(int rows, const float* a, std::int64_t lda, const float* bp, int kc, float* c,
                           std::int64_t ldc, int nr, bool accumulate) {
  constexpr int MR = GemmVec::rows;
  if (rows == MR) return gemm_tile<MR>(a, lda, bp, kc, c, ldc, nr, accumulate);
  int i = 0;
  auto part = [&]<int R>() {
    if constexpr (R < MR)
      for (; rows - i >= R; i += R) gemm_tile<R>(a + i * lda, lda, bp, kc, c + i * ldc, ldc, nr, accumulate);
  };
  part.template operator()<8>();
  part.template operator()<4>();
  part.template operator()<2>();
  part.template operator()<1>();
}

/// One value of B as f32 (f16 and bf16 convert exactly).
template <typename T>
float b_value(T v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return to_float(v);
}

#if LOOM_LEVEL >= 1
/// 8 consecutive values of B as f32, converted in registers.
template <typename T>
__m256 load8_f32(const T* p) {
  if constexpr (std::is_same_v<T, float>)
    return _mm256_loadu_ps(p);
  else if constexpr (std::is_same_v<T, f16>)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  else
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

/// r[i][j] → r[j][i] for an 8 × 8 block of floats.
inline void transpose8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}
#endif

/// The piece of B: packed[p][j] = B(j0 + j, p0 + p) as f32 for p < kc, j < nr, zero for
/// nr <= j < gemm_nr. With B stored by rows each 8 × 8 block is loaded (converted), transposed
/// in registers and stored.
template <typename T>
void pack_b(const T* b, std::int64_t ldb, bool b_k_major, std::int64_t j0, int nr, std::int64_t p0, int kc,
            float* packed) {
  if (b_k_major) {
    for (int p = 0; p < kc; ++p) {
      const T* src = b + (p0 + p) * ldb + j0;
      float* dst = packed + p * gemm_nr;
      int j = 0;
#if LOOM_LEVEL >= 1
      for (; j + 8 <= nr; j += 8) _mm256_storeu_ps(dst + j, load8_f32(src + j));
#endif
      for (; j < nr; ++j) dst[j] = b_value(src[j]);
      for (; j < gemm_nr; ++j) dst[j] = 0.0f;
    }
    return;
  }
  int j = 0;
#if LOOM_LEVEL >= 1
  for (; j + 8 <= nr; j += 8) {
    const T* src = b + (j0 + j) * ldb + p0;
    int p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = load8_f32(src + i * ldb + p);
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(packed + (p + i) * gemm_nr + j, r[i]);
    }
    for (; p < kc; ++p)
      for (int i = 0; i < 8; ++i) packed[p * gemm_nr + j + i] = b_value(src[i * ldb + p]);
  }
#endif
  for (; j < nr; ++j) {
    const T* src = b + (j0 + j) * ldb + p0;
    for (int p = 0; p < kc; ++p) packed[p * gemm_nr + j] = b_value(src[p]);
  }
  for (; j < gemm_nr; ++j)
    for (int p = 0; p < kc; ++p) packed[p * gemm_nr + j] = 0.0f;
}

/// C = A · Bᵀ for B of element type T (float, f16 or bf16), converted to f32 as it is packed.
template <typename T>
void gemm_of(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const T* b, std::int64_t ldb,
             bool b_k_major, std::int64_t m, float* c, std::int64_t ldc) {
  alignas(64) float packed[gemm_kc * gemm_nr];  // 32 KiB (AVX-512), 16 KiB (AVX2)
  constexpr int MR = GemmVec::rows;
  for (std::int64_t j0 = 0; j0 < m; j0 += gemm_nr) {
    const int nr = int(std::min<std::int64_t>(gemm_nr, m - j0));
    for (std::int64_t p0 = 0; p0 < k; p0 += gemm_kc) {
      const int kc = int(std::min<std::int64_t>(gemm_kc, k - p0));
      pack_b(b, ldb, b_k_major, j0, nr, p0, kc, packed);
      for (std::int64_t i0 = 0; i0 < n; i0 += MR)
        gemm_tile_rows(int(std::min<std::int64_t>(MR, n - i0)), a + i0 * lda + p0, lda, packed, kc, c + i0 * ldc + j0,
                       ldc, nr, p0 > 0);
    }
  }
}

inline void gemm_f32(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const float* b,
                     std::int64_t ldb, bool b_k_major, std::int64_t m, float* c, std::int64_t ldc) {
  gemm_of(a, lda, n, k, b, ldb, b_k_major, m, c, ldc);
}

/// C[n, m] = A · (the m weights of w from j0)ᵀ for f16 or bf16 w ([out, in], or [in, out] when
/// `in_out`), read in place: each value converted to f32 in registers as B is packed, the same
/// products as converting w first and calling gemm_f32.
inline void gemm_half(const float* a, std::int64_t lda, std::int64_t n, std::int64_t k, const TensorRef& w,
                      bool in_out, std::int64_t j0, std::int64_t m, float* c, std::int64_t ldc) {
  const std::int64_t ldb = in_out ? w.cols() : k;
  auto run = [&]<typename T>(const T* all) {
    const T* b = in_out ? all + j0 : all + j0 * k;
    gemm_of(a, lda, n, k, b, ldb, in_out, m, c, ldc);
  };
  if (w.dtype == DType::f16)
    run(reinterpret_cast<const f16*>(w.data));
  else
    run(reinterpret_cast<const bf16*>(w.data));
}

#endif
