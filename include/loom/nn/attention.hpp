// Causal multi-head attention over the KV cache, with grouped-query / multi-query sharing of KV
// heads, scale 1/√head_dim, optional ALiBi bias and optional sliding window.
//
// Work is split into items (query row t, KV head): the `group` = n_heads / n_kv_heads query
// heads that share a KV head are computed together, so each KV head's keys and values are read
// once per query row instead of once per query head (8 times less for TinyLlama's 32/4 heads):
//   scores (group, m) = Q_group (group, head_dim) · Kᵀ (head_dim, m),  softmax per row,
//   out    (group, head_dim) = P (group, m) · V (m, head_dim).
// Each item is computed by one thread in an order fixed by its sizes, so results do not depend
// on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/attention_products.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/position.hpp"
#include "loom/nn/shapes.hpp"
#include "loom/nn/workspace.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// Where attention reads: one layer of a KV cache, and the position of the first query row.
struct KVRead {
  const KVCache& cache;
  int layer = 0;
  int pos = 0;
};
/// Where self_attention appends its keys and values (then reads them as KVRead).
struct KVWrite {
  KVCache& cache;
  int layer = 0;
  int pos = 0;
  operator KVRead() const { return {cache, layer, pos}; }
};

namespace detail {

/// Floats per row of scores: the capacity rounded up to whole key tiles (16 floats, so no two
/// threads' scratch share a cache line either).
inline std::int64_t score_row_floats(std::int64_t capacity) { return kernels::key_tiles_for(capacity) * kernels::key_tile; }

}  // namespace detail

/// Floats of scratch attention() needs per thread for a cache of `capacity` positions: the
/// scores of one query group.
inline std::int64_t attention_scratch_floats(const AttentionShape& s, std::int64_t capacity) {
  const std::int64_t group = s.n_kv_heads > 0 ? s.n_heads / s.n_kv_heads : 0;
  return group * detail::score_row_floats(capacity);
}

namespace detail {

/// One work item: the `group` query heads q (group, head_dim) that share one KV head, against
/// its keys and values at positions lo .. lo+m−1.
template <typename T>
struct GroupItem {
  const float* q;       ///< (group, head_dim)
  const T* k_tiles;     ///< key tiles from the one holding lo
  int skip;             ///< lo's place in its tile
  const T* v;           ///< values from position lo (rows head_dim apart)
  int m;                ///< positions attended
  const float* slopes;  ///< the group's ALiBi slopes, or null
  int distance;         ///< lo − p, the (non-positive) offset of the first position from the query's
  float* out;           ///< (group, head_dim)
};

/// The sizes every item of one attention() call shares; scores: rows of ld_s >= skip + m rounded
/// up to a whole tile.
struct GroupSizes {
  int group, head_dim;
  float scale;
  float* scores;
  std::int64_t ld_s;
};

template <typename T>
void attend_group(const GroupItem<T>& it, const GroupSizes& g) {
  const int tiles = int(kernels::key_tiles_for(it.skip + it.m));
  kernels::dot_tiles(it.q, g.head_dim, g.group, it.k_tiles, tiles, g.head_dim, g.scores, g.ld_s);  // (group, 16·tiles)
  for (int h = 0; h < g.group; ++h) {
    float* row = g.scores + h * g.ld_s + it.skip;
    if (it.slopes) {
      const float slope = it.slopes[h];
      for (int j = 0; j < it.m; ++j) row[j] = row[j] * g.scale + slope * float(it.distance + j);
    } else {
      for (int j = 0; j < it.m; ++j) row[j] *= g.scale;
    }
    kernels::softmax(std::span<float>(row, std::size_t(it.m)));
  }
  std::fill_n(it.out, std::int64_t(g.group) * g.head_dim, 0.0f);
  kernels::weighted_rows_add(g.scores + it.skip, g.ld_s, g.group, it.v, g.head_dim, it.m, g.head_dim, it.out,
                             g.head_dim);  // (group, head_dim)
}

/// Every (query row, KV head) item of attention(), split over the pool's threads.
template <typename T>
void attention_items(const AttentionShape& s, TensorView<const float> q, const KVRead& kv, TensorView<float> out,
                     float* scratch, kernels::ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  const std::int64_t ld_s = score_row_floats(kv.cache.capacity());
  auto run = [&](std::int64_t b, std::int64_t e, int thread) {
    const GroupSizes sizes{group, s.head_dim, scale, scratch + std::int64_t(thread) * group * ld_s, ld_s};
    for (std::int64_t item = b; item < e; ++item) {
      const int t = int(item / s.n_kv_heads), kvh = int(item % s.n_kv_heads);
      const int p = kv.pos + t;  // absolute position of this query row
      const int lo = s.window > 0 ? std::max(0, p - s.window + 1) : 0;
      const std::int64_t head0 = std::int64_t(kvh) * group * s.head_dim;  // first query head of the group
      const int tile = lo / kernels::key_tile;
      attend_group<T>({q.row(t) + head0, kv.cache.key_tiles<T>(kv.layer, kvh, tile), lo - tile * kernels::key_tile,
                       kv.cache.values<T>(kv.layer, kvh, lo), p - lo + 1,
                       s.alibi_slopes ? s.alibi_slopes + kvh * group : nullptr, lo - p, out.row(t) + head0},
                      sizes);
    }
  };
  const std::int64_t items = q.n_rows() * s.n_kv_heads;
  if (pool)
    pool->parallel_for(items, run);
  else
    run(0, items, 0);
}

}  // namespace detail

