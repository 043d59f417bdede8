// Model: a Config plus borrowed Weights, and the forward pass of a decoder-only transformer.
//
// One forward() serves the prompt (n tokens at once, as matrix-matrix products) and decoding
// (one token). The model is immutable after construction and can be shared by any number of
// sessions; each caller brings its own nn::KVCache, Activations (scratch) and kernels::ThreadPool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"
#include "loom/nn/attention.hpp"
#include "loom/nn/embedding.hpp"
#include "loom/nn/feed_forward.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/norm.hpp"
#include "loom/nn/paged_kv_cache.hpp"
#include "loom/nn/position.hpp"
#include "loom/nn/workspace.hpp"
#include "loom/tensor.hpp"

namespace loom {

/// Which positions forward() returns logits for.
enum class Logits { last, all };

/// One sequence's part of a batched forward pass: its new tokens, appended after the positions
/// the paged cache holds for it, and which of their logits to return.
struct SequenceInput {
  nn::PagedKVCache::SeqId seq = 0;
  std::span<const std::int32_t> tokens;
  Logits which = Logits::last;
};

/// Scratch memory for forward passes of up to `max_tokens` tokens at once. Grows only when a
/// larger batch arrives (the prompt); decoding one token at a time allocates nothing.
class Activations {
 public:
  /// Bytes reserve(c, n_tokens, kv_capacity, n_threads) allocates, computed before allocating
  /// (saturates at UINT64_MAX instead of overflowing).
  static std::uint64_t bytes_needed(const Config& c, std::int64_t n_tokens, std::int64_t kv_capacity, int n_threads) {
    const long double per_token = 3.0L * c.dim + c.vocab_size;
    const long double floats = per_token * (long double)n_tokens + (long double)block_floats(c, n_tokens, kv_capacity, n_threads);
    const long double bytes = floats * sizeof(float);
    return bytes >= 1.8e19L ? UINT64_MAX : std::uint64_t(bytes);
  }
  void reserve(const Config& c, std::int64_t n_tokens, std::int64_t kv_capacity, int n_threads) {
    if (n_tokens <= max_tokens_ && kv_capacity <= kv_capacity_ && n_threads <= n_threads_) return;
    max_tokens_ = std::max(max_tokens_, n_tokens);
    kv_capacity_ = std::max(kv_capacity_, kv_capacity);
    n_threads_ = std::max(n_threads_, n_threads);
    const std::int64_t n = max_tokens_;
    residual.assign(std::size_t(n * c.dim), 0.0f);
    normed.assign(std::size_t(n * c.dim), 0.0f);
    block_out.assign(std::size_t(n * c.dim), 0.0f);
    logits.assign(std::size_t(n * c.vocab_size), 0.0f);
    block_scratch.assign(std::size_t(block_floats(c, n, kv_capacity_, n_threads_)), 0.0f);
  }
  std::vector<float> residual;       ///< (n, dim) the residual stream x
  std::vector<float> normed;         ///< (n, dim) norm(x), a block's input
  std::vector<float> block_out;      ///< (n, dim) a block's output, added to x
  std::vector<float> logits;         ///< (n, vocab)
  std::vector<float> block_scratch;  ///< the nn blocks' scratch: attention's q | k | v, heads and scores; the FFN's hidden rows
  std::vector<nn::KVSegment> segments;  ///< a batch's sequences (these three grow to the largest batch, then stay)
  std::vector<Logits> which;
  std::vector<std::int32_t> tokens;

