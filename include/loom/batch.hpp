// BatchSession: many generations at once over one shared model (continuous batching).
//
// Decoding one sequence reads every weight once per token; decoding eight in one forward pass
// reads them once for all eight, so the machine's total token rate grows with the number of
// sequences until arithmetic, not memory bandwidth, is the limit. A BatchSession holds requests
// (a prompt, sampling parameters, stop conditions, callbacks) and advances all of them together:
//
//   loom::BatchSession batch(model, {.n_ctx = 1024, .n_threads = 2, .max_sequences = 8});
//   batch.submit({.prompt = ids, .params = params, .n = 4,
//                 .on_token = [&](int i, std::int32_t id) { out[i].push_back(id); return true; }});
//   batch.run();  // or step() from a server loop, submitting and cancelling in between
//
// Each step is one Model::forward over every running sequence: those still in their prompt give
// a chunk of it, the others their last sampled token. Keys and values live in one paged cache
// (nn::PagedKVCache): a request with n > 1 evaluates its prompt once and forks into n
// continuations that share the prompt's pages. Each continuation has its own Sampler and Rng
// (seed + index), so what it generates does not depend on what else is in the batch.
//
// Admission: a request starts when sequence slots and KV pages for its worst case (prompt plus
// max_new_tokens, or the whole context, per continuation) are free, so a running sequence never
// runs out of pages; until then it waits in arrival order.
//
// Threads: submit() and cancel() may be called from any thread; step() and run() from one thread
// at a time, which is where the callbacks run.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/generate.hpp"
#include "loom/kernels/thread_pool.hpp"
#include "loom/memory_budget.hpp"
#include "loom/model/model.hpp"
#include "loom/nn/paged_kv_cache.hpp"
#include "loom/sampling/sampler.hpp"

namespace loom {

struct BatchOptions {
  std::int32_t n_ctx = 0;           ///< positions per sequence (0 ⇒ the model's trained maximum)
  std::int32_t n_threads = 1;       ///< threads for matrix products and attention
  std::int32_t max_sequences = 8;   ///< sequences evaluated together (a request with n continuations takes n)
  std::int32_t max_batch_tokens = 512;  ///< tokens per step; longer prompts are evaluated in chunks
  std::int32_t page_positions = 64;     ///< positions per KV page (a multiple of 16)
  /// KV pages in the shared pool (0 ⇒ enough for max_sequences full contexts).
  std::int32_t kv_pages = 0;
  /// Memory budget in bytes for the KV pool plus scratch, as SessionOptions::max_memory.
  std::uint64_t max_memory = 0;
  DType kv_type = DType::f32;  ///< f32, or f16 for half the memory
};

/// One generation request.
struct BatchRequest {
  std::vector<std::int32_t> prompt;  ///< token ids, used as given (add BOS yourself)
  /// Sampling, max_new_tokens, end_of_generation and ignore_eos act as in Session::generate;
  /// context_shift and on_prompt_logits are not supported here (Error(invalid_argument)).
  GenerateParams params;
  std::int32_t n = 1;  ///< continuations of the prompt; continuation i samples with seed + i
  /// Called with (continuation index, token id) for each token as soon as it is chosen; false
  /// stops that continuation (StopReason::callback).
  std::function<bool(std::int32_t, std::int32_t)> on_token;
  /// Called once per continuation when it ends, with its statistics.
  std::function<void(std::int32_t, const GenerateStats&)> on_done;
};

class BatchSession {
 public:
  using RequestId = std::uint64_t;

  /// Allocates the paged KV cache and the scratch for one step, after checking that they fit
  /// options.max_memory (Error(capacity) naming both numbers otherwise).
  BatchSession(const Model& model, BatchOptions options = {})
      : model_(&model), options_(checked(model.config(), options)), pool_(options_.n_threads),
        kv_(make_cache(model.config(), options_)) {
    act_.reserve(model.config(), options_.max_batch_tokens, options_.n_ctx, options_.n_threads);
    running_.reserve(std::size_t(options_.max_sequences));
    inputs_.reserve(std::size_t(options_.max_sequences));
    rows_.reserve(std::size_t(options_.max_sequences));
  }

