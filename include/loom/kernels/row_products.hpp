// Products of a few f32 rows with many stored rows (f32 or f16), the two products of attention:
//   dot_rows:          s[i][j] = a_i · b_j         (scores of a few queries against many keys)
//   weighted_rows_add: c_i    += Σ_j w[i][j] · b_j  (probability-weighted sum of values)
// Each stored row b_j is read once for all the f32 rows, which is what lets grouped-query
// attention read a KV head once for every query head that shares it.
//
// The SIMD path (AVX-512, or AVX2 with FMA and F16C) keeps blocks of up to 8 f32 rows in
// registers, converts f16 as it loads (no buffer), and for dot_rows reduces a whole vector of
// dot products at once. The portable path, the scalar version beside it and what other machines
// run, converts f16 in 64-element chunks on the stack and is written so that compilers vectorize
// it over columns. Both are deterministic: every output is computed in an order fixed by the
// sizes alone, whichever rows surround it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "loom/dtype.hpp"
#include "loom/kernels/ops.hpp"

#if (defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)) || \
    (defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#include <immintrin.h>
#define LOOM_ROW_PRODUCTS_SIMD 1
#endif

// The SIMD kernels keep their accumulators in arrays of vectors. These stay in registers only if
// every loop over them is unrolled before the compiler decides where arrays live, and if the
// helpers that take them by reference are inlined; otherwise they go through the stack on every
// iteration (2-3 times slower).
#if defined(__GNUC__) && !defined(__clang__)
#define LOOM_UNROLL _Pragma("GCC unroll 16")
#elif defined(__clang__)
#define LOOM_UNROLL _Pragma("unroll")
#else
#define LOOM_UNROLL
#endif
#if defined(__GNUC__)
#define LOOM_INLINE inline __attribute__((always_inline))
#else
#define LOOM_INLINE inline
#endif

namespace loom::kernels {

namespace detail {

/// Elements [0, len) of a stored row as f32: the row itself for f32, else converted into tmp.
inline const float* chunk_f32(const float* src, std::int64_t, float*) { return src; }
inline const float* chunk_f32(const f16* src, std::int64_t len, float* tmp) {
  to_f32(DType::f16, reinterpret_cast<const std::byte*>(src), tmp, len);
  return tmp;
}

/// Columns per chunk in the portable path (its stack buffer for converted f16).
inline constexpr int portable_chunk = 64;

template <typename T>
void dot_rows_portable(const float* a, std::int64_t lda, int na, const T* b, std::int64_t ldb, int nb, int n,
                       float* s, std::int64_t lds) {
  constexpr int L = 8;  // independent partial sums per dot product: the vectorized lanes
  for (int j = 0; j < nb; ++j) {
    for (int i0 = 0; i0 < na; i0 += 8) {
      const int ni = std::min(8, na - i0);
      float acc[8][L] = {};
      for (int d0 = 0; d0 < n; d0 += portable_chunk) {
        const int len = std::min(portable_chunk, n - d0);
        float tmp[portable_chunk];
        const float* bj = chunk_f32(b + j * ldb + d0, len, tmp);
        for (int i = 0; i < ni; ++i) {
          const float* ai = a + (i0 + i) * lda + d0;
          int d = 0;
          for (; d + L <= len; d += L)
            for (int l = 0; l < L; ++l) acc[i][l] += ai[d + l] * bj[d + l];
          for (int l = 0; d + l < len; ++l) acc[i][l] += ai[d + l] * bj[d + l];
        }
      }
      for (int i = 0; i < ni; ++i) {
        const float* p = acc[i];
        s[(i0 + i) * lds + j] = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
      }
    }
  }
}

template <typename T>
void weighted_rows_add_portable(const float* w, std::int64_t ldw, int nw, const T* b, std::int64_t ldb, int nb, int n,
                                float* c, std::int64_t ldc) {
  for (int j = 0; j < nb; ++j)
    for (int d0 = 0; d0 < n; d0 += portable_chunk) {
      const int len = std::min(portable_chunk, n - d0);
      float tmp[portable_chunk];
      const float* bj = chunk_f32(b + j * ldb + d0, len, tmp);
      for (int i = 0; i < nw; ++i) {
        const float wij = w[i * ldw + j];
        float* ci = c + i * ldc + d0;
        for (int d = 0; d < len; ++d) ci[d] += wij * bj[d];
      }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

/// 16 f32 lanes. load/store touch the first n lanes only (n <= 0: none); the others read as 0.
struct Simd {
  using V = __m512;
  static constexpr int lanes = 16;
  static constexpr int accumulators = 16;  // weighted_block: 16 accumulators and their loads fit 32 registers
  static __mmask16 first(int n) {
    return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
  }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V load(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static V load(const f16* p, int n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(n), p)); }
  static void store(float* p, int n, V v) { _mm512_mask_storeu_ps(p, first(n), v); }
  /// _mm512_shuffle_f32x4 through its masked form: GCC 12's unmasked one reads an undefined
  /// operand and warns (-Wuninitialized) inside its own header.
  template <int imm>
  static V shuffle_blocks(V a, V b) { return _mm512_mask_shuffle_f32x4(a, __mmask16(0xffff), a, b, imm); }

  /// Lane i of the result = the sum of the lanes of v[i]. Four rounds pair vectors i and i + 8,
  /// i + 4, i + 2, i + 1 and add 256-bit halves, 128-bit blocks, pairs, then single lanes: about
  /// 3 instructions per sum instead of 8 for one vector at a time, and the same additions, in
  /// the same order, for every input.
  static LOOM_INLINE V reduce(const V (&v)[lanes]) {
    // The rounds leave input k's sum in lane pos(k); src[lane] is the input that lands there.
    constexpr int src[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};
    V x[16], r[8], u[4], w[2];
    LOOM_UNROLL
    for (int lane = 0; lane < 16; ++lane) x[src[lane]] = v[lane];
    LOOM_UNROLL
    for (int i = 0; i < 8; ++i)
      r[i] = _mm512_add_ps(shuffle_blocks<0x44>(x[i], x[i + 8]), shuffle_blocks<0xee>(x[i], x[i + 8]));
    LOOM_UNROLL
    for (int i = 0; i < 4; ++i)
      u[i] = _mm512_add_ps(shuffle_blocks<0x88>(r[i], r[i + 4]), shuffle_blocks<0xdd>(r[i], r[i + 4]));
    LOOM_UNROLL
    for (int i = 0; i < 2; ++i)
      w[i] = _mm512_add_ps(_mm512_shuffle_ps(u[i], u[i + 2], 0x44), _mm512_shuffle_ps(u[i], u[i + 2], 0xee));
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xdd));
  }
};

#elif defined(LOOM_ROW_PRODUCTS_SIMD)

/// 8 f32 lanes (AVX2). load/store touch the first n lanes only (n <= 0: none); the others read as 0.
struct Simd {
  using V = __m256;
  static constexpr int lanes = 8;
  static constexpr int accumulators = 8;  // weighted_block: 8 accumulators and their loads fit 16 registers
  static __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V load(const float* p, int n) { return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first(n)); }
  static V load(const f16* p, int n) {
    if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    f16 tail[8] = {};  // no masked 16-bit loads in AVX2
    if (n > 0) std::memcpy(tail, p, std::size_t(n) * sizeof(f16));
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tail)));
  }
  static void store(float* p, int n, V v) {
    if (n >= 8)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, first(n), v);
  }
  /// Lane i of the result = the sum of the lanes of v[i]: three rounds pairing vectors i and
  /// i + 4, i + 2, i + 1, as the AVX-512 version.
  static LOOM_INLINE V reduce(const V (&v)[lanes]) {
    constexpr int src[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    V x[8], r[4], u[2];
    LOOM_UNROLL
    for (int lane = 0; lane < 8; ++lane) x[src[lane]] = v[lane];
    LOOM_UNROLL
    for (int i = 0; i < 4; ++i)
      r[i] = _mm256_add_ps(_mm256_permute2f128_ps(x[i], x[i + 4], 0x20), _mm256_permute2f128_ps(x[i], x[i + 4], 0x31));
    LOOM_UNROLL
    for (int i = 0; i < 2; ++i)
      u[i] = _mm256_add_ps(_mm256_shuffle_ps(r[i], r[i + 2], 0x44), _mm256_shuffle_ps(r[i], r[i + 2], 0xee));
    return _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], 0x88), _mm256_shuffle_ps(u[0], u[1], 0xdd));
  }
};

