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
/// `pages` is the sequence's page table in a paged cache (empty: the cache's own single page).
struct KVRead {
  const KVCache& cache;
  int layer = 0;
  int pos = 0;
  std::span<const std::int32_t> pages = {};
};
/// Where self_attention appends its keys and values (then reads them as KVRead).
struct KVWrite {
  KVCache& cache;
  int layer = 0;
  int pos = 0;
  std::span<const std::int32_t> pages = {};
  operator KVRead() const { return {cache, layer, pos, pages}; }
};

/// One sequence's rows in a batch: `n_rows` consecutive rows (after the previous segments' rows)
/// at positions pos .. pos+n_rows−1 of the sequence whose keys and values live in `pages`.
struct KVSegment {
  std::span<const std::int32_t> pages;
  std::int32_t pos = 0;
  std::int32_t n_rows = 0;
};
/// Several sequences' rows in one batch, each against its own pages of one cache, at one layer.
struct KVBatchRead {
  const KVCache& cache;
  int layer = 0;
  std::span<const KVSegment> segments;
};
struct KVBatch {
  KVCache& cache;
  int layer = 0;
  std::span<const KVSegment> segments;
  operator KVBatchRead() const { return {cache, layer, segments}; }
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
/// its keys and values at positions lo .. p of one sequence (held in `pages` of the cache).
struct GroupItem {
  const float* q;                       ///< (group, head_dim)
  std::span<const std::int32_t> pages;  ///< the sequence's page table
  int kv_head;
  int lo, p;                            ///< first and last position attended
  const float* slopes;                  ///< the group's ALiBi slopes, or null
  float* out;                           ///< (group, head_dim)
};

/// The sizes every item of one attention() call shares; scores: rows of ld_s floats, enough for
/// a sequence's positions rounded up to a whole tile.
struct GroupSizes {
  const KVCache& cache;
  int layer, group, head_dim;
  float scale;
  float* scores;
  std::int64_t ld_s;
};

/// Scores of the group against every attended key, softmax per row, then the weighted sum of the
/// values; page by page (a single-sequence cache is one page, so one call of each product).
template <typename T>
void attend_group(const GroupItem& it, const GroupSizes& g) {
  const int P = g.cache.page_positions(), hd = g.head_dim;
  const int base = it.lo - it.lo % kernels::key_tile;  // position of scores column 0
  const int end = it.p + 1, m = end - it.lo;
  for (int start = base; start < end;) {  // start: a tile boundary
    const int page = start / P, stop = std::min(end, (page + 1) * P);
    const T* keys = g.cache.page_keys<T>(g.layer, it.kv_head, it.pages[std::size_t(page)]);
    kernels::dot_tiles(it.q, hd, g.group, keys + std::int64_t(start - page * P) * hd,
                       int(kernels::key_tiles_for(stop - start)), hd, g.scores + (start - base), g.ld_s);
    start = stop;
  }
  for (int h = 0; h < g.group; ++h) {
    float* row = g.scores + h * g.ld_s + (it.lo - base);
    if (it.slopes) {
      const float slope = it.slopes[h];
      const int distance = it.lo - it.p;  // the (non-positive) offset of the first position from the query's
      for (int j = 0; j < m; ++j) row[j] = row[j] * g.scale + slope * float(distance + j);
    } else {
      for (int j = 0; j < m; ++j) row[j] *= g.scale;
    }
    kernels::softmax(std::span<float>(row, std::size_t(m)));
  }
  std::fill_n(it.out, std::int64_t(g.group) * hd, 0.0f);
  for (int start = it.lo; start < end;) {
    const int page = start / P, stop = std::min(end, (page + 1) * P);
    const T* values = g.cache.page_values<T>(g.layer, it.kv_head, it.pages[std::size_t(page)]);
    kernels::weighted_rows_add(g.scores + (start - base), g.ld_s, g.group, values + std::int64_t(start - page * P) * hd,
                               hd, stop - start, hd, it.out, hd);  // (group, head_dim)
    start = stop;
  }
}

/// Every (query row, KV head) item of attention() over every segment, split over the pool's threads.
template <typename T>
void attention_items(const AttentionShape& s, TensorView<const float> q, const KVBatchRead& kv, TensorView<float> out,
                     float* scratch, kernels::ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  const std::int64_t ld_s = score_row_floats(kv.cache.capacity());
  auto run = [&](std::int64_t b, std::int64_t e, int thread) {
    const GroupSizes sizes{kv.cache, kv.layer, group, s.head_dim, scale, scratch + std::int64_t(thread) * group * ld_s, ld_s};
    std::size_t seg = 0;
    std::int64_t row0 = 0;  // first row of segment `seg`
    for (std::int64_t item = b; item < e; ++item) {
      const std::int64_t row = item / s.n_kv_heads;  // row of the batch
      const int kvh = int(item % s.n_kv_heads);
      while (row >= row0 + kv.segments[seg].n_rows) row0 += kv.segments[seg++].n_rows;
      const KVSegment& sg = kv.segments[seg];
      const int p = sg.pos + int(row - row0);  // absolute position of this query row
      const int lo = s.window > 0 ? std::max(0, p - s.window + 1) : 0;
      const std::int64_t head0 = std::int64_t(kvh) * group * s.head_dim;  // first query head of the group
      attend_group<T>({q.row(row) + head0, sg.pages, kvh, lo, p, s.alibi_slopes ? s.alibi_slopes + kvh * group : nullptr,
                       out.row(row) + head0},
                      sizes);
    }
  };
  std::int64_t items = 0;
  for (const KVSegment& sg : kv.segments) items += std::int64_t(sg.n_rows) * s.n_kv_heads;
  if (pool)
    pool->parallel_for(items, run);
  else
    run(0, items, 0);
}

}  // namespace detail

