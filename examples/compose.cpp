// loom's nn blocks composed by hand, without loom::Model: a two-layer LLaMA-style model (RMSNorm,
// RoPE attention with grouped KV heads, SwiGLU feed-forward, tied output) with random weights.
// Prints the last token's first logits; tests/test_model.cpp checks Model gives the same.
#include <algorithm>
#include <cstdio>
#include <loom/nn/attention.hpp>
#include <loom/nn/embedding.hpp>
#include <loom/nn/feed_forward.hpp>
#include <loom/nn/norm.hpp>
#include <random>
#include <vector>

namespace compose {
namespace nn = loom::nn;
constexpr int dim = 64, heads = 4, kv_heads = 2, head_dim = 16, hidden = 96, vocab = 80, layers = 2;
struct Layer { nn::NormWeights attn_norm, ffn_norm; nn::Linear q, k, v, out, gate, up, down; };
struct Parameters {
  std::vector<std::vector<float>> storage;  // every weight (f32), viewed by the TensorRefs below
  loom::TensorRef embedding;                // [vocab, dim], also the output projection
  std::vector<Layer> layer;
  nn::NormWeights final_norm;
  loom::TensorRef random(loom::Shape shape, std::mt19937& rng, float mean, float spread) {
    std::uniform_real_distribution<float> u(mean - spread, mean + spread);
    auto& values = storage.emplace_back(std::size_t(shape.numel()));
    for (float& x : values) x = u(rng);
    return {loom::DType::f32, shape, reinterpret_cast<const std::byte*>(values.data()), values.size() * sizeof(float)};
  }
};

inline Parameters random_parameters(unsigned seed) {
  Parameters p;
  std::mt19937 rng(seed);
  auto matrix = [&](std::int64_t out, std::int64_t in) { return nn::Linear{p.random({out, in}, rng, 0, 0.15f), {}}; };
  auto scale = [&] { return nn::NormWeights{p.random({dim}, rng, 1.0f, 0.1f), {}}; };
  p.embedding = p.random({vocab, dim}, rng, 0.0f, 1.0f);
  for (int l = 0; l < layers; ++l)
    p.layer.push_back({scale(), scale(),
                       matrix(heads * head_dim, dim), matrix(kv_heads * head_dim, dim), matrix(kv_heads * head_dim, dim),
                       matrix(dim, heads * head_dim), matrix(hidden, dim), matrix(hidden, dim), matrix(dim, hidden)});
  p.final_norm = scale();
  return p;
}

/// The logits [n, vocab] of tokens at positions 0, 1, ...
inline std::vector<float> forward(const Parameters& p, std::span<const std::int32_t> tokens) {
  using View = loom::TensorView<float>;
  const std::int64_t n = std::int64_t(tokens.size());
  const nn::Rope rope(nn::RopeShape{nn::RopeLayout::interleaved, head_dim, head_dim, 10000.0f, {}});
  const nn::AttentionShape attention{heads, kv_heads, head_dim, 0, nullptr, &rope};  // no window, no ALiBi
  const nn::NormShape norm{nn::NormKind::rms_norm, 1e-5f};
  const nn::FeedForwardShape ffn{nn::Activation::silu, /*gated=*/true};
  nn::KVCache cache(nn::KVCacheShape{layers, kv_heads, head_dim}, 32);
  cache.reserve_append(0, std::int32_t(n));
  std::vector<float> x(std::size_t(n * dim)), h(x.size()), y(x.size()), logits(std::size_t(n * vocab));
  std::vector<float> scratch(std::size_t(std::max(nn::self_attention_scratch_floats(attention, n, cache.capacity(), 1),
                                                  nn::feed_forward_scratch_floats(ffn, hidden, n))));
  const View X(x.data(), {n, dim}), H(h.data(), {n, dim}), Y(y.data(), {n, dim});
  nn::embed(p.embedding, tokens, X);
  for (int l = 0; l < layers; ++l) {
    const Layer& w = p.layer[std::size_t(l)];
    nn::norm(norm, w.attn_norm, X, H);  // x += attention(norm(x))
    nn::self_attention(attention, {nullptr, &w.q, &w.k, &w.v, &w.out}, H, {cache, l, 0}, Y, {scratch});
    nn::add(X, Y);
    nn::norm(norm, w.ffn_norm, X, H);  // x += feed_forward(norm(x))
    nn::feed_forward(ffn, {&w.gate, &w.up, &w.down}, H, Y, {scratch});
    nn::add(X, Y);
  }
  nn::norm(norm, p.final_norm, X, H);
  nn::linear(H, nn::Linear{p.embedding, {}}, View(logits.data(), {n, vocab}));
  return logits;
}
}  // namespace compose
#ifndef LOOM_COMPOSE_NO_MAIN
int main() {
  const std::int32_t tokens[] = {1, 17, 42, 5};
  const std::vector<float> logits = compose::forward(compose::random_parameters(7), tokens);
  for (int i = 0; i < 8; ++i) std::printf("%.5f%s", logits[std::size_t(3 * compose::vocab + i)], i < 7 ? " " : " ...\n");
}
#endif
