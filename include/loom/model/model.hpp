// Model: a Config plus borrowed Weights, and the forward pass of a decoder-only transformer.
//
// One forward() serves the prompt (n tokens at once, as matrix-matrix products) and decoding
// (one token). The model is immutable after construction and can be shared by any number of
// sessions; each caller brings its own KVCache, Activations (scratch) and ThreadPool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"
#include "loom/nn/attention.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/norm.hpp"
#include "loom/nn/position.hpp"
#include "loom/tensor.hpp"

namespace loom {

/// Which positions forward() returns logits for.
enum class Logits { last, all };

/// Scratch memory for forward passes of up to `max_tokens` tokens at once. Grows only when a
/// larger batch arrives (the prompt); decoding one token at a time allocates nothing.
class Activations {
 public:
  /// Bytes reserve(c, n_tokens, kv_capacity, n_threads) allocates, computed before allocating
  /// (saturates at UINT64_MAX instead of overflowing).
  static std::uint64_t bytes_needed(const Config& c, std::int64_t n_tokens, std::int64_t kv_capacity, int n_threads) {
    const long double per_token = 3.0L * c.dim + c.q_dim() + 2.0L * c.kv_dim() + c.q_dim() + 2.0L * c.ffn_dim + c.vocab_size;
    const long double floats = per_token * (long double)n_tokens +
                               (long double)n_threads * (long double)attention_floats(c, kv_capacity);
    const long double bytes = floats * sizeof(float);
    return bytes >= 1.8e19L ? UINT64_MAX : std::uint64_t(bytes);
  }
  void reserve(const Config& c, std::int64_t n_tokens, std::int64_t kv_capacity, int n_threads) {
    if (n_tokens <= max_tokens_ && kv_capacity <= kv_capacity_ && n_threads <= n_threads_) return;
    max_tokens_ = std::max(max_tokens_, n_tokens);
    kv_capacity_ = std::max(kv_capacity_, kv_capacity);
    n_threads_ = std::max(n_threads_, n_threads);
    const std::int64_t n = max_tokens_;
    x.assign(std::size_t(n * c.dim), 0.0f);
    xb.assign(std::size_t(n * c.dim), 0.0f);
    xb2.assign(std::size_t(n * c.dim), 0.0f);
    qkv.assign(std::size_t(n * (c.q_dim() + 2 * c.kv_dim())), 0.0f);
    att.assign(std::size_t(n * c.q_dim()), 0.0f);
    hb.assign(std::size_t(n * c.ffn_dim), 0.0f);
    hb2.assign(std::size_t(n * c.ffn_dim), 0.0f);
    logits.assign(std::size_t(n * c.vocab_size), 0.0f);
    scores.assign(std::size_t(std::int64_t(n_threads_) * attention_floats(c, kv_capacity_)), 0.0f);
  }
  /// scores: per thread, the attention scores of one group of query heads (nn::attention's scratch).
  std::vector<float> x, xb, xb2, qkv, att, hb, hb2, logits, scores;

 private:
  static std::int64_t attention_floats(const Config& c, std::int64_t kv_capacity) {
    return nn::attention_scratch_floats({c.n_heads, c.n_kv_heads, c.head_dim}, kv_capacity);
  }

  std::int64_t max_tokens_ = 0, kv_capacity_ = 0;
  int n_threads_ = 0;
};

class Model {
 public:
  /// Takes the config and weights, checks every tensor's shape against the config, and converts
  /// the small vectors (norm scales, biases) to f32 once. Big matrices stay where they are.
  Model(Config config, Weights weights) : config_(std::move(config)), weights_(std::move(weights)) {
    config_.validate();
    validate_weights(config_, weights_, "model");
    for (auto& l : weights_.layers) {
      for (NormWeights* nw : {&l.attn_norm, &l.ffn_norm}) make_f32(*nw);
      for (Linear* lin : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) make_f32(lin->bias);
    }
    make_f32(weights_.final_norm);
    if (config_.position == PositionKind::rope) rope_ = nn::Rope(config_);
    if (config_.position == PositionKind::alibi) alibi_ = nn::alibi_slopes(config_.n_heads);
  }

  Model(const Model&) = delete;  // a model is shared (by reference or shared_ptr), never copied
  Model& operator=(const Model&) = delete;
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

