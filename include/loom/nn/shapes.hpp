// The shape structs of the nn blocks: everything a block needs to know about the model it runs
// in, and nothing more. model/config.hpp builds them from a Config (Config::attention_shape(),
// ...); a user composing blocks by hand fills them in directly. No dependencies.
#pragma once

#include <cstdint>

namespace loom::nn {

class Rope;  // position.hpp

// ---- norm.hpp ---------------------------------------------------------------------------------
enum class NormKind { layer_norm, rms_norm };

/// Which norm a block applies, and its epsilon.
struct NormShape {
  NormKind kind = NormKind::rms_norm;
  float eps = 1e-5f;
};

// ---- feed_forward.hpp -------------------------------------------------------------------------
enum class Activation { gelu_tanh, gelu_erf, silu, relu };

struct FeedForwardShape {
  Activation activation = Activation::silu;
  bool gated = true;  ///< down(act(gate(x)) * up(x)) (SwiGLU, GeGLU) instead of down(act(up(x)))
};

// ---- position.hpp -----------------------------------------------------------------------------
/// Which dimensions RoPE rotates together inside a head.
enum class RopeLayout {
  interleaved,  ///< pairs (2i, 2i+1): llama2.c, GGUF llama
  half_split,   ///< pairs (i, i + d/2), "rotate_half": HF LLaMA, GPT-NeoX, GGUF qwen2
};
enum class RopeScalingKind { none, linear, llama3 };

/// RoPE frequency scaling (position interpolation).
struct RopeScaling {
  RopeScalingKind kind = RopeScalingKind::none;
  float factor = 1.0f;                        ///< linear: positions divided by factor; llama3: wavelength factor
  float low_freq_factor = 1.0f;               ///< llama3 only
  float high_freq_factor = 4.0f;              ///< llama3 only
  std::int32_t original_max_position = 8192;  ///< llama3 only
};

struct RopeShape {
  RopeLayout layout = RopeLayout::interleaved;
  int head_dim = 0;
  int rotary_dim = 0;  ///< rotated dimensions per head (even, at most head_dim)
  float theta = 10000.0f;
  RopeScaling scaling;
};

// ---- kv_cache.hpp -----------------------------------------------------------------------------
struct KVCacheShape {
  std::int32_t n_layers = 0;
  std::int32_t n_kv_heads = 0;
  std::int32_t head_dim = 0;
  std::int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

// ---- attention.hpp ----------------------------------------------------------------------------
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  ///< divides n_heads; query head h reads KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int window = 0;                       ///< attend to the last `window` positions only (0 ⇒ all)
  const float* alibi_slopes = nullptr;  ///< per query head, or null
  const Rope* rope = nullptr;           ///< self_attention rotates q and k with it, when set

  std::int64_t q_dim() const { return std::int64_t(n_heads) * head_dim; }
  std::int64_t kv_dim() const { return std::int64_t(n_kv_heads) * head_dim; }
};

}  // namespace loom::nn