#endif

#if defined(LOOM_ROW_PRODUCTS_SIMD)

/// Dot products of B rows of a with np <= lanes/B consecutive rows of b: one vector of them.
template <int B, typename T>
void dot_block(const float* a, std::int64_t lda, const T* b, std::int64_t ldb, int np, int n, float* s,
               std::int64_t lds) {
  constexpr int W = Simd::lanes, P = W / B;
  Simd::V acc[W];
  LOOM_UNROLL
  for (auto& x : acc) x = Simd::zero();
  for (int d = 0; d < n; d += W) {
    Simd::V q[B];
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) q[i] = Simd::load(a + i * lda + d, n - d);
    LOOM_UNROLL
    for (int p = 0; p < P; ++p) {
      if (p < np) {
        const Simd::V k = Simd::load(b + p * ldb + d, n - d);
        LOOM_UNROLL
        for (int i = 0; i < B; ++i) acc[p * B + i] = Simd::fmadd(q[i], k, acc[p * B + i]);
      }
    }
  }
  float out[W];
  Simd::store(out, W, Simd::reduce(acc));
  for (int p = 0; p < np; ++p)
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) s[i * lds + p] = out[p * B + i];
}

/// dot_block for one row of a and n = NV·lanes exactly: a's NV vectors stay in registers and each
/// row of b is read front to back (dot_block reads one vector of each of its `lanes` rows in
/// turn). The same products are added in the same order, so the results are identical.
template <int NV, typename T>
void dot_block_one(const float* a, const T* b, std::int64_t ldb, int np, float* s) {
  constexpr int W = Simd::lanes;
  Simd::V q[NV], acc[W];
  LOOM_UNROLL
  for (int v = 0; v < NV; ++v) q[v] = Simd::load(a + v * W, W);
  LOOM_UNROLL
  for (int p = 0; p < W; ++p) {
    acc[p] = Simd::zero();
    if (p < np) {
      LOOM_UNROLL
      for (int v = 0; v < NV; ++v) acc[p] = Simd::fmadd(q[v], Simd::load(b + p * ldb + v * W, W), acc[p]);
    }
  }
  float out[W];
  Simd::store(out, W, Simd::reduce(acc));
  for (int p = 0; p < np; ++p) s[p] = out[p];
}