/// Attention of the query rows q [n, n_heads·head_dim] of several sequences (kv.segments, whose
/// rows add up to n) against their cached keys and values at kv.layer: a segment at positions
/// pos .. pos+r−1 needs its pages to hold positions [0, pos + r). Writes out [n, n_heads·head_dim].
/// Rows of q and out may be strided (q is usually the q columns of a fused projection). Scratch:
/// threads × attention_scratch_floats(s, cache capacity) floats.
inline void attention(const AttentionShape& s, TensorView<const float> q, const KVBatchRead& kv, TensorView<float> out,
                      const Workspace& ws) {
  const KVCache& cache = kv.cache;
  if (s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.n_heads % s.n_kv_heads != 0 ||
      s.n_kv_heads != cache.n_kv_heads() || s.head_dim != cache.head_dim())
    fail(ErrorKind::invalid_argument, "attention", s.n_heads, " heads, ", s.n_kv_heads, " KV heads of dimension ",
         s.head_dim, " do not match a cache of ", cache.n_kv_heads(), " KV heads of dimension ", cache.head_dim());
  std::int64_t n = 0;
  for (const KVSegment& sg : kv.segments) {
    const std::int64_t end = std::int64_t(sg.pos) + sg.n_rows;
    if (sg.pos < 0 || sg.n_rows < 0 || end > cache.capacity() ||
        end > std::int64_t(sg.pages.size()) * cache.page_positions())
      fail(ErrorKind::invalid_argument, "attention", "positions [", sg.pos, ", ", end, ") are outside a sequence of ",
           sg.pages.size(), " pages of ", cache.page_positions(), " positions in a cache of ", cache.capacity());
    n += sg.n_rows;
  }
  detail::expect_rows(q, n, s.q_dim(), "attention queries");
  detail::expect_rows(out, n, s.q_dim(), "attention output");
  float* scratch = ws.take(ws.threads() * attention_scratch_floats(s, cache.capacity()), "attention").data();
  if (cache.type() == DType::f16)
    detail::attention_items<f16>(s, q, kv, out, scratch, ws.pool);
  else
    detail::attention_items<float>(s, q, kv, out, scratch, ws.pool);
}

/// Attention of one sequence's query rows q [n, n_heads·head_dim] at absolute positions
/// kv.pos .. kv.pos+n−1 against the cached keys and values of kv.layer, which must already hold
/// positions [0, kv.pos + n). Writes out [n, n_heads·head_dim].
inline void attention(const AttentionShape& s, TensorView<const float> q, const KVRead& kv, TensorView<float> out,
                      const Workspace& ws) {
  const KVSegment one{kv.pages.empty() ? kv.cache.own_pages() : kv.pages, kv.pos, std::int32_t(q.n_rows())};
  attention(s, q, KVBatchRead{kv.cache, kv.layer, {&one, 1}}, out, ws);
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

/// The attention block of a transformer layer over a batch of sequences: out [n, dim] = wo ·
/// attention(q, k, v) with [q | k | v] = x·W (x [n, dim], usually normalized; one projection for
/// every sequence's rows), RoPE applied to each segment's q and k at its positions (with s.rope,
/// when set), and each segment's keys and values stored in its pages of kv.cache at kv.layer. The
/// pages must have room for them. Scratch: self_attention_scratch_floats().
inline void self_attention(const AttentionShape& s, const AttentionWeights& w, TensorView<const float> x,
                           const KVBatch& kv, TensorView<float> out, const Workspace& ws) {
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
  std::int64_t row = 0;
  for (const KVSegment& sg : kv.segments) {
    if (sg.n_rows < 0 || row + sg.n_rows > n)
      fail(ErrorKind::invalid_argument, "self-attention", "the segments' rows do not add up to the ", n, " input rows");
    const std::int64_t end = row + sg.n_rows;
    if (s.rope) {
      s.rope->apply(q.rows(row, end), sg.pos);
      s.rope->apply(k.rows(row, end), sg.pos);
    }
    kv.cache.store(kv.layer, sg.pages, sg.pos, k.rows(row, end), v.rows(row, end));  // converted to the cache's type
    row = end;
  }
  attention(s, q, KVBatchRead(kv), heads, {scratch.first(std::size_t(score_floats)), ws.pool});
  linear(heads, *w.out, out, ws.pool);  // (n, dim)
}

/// The attention block for one sequence: its rows x [n, dim] at positions kv.pos .. kv.pos+n−1.
/// The cache must have made room for them (KVCache::reserve_append).
inline void self_attention(const AttentionShape& s, const AttentionWeights& w, TensorView<const float> x,
                           const KVWrite& kv, TensorView<float> out, const Workspace& ws) {
  const KVSegment one{kv.pages.empty() ? kv.cache.own_pages() : kv.pages, kv.pos, std::int32_t(x.n_rows())};
  self_attention(s, w, x, KVBatch{kv.cache, kv.layer, {&one, 1}}, out, ws);
}

}  // namespace loom::nn
