// Session: one conversation with a model. It owns its KV cache, scratch, thread pool and sampler
// state and borrows the model, so many sessions can share one loaded model.
//
//   loom::Session session(model, {.n_ctx = 512, .n_threads = 2});
//   auto stats = session.generate(prompt_ids, params, [&](std::int32_t id) {
//     std::cout << decoder.push(id) << std::flush;
//     return true;  // false stops generation
//   });
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/memory_budget.hpp"
#include "loom/model/model.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/sampling/sampler.hpp"
#include "loom/tokenizer/stream_decoder.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom {

struct SessionOptions {
  std::int32_t n_ctx = 0;     ///< context size in tokens (0 ⇒ the model's trained maximum)
  std::int32_t n_threads = 1; ///< threads for matrix products and attention
  /// Memory budget in bytes for the KV cache plus scratch (0 ⇒ what the process may still
  /// allocate: the smallest of MemAvailable, RLIMIT_AS, RLIMIT_DATA and the cgroup's memory.max,
  /// see memory_budget.hpp; a larger value is capped to that). Checked before anything is
  /// allocated: the session refuses with Error(capacity) instead of being killed by the OS.
  std::uint64_t max_memory = 0;
  /// Element type of the KV cache: f32, or f16 for half the memory (keys and values rounded to
  /// f16; Error(unsupported) for any other type).
  DType kv_type = DType::f32;
};

/// Checks a context size against the model's trained one. Beyond the learned position table of a
/// model with learned positions (GPT-2) it is Error(invalid_argument, "session"); beyond the
/// trained context of a RoPE model it works but quality degrades, so the result is a warning to
/// show the user (empty: none). Every tool calls this, so they all answer the same way.
inline std::string check_context_size(const Config& c, std::int32_t n_ctx) {
  if (n_ctx <= c.max_seq_len) return {};
  if (c.position == PositionKind::learned)
    fail(ErrorKind::invalid_argument, "session", "a context of ", n_ctx, " tokens exceeds the ", c.max_seq_len,
         " learned positions of this model");
  return detail::cat("a context of ", n_ctx, " tokens exceeds the model's trained context of ", c.max_seq_len,
                     "; output quality may degrade");
}

/// Why generate() returned.
enum class StopReason {
  end_of_generation,  ///< the model produced an end-of-generation token (not passed to on_token)
  max_tokens,         ///< max_new_tokens were generated
  context_full,       ///< the KV cache is full: no further token can be evaluated
  callback,           ///< on_token returned false
  cancelled,          ///< the request was cancelled (BatchSession::cancel)
};

constexpr const char* to_string(StopReason r) {
  switch (r) {
    case StopReason::end_of_generation: return "end of generation";
    case StopReason::max_tokens: return "max tokens";
    case StopReason::context_full: return "context full";
    case StopReason::callback: return "stopped by callback";
    case StopReason::cancelled: return "cancelled";
  }
  return "unknown";
}

struct GenerateParams {
  SamplerParams sampler;
  std::int32_t max_new_tokens = -1;           ///< < 0 ⇒ until end of generation or a full context
  std::vector<std::int32_t> end_of_generation;  ///< token ids that end generation (EOS, ...)
  bool ignore_eos = false;                    ///< keep going through end-of-generation tokens
  /// When set, the prompt pass computes logits for every prompt position and hands them here
  /// ([n_prompt, vocab]) before sampling starts.
  std::function<void(const Tensor<const float>&)> on_prompt_logits;
  /// What to do when the context is full. false: stop with StopReason::context_full. true: keep
  /// the first `n_keep` tokens, drop the oldest half of the others (as llama.cpp's context shift)
  /// and go on; the kept tokens are evaluated again at their new positions, so the result is
  /// exactly what a fresh session would compute for the shortened history.
  bool context_shift = false;
  std::int32_t n_keep = 0;  ///< tokens at the start of the context a shift never drops (clamped to the context)
};

struct GenerateStats {
  std::int32_t prompt_tokens = 0;
  std::int32_t generated_tokens = 0;
  double prompt_seconds = 0;   ///< time of the prompt pass
  double decode_seconds = 0;   ///< time spent evaluating generated tokens
  double first_token_seconds = 0;  ///< from the call to the first generated token
  StopReason stop = StopReason::max_tokens;
  std::int32_t context_shifts = 0;  ///< times old tokens were dropped (GenerateParams::context_shift)

  double prompt_tokens_per_second() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  /// Tokens evaluated during decoding per second (every generated token but the last is evaluated).
  double decode_tokens_per_second() const {
    const int evaluated = generated_tokens > 1 ? generated_tokens - 1 : 0;
    return decode_seconds > 0 ? evaluated / decode_seconds : 0;
  }
};

