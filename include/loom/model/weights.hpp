// Weights: plain views of every tensor a decoder-only transformer needs. The views point into
// memory kept alive by `storage` (mapped files, or buffers made at load time); nothing here
// knows which file format the weights came from.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/model/config.hpp"
#include "loom/nn/attention.hpp"
#include "loom/nn/feed_forward.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/norm.hpp"
#include "loom/tensor.hpp"

namespace loom {

struct LayerWeights {
  nn::NormWeights attn_norm;
  nn::Linear wqkv;  ///< fused [q | k | v] projection (GPT-2); when empty, wq/wk/wv are used
  nn::Linear wq, wk, wv, wo;
  nn::NormWeights ffn_norm;
  nn::Linear w_gate, w_up, w_down;  ///< w_gate only for gated FFN (SwiGLU)

  /// The layer's two blocks' weights as nn takes them (pointers into this struct).
  nn::AttentionWeights attention() const { return {&wqkv, &wq, &wk, &wv, &wo}; }
  nn::FeedForwardWeights feed_forward() const { return {w_gate.empty() ? nullptr : &w_gate, &w_up, &w_down}; }
};

struct Weights {
  TensorRef token_embedding;     ///< [vocab, dim]
  TensorRef position_embedding;  ///< [max_seq_len, dim], learned positions only
  std::vector<LayerWeights> layers;
  nn::NormWeights final_norm;
  nn::Linear output;  ///< [vocab, dim]; views the token embedding when tied

  /// Owners of the memory the views point into (mapped files, converted buffers).
  std::vector<std::shared_ptr<const void>> storage;
};

namespace detail {

/// Checks that `t` is present with exactly `expected` shape; names the tensor otherwise.
inline void expect_shape(const TensorRef& t, const Shape& expected, std::string_view area, std::string_view name) {
  if (t.empty()) fail(ErrorKind::format, area, "missing tensor '", name, "' (expected shape ", expected.str(), ")");
  if (!(t.shape == expected))
    fail(ErrorKind::format, area, "tensor '", name, "': expected shape ", expected.str(), ", got ", t.shape.str());
}

}  // namespace detail

/// Checks every tensor against the config (shapes, presence of optional parts). Throws
/// Error(format, area) naming the first tensor that does not fit.
inline void validate_weights(const Config& c, const Weights& w, std::string_view area) {
  using detail::expect_shape;
  const std::int64_t d = c.dim, v = c.vocab_size, f = c.ffn_dim, q = c.q_dim(), kv = c.kv_dim();
  expect_shape(w.token_embedding, {v, d}, area, "token_embedding");
  if (c.position == PositionKind::learned)
    expect_shape(w.position_embedding, {c.max_seq_len, d}, area, "position_embedding");
  auto norm = [&](const nn::NormWeights& n, const std::string& name) {
    expect_shape(n.weight, {d}, area, name + ".weight");
    if (c.norm == NormKind::layer_norm) expect_shape(n.bias, {d}, area, name + ".bias");
  };
  auto linear = [&](const nn::Linear& l, std::int64_t out, std::int64_t in, bool bias, const std::string& name) {
    expect_shape(l.weight, l.in_out ? Shape{in, out} : Shape{out, in}, area, name + ".weight");
    if (bias) expect_shape(l.bias, {out}, area, name + ".bias");
    if (!l.bias.empty() && l.bias.dtype != DType::f32 && l.bias.dtype != DType::f16 && l.bias.dtype != DType::bf16)
      fail(ErrorKind::unsupported, area, "tensor '", name, ".bias' has type ", to_string(l.bias.dtype));
  };
  if (std::int64_t(w.layers.size()) != c.n_layers)
    fail(ErrorKind::format, area, "expected ", c.n_layers, " layers, got ", w.layers.size());
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    norm(l.attn_norm, p + "attn_norm");
    if (!l.wqkv.empty()) {
      linear(l.wqkv, q + 2 * kv, d, c.qkv_bias, p + "wqkv");
    } else {
      linear(l.wq, q, d, c.qkv_bias, p + "wq");
      linear(l.wk, kv, d, c.qkv_bias, p + "wk");
      linear(l.wv, kv, d, c.qkv_bias, p + "wv");
    }
    linear(l.wo, d, q, c.out_bias, p + "wo");
    norm(l.ffn_norm, p + "ffn_norm");
    if (c.gated_ffn) linear(l.w_gate, f, d, c.ffn_bias, p + "w_gate");
    linear(l.w_up, f, d, c.ffn_bias, p + "w_up");
    linear(l.w_down, d, f, c.ffn_bias, p + "w_down");
  }
  norm(w.final_norm, "final_norm");
  linear(w.output, v, d, false, "output");
}

}  // namespace loom