 private:
  static std::int64_t block_floats(const Config& c, std::int64_t n, std::int64_t kv_capacity, int n_threads) {
    return std::max(nn::self_attention_scratch_floats(c.attention_shape(), n, kv_capacity, n_threads),
                    nn::feed_forward_scratch_floats(c.feed_forward_shape(), c.ffn_dim, n));
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
      for (nn::NormWeights* nw : {&l.attn_norm, &l.ffn_norm}) make_f32(*nw);
      for (nn::Linear* lin : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) make_f32(lin->bias);
    }
    make_f32(weights_.final_norm);
    if (config_.position == PositionKind::rope) rope_ = nn::Rope(config_.rope_shape());
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
  Tensor<const float> forward(std::span<const std::int32_t> tokens, std::int32_t start_pos, nn::KVCache& kv,
                              Activations& act, Logits which = Logits::last, kernels::ThreadPool* pool = nullptr) const {
    const std::int64_t n = std::int64_t(tokens.size());
    check_tokens(tokens, "");
    if (n > kv.capacity())
      fail(ErrorKind::capacity, "model", n, " tokens do not fit the context size ", kv.capacity());
    kv.reserve_append(start_pos, std::int32_t(n));
    check_positions(start_pos, n);
    act.reserve(config_, n, kv.capacity(), pool ? pool->size() : 1);
    const nn::KVSegment segment{kv.own_pages(), start_pos, std::int32_t(n)};
    const Logits whichs[] = {which};
    const Tensor<const float> logits = run(tokens, {&segment, 1}, whichs, kv, act, pool);
    kv.commit(start_pos + std::int32_t(n));
    return logits;
  }