template <int B, typename T>
void dot_rows_block(const float* a, std::int64_t lda, const T* b, std::int64_t ldb, int nb, int n, float* s,
                    std::int64_t lds) {
  constexpr int P = Simd::lanes / B;
  if constexpr (B == 1) {
    auto one_row = [&]<int NV>() {
      for (int j = 0; j < nb; j += P) dot_block_one<NV>(a, b + j * ldb, ldb, std::min(P, nb - j), s + j);
    };
    if (n == 4 * Simd::lanes) return one_row.template operator()<4>();
    if (n == 8 * Simd::lanes) return one_row.template operator()<8>();
  }
  for (int j = 0; j < nb; j += P) dot_block<B>(a, lda, b + j * ldb, ldb, std::min(P, nb - j), n, s + j, lds);
}

/// Columns [d, d + lanes·CV) of B rows of c += w · b over nb rows of b.
template <int B, int CV, typename T>
void weighted_block(const float* w, std::int64_t ldw, const T* b, std::int64_t ldb, int nb, int n, int d, float* c,
                    std::int64_t ldc) {
  constexpr int W = Simd::lanes;
  Simd::V acc[CV][B];
  LOOM_UNROLL
  for (int v = 0; v < CV; ++v)
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) acc[v][i] = Simd::load(c + i * ldc + d + v * W, n - d - v * W);
  for (int j = 0; j < nb; ++j) {
    Simd::V x[CV];
    LOOM_UNROLL
    for (int v = 0; v < CV; ++v) x[v] = Simd::load(b + j * ldb + d + v * W, n - d - v * W);
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) {
      const Simd::V wij = Simd::set1(w[i * ldw + j]);
      LOOM_UNROLL
      for (int v = 0; v < CV; ++v) acc[v][i] = Simd::fmadd(wij, x[v], acc[v][i]);
    }
  }
  LOOM_UNROLL
  for (int v = 0; v < CV; ++v)
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) Simd::store(c + i * ldc + d + v * W, n - d - v * W, acc[v][i]);
}

