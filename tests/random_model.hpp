// Builds small models with random weights in memory, for tests that need a whole Model.
#pragma once

#include <loom/model/model.hpp>
#include <memory>
#include <random>
#include <vector>

namespace loom::test {

/// Random weights (normal, std 0.02 like the fixtures; norms ~1) for any Config, stored as `dtype`.
inline Model random_model(const Config& c, std::uint32_t seed = 1, DType dtype = DType::f32) {
  auto rng = std::make_shared<std::mt19937>(seed);
  Weights w;
  auto make = [&](Shape shape, float mean, float std, DType t = DType::f32) {
    auto buf = std::make_shared<std::vector<std::byte>>(std::size_t(shape.numel()) * block_bytes(t));
    std::normal_distribution<float> dist(mean, std);
    for (std::int64_t i = 0; i < shape.numel(); ++i) {
      const float v = dist(*rng);
      if (t == DType::f32) {
        std::memcpy(buf->data() + 4 * i, &v, 4);
      } else if (t == DType::f16) {
        const f16 h = to_f16(v);
        std::memcpy(buf->data() + 2 * i, &h, 2);
      } else {
        const bf16 h = to_bf16(v);
        std::memcpy(buf->data() + 2 * i, &h, 2);
      }
    }
    w.storage.push_back(buf);
    return TensorRef{t, shape, buf->data(), buf->size()};
  };
  auto linear = [&](std::int64_t out, std::int64_t in, bool bias, bool in_out = false) {
    nn::Linear l;
    l.weight = make(in_out ? Shape{in, out} : Shape{out, in}, 0.0f, 0.1f, dtype);
    l.in_out = in_out;
    if (bias) l.bias = make({out}, 0.0f, 0.02f);
    return l;
  };
  auto norm = [&] {
    nn::NormWeights n;
    n.weight = make({c.dim}, 1.0f, 0.1f);
    if (c.norm == NormKind::layer_norm) n.bias = make({c.dim}, 0.0f, 0.02f);
    return n;
  };
  const bool conv1d = c.architecture == "gpt2";
  w.token_embedding = make({c.vocab_size, c.dim}, 0.0f, 1.0f, dtype);
  if (c.position == PositionKind::learned) w.position_embedding = make({c.max_seq_len, c.dim}, 0.0f, 0.1f);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = norm();
    if (conv1d) {
      lw.wqkv = linear(c.q_dim() + 2 * c.kv_dim(), c.dim, c.qkv_bias, true);
    } else {
      lw.wq = linear(c.q_dim(), c.dim, c.qkv_bias);
      lw.wk = linear(c.kv_dim(), c.dim, c.qkv_bias);
      lw.wv = linear(c.kv_dim(), c.dim, c.qkv_bias);
    }
    lw.wo = linear(c.dim, c.q_dim(), c.out_bias, conv1d);
    lw.ffn_norm = norm();
    if (c.gated_ffn) lw.w_gate = linear(c.ffn_dim, c.dim, c.ffn_bias, conv1d);
    lw.w_up = linear(c.ffn_dim, c.dim, c.ffn_bias, conv1d);
    lw.w_down = linear(c.dim, c.ffn_dim, c.ffn_bias, conv1d);
    w.layers.push_back(lw);
  }
  w.final_norm = norm();
  if (c.tied_embeddings)
    w.output.weight = w.token_embedding;
  else
    w.output = linear(c.vocab_size, c.dim, false);
  return Model(c, std::move(w));
}

/// A LLaMA-style config: RMSNorm, half-split RoPE, SwiGLU, GQA.
inline Config llama_config() {
  Config c;
  c.architecture = "llama";
  c.vocab_size = 97;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.ffn_dim = 48;
  c.max_seq_len = 64;
  c.rope_layout = RopeLayout::half_split;
  c.tied_embeddings = false;
  return c;
}

/// llama_config() 256 wide (head_dim 64, ffn 512, vocab 300): every matrix is whole 256-weight
/// super-blocks, so the k-quants and IQ4_XS apply to all of them.
inline Config llama_config_256() {
  Config c = llama_config();
  c.dim = 256;
  c.head_dim = 64;
  c.ffn_dim = 512;
  c.vocab_size = 300;
  return c;
}

/// A GPT-2-style config: LayerNorm, learned positions, GELU MLP, fused Conv1D qkv, biases, tied.
inline Config gpt2_config() {
  Config c = llama_config();
  c.architecture = "gpt2";
  c.n_kv_heads = c.n_heads;
  c.norm = NormKind::layer_norm;
  c.position = PositionKind::learned;
  c.activation = Activation::gelu_tanh;
  c.gated_ffn = false;
  c.qkv_bias = c.out_bias = c.ffn_bias = true;
  c.tied_embeddings = true;
  return c;
}

}  // namespace loom::test
