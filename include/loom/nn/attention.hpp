// Causal multi-head attention over the KV cache, with grouped-query / multi-query sharing of KV
// heads, scale 1/√head_dim, optional ALiBi bias and optional sliding window.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/nn/kv_cache.hpp"

namespace loom::nn {

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  ///< divides n_heads; query head h reads KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int window = 0;                       ///< attend to the last `window` positions only (0 ⇒ all)
  const float* alibi_slopes = nullptr;  ///< per query head, or null
};

/// Attention of n query rows at absolute positions pos .. pos+n−1 against the cached keys and
/// values of `layer`, which must already hold positions [0, pos + n).
///   q:      [n, n_heads·head_dim], row stride ldq
///   out:    [n, n_heads·head_dim], row stride ldo
///   scores: scratch of pool-size × kv.capacity() floats
inline void attention(const float* q, std::int64_t ldq, int n, int pos, const KVCache& kv, int layer,
                      const AttentionShape& s, float* out, std::int64_t ldo, float* scores, ThreadPool* pool) {
  const int group = s.n_heads / s.n_kv_heads;
  const float scale = 1.0f / std::sqrt(float(s.head_dim));
  const std::int64_t kv_dim = kv.kv_dim();
  auto run = [&](std::int64_t b, std::int64_t e, int thread) {
    float* sc = scores + std::int64_t(thread) * kv.capacity();
    for (std::int64_t item = b; item < e; ++item) {
      const int t = int(item / s.n_heads), h = int(item % s.n_heads);
      const int p = pos + t;                    // absolute position of this query
      const int lo = s.window > 0 ? std::max(0, p - s.window + 1) : 0;
      const int kvh = h / group;
      const float* qh = q + t * ldq + std::int64_t(h) * s.head_dim;
      // Keys and values of this KV head for positions lo..p: rows of a strided matrix.
      using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      using Strided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
      const Eigen::Index m = p - lo + 1;  // attended positions
      const Strided K(kv.k(layer, lo) + std::int64_t(kvh) * s.head_dim, m, s.head_dim, Eigen::OuterStride<>(kv_dim));
      const Strided V(kv.v(layer, lo) + std::int64_t(kvh) * s.head_dim, m, s.head_dim, Eigen::OuterStride<>(kv_dim));
      Eigen::Map<Eigen::VectorXf> w(sc, m);
      w.noalias() = K * Eigen::Map<const Eigen::VectorXf>(qh, s.head_dim);  // (m) = (m, hd) · (hd)
      w *= scale;
      if (s.alibi_slopes)
        for (Eigen::Index j = 0; j < m; ++j) w[j] += s.alibi_slopes[h] * float(lo + j - p);
      kernels::softmax(std::span<float>(sc, std::size_t(m)));
      Eigen::Map<Eigen::VectorXf> oh(out + t * ldo + std::int64_t(h) * s.head_dim, s.head_dim);
      oh.noalias() = V.transpose() * w;  // (hd) = (hd, m) · (m)
    }
  };
  const std::int64_t items = std::int64_t(n) * s.n_heads;
  if (pool)
    pool->parallel_for(items, run);
  else
    run(0, items, 0);
}

}  // namespace loom::nn
