// Position information: learned absolute embeddings (added by the model from a weight table),
// sinusoidal embeddings (Vaswani et al.), rotary embeddings (RoPE) in both pair layouts with
// linear and llama3 frequency scaling, and ALiBi slopes (Press et al.).
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "loom/error.hpp"
#include "loom/nn/shapes.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// Sinusoidal position embedding of `pos` into out[dim]: sin on even dimensions, cos on odd ones,
/// pe[2i] = sin(pos / base^(2i/dim)), pe[2i+1] = cos(pos / base^(2i/dim)).
inline void sinusoidal_embedding(std::int64_t pos, float* out, std::int64_t dim, double base = 10000.0) {
  for (std::int64_t i = 0; i < dim; i += 2) {
    const double angle = double(pos) / std::pow(base, double(i) / double(dim));
    out[i] = float(std::sin(angle));
    if (i + 1 < dim) out[i + 1] = float(std::cos(angle));
  }
}

/// ALiBi slopes for n heads (Press et al.): for n a power of two, slope_h = 2^(−8(h+1)/n); otherwise
/// the slopes of the nearest lower power of two p, followed by every other slope of 2p.
inline std::vector<float> alibi_slopes(int n_heads) {
  auto pow2_slopes = [](int n) {
    std::vector<float> s(static_cast<std::size_t>(n));
    for (int h = 0; h < n; ++h) s[std::size_t(h)] = float(std::pow(2.0, -8.0 * (h + 1) / n));
    return s;
  };
  int p = 1;
  while (p * 2 <= n_heads) p *= 2;
  std::vector<float> slopes = pow2_slopes(p);
  if (p < n_heads) {
    const std::vector<float> extra = pow2_slopes(2 * p);
    for (int i = 0; int(slopes.size()) < n_heads; i += 2) slopes.push_back(extra[std::size_t(i)]);
  }
  return slopes;
}

/// Rotary position embedding for one model: inverse frequencies computed once (with scaling),
/// applied in place to the heads of a q or k row.
class Rope {
 public:
  Rope() = default;
  explicit Rope(const RopeShape& shape) : layout_(shape.layout), head_dim_(shape.head_dim), rot_dim_(shape.rotary_dim) {
    const int half = rot_dim_ / 2;
    inv_freq_.resize(std::size_t(half));
    for (int i = 0; i < half; ++i) {
      double f = std::pow(double(shape.theta), -2.0 * i / rot_dim_);
      const RopeScaling& s = shape.scaling;
      if (s.kind == RopeScalingKind::linear) {
        f /= s.factor;  // position interpolation: pos / factor
      } else if (s.kind == RopeScalingKind::llama3) {
        const double wavelen = 2.0 * std::numbers::pi / f;
        const double low_wavelen = s.original_max_position / s.low_freq_factor;
        const double high_wavelen = s.original_max_position / s.high_freq_factor;
        if (wavelen > low_wavelen) {
          f /= s.factor;
        } else if (wavelen >= high_wavelen) {
          const double smooth =
              (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
          f = (1.0 - smooth) * f / s.factor + smooth * f;
        }
      }
      inv_freq_[std::size_t(i)] = f;
    }
  }

  /// Rotates every head of `x` ([n_heads, head_dim], contiguous) for position `pos`.
  void apply(float* x, int n_heads, std::int64_t pos) const {
    const int half = rot_dim_ / 2;
    for (int i = 0; i < half; ++i) {
      const double angle = double(pos) * inv_freq_[std::size_t(i)];
      const float c = float(std::cos(angle)), s = float(std::sin(angle));
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + std::int64_t(h) * head_dim_;
        const int a = layout_ == RopeLayout::interleaved ? 2 * i : i;
        const int b = layout_ == RopeLayout::interleaved ? 2 * i + 1 : i + half;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }

  /// Rotates every head of every row of x [n, heads·head_dim] (rows may be strided, e.g. the q or
  /// k columns of a fused projection), row t at position pos + t.
  void apply(TensorView<float> x, std::int64_t pos) const {
    if (head_dim_ <= 0 || x.n_cols() % head_dim_ != 0)
      fail(ErrorKind::invalid_argument, "nn", "RoPE over rows of ", x.n_cols(), " is not whole heads of ", head_dim_);
    const int heads = int(x.n_cols() / head_dim_);
    for (std::int64_t t = 0; t < x.n_rows(); ++t) apply(x.row(t), heads, pos + t);
  }

  const std::vector<double>& inv_freq() const { return inv_freq_; }

 private:
  RopeLayout layout_ = RopeLayout::interleaved;
  int head_dim_ = 0;
  int rot_dim_ = 0;
  std::vector<double> inv_freq_;
};

}  // namespace loom::nn