  const Config& config() const { return config_; }
  const Weights& weights() const { return weights_; }

  /// Runs `tokens` at positions start_pos, start_pos+1, ... appending their keys and values to
  /// `kv` (which must hold exactly positions [0, start_pos) that matter; later ones are
  /// overwritten). Returns logits [1, vocab] for the last position or [n, vocab] for all, viewing
  /// `act.logits` (valid until the next call with the same Activations).
  Tensor<const float> forward(std::span<const std::int32_t> tokens, std::int32_t start_pos, KVCache& kv,
                              Activations& act, Logits which = Logits::last, ThreadPool* pool = nullptr) const {
    const Config& c = config_;
    const std::int64_t n = std::int64_t(tokens.size());
    if (n == 0) fail(ErrorKind::invalid_argument, "model", "forward() needs at least one token");
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
        fail(ErrorKind::invalid_argument, "model", "token id ", tokens[i], " at index ", i, " is outside [0, ",
             c.vocab_size, ")");
    if (n > kv.capacity())
      fail(ErrorKind::capacity, "model", n, " tokens do not fit the context size ", kv.capacity());
    kv.reserve_append(start_pos, std::int32_t(n));
    if (c.position == PositionKind::learned && start_pos + n > c.max_seq_len)
      fail(ErrorKind::capacity, "model", "position ", start_pos + n - 1, " is beyond the ", c.max_seq_len,
           " learned positions of this model");
    const int threads = pool ? pool->size() : 1;
    act.reserve(c, n, kv.capacity(), threads);

    const std::int64_t dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ld_qkv = qd + 2 * kvd, ffn = c.ffn_dim;
    float* x = act.x.data();      // (n, dim) residual stream
    float* xb = act.xb.data();    // (n, dim) normalized input of a block
    float* xb2 = act.xb2.data();  // (n, dim) block output
    float* qkv = act.qkv.data();  // (n, q_dim + 2 kv_dim)
    float* att = act.att.data();  // (n, q_dim)
    float* hb = act.hb.data();    // (n, ffn_dim)
    float* hb2 = act.hb2.data();  // (n, ffn_dim)

    // Embeddings (+ absolute positions).
    for (std::int64_t t = 0; t < n; ++t) {
      float* xt = x + t * dim;
      kernels::row_to_f32(weights_.token_embedding, tokens[std::size_t(t)], xt);
      if (c.position == PositionKind::learned) {
        float* pe = xb;  // scratch row
        kernels::row_to_f32(weights_.position_embedding, start_pos + t, pe);
        kernels::add({xt, std::size_t(dim)}, {pe, std::size_t(dim)});
      } else if (c.position == PositionKind::sinusoidal) {
        nn::sinusoidal_embedding(start_pos + t, xb, dim);
        kernels::add({xt, std::size_t(dim)}, {xb, std::size_t(dim)});
      }
    }

    const nn::AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim, c.sliding_window,
                                   alibi_.empty() ? nullptr : alibi_.data()};
    for (std::int32_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights_.layers[std::size_t(l)];

      // Attention block: x += wo · attention(norm(x))
      norm(w.attn_norm, x, xb, n);
      if (!w.wqkv.empty()) {
        nn::linear(xb, n, dim, w.wqkv, qkv, ld_qkv, pool);  // (n, q | k | v)
      } else {
        const nn::LinearOutput outs[] = {{&w.wq, qkv, ld_qkv},               // (n, q_dim)
                                         {&w.wk, qkv + qd, ld_qkv},          // (n, kv_dim)
                                         {&w.wv, qkv + qd + kvd, ld_qkv}};  // (n, kv_dim)
        nn::linear_same_input(xb, n, dim, outs, pool);
      }
      for (std::int64_t t = 0; t < n; ++t) {
        float* q = qkv + t * ld_qkv;
        float* k = q + qd;
        const std::int32_t p = start_pos + std::int32_t(t);
        if (c.position == PositionKind::rope) {
          rope_.apply(q, c.n_heads, p);
          rope_.apply(k, c.n_kv_heads, p);
        }
        kv.store(l, p, k, k + kvd);  // converted to the cache's type
      }
      nn::attention(qkv, ld_qkv, int(n), start_pos, kv, l, shape, att, qd, act.scores.data(), pool);
      nn::linear(att, n, qd, w.wo, xb2, dim, pool);  // (n, dim)
      kernels::add({x, std::size_t(n * dim)}, {xb2, std::size_t(n * dim)});

      // Feed-forward block: x += down(act(gate(h)) * up(h)) or down(act(up(h))), h = norm(x)
      norm(w.ffn_norm, x, xb, n);
      if (c.gated_ffn) {
        const nn::LinearOutput outs[] = {{&w.w_gate, hb, ffn}, {&w.w_up, hb2, ffn}};  // (n, ffn_dim) each
        nn::linear_same_input(xb, n, dim, outs, pool);
        activate({hb, std::size_t(n * ffn)});
        for (std::int64_t i = 0; i < n * ffn; ++i) hb[i] *= hb2[i];
      } else {
        nn::linear(xb, n, dim, w.w_up, hb2, ffn, pool);  // (n, ffn_dim)
        activate({hb2, std::size_t(n * ffn)});
        std::swap(hb, hb2);
      }
      nn::linear(hb, n, ffn, w.w_down, xb2, dim, pool);  // (n, dim)
      kernels::add({x, std::size_t(n * dim)}, {xb2, std::size_t(n * dim)});
    }
    kv.commit(start_pos + std::int32_t(n));

