// The two products of attention, of a few f32 rows (query heads) with many stored rows (f32 or
// f16 keys and values):
//   dot_tiles:         s[i][j] = a_i · key_j        (scores of a few queries against many keys)
//   weighted_rows_add: c_i    += Σ_j w[i][j] · b_j  (probability-weighted sum of values)
// Each stored key and value is read once for all the f32 rows, which is what lets grouped-query
// attention read a KV head once for every query head that shares it.
//
// Keys come in tiles of 16 positions stored transposed ([head_dim, 16], see KVCache): one vector
// holds element d of 16 keys, so scores build up lane by lane, one FMA per query row and element,
// with no horizontal sums (with keys as rows, reducing the 8×16 dot products of a grouped-query
// block cost as much as the products). TinyLlama's attention at context 544, one core, cache in
// DRAM: 2.7 -> 2.0 ms per token with tiles and prefetches; keys are now read as four far-apart
// streams instead (tile_rows_block).
//
// The SIMD path (AVX-512, or AVX2 with FMA and F16C) keeps blocks of up to 8 f32 rows in
// registers and converts f16 as it loads (no buffer). The portable path, the scalar version
// beside it and what other machines run, converts f16 in 64-element chunks on the stack and is
// written so that compilers vectorize it. Both are deterministic: every output is computed in an
// order fixed by the sizes alone, whichever rows surround it.
#pragma once

#include <cstdint>

#include "loom/dtype.hpp"
#include "loom/kernels/levels.hpp"

namespace loom::kernels {

/// Scores of na rows of a against keys stored in tiles of key_tile positions, element d of the
/// tile's keys at tile[d·key_tile + position in tile]; tile t at tiles + t·key_tile·n:
///   s[i·lds + j] = Σ_d a[i·lda + d] · key_j[d]   for i < na, j < key_tile·nt, d < n.
/// Each score is the sum over d in order, the same whichever rows it is computed with.
template <typename T>
void dot_tiles(const float* a, std::int64_t lda, int na, const T* tiles, int nt, int n, float* s, std::int64_t lds) {
  const LevelKernels& k = level_kernels();
  if constexpr (std::is_same_v<T, f16>)
    k.dot_tiles_f16(a, lda, na, tiles, nt, n, s, lds);
  else
    k.dot_tiles_f32(a, lda, na, tiles, nt, n, s, lds);
}

/// c[i·ldc + d] += Σ_j w[i·ldw + j] · b[j·ldb + d] for i < nw, j < nb, d < n. T: float or f16.
template <typename T>
void weighted_rows_add(const float* w, std::int64_t ldw, int nw, const T* b, std::int64_t ldb, int nb, int n, float* c,
                       std::int64_t ldc) {
  const LevelKernels& k = level_kernels();
  if constexpr (std::is_same_v<T, f16>)
    k.weighted_rows_add_f16(w, ldw, nw, b, ldb, nb, n, c, ldc);
  else
    k.weighted_rows_add_f32(w, ldw, nw, b, ldb, nb, n, c, ldc);
}

}  // namespace loom::kernels