class Session {
 public:
  /// Allocates the KV cache for `options.n_ctx` positions, after checking that it and the scratch
  /// for one token fit `options.max_memory` (Error(capacity) naming both numbers otherwise).
  explicit Session(const Model& model, SessionOptions options = {})
      : model_(&model),
        pool_(checked_threads(options.n_threads)),
        limit_(memory_limit()),
        budget_(options.max_memory && (limit_.bytes == 0 || options.max_memory <= limit_.bytes) ? options.max_memory
                                                                                              : limit_.bytes),
        kv_(checked_cache(model.config(), options, budget_,
                          budget_ == options.max_memory ? std::string("max_memory") : "available memory, " + limit_.source)) {
    history_.reserve(std::size_t(kv_.capacity()));
  }

  /// The budget this session checks allocations against (0: none).
  std::uint64_t memory_budget() const { return budget_; }
  /// Bytes the KV cache and scratch need for prompts of up to `n_tokens` tokens.
  std::uint64_t memory_needed(std::int64_t n_tokens) const {
    return kv_.bytes() +
           Activations::bytes_needed(model_->config(), std::max(n_tokens, batch_reserved_), kv_.capacity(), pool_.size());
  }
  /// The tokens in the context, oldest first (what the KV cache holds).
  std::span<const std::int32_t> history() const { return history_; }

  const Model& model() const { return *model_; }
  const nn::KVCache& cache() const { return kv_; }
  /// Number of tokens in the context so far.
  std::int32_t position() const { return kv_.size(); }
  std::int32_t context_size() const { return kv_.capacity(); }
  int n_threads() const { return pool_.size(); }

  /// Forgets the whole context.
  void reset() {
    kv_.clear();
    history_.clear();
    pending_ = -1;
  }
  /// Forgets positions p and later (e.g. to regenerate from a point).
  void rewind(std::int32_t p) {
    kv_.rewind(p);
    history_.resize(std::size_t(p));
    pending_ = -1;
  }

  /// Appends `tokens` to the context and returns the logits of the last position (or all).
  Tensor<const float> eval(std::span<const std::int32_t> tokens, Logits which = Logits::last) {
    check_fits(tokens.size());
    check_ids(tokens);
    pending_ = -1;
    return forward(tokens, which);
  }

  /// Text in, text out: encodes `prompt` with `tok` (BOS as the tokenizer prescribes at the
  /// start of a context; special tokens in the text are parsed), generates, and streams the
  /// reply to on_piece as UTF-8-safe pieces (no partial characters). on_piece returns false to
  /// stop.
  GenerateStats generate(std::string_view prompt, const Tokenizer& tok, const GenerateParams& params,
                         const std::function<bool(std::string_view)>& on_piece) {
    const std::vector<std::int32_t> ids = tok.encode(prompt, /*add_special=*/position() == 0, /*parse_special=*/true);
    StreamDecoder text(tok);
    text.skip(ids);
    GenerateStats stats = generate(ids, params, [&](std::int32_t id) { return on_piece(text.push(id)); });
    if (const std::string rest = text.finish(); !rest.empty()) on_piece(rest);
    return stats;
  }

  /// Appends the prompt to the context, then samples up to max_new_tokens tokens, calling
  /// on_token(id) for each as soon as it is chosen. Calls continue one another: the next call
  /// first evaluates the last token this one generated (unless it ended the generation), so a
  /// conversation never re-processes its history. A prompt that does not fit the remaining
  /// context is rejected before any work (Error(capacity), naming both lengths). After any
  /// error the session is unchanged and usable.
  GenerateStats generate(std::span<const std::int32_t> prompt, const GenerateParams& params,
                         const std::function<bool(std::int32_t)>& on_token) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    // The last token generated by a previous call was emitted but not evaluated: it goes first.
    input_.clear();
    if (pending_ >= 0) input_.push_back(pending_);
    input_.insert(input_.end(), prompt.begin(), prompt.end());
    if (input_.empty())
      fail(ErrorKind::invalid_argument, "session", "the prompt is empty and there is nothing to continue from");
    if (params.n_keep < 0)
      fail(ErrorKind::invalid_argument, "session", "n_keep must be >= 0, got ", params.n_keep);
    // Room for the input: drop old tokens first when allowed (their tail is evaluated again, in
    // front of the input, in the same batch).
    std::size_t tail = 0;
    if (params.context_shift && std::uint64_t(kv_.size()) + input_.size() > std::uint64_t(kv_.capacity())) {
      tail = shift_tail(input_.size(), params.n_keep);
      if (tail == npos) check_fits(input_.size());  // throws: naming both lengths
    } else {
      check_fits(input_.size());
    }
    check_ids(input_);
    const std::int32_t vocab = model_->config().vocab_size;
    for (std::int32_t id : params.end_of_generation)
      if (id < 0 || id >= vocab)
        fail(ErrorKind::invalid_argument, "session", "end-of-generation id ", id, " is outside [0, ", vocab, ")");
    Sampler sampler(params.sampler, vocab);
    if (params.sampler.repeat_last_n != 0)
      for (std::int32_t id : prompt) sampler.accept(id);

