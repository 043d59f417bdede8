// Config: every architecture knob of a decoder-only transformer, as data (no class hierarchy).
// Loaders (llama2.c, Hugging Face config.json, GGUF metadata) translate their files into this.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "loom/error.hpp"
#include "loom/nn/shapes.hpp"

namespace loom {

// The architecture knobs the nn blocks define (nn/shapes.hpp), under the names loaders use.
using nn::Activation;
using nn::NormKind;
using nn::RopeLayout;
using nn::RopeScaling;
using nn::RopeScalingKind;
enum class PositionKind { learned, sinusoidal, rope, alibi, none };

struct Config {
  std::string architecture = "llama";  ///< informational: "llama", "gpt2", "qwen2", "mistral", ...
  std::int32_t vocab_size = 0;
  std::int32_t dim = 0;          ///< model width (hidden_size, n_embd)
  std::int32_t n_layers = 0;
  std::int32_t n_heads = 0;
  std::int32_t n_kv_heads = 0;   ///< divides n_heads (GQA / MQA)
  std::int32_t head_dim = 0;     ///< usually dim / n_heads
  std::int32_t ffn_dim = 0;      ///< hidden width of the feed-forward block
  std::int32_t max_seq_len = 0;  ///< trained context length

  NormKind norm = NormKind::rms_norm;
  float norm_eps = 1e-5f;

  PositionKind position = PositionKind::rope;
  RopeLayout rope_layout = RopeLayout::interleaved;
  float rope_theta = 10000.0f;
  std::int32_t rope_dim = 0;  ///< rotated dimensions per head (0 ⇒ head_dim)
  RopeScaling rope_scaling;

  Activation activation = Activation::silu;
  bool gated_ffn = true;      ///< SwiGLU-style down(act(gate(x)) * up(x)) instead of down(act(up(x)))
  bool qkv_bias = false;
  bool out_bias = false;      ///< attention output projection bias
  bool ffn_bias = false;
  bool tied_embeddings = true;      ///< the output projection is the token embedding
  std::int32_t sliding_window = 0;  ///< attend to at most this many latest positions (0 ⇒ unlimited)

  std::int32_t q_dim() const { return n_heads * head_dim; }
  std::int32_t kv_dim() const { return n_kv_heads * head_dim; }
  std::int32_t rotary_dim() const { return rope_dim > 0 ? rope_dim : head_dim; }

  // The shapes of the nn blocks this architecture is made of.
  nn::NormShape norm_shape() const { return {norm, norm_eps}; }
  nn::FeedForwardShape feed_forward_shape() const { return {activation, gated_ffn}; }
  nn::RopeShape rope_shape() const { return {rope_layout, head_dim, rotary_dim(), rope_theta, rope_scaling}; }
  /// `alibi_slopes`: n_heads slopes when position is alibi (nn::alibi_slopes); `rope`: when
  /// position is rope (an nn::Rope of rope_shape()); null otherwise.
  nn::AttentionShape attention_shape(const float* alibi_slopes = nullptr, const nn::Rope* rope = nullptr) const {
    return {n_heads, n_kv_heads, head_dim, sliding_window, alibi_slopes, rope};
  }
  /// A Config stands for its KV cache shape (nn::KVCache(config, capacity)).
  operator nn::KVCacheShape() const { return {n_layers, n_kv_heads, head_dim}; }

  /// Throws Error(format, area) naming the first inconsistent field.
  void validate(std::string_view area = "config") const {
    auto positive = [&](std::int64_t v, const char* name) {
      if (v <= 0) fail(ErrorKind::format, area, name, " must be positive, got ", v);
    };
    positive(vocab_size, "vocab_size");
    positive(dim, "dim");
    positive(n_layers, "n_layers");
    positive(n_heads, "n_heads");
    positive(n_kv_heads, "n_kv_heads");
    positive(head_dim, "head_dim");
    positive(ffn_dim, "ffn_dim");
    positive(max_seq_len, "max_seq_len");
    if (n_heads % n_kv_heads != 0)
      fail(ErrorKind::format, area, "n_heads (", n_heads, ") is not a multiple of n_kv_heads (", n_kv_heads, ")");
    constexpr std::int64_t limit = std::int64_t(1) << 24;  // sanity bound: no real model is near it
    for (auto [v, name] : {std::pair<std::int64_t, const char*>{vocab_size, "vocab_size"}, {dim, "dim"},
                           {ffn_dim, "ffn_dim"}, {std::int64_t(n_heads) * head_dim, "n_heads*head_dim"},
                           {max_seq_len, "max_seq_len"}})
      if (v > limit) fail(ErrorKind::format, area, name, " = ", v, " is implausibly large");
    if (n_layers > 4096) fail(ErrorKind::format, area, "n_layers = ", n_layers, " is implausibly large");
    if (position == PositionKind::rope) {
      if (rotary_dim() > head_dim || rotary_dim() % 2 != 0)
        fail(ErrorKind::format, area, "rope_dim ", rotary_dim(), " must be even and at most head_dim ", head_dim);
      if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta))
        fail(ErrorKind::format, area, "rope_theta must be positive, got ", rope_theta);
      if (!(rope_scaling.factor > 0.0f) || !std::isfinite(rope_scaling.factor))
        fail(ErrorKind::format, area, "rope_scaling.factor must be positive, got ", rope_scaling.factor);
    }
    if (!(norm_eps >= 0.0f) || !std::isfinite(norm_eps))
      fail(ErrorKind::format, area, "norm epsilon must be a non-negative number, got ", norm_eps);
    if (sliding_window < 0) fail(ErrorKind::format, area, "sliding_window must be >= 0, got ", sliding_window);
  }
};

}  // namespace loom