/// Attention of the query rows q [n, n_heads·head_dim] at absolute positions kv.pos .. kv.pos+n−1
/// against the cached keys and values of kv.layer, which must already hold positions
/// [0, kv.pos + n). Writes out [n, n_heads·head_dim]. Rows of q and out may be strided (q is
/// usually the q columns of a fused projection). Scratch: threads × attention_scratch_floats(s,
/// cache capacity) floats.
inline void attention(const AttentionShape& s, TensorView<const float> q, const KVRead& kv, TensorView<float> out,
                      const Workspace& ws) {
  const KVCache& cache = kv.cache;
  const int n = int(q.n_rows()), pos = kv.pos;
  if (s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0 ||
      s.n_kv_heads != cache.n_kv_heads() || s.head_dim != cache.head_dim())
    fail(ErrorKind::invalid_argument, "attention", s.n_heads, " heads, ", s.n_kv_heads, " KV heads of dimension ",
         s.head_dim, " do not match a cache of ", cache.n_kv_heads(), " KV heads of dimension ", cache.head_dim());
  if (pos < 0 || std::int64_t(pos) + n > cache.capacity())
    fail(ErrorKind::invalid_argument, "attention", "positions [", pos, ", ", std::int64_t(pos) + n,
         ") are outside the cache of ", cache.capacity());
  detail::expect_rows(q, n, s.q_dim(), "attention queries");
  detail::expect_rows(out, n, s.q_dim(), "attention output");
  float* scratch = ws.take(ws.threads() * attention_scratch_floats(s, cache.capacity()), "attention").data();
  if (cache.type() == DType::f16)
    detail::attention_items<f16>(s, q, kv, out, scratch, ws.pool);
  else
    detail::attention_items<float>(s, q, kv, out, scratch, ws.pool);
}

/// The projections of an attention block: fused [q | k | v] (GPT-2), or q, k and v apart.
struct AttentionWeights {
  const Linear* qkv = nullptr;  ///< [q_dim + 2·kv_dim, dim]; when null (or empty), q, k and v are used
  const Linear* q = nullptr;    ///< [q_dim, dim]
  const Linear* k = nullptr;    ///< [kv_dim, dim]
  const Linear* v = nullptr;    ///< [kv_dim, dim]
  const Linear* out = nullptr;  ///< [dim, q_dim]
};

/// Floats of scratch self_attention() needs for n rows against a cache of `capacity` positions
/// with `threads` threads: the scores, the projected rows [n, q | k | v] and the heads' output [n, q].
inline std::int64_t self_attention_scratch_floats(const AttentionShape& s, std::int64_t n, std::int64_t capacity,
                                                  int threads) {
  return threads * attention_scratch_floats(s, capacity) + n * (2 * s.q_dim() + 2 * s.kv_dim());
}

/// The attention block of a transformer layer: out [n, dim] = wo · attention(q, k, v) with
/// [q | k | v] = x·W (x [n, dim], usually normalized), RoPE applied to q and k (with s.rope, when
/// set), and the keys and values stored in kv.cache at kv.layer, positions kv.pos ... The cache
/// must have made room for them (KVCache::reserve_append). Scratch: self_attention_scratch_floats().
inline void self_attention(const AttentionShape& s, const AttentionWeights& w, TensorView<const float> x, const KVWrite& kv, TensorView<float> out, const Workspace& ws) {
  const std::int64_t n = x.n_rows(), qd = s.q_dim(), kvd = s.kv_dim(), ld = qd + 2 * kvd;
  const std::int64_t score_floats = ws.threads() * attention_scratch_floats(s, kv.cache.capacity());
  const std::span<float> scratch = ws.take(self_attention_scratch_floats(s, n, kv.cache.capacity(), ws.threads()),
                                           "self-attention");
  const TensorView<float> qkv(scratch.data() + score_floats, Shape{n, ld});             // (n, q | k | v)
  const TensorView<float> heads(scratch.data() + score_floats + n * ld, Shape{n, qd});  // (n, q_dim)
  const TensorView<float> q = qkv.cols(0, qd), k = qkv.cols(qd, qd + kvd), v = qkv.cols(qd + kvd, ld);
  if (w.qkv && !w.qkv->empty()) {
    linear(x, *w.qkv, qkv, ws.pool);
  } else {
    const LinearOutput outs[] = {{w.q, q}, {w.k, k}, {w.v, v}};
    linear_same_input(x, outs, ws.pool);
  }
  if (s.rope) {
    s.rope->apply(q, kv.pos);
    s.rope->apply(k, kv.pos);
  }
  kv.cache.store(kv.layer, kv.pos, k, v);  // converted to the cache's type
  attention(s, q, kv, heads, {scratch.first(std::size_t(score_floats)), ws.pool});
  linear(heads, *w.out, out, ws.pool);  // (n, dim)
}

}  // namespace loom::nn