    GenerateStats stats;
    stats.prompt_tokens = std::int32_t(prompt.size());
    const bool all = bool(params.on_prompt_logits) && !prompt.empty();
    Tensor<const float> logits = tail == 0 ? forward(input_, all ? Logits::all : Logits::last)
                                           : shift_and_forward(tail, params.n_keep, input_, all ? Logits::all : Logits::last);
    if (tail > 0) ++stats.context_shifts;
    pending_ = -1;
    if (all) {
      const std::int64_t skip = std::int64_t(tail + input_.size() - prompt.size());
      params.on_prompt_logits(Tensor<const float>::view(logits.row(skip), Shape{std::int64_t(prompt.size()), vocab}));
      logits = Tensor<const float>::view(logits.row(logits.dim(0) - 1), Shape{1, vocab});
    }
    const auto t1 = clock::now();
    stats.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

    double decode = 0;
    for (;;) {
      if (params.max_new_tokens >= 0 && stats.generated_tokens >= params.max_new_tokens) {
        stats.stop = StopReason::max_tokens;
        break;
      }
      const std::int32_t id = sampler.sample({logits.data(), std::size_t(vocab)});
      sampler.accept(id);
      if (stats.generated_tokens == 0) stats.first_token_seconds = std::chrono::duration<double>(clock::now() - t0).count();
      if (!params.ignore_eos && is_end(params, id)) {
        stats.stop = StopReason::end_of_generation;
        break;
      }
      ++stats.generated_tokens;
      // What makes room for `id` when the context is full: nothing (stop), or a context shift.
      const std::size_t shift = kv_.size() < kv_.capacity() || !params.context_shift ? 0 : shift_tail(1, params.n_keep);
      if (kv_.size() < kv_.capacity() || shift != npos) pending_ = id;  // evaluated by the next forward (here or next call)
      if (!on_token(id)) {
        stats.stop = StopReason::callback;
        break;
      }
      if (params.max_new_tokens >= 0 && stats.generated_tokens >= params.max_new_tokens) {
        stats.stop = StopReason::max_tokens;
        break;
      }
      if (kv_.size() >= kv_.capacity() && (!params.context_shift || shift == npos)) {
        stats.stop = StopReason::context_full;
        break;
      }
      const auto s = clock::now();
      if (kv_.size() >= kv_.capacity()) {
        logits = shift_and_forward(shift, params.n_keep, {&id, 1}, Logits::last);
        ++stats.context_shifts;
      } else {
        logits = forward({&id, 1}, Logits::last);
      }
      pending_ = -1;
      decode += std::chrono::duration<double>(clock::now() - s).count();
    }
    stats.decode_seconds = decode;
    return stats;
  }

 private:
  static bool is_end(const GenerateParams& p, std::int32_t id) {
    for (std::int32_t e : p.end_of_generation)
      if (e == id) return true;
    return false;
  }
  static constexpr std::size_t npos = std::size_t(-1);

  static int checked_threads(int n) {
    if (n < 1 || n > 1024) fail(ErrorKind::invalid_argument, "session", "n_threads must be in [1, 1024], got ", n);
    return n;
  }

  /// The KV cache for `o`, once its size and the scratch for one token are known to fit the budget.
  static nn::KVCache checked_cache(const Config& c, const SessionOptions& o, std::uint64_t budget, const std::string& source) {
    if (o.n_ctx < 0)
      fail(ErrorKind::invalid_argument, "session", "n_ctx must be >= 0 (0 = model maximum), got ", o.n_ctx);
    const std::int32_t n_ctx = o.n_ctx > 0 ? o.n_ctx : c.max_seq_len;
    (void)check_context_size(c, n_ctx);  // learned positions: an error; RoPE: the caller may warn
    const std::uint64_t kv = nn::KVCache::bytes_needed(c, n_ctx, o.kv_type);
    const std::uint64_t scratch = Activations::bytes_needed(c, 1, n_ctx, o.n_threads);
    if (budget > 0 && (kv > budget || scratch > budget - kv))
      fail(ErrorKind::capacity, "session", "a context of ", n_ctx, " tokens needs ", kv, " bytes of KV cache + ",
           scratch, " bytes of scratch = ", kv + scratch, " bytes, more than the memory budget of ", budget,
           " bytes (", source, "); use a smaller context");
    try {
      return nn::KVCache(c, n_ctx, o.kv_type);
    } catch (const std::bad_alloc&) {
      fail(ErrorKind::capacity, "session", "out of memory allocating ", kv, " bytes of KV cache for a context of ", n_ctx,
           " tokens; use a smaller context");
    }
  }

  /// Throws Error(capacity) when evaluating a batch of `n` tokens would grow the scratch past the budget.
  void check_batch_memory(std::size_t n) const {
    if (budget_ == 0 || std::int64_t(n) <= batch_reserved_) return;
    const std::uint64_t need = memory_needed(std::int64_t(n));
    if (need > budget_)
      fail(ErrorKind::capacity, "session", "a batch of ", n, " tokens needs ", need,
           " bytes of KV cache and scratch, more than the memory budget of ", budget_, " bytes");
  }

  void check_ids(std::span<const std::int32_t> ids) const {
    const std::int32_t vocab = model_->config().vocab_size;
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= vocab)
        fail(ErrorKind::invalid_argument, "session", "token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ",
             vocab, ")");
  }

  /// Evaluates `tokens` after the context and records them in the history.
  Tensor<const float> forward(std::span<const std::int32_t> tokens, Logits which) {
    check_batch_memory(tokens.size());
    Tensor<const float> out = model_->forward(tokens, kv_.size(), kv_, act_, which, &pool_);
    batch_reserved_ = std::max(batch_reserved_, std::int64_t(tokens.size()));
    history_.insert(history_.end(), tokens.begin(), tokens.end());
    return out;
  }

  /// Plans a context shift making room for `n` tokens: keeps the first min(n_keep, size) tokens
  /// and drops the oldest half of the rest (more when `n` needs it). Returns the number of
  /// tokens after the dropped ones, which are evaluated again, or npos when `n` cannot fit.
  std::size_t shift_tail(std::size_t n, std::int32_t n_keep) const {
    const std::size_t pos = std::size_t(kv_.size()), cap = std::size_t(kv_.capacity());
    const std::size_t keep = std::min(std::size_t(std::max(n_keep, 0)), pos);
    const std::size_t left = pos - keep;
    const std::size_t need = pos + n > cap ? pos + n - cap : 0;
    const std::size_t discard = std::max(left / 2, need);
    if (discard == 0 || discard > left) return npos;
    return left - discard;
  }

  /// Performs the shift planned by shift_tail(): rewinds to the kept prefix and evaluates the
  /// kept tail followed by `tokens` in one batch. Logits::all covers the tail rows too.
  Tensor<const float> shift_and_forward(std::size_t tail, std::int32_t n_keep, std::span<const std::int32_t> tokens,
                                        Logits which) {
    const std::size_t keep = std::min(std::size_t(std::max(n_keep, 0)), history_.size());
    shift_batch_.assign(history_.end() - std::ptrdiff_t(tail), history_.end());
    shift_batch_.insert(shift_batch_.end(), tokens.begin(), tokens.end());
    check_batch_memory(shift_batch_.size());
    kv_.rewind(std::int32_t(keep));
    history_.resize(keep);
    return forward(shift_batch_, which);
  }

  void check_fits(std::size_t n) const {
    if (std::uint64_t(kv_.size()) + n > std::uint64_t(kv_.capacity()))
      fail(ErrorKind::capacity, "session", "the prompt has ", n, " tokens but the context has room for ",
           kv_.capacity() - kv_.size(), " (context size ", kv_.capacity(), ", ", kv_.size(), " already used)");
  }

  const Model* model_;
  kernels::ThreadPool pool_;
  MemoryLimit limit_;                // what the process may still allocate, when the session was made
  std::uint64_t budget_;             // bytes for KV cache + scratch (0: no limit)
  nn::KVCache kv_;
  Activations act_;
  std::int64_t batch_reserved_ = 0;  // largest batch act_ was sized for
  std::vector<std::int32_t> history_;      // the tokens in kv_, oldest first
  std::vector<std::int32_t> shift_batch_;  // kept tail + new tokens during a context shift
  std::vector<std::int32_t> input_;  // prompt buffer (pending token + prompt)
  std::int32_t pending_ = -1;        // last generated token, not yet in the cache (-1: none)
};

}  // namespace loom
