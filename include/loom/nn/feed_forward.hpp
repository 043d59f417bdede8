// The feed-forward block of a transformer layer (the MLP):
//   gated:    out = down(act(gate(x)) ⊙ up(x))   (SwiGLU with SiLU: LLaMA, Mistral, Qwen2)
//   ungated:  out = down(act(up(x)))              (GPT-2: GELU)
// over the rows of x, with the activation chosen by the shape.
#pragma once

#include <cstdint>
#include <span>

#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/shapes.hpp"
#include "loom/nn/workspace.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// The block's three projections; `gate` is null (or empty) for an ungated MLP.
struct FeedForwardWeights {
  const Linear* gate = nullptr;  ///< [hidden, dim]
  const Linear* up = nullptr;    ///< [hidden, dim]
  const Linear* down = nullptr;  ///< [dim, hidden]
};

/// The activation `a` applied to every element of v in place.
inline void activate(Activation a, std::span<float> v) {
  switch (a) {
    case Activation::silu: kernels::apply_silu(v); break;
    case Activation::gelu_tanh: kernels::apply_gelu_tanh(v); break;
    case Activation::gelu_erf: kernels::apply_gelu_erf(v); break;
    case Activation::relu: kernels::apply_relu(v); break;
  }
}

/// Floats of scratch feed_forward() needs for n rows: the hidden activations (two rows of
/// `hidden` per input row when gated, one otherwise).
inline std::int64_t feed_forward_scratch_floats(const FeedForwardShape& s, std::int64_t hidden, std::int64_t n) {
  return (s.gated ? 2 : 1) * n * hidden;
}

/// out [n, dim] = the feed-forward block of x [n, dim], with feed_forward_scratch_floats() floats
/// of scratch (no allocation here). `out` must not overlap x.
inline void feed_forward(const FeedForwardShape& s, const FeedForwardWeights& w, TensorView<const float> x,
                         TensorView<float> out, const Workspace& ws) {
  const bool has_gate = w.gate && !w.gate->empty();
  if (!w.up || !w.down || has_gate != s.gated)
    fail(ErrorKind::invalid_argument, "nn", "feed-forward weights do not match a ", s.gated ? "gated" : "ungated",
         " block");
  const std::int64_t n = x.n_rows(), hidden = w.up->out_features();
  const std::span<float> scratch = ws.take(feed_forward_scratch_floats(s, hidden, n), "feed-forward");
  kernels::ThreadPool* pool = ws.pool;
  const TensorView<float> h(scratch.data(), Shape{n, hidden});  // (n, hidden)
  std::span<const float> ups;  // u = x · upᵀ, (n, hidden), when gated
  if (s.gated) {
    const TensorView<float> u(scratch.data() + n * hidden, Shape{n, hidden});
    ups = u.span();
    const LinearOutput outs[] = {{w.gate, h}, {w.up, u}};
    linear_same_input(x, outs, pool);
  } else {
    linear(x, *w.up, h, pool);
  }
  // h = act(h) (· u), by rows: on the pool for several rows (a prompt's exps took 3 % of its
  // time on one thread while the others waited); each value is the same whatever the split.
  auto activate_rows = [&](std::int64_t r0, std::int64_t r1, int) {
    const std::size_t first = std::size_t(r0 * hidden), count = std::size_t((r1 - r0) * hidden);
    const std::span<float> hs = h.span().subspan(first, count);
    activate(s.activation, hs);
    if (s.gated) {
      const std::span<const float> us = ups.subspan(first, count);
      for (std::size_t i = 0; i < count; ++i) hs[i] *= us[i];
    }
  };
  if (pool != nullptr && n > 1)
    pool->parallel_for(n, activate_rows);
  else
    activate_rows(0, n, 0);
  linear(h, *w.down, out, pool);  // (n, dim)
}

}  // namespace loom::nn