  const Model& model() const { return *model_; }
  const BatchOptions& options() const { return options_; }
  const nn::PagedKVCache& cache() const { return kv_; }
  int n_threads() const { return pool_.size(); }

  /// Queues a request and returns its id. Checks it first (Error(invalid_argument) for bad ids or
  /// parameters, Error(capacity) for a request that could never fit the context or the pool).
  RequestId submit(BatchRequest r) {
    const Config& c = model_->config();
    if (r.prompt.empty()) fail(ErrorKind::invalid_argument, "batch", "the prompt is empty");
    if (r.n < 1 || r.n > options_.max_sequences)
      fail(ErrorKind::invalid_argument, "batch", "n = ", r.n, " continuations: expected 1 .. ", options_.max_sequences,
           " (max_sequences)");
    for (std::size_t i = 0; i < r.prompt.size(); ++i)
      if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size)
        fail(ErrorKind::invalid_argument, "batch", "token id ", r.prompt[i], " at index ", i,
             " is outside the vocabulary [0, ", c.vocab_size, ")");
    for (std::int32_t id : r.params.end_of_generation)
      if (id < 0 || id >= c.vocab_size)
        fail(ErrorKind::invalid_argument, "batch", "end-of-generation id ", id, " is outside [0, ", c.vocab_size, ")");
    if (r.params.context_shift || r.params.on_prompt_logits)
      fail(ErrorKind::invalid_argument, "batch", "context_shift and on_prompt_logits are not supported in a batch");
    r.params.sampler.validate();
    if (std::int64_t(r.prompt.size()) >= options_.n_ctx)
      fail(ErrorKind::capacity, "batch", "the prompt has ", r.prompt.size(), " tokens but the context holds ",
           options_.n_ctx, " (one more is needed to generate)");
    const std::int32_t pages = worst_case_pages(r);
    if (pages > kv_.total_pages())
      fail(ErrorKind::capacity, "batch", "the request may need ", pages, " KV pages of ", kv_.page_positions(),
           " positions; the pool has ", kv_.total_pages(), "; lower n or max_new_tokens");
    std::lock_guard lock(inbox_mutex_);
    const RequestId id = next_id_++;
    auto req = std::make_unique<Request>();
    req->id = id;
    req->pages = pages;
    req->r = std::move(r);
    req->submitted = clock::now();
    inbox_.push_back(std::move(req));
    return id;
  }

  /// Ends request `id` before its next step (each continuation's on_done gets
  /// StopReason::cancelled). Unknown or finished ids are ignored.
  void cancel(RequestId id) {
    std::lock_guard lock(inbox_mutex_);
    cancels_.push_back(id);
  }

  /// Requests running (evaluating their prompt or decoding) and waiting.
  std::size_t running() const { return running_.size(); }
  std::size_t waiting() const {
    std::lock_guard lock(inbox_mutex_);
    return waiting_.size() + inbox_.size();
  }
  /// Sequences evaluated in the last step, and the tokens they gave.
  std::int32_t last_step_sequences() const { return last_sequences_; }
  std::int32_t last_step_tokens() const { return last_tokens_; }

  /// Admits what fits, evaluates one step of every running request, samples and calls back.
  /// Returns false when there was nothing to do (no request running or waiting).
  bool step() {
    take_inbox();
    admit();
    if (running_.empty()) return false;
    build_batch();
    if (inputs_.empty()) return true;  // cannot happen: every running request has a prompt chunk or a token
    const Tensor<const float> logits = model_->forward(inputs_, kv_, act_, &pool_);
    const auto now = clock::now();
    for (std::size_t i = 0; i < rows_.size(); ++i) sample(rows_[i], logits.row(std::int64_t(i)), now);
    retire();
    return true;
  }
  /// Steps until every request has ended.
  void run() {
    while (step()) {
    }
  }

 private:
  using clock = std::chrono::steady_clock;

