// Attention's two products (kernels/attention_products.hpp), compiled once per kernel level:
// kernels/levels.hpp includes this file in namespace loom::kernels::<level> with LOOM_LEVEL 0
// (portable), 1 (AVX2) or 2 (AVX-512), inside that level's target region. No include guard.

#if LOOM_LEVEL == 0

/// Elements [0, len) of a stored row as f32: the row itself for f32, else converted into tmp.
inline const float* chunk_f32(const float* src, std::int64_t, float*) { return src; }
inline const float* chunk_f32(const f16* src, std::int64_t len, float* tmp) {
  for (std::int64_t i = 0; i < len; ++i) tmp[i] = to_float(src[i]);
  return tmp;
}

/// Columns per chunk in the portable path (its stack buffer for converted f16).
inline constexpr int portable_chunk = 64;

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

template <typename T>
void dot_tiles_portable(const float* a, std::int64_t lda, int na, const T* tiles, int nt, int n, float* s,
                        std::int64_t lds) {
  for (int t = 0; t < nt; ++t) {
    const T* tile = tiles + std::int64_t(t) * key_tile * n;
    for (int i = 0; i < na; ++i) {
      float acc[key_tile] = {};
      for (int d0 = 0; d0 < n; d0 += portable_chunk / key_tile) {
        const int len = std::min(portable_chunk / key_tile, n - d0);
        float tmp[portable_chunk];
        const float* x = chunk_f32(tile + std::int64_t(d0) * key_tile, len * key_tile, tmp);
        for (int d = 0; d < len; ++d) {
          const float ad = a[i * lda + d0 + d];
          for (int l = 0; l < key_tile; ++l) acc[l] += ad * x[d * key_tile + l];
        }
      }
      std::copy_n(acc, key_tile, s + i * lds + t * key_tile);
    }
  }
}

#elif LOOM_LEVEL == 2

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
};

#elif LOOM_LEVEL == 1

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
};

#endif

#if LOOM_LEVEL >= 1

/// Scores of B rows of a against PV vectors of positions: vectors c0, c0 + cs, c0 + 2·cs, ...
/// of the tiles (a tile is key_tile / lanes vectors). Element d of each vector's keys is one
/// load, multiplied by a broadcast a[i][d]; each score is one chain of FMAs over d in order,
/// whatever B, PV and cs are. Each stream asks for its bytes 512 ahead, one request per 128
/// (keys from DRAM, one core, 544 positions of head_dim 64, GB/s: f16 1 row 12.3-12.7 -> 13.6-14.1,
/// f32 8 rows 11.8-12.1 -> 13.2, f16 8 rows 11.0 -> 11.5; f32 1 row unchanged at 16; 2048 ahead
/// gained less).
template <int B, int PV, typename T>
void tile_block(const float* a, std::int64_t lda, const T* tiles, int c0, int cs, int n, float* s, std::int64_t lds) {
  constexpr int W = Simd::lanes, VPT = key_tile / W;
  const T* col[PV];
  LOOM_UNROLL
  for (int v = 0; v < PV; ++v) col[v] = tiles + std::int64_t((c0 + v * cs) / VPT) * key_tile * n + (c0 + v * cs) % VPT * W;
  Simd::V acc[PV][B];
  LOOM_UNROLL
  for (int v = 0; v < PV; ++v)
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) acc[v][i] = Simd::zero();
  constexpr int per_request = 128 / int(sizeof(T) * key_tile);  // elements d per 128 bytes of a stream
  for (int d = 0; d < n; ++d) {
    Simd::V x[PV];
    LOOM_UNROLL
    for (int v = 0; v < PV; ++v) {
      if (d % per_request == 0) prefetch_ahead(col[v] + std::int64_t(d) * key_tile, 1, 512);
      x[v] = Simd::load(col[v] + std::int64_t(d) * key_tile, W);
    }
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) {
      const Simd::V ai = Simd::set1(a[i * lda + d]);
      LOOM_UNROLL
      for (int v = 0; v < PV; ++v) acc[v][i] = Simd::fmadd(ai, x[v], acc[v][i]);
    }
  }
  LOOM_UNROLL
  for (int v = 0; v < PV; ++v)
    LOOM_UNROLL
    for (int i = 0; i < B; ++i) Simd::store(s + i * lds + (c0 + v * cs) * W, W, acc[v][i]);
}