    // Final norm and output projection, for the last row or all rows.
    const std::int64_t first = which == Logits::all ? 0 : n - 1, rows = n - first;
    norm(weights_.final_norm, x + first * dim, xb, rows);
    nn::linear(xb, rows, dim, weights_.output, act.logits.data(), c.vocab_size, pool);  // (rows, vocab)
    return Tensor<const float>::view(act.logits.data(), Shape{rows, c.vocab_size});
  }

  /// Convenience for tests and one-off use: forward() with fresh scratch, returning an owning copy.
  Tensor<float> logits(std::span<const std::int32_t> tokens, std::int32_t start_pos, KVCache& kv,
                       Logits which = Logits::last, ThreadPool* pool = nullptr) const {
    Activations act;
    const Tensor<const float> view = forward(tokens, start_pos, kv, act, which, pool);
    Tensor<float> out(view.shape());
    std::copy(view.data(), view.data() + view.numel(), out.data());
    return out;
  }

 private:
  void norm(const NormWeights& nw, const float* in, float* out, std::int64_t rows) const {
    const std::int64_t d = config_.dim;
    const auto* w = reinterpret_cast<const float*>(nw.weight.data);
    const auto* b = nw.bias.empty() ? nullptr : reinterpret_cast<const float*>(nw.bias.data);
    for (std::int64_t t = 0; t < rows; ++t) {
      if (config_.norm == NormKind::rms_norm)
        nn::rms_norm(in + t * d, w, config_.norm_eps, out + t * d, d);
      else
        nn::layer_norm(in + t * d, w, b, config_.norm_eps, out + t * d, d);
    }
  }

  void activate(std::span<float> v) const {
    switch (config_.activation) {
      case Activation::silu: kernels::apply_silu(v); break;
      case Activation::gelu_tanh: kernels::apply_gelu_tanh(v); break;
      case Activation::gelu_erf: kernels::apply_gelu_erf(v); break;
      case Activation::relu: kernels::apply_relu(v); break;
    }
  }

  /// Replaces a small stored vector by an f32 copy owned by the model (norm scales, biases).
  void make_f32(TensorRef& t) {
    if (t.empty() || t.dtype == DType::f32) return;
    // Owned through weights_.storage, so a copy of weights() (e.g. convert_weights) keeps it alive.
    auto buf = std::make_shared<std::vector<float>>(static_cast<std::size_t>(t.numel()));
    kernels::to_f32(t.dtype, t.data, buf->data(), t.numel());
    t = TensorRef{DType::f32, t.shape, reinterpret_cast<const std::byte*>(buf->data()), buf->size() * sizeof(float)};
    weights_.storage.push_back(buf);
  }
  void make_f32(NormWeights& nw) {
    make_f32(nw.weight);
    make_f32(nw.bias);
  }

  Config config_;
  Weights weights_;
  nn::Rope rope_;
  std::vector<float> alibi_;
};

}  // namespace loom