  /// One continuation of a request: a sequence in the cache with its own sampler.
  struct Continuation {
    Continuation(nn::PagedKVCache::SeqId s, Sampler&& sm) : seq(s), sampler(std::move(sm)) {}
    nn::PagedKVCache::SeqId seq = -1;
    Sampler sampler;
    std::int32_t next = -1;  ///< sampled, not yet evaluated (-1: none)
    bool done = false;
    GenerateStats stats;
    clock::time_point first_at{};  ///< when the first token was sampled
  };
  struct Request {
    RequestId id = 0;
    BatchRequest r;
    std::int32_t pages = 0;      ///< worst-case pages, reserved while running
    std::size_t evaluated = 0;   ///< prompt tokens evaluated so far
    std::vector<Continuation> outs;  ///< empty until the prompt is evaluated (then n)
    nn::PagedKVCache::SeqId prompt_seq = -1;
    bool cancelled = false;
    clock::time_point submitted, started;
  };
  /// Which request / continuation a row of the step's logits belongs to.
  struct Row {
    Request* req;
    std::int32_t out;  ///< continuation index, or -1: the prompt's last chunk (then fork and sample all)
  };

  static BatchOptions checked(const Config& c, BatchOptions o) {
    if (o.n_ctx < 0) fail(ErrorKind::invalid_argument, "batch", "n_ctx must be >= 0 (0 = model maximum), got ", o.n_ctx);
    if (o.n_ctx == 0) o.n_ctx = c.max_seq_len;
    (void)check_context_size(c, o.n_ctx);
    if (o.n_threads < 1 || o.n_threads > 1024)
      fail(ErrorKind::invalid_argument, "batch", "n_threads must be in [1, 1024], got ", o.n_threads);
    if (o.max_sequences < 1 || o.max_sequences > 4096)
      fail(ErrorKind::invalid_argument, "batch", "max_sequences must be in [1, 4096], got ", o.max_sequences);
    if (o.max_batch_tokens < o.max_sequences || o.max_batch_tokens > (1 << 16))
      fail(ErrorKind::invalid_argument, "batch", "max_batch_tokens must be in [max_sequences = ", o.max_sequences,
           ", 65536], got ", o.max_batch_tokens);
    if (o.page_positions < 16 || o.page_positions % 16 != 0 || o.page_positions > (1 << 16))
      fail(ErrorKind::invalid_argument, "batch", "page_positions must be a multiple of 16 in [16, 65536], got ",
           o.page_positions);
    const std::int64_t per_seq = (std::int64_t(o.n_ctx) + o.page_positions - 1) / o.page_positions;
    if (o.kv_pages < 0) fail(ErrorKind::invalid_argument, "batch", "kv_pages must be >= 0, got ", o.kv_pages);
    if (o.kv_pages == 0) {
      const std::int64_t all = per_seq * o.max_sequences;
      if (all > (1 << 30)) fail(ErrorKind::capacity, "batch", "max_sequences × n_ctx is too large; set kv_pages");
      o.kv_pages = std::int32_t(all);
    }
    (void)nn::KVCache::element_bytes(o.kv_type);
    return o;
  }

  static nn::PagedKVCache make_cache(const Config& c, const BatchOptions& o) {
    const MemoryLimit limit = memory_limit();
    const std::uint64_t budget =
        o.max_memory && (limit.bytes == 0 || o.max_memory <= limit.bytes) ? o.max_memory : limit.bytes;
    const nn::KVPageCount count{o.kv_pages, o.page_positions, o.n_ctx};
    const std::uint64_t kv = nn::PagedKVCache::bytes_needed(c, count, o.kv_type);
    const std::uint64_t scratch = Activations::bytes_needed(c, o.max_batch_tokens, o.n_ctx, o.n_threads);
    if (budget > 0 && (kv > budget || scratch > budget - kv))
      fail(ErrorKind::capacity, "batch", o.kv_pages, " KV pages of ", o.page_positions, " positions need ", kv,
           " bytes + ", scratch, " bytes of scratch, more than the memory budget of ", budget, " bytes (",
           budget == o.max_memory ? std::string("max_memory") : "available memory, " + limit.source,
           "); use fewer kv_pages, sequences or a smaller context");
    try {
      return nn::PagedKVCache(c, count, o.max_sequences, o.kv_type);
    } catch (const std::bad_alloc&) {
      fail(ErrorKind::capacity, "batch", "out of memory allocating ", kv, " bytes of KV cache");
    }
  }