/// c[B rows] += w · b over all n columns: CV vectors of columns per pass over b's rows, as many
/// as the registers hold for B rows (but no more than n needs), so that a row of values is read
/// in one piece: for one query row and head_dim 64 a single pass reads each 256-byte row once
/// (two passes of 128 bytes each read V at 12 GB/s from DRAM on this project's machine).
/// Each output sums over j in order whatever CV is.
template <int B, typename T>
void weighted_rows_block(const float* w, std::int64_t ldw, const T* b, std::int64_t ldb, int nb, int n, float* c,
                         std::int64_t ldc) {
  const int needed = (n + Simd::lanes - 1) / Simd::lanes;  // column vectors of one row
  // CV: the smallest power of two >= needed, at most 8 and what B rows of accumulators allow.
  auto passes = [&]<int CV>(auto& self) -> void {
    if constexpr (CV > 1)
      if (needed <= CV / 2) return self.template operator()<CV / 2>(self);
    for (int d = 0; d < n; d += Simd::lanes * CV) weighted_block<B, CV>(w, ldw, b, ldb, nb, n, d, c, ldc);
  };
  passes.template operator()<std::min(8, std::max(1, Simd::accumulators / B))>(passes);
}

/// Calls block<B>(first row of the block, B) over rows [0, rows) in blocks of 8, then 4, 2, 1.
template <typename Block>
void in_row_blocks(int rows, Block&& block) {
  int i = 0;
  for (; i + 8 <= rows; i += 8) block.template operator()<8>(i);
  if (rows - i >= 4) block.template operator()<4>(i), i += 4;
  if (rows - i >= 2) block.template operator()<2>(i), i += 2;
  if (rows - i >= 1) block.template operator()<1>(i);
}

/// Rows of b per tile: they stay in L1/L2 while every block of f32 rows passes over them.
inline constexpr int simd_tile = 128;

template <typename T>
void dot_rows_simd(const float* a, std::int64_t lda, int na, const T* b, std::int64_t ldb, int nb, int n, float* s,
                   std::int64_t lds) {
  for (int j0 = 0; j0 < nb; j0 += simd_tile) {
    const int nj = std::min(simd_tile, nb - j0);
    in_row_blocks(na, [&]<int B>(int i) {
      dot_rows_block<B>(a + i * lda, lda, b + j0 * ldb, ldb, nj, n, s + i * lds + j0, lds);
    });
  }
}

template <typename T>
void weighted_rows_add_simd(const float* w, std::int64_t ldw, int nw, const T* b, std::int64_t ldb, int nb, int n,
                            float* c, std::int64_t ldc) {
  for (int j0 = 0; j0 < nb; j0 += simd_tile) {
    const int nj = std::min(simd_tile, nb - j0);
    in_row_blocks(nw, [&]<int B>(int i) {
      weighted_rows_block<B>(w + i * ldw + j0, ldw, b + j0 * ldb, ldb, nj, n, c + i * ldc, ldc);
    });
  }
}

#endif

}  // namespace detail

/// s[i·lds + j] = Σ_d a[i·lda + d] · b[j·ldb + d] for i < na, j < nb, d < n. T: float or f16.
template <typename T>
void dot_rows(const float* a, std::int64_t lda, int na, const T* b, std::int64_t ldb, int nb, int n, float* s,
              std::int64_t lds) {
#if defined(LOOM_ROW_PRODUCTS_SIMD)
  detail::dot_rows_simd(a, lda, na, b, ldb, nb, n, s, lds);
#else
  detail::dot_rows_portable(a, lda, na, b, ldb, nb, n, s, lds);
#endif
}

/// c[i·ldc + d] += Σ_j w[i·ldw + j] · b[j·ldb + d] for i < nw, j < nb, d < n. T: float or f16.
template <typename T>
void weighted_rows_add(const float* w, std::int64_t ldw, int nw, const T* b, std::int64_t ldb, int nb, int n, float* c,
                       std::int64_t ldc) {
#if defined(LOOM_ROW_PRODUCTS_SIMD)
  detail::weighted_rows_add_simd(w, ldw, nw, b, ldb, nb, n, c, ldc);
#else
  detail::weighted_rows_add_portable(w, ldw, nw, b, ldb, nb, n, c, ldc);
#endif
}

}  // namespace loom::kernels

#undef LOOM_UNROLL
#undef LOOM_INLINE
#undef LOOM_ROW_PRODUCTS_SIMD