  /// Runs several sequences' tokens in one pass (continuous batching): the weight matrices are
  /// read once for all rows, and each sequence attends to its own positions in `kv`. Each
  /// input's tokens are appended after the positions kv holds for its sequence (a sequence may
  /// appear once per call). Returns, for each input in order, the logits of its last token
  /// ([1, vocab]) or of all its tokens ([n, vocab]), one under the other, viewing `act.logits`.
  /// Everything is checked before anything changes: on an error no sequence has moved.
  Tensor<const float> forward(std::span<const SequenceInput> batch, nn::PagedKVCache& kv, Activations& act,
                              kernels::ThreadPool* pool = nullptr) const {
    if (batch.empty()) fail(ErrorKind::invalid_argument, "model", "a batch needs at least one sequence");
    std::int64_t n = 0, pages = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const SequenceInput& in = batch[i];
      if (!kv.live(in.seq)) fail(ErrorKind::invalid_argument, "model", "batch entry ", i, ": sequence ", in.seq, " does not exist");
      for (std::size_t j = 0; j < i; ++j)
        if (batch[j].seq == in.seq)
          fail(ErrorKind::invalid_argument, "model", "sequence ", in.seq, " appears twice in one batch");
      check_tokens(in.tokens, detail::cat("batch entry ", i, ": "));
      const std::int64_t end = std::int64_t(kv.size(in.seq)) + std::int64_t(in.tokens.size());
      if (end > kv.max_positions())
        fail(ErrorKind::capacity, "model", "sequence ", in.seq, ": ", end, " positions exceed the context size ",
             kv.max_positions());
      check_positions(kv.size(in.seq), std::int64_t(in.tokens.size()));
      pages += kv.pages_to_append(in.seq, std::int32_t(in.tokens.size()));
      n += std::int64_t(in.tokens.size());
    }
    if (pages > kv.free_pages())
      fail(ErrorKind::capacity, "model", "the batch needs ", pages, " free KV pages; ", kv.free_pages(), " of ",
           kv.total_pages(), " are free");
    act.reserve(config_, n, kv.max_positions(), pool ? pool->size() : 1);
    if (act.segments.size() < batch.size()) act.segments.resize(batch.size());
    if (act.which.size() < batch.size()) act.which.resize(batch.size());
    if (act.tokens.size() < std::size_t(n)) act.tokens.resize(std::size_t(n));
    std::size_t row = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const SequenceInput& in = batch[i];
      kv.reserve_append(in.seq, std::int32_t(in.tokens.size()));  // cannot fail: checked above
      act.segments[i] = {kv.pages(in.seq), kv.size(in.seq), std::int32_t(in.tokens.size())};
      act.which[i] = in.which;
      std::copy(in.tokens.begin(), in.tokens.end(), act.tokens.begin() + std::ptrdiff_t(row));
      row += in.tokens.size();
    }
    const Tensor<const float> logits =
        run({act.tokens.data(), std::size_t(n)}, {act.segments.data(), batch.size()}, {act.which.data(), batch.size()},
            kv.cache(), act, pool);
    for (const SequenceInput& in : batch) kv.commit(in.seq, kv.size(in.seq) + std::int32_t(in.tokens.size()));
    return logits;
  }

  /// Convenience for tests and one-off use: forward() with fresh scratch, returning an owning copy.
  Tensor<float> logits(std::span<const std::int32_t> tokens, std::int32_t start_pos, nn::KVCache& kv,
                       Logits which = Logits::last, kernels::ThreadPool* pool = nullptr) const {
    Activations act;
    const Tensor<const float> view = forward(tokens, start_pos, kv, act, which, pool);
    Tensor<float> out(view.shape());
    std::copy(view.data(), view.data() + view.numel(), out.data());
    return out;
  }

 private:
  void check_tokens(std::span<const std::int32_t> tokens, const std::string& where) const {
    if (tokens.empty()) fail(ErrorKind::invalid_argument, "model", where, "forward() needs at least one token");
    for (std::size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
        fail(ErrorKind::invalid_argument, "model", where, "token id ", tokens[i], " at index ", i, " is outside [0, ",
             config_.vocab_size, ")");
  }
  void check_positions(std::int64_t start_pos, std::int64_t n) const {
    if (config_.position == PositionKind::learned && start_pos + n > config_.max_seq_len)
      fail(ErrorKind::capacity, "model", "position ", start_pos + n - 1, " is beyond the ", config_.max_seq_len,
           " learned positions of this model");
  }

  /// The forward pass proper over checked input: `tokens` are the segments' rows one after the
  /// other; their pages in `cache` have room for them.
  Tensor<const float> run(std::span<const std::int32_t> tokens, std::span<const nn::KVSegment> segments,
                          std::span<const Logits> which, nn::KVCache& cache, Activations& act,
                          kernels::ThreadPool* pool) const {
    const Config& c = config_;
    const std::int64_t n = std::int64_t(tokens.size()), dim = c.dim;
    const TensorView<float> x(act.residual.data(), Shape{n, dim});   // (n, dim) residual stream
    const TensorView<float> h(act.normed.data(), Shape{n, dim});     // (n, dim) norm(x)
    const TensorView<float> y(act.block_out.data(), Shape{n, dim});  // (n, dim) block output
    const nn::Workspace ws{act.block_scratch, pool};

    nn::embed(weights_.token_embedding, tokens, x);  // (n, dim)
    for (std::int64_t row = 0; const nn::KVSegment& sg : segments) {
      const TensorView<float> xs = x.rows(row, row + sg.n_rows);
      if (c.position == PositionKind::learned) nn::add_learned_positions(weights_.position_embedding, sg.pos, xs, ws);
      if (c.position == PositionKind::sinusoidal) nn::add_sinusoidal_positions(sg.pos, xs, ws);
      row += sg.n_rows;
    }

    const nn::NormShape norm_shape = c.norm_shape();
    const nn::FeedForwardShape ffn_shape = c.feed_forward_shape();
    const nn::AttentionShape attn_shape = c.attention_shape(alibi_.empty() ? nullptr : alibi_.data(),
                                                            c.position == PositionKind::rope ? &rope_ : nullptr);
    for (std::int32_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights_.layers[std::size_t(l)];
      // x += attention(norm(x))
      nn::norm(norm_shape, w.attn_norm, x, h);
      nn::self_attention(attn_shape, w.attention(), h, nn::KVBatch{cache, l, segments}, y, ws);
      nn::add(x, y);
      // x += feed_forward(norm(x))
      nn::norm(norm_shape, w.ffn_norm, x, h);
      nn::feed_forward(ffn_shape, w.feed_forward(), h, y, ws);
      nn::add(x, y);
    }

    // Output head: final norm and projection, for each sequence's last row or all its rows.
    std::int64_t rows = 0, row = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      const std::int64_t end = row + segments[i].n_rows, first = which[i] == Logits::all ? row : end - 1;
      nn::norm(norm_shape, weights_.final_norm, x.rows(first, end), h.rows(rows, rows + end - first));
      rows += end - first;
      row = end;
    }
    const TensorView<float> logits(act.logits.data(), Shape{rows, c.vocab_size});
    nn::linear(h.rows(0, rows), weights_.output, logits, pool);  // (rows, vocab)
    return Tensor<const float>::view(logits.data(), logits.shape());
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
  void make_f32(nn::NormWeights& nw) {
    make_f32(nw.weight);
    make_f32(nw.bias);
  }

  Config config_;
  Weights weights_;
  nn::Rope rope_;
  std::vector<float> alibi_;
};

}  // namespace loom