  /// Pages request r can take at most: its prompt's pages once; per continuation the pages after
  /// them up to its longest length; and, when the prompt ends inside a page, n − 1 copies of that
  /// shared page (the last continuation to write there finds it unshared and keeps it).
  std::int32_t worst_case_pages(const BatchRequest& r) const {
    const std::int64_t P = options_.page_positions, prompt = std::int64_t(r.prompt.size());
    const std::int64_t longest = r.params.max_new_tokens < 0
                                     ? options_.n_ctx
                                     : std::min<std::int64_t>(options_.n_ctx, prompt + r.params.max_new_tokens);
    const std::int64_t prompt_pages = (prompt + P - 1) / P;
    const std::int64_t after = std::max<std::int64_t>(0, (longest + P - 1) / P - prompt_pages);
    const std::int64_t copies = prompt % P != 0 ? r.n - 1 : 0;
    const std::int64_t pages = prompt_pages + std::int64_t(r.n) * after + copies;
    return std::int32_t(std::min<std::int64_t>(pages, std::int64_t(1) << 30));
  }

  void take_inbox() {
    std::lock_guard lock(inbox_mutex_);
    for (auto& r : inbox_) waiting_.push_back(std::move(r));
    inbox_.clear();
    for (RequestId id : cancels_) {
      for (auto& r : running_)
        if (r->id == id && !r->cancelled) {
          r->cancelled = true;
          finish_all(*r, StopReason::cancelled);
        }
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
        if ((*it)->id == id) {
          GenerateStats stats;
          stats.stop = StopReason::cancelled;
          if ((*it)->r.on_done)
            for (std::int32_t i = 0; i < (*it)->r.n; ++i) (*it)->r.on_done(i, stats);
          waiting_.erase(it);
          break;
        }
    }
    cancels_.clear();
    retire();
  }