/// dot_tiles for B rows of a. The vectors of positions are cut into S equal parts read side by
/// side (vector c with c + q, c + 2q, c + 3q): S long streams, which the hardware prefetcher
/// serves far better than the short streams of S adjacent tiles (one 4 KiB tile each at
/// head_dim 64). Measured on this project's machine (one core, keys from DRAM, 544 positions
/// of head_dim 64 per KV head, bench harness), GB/s with 4 adjacent tiles per pass -> 4 parts:
/// f32 B = 1: 20.0 -> 26.2, B = 2: 19.7 -> 28.3, B = 4: 17.1 -> 25.0, B = 8: 12.7 -> 18.4;
/// f16 B = 1: 14.3 -> 22.5, B = 4: 10.7 -> 17.9, B = 8: 9.6 -> 12.3 (2 parts: 16.9 / 10.3 for
/// B = 8 even though 4 parts of 8 rows need more accumulators than AVX-512's registers hold;
/// software prefetching 2 tiles ahead, which helped adjacent tiles, measured slower). With AVX2's
/// 16 registers, S is what the accumulators allow.
template <int B, typename T>
void tile_rows_block(const float* a, std::int64_t lda, const T* tiles, int nt, int n, float* s, std::int64_t lds) {
  constexpr int S = Simd::lanes == 16 ? 4 : std::clamp(Simd::accumulators / B, 1, 4);
  const int vectors = nt * (key_tile / Simd::lanes), q = vectors / S;
  for (int c = 0; c < q; ++c) tile_block<B, S>(a, lda, tiles, c, q, n, s, lds);
  for (int c = S * q; c < vectors; ++c) tile_block<B, 1>(a, lda, tiles, c, 1, n, s, lds);
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
  // The first pass prefetches whole rows 32 ahead. A pass that reads only part of each row (CV
  // vectors of n columns) is a strided stream that the hardware prefetcher serves late
  // (TinyLlama's values, 8 rows per block, context 544, one core: 1.03 -> 0.84 ms per token, 16
  // rows ahead); short rows read whole are served late too (GPT-2's f16 values, 128 bytes a row,
  // one row per block, from DRAM: 11.0-11.4 -> 14.4-14.8 GB/s; 16 rows ahead 13.9-14.2).
  const bool prefetch_rows = d == 0;
  const std::uintptr_t row_bytes = std::uintptr_t(n) * sizeof(T), ahead = 32 * std::uintptr_t(ldb) * sizeof(T);
  // Passes of whole vectors load them plainly (the lane count a compile-time constant): a masked
  // load costs the Intel Xeon a vector uop beside the load. BM_Attention ctx 512, one thread, in
  // cache: f32 46.0 -> 42.1 us, f16 44.5 -> 42.8; from DRAM unchanged.
  auto rows = [&]<bool whole>() {
    for (int j = 0; j < nb; ++j) {
      if (prefetch_rows) prefetch_ahead(b + j * ldb, row_bytes, ahead);
      Simd::V x[CV];
      LOOM_UNROLL
      for (int v = 0; v < CV; ++v) x[v] = Simd::load(b + j * ldb + d + v * W, whole ? W : n - d - v * W);
      LOOM_UNROLL
      for (int i = 0; i < B; ++i) {
        const Simd::V wij = Simd::set1(w[i * ldw + j]);
        LOOM_UNROLL
        for (int v = 0; v < CV; ++v) acc[v][i] = Simd::fmadd(wij, x[v], acc[v][i]);
      }
    }
  };
  if (n - d >= CV * W)
    rows.template operator()<true>();
  else
    rows.template operator()<false>();
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

/// Positions (keys, or rows of values) per pass of the SIMD path: every block of f32 rows passes
/// over them while they stay in L2 (up to 512 KiB: head_dim 128 in f32). Up to this context a
/// KV head is read in one pass (long streams); 128 positions per pass measured slower (values,
/// one core, from DRAM, 544 positions of head_dim 64, 8 rows: 12.6 -> 14.2 GB/s; 1 row: 22.3 ->
/// 24.8).
inline constexpr int simd_tile = 1024;

template <typename T>
void dot_tiles_simd(const float* a, std::int64_t lda, int na, const T* tiles, int nt, int n, float* s,
                    std::int64_t lds) {
  constexpr int tiles_per_pass = simd_tile / key_tile;
  for (int t0 = 0; t0 < nt; t0 += tiles_per_pass) {
    const T* first = tiles + std::int64_t(t0) * key_tile * n;
    const int count = std::min(tiles_per_pass, nt - t0);
    in_row_blocks(na, [&]<int B>(int i) {
      tile_rows_block<B>(a + i * lda, lda, first, count, n, s + i * lds + t0 * key_tile, lds);
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

/// dot_tiles and weighted_rows_add (kernels/attention_products.hpp) at this level.
template <typename T>
void dot_tiles_level(const float* a, std::int64_t lda, int na, const T* tiles, int nt, int n, float* s,
                     std::int64_t lds) {
#if LOOM_LEVEL == 0
  dot_tiles_portable(a, lda, na, tiles, nt, n, s, lds);
#else
  dot_tiles_simd(a, lda, na, tiles, nt, n, s, lds);
#endif
}
template <typename T>
void weighted_rows_add_level(const float* w, std::int64_t ldw, int nw, const T* b, std::int64_t ldb, int nb, int n,
                             float* c, std::int64_t ldc) {
#if LOOM_LEVEL == 0
  weighted_rows_add_portable(w, ldw, nw, b, ldb, nb, n, c, ldc);
#else
  weighted_rows_add_simd(w, ldw, nw, b, ldb, nb, n, c, ldc);
#endif
}