  /// Starts waiting requests, in arrival order, while their sequences and pages fit.
  void admit() {
    while (!waiting_.empty()) {
      Request& r = *waiting_.front();
      if (sequences_ + r.r.n > options_.max_sequences || reserved_pages_ + r.pages > kv_.total_pages()) break;
      sequences_ += r.r.n;
      reserved_pages_ += r.pages;
      r.prompt_seq = kv_.add();
      r.started = clock::now();
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }

  /// One input per running sequence: the next prompt chunk, or the last sampled token.
  void build_batch() {
    inputs_.clear();
    rows_.clear();
    std::int32_t budget = options_.max_batch_tokens;
    for (auto& r : running_)  // decoding sequences first: one token each
      for (std::size_t i = 0; i < r->outs.size(); ++i) {
        Continuation& c = r->outs[i];
        if (c.done) continue;
        inputs_.push_back({c.seq, {&c.next, 1}, Logits::last});
        rows_.push_back({r.get(), std::int32_t(i)});
        --budget;
      }
    for (auto& r : running_) {  // then prompt chunks, in arrival order, while the budget lasts
      if (!r->outs.empty() || budget <= 0) continue;
      const std::size_t left = r->r.prompt.size() - r->evaluated;
      const std::size_t take = std::min<std::size_t>(left, std::size_t(budget));
      inputs_.push_back({r->prompt_seq, {r->r.prompt.data() + r->evaluated, take}, Logits::last});
      rows_.push_back({r.get(), take == left ? -1 : -2});
      r->evaluated += take;
      budget -= std::int32_t(take);
    }
    last_sequences_ = std::int32_t(inputs_.size());
    last_tokens_ = options_.max_batch_tokens - budget;
  }

  /// Samples the next token of a row's continuation (or, when a prompt has just been evaluated,
  /// forks it into its continuations and samples each).
  void sample(const Row& row, const float* logits, clock::time_point now) {
    Request& r = *row.req;
    if (row.out == -2) return;  // a prompt chunk that is not the last
    if (row.out == -1) {
      const double prompt_seconds = std::chrono::duration<double>(now - r.started).count();
      r.outs.reserve(std::size_t(r.r.n));
      for (std::int32_t i = 0; i < r.r.n; ++i) {
        SamplerParams sp = r.r.params.sampler;
        if (sp.seed != default_seed) {
          sp.seed += std::uint64_t(i);
          if (sp.seed == default_seed) ++sp.seed;  // a given seed never turns into "random"
        }
        Continuation& c = r.outs.emplace_back(i == 0 ? r.prompt_seq : kv_.fork(r.prompt_seq),
                                              Sampler(sp, model_->config().vocab_size));
        if (sp.repeat_last_n != 0)
          for (std::int32_t id : r.r.prompt) c.sampler.accept(id);
        c.stats.prompt_tokens = std::int32_t(r.r.prompt.size());
        c.stats.prompt_seconds = prompt_seconds;
      }
      for (std::int32_t i = 0; i < r.r.n; ++i) next_token(r, i, logits, now);
      return;
    }
    next_token(r, row.out, logits, now);
  }

  void next_token(Request& r, std::int32_t i, const float* logits, clock::time_point now) {
    Continuation& c = r.outs[std::size_t(i)];
    const GenerateParams& p = r.r.params;
    if (c.stats.generated_tokens > 0) c.stats.decode_seconds = std::chrono::duration<double>(now - c.first_at).count();
    if (p.max_new_tokens >= 0 && c.stats.generated_tokens >= p.max_new_tokens) return finish(r, i, StopReason::max_tokens);
    const std::int32_t id = c.sampler.sample({logits, std::size_t(model_->config().vocab_size)});
    c.sampler.accept(id);
    if (c.stats.generated_tokens == 0) {
      c.first_at = clock::now();
      c.stats.first_token_seconds = std::chrono::duration<double>(c.first_at - r.submitted).count();
    }
    if (!p.ignore_eos && std::find(p.end_of_generation.begin(), p.end_of_generation.end(), id) != p.end_of_generation.end())
      return finish(r, i, StopReason::end_of_generation);
    ++c.stats.generated_tokens;
    c.next = id;
    if (r.r.on_token && !r.r.on_token(i, id)) return finish(r, i, StopReason::callback);
    if (p.max_new_tokens >= 0 && c.stats.generated_tokens >= p.max_new_tokens) return finish(r, i, StopReason::max_tokens);
    if (kv_.size(c.seq) >= options_.n_ctx) return finish(r, i, StopReason::context_full);
  }

  void finish(Request& r, std::int32_t i, StopReason why) {
    Continuation& c = r.outs[std::size_t(i)];
    if (c.done) return;
    c.done = true;
    c.stats.stop = why;
    kv_.remove(c.seq);
    if (r.r.on_done) r.r.on_done(i, c.stats);
  }
  void finish_all(Request& r, StopReason why) {
    if (r.outs.empty()) {  // still in its prompt: its continuations never started
      kv_.remove(r.prompt_seq);
      GenerateStats stats;
      stats.stop = why;
      stats.prompt_tokens = std::int32_t(r.r.prompt.size());
      if (r.r.on_done)
        for (std::int32_t i = 0; i < r.r.n; ++i) r.r.on_done(i, stats);
      r.cancelled = true;  // retire() drops it
      return;
    }
    for (std::int32_t i = 0; i < std::int32_t(r.outs.size()); ++i) finish(r, i, why);
  }

  /// Drops the requests whose continuations have all ended, giving back their slots and pages.
  void retire() {
    for (std::size_t k = 0; k < running_.size();) {
      Request& r = *running_[k];
      const bool over = (r.outs.empty() && r.cancelled) ||
                        (!r.outs.empty() && std::all_of(r.outs.begin(), r.outs.end(), [](const Continuation& c) { return c.done; }));
      if (!over) {
        ++k;
        continue;
      }
      sequences_ -= r.r.n;
      reserved_pages_ -= r.pages;
      running_.erase(running_.begin() + std::ptrdiff_t(k));
    }
  }

  const Model* model_;
  BatchOptions options_;
  kernels::ThreadPool pool_;
  nn::PagedKVCache kv_;
  Activations act_;
  std::vector<std::unique_ptr<Request>> running_;
  std::deque<std::unique_ptr<Request>> waiting_;
  std::int32_t sequences_ = 0;       ///< sequence slots the running requests hold (n each)
  std::int32_t reserved_pages_ = 0;  ///< worst-case pages of the running requests
  std::vector<SequenceInput> inputs_;
  std::vector<Row> rows_;
  std::int32_t last_sequences_ = 0, last_tokens_ = 0;

  mutable std::mutex inbox_mutex_;
  std::vector<std::unique_ptr<Request>> inbox_;
  std::vector<RequestId> cancels_;
  RequestId next_id_ = 1;
};

}  // namespace loom
