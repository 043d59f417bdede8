// The sampler: picks the next token from a row of logits.
//
// As in llama.cpp, sampling is a chain of small steps over an array of candidates {id, logit, p}.
// Each step narrows or reshapes the candidates in place; the kept candidates are always a prefix of
// the array. The default chain (Sampler::sample) is
//
//   penalties → top-k → top-p → min-p → temperature → softmax → draw
//
// and temperature <= 0 short-cuts to greedy (argmax after the penalties). The steps are also
// exposed one by one in loom::sampling, so a caller can compose its own chain over a CandidateList.
//
// Determinism: every ordering uses one strict total order (logit descending, then id ascending),
// so the result of a sort does not depend on the standard library's sort algorithm, and greedy
// ties go to the lowest id. The random draw uses loom::Rng, which is the same on every platform.
// exp() comes from the C library; its last-bit accuracy is the only platform dependence left.
//
// NaN logits are rejected with loom::Error (they have no place in any order). -inf is allowed and
// means "never pick this token" (unless every candidate is -inf: greedy then returns the lowest
// id, and a random draw throws, since there is no distribution to draw from). +inf is allowed and
// means "always pick one of these tokens" (the draw is uniform among the +inf candidates).
//
// Allocation: Sampler allocates everything in its constructor; sample() and accept() allocate
// nothing. The steps never allocate either (they use std::sort / std::nth_element /
// std::partial_sort, which work in place).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "loom/error.hpp"
#include "loom/sampling/rng.hpp"

namespace loom {

/// One candidate token: its id, its (possibly adjusted) logit, and its probability. `p` is only
/// meaningful right after sampling::softmax (or a step that calls it: top_p, draw).
struct Candidate {
  std::int32_t id;
  float logit;
  float p;
};

/// The live candidates: a prefix of a caller-owned buffer. Steps shrink `items` from the back.
struct CandidateList {
  std::span<Candidate> items;  ///< the candidates still in the running
  bool sorted = false;         ///< true when `items` is in descending logit order

  std::size_t size() const noexcept { return items.size(); }
  bool empty() const noexcept { return items.empty(); }
};

/// The sampler's parameters. The defaults are llama.cpp's.
struct SamplerParams {
  float temperature = 0.8f;            ///< >= 0; 0 ⇒ greedy (argmax, ties → lowest id)
  std::int32_t top_k = 40;             ///< >= 0; 0 ⇒ disabled
  float top_p = 0.95f;                 ///< in (0, 1]; 1 ⇒ disabled
  float min_p = 0.05f;                 ///< in [0, 1]; 0 ⇒ disabled
  float repeat_penalty = 1.0f;         ///< > 0; 1 ⇒ disabled. Divides positive logits, multiplies the others
  std::int32_t repeat_last_n = 64;     ///< >= -1; how many recent tokens the penalties count; -1 ⇒ all (up to the sampler's history capacity), 0 ⇒ penalties disabled
  float frequency_penalty = 0.0f;      ///< finite; logit -= count * frequency_penalty
  float presence_penalty = 0.0f;       ///< finite; logit -= (count > 0) * presence_penalty
  std::uint64_t seed = default_seed;   ///< default_seed (0xFFFFFFFF) ⇒ a random seed from std::random_device; anything else is used as given

  /// Throws Error(invalid_argument, "sampler") naming the first field out of range and its value
  /// (NaN and infinities are out of range for every float field).
  void validate() const {
    auto bad = [](const char* field, const auto& value, const char* expected) {
      fail(ErrorKind::invalid_argument, "sampler", "parameter ", field, " = ", value, ": expected ", expected);
    };
    if (!std::isfinite(temperature) || temperature < 0.0f) bad("temperature", temperature, "a finite number >= 0 (0 = greedy)");
    if (top_k < 0) bad("top_k", top_k, "an integer >= 0 (0 = disabled)");
    if (!(top_p > 0.0f && top_p <= 1.0f)) bad("top_p", top_p, "a number in (0, 1] (1 = disabled)");
    if (!(min_p >= 0.0f && min_p <= 1.0f)) bad("min_p", min_p, "a number in [0, 1] (0 = disabled)");
    if (!std::isfinite(repeat_penalty) || repeat_penalty <= 0.0f) bad("repeat_penalty", repeat_penalty, "a finite number > 0 (1 = disabled)");
    if (repeat_last_n < -1) bad("repeat_last_n", repeat_last_n, "an integer >= -1 (-1 = whole history, 0 = disabled)");
    if (!std::isfinite(frequency_penalty)) bad("frequency_penalty", frequency_penalty, "a finite number (0 = disabled)");
    if (!std::isfinite(presence_penalty)) bad("presence_penalty", presence_penalty, "a finite number (0 = disabled)");
  }

  /// True when some penalty would change a logit.
  bool penalties_enabled() const noexcept {
    return repeat_last_n != 0 && (repeat_penalty != 1.0f || frequency_penalty != 0.0f || presence_penalty != 0.0f);
  }
};

/// The last `window` accepted tokens (a ring buffer) and how often each token occurs among them.
/// Allocates in its constructor only; push() and clear() are allocation-free.
class PenaltyHistory {
 public:
  PenaltyHistory() = default;

  /// Counts over the last `window` tokens of a vocabulary of `vocab_size` ids; window 0 records
  /// nothing.
  PenaltyHistory(std::int32_t vocab_size, std::size_t window)
      : vocab_size_(vocab_size),
        ring_(window),
        counts_(std::size_t(std::max<std::int32_t>(vocab_size, 0)), 0),
        slot_(std::size_t(std::max<std::int32_t>(vocab_size, 0)), -1),
        distinct_(std::min(window, std::size_t(std::max<std::int32_t>(vocab_size, 0)))) {
    if (vocab_size <= 0) fail(ErrorKind::invalid_argument, "sampler", "vocab_size = ", vocab_size, ": expected > 0");
  }

  /// Records `token`, forgetting the oldest one when the window is full. Throws Error when the
  /// token lies outside [0, vocab_size).
  void push(std::int32_t token) {
    if (token < 0 || token >= vocab_size_)
      fail(ErrorKind::invalid_argument, "sampler", "token ", token, " outside the vocabulary [0, ", vocab_size_, ")");
    if (ring_.empty()) return;
    if (size_ == ring_.size()) {
      remove(ring_[head_]);
    } else {
      ++size_;
    }
    ring_[head_] = token;
    head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
    add(token);
  }

  /// Forgets every token.
  void clear() noexcept {
    for (std::size_t i = 0; i < n_distinct_; ++i) {
      counts_[std::size_t(distinct_[i])] = 0;
      slot_[std::size_t(distinct_[i])] = -1;
    }
    n_distinct_ = 0;
    size_ = 0;
    head_ = 0;
  }

  /// How often `token` occurs in the window (0 for ids outside the vocabulary).
  std::int32_t count(std::int32_t token) const noexcept {
    return token >= 0 && token < vocab_size_ ? counts_[std::size_t(token)] : 0;
  }
  /// The tokens whose count is > 0, in no particular order.
  std::span<const std::int32_t> distinct() const noexcept { return {distinct_.data(), n_distinct_}; }
  /// How many tokens the window holds now.
  std::size_t size() const noexcept { return size_; }
  /// The window length.
  std::size_t window() const noexcept { return ring_.size(); }
  std::int32_t vocab_size() const noexcept { return vocab_size_; }

 private:
  void add(std::int32_t token) noexcept {
    const auto t = std::size_t(token);
    if (counts_[t]++ == 0) {
      slot_[t] = std::int32_t(n_distinct_);
      distinct_[n_distinct_++] = token;
    }
  }
  void remove(std::int32_t token) noexcept {
    const auto t = std::size_t(token);
    if (--counts_[t] == 0) {  // swap-remove from the distinct list
      const auto s = std::size_t(slot_[t]);
      const std::int32_t last = distinct_[--n_distinct_];
      distinct_[s] = last;
      slot_[std::size_t(last)] = std::int32_t(s);
      slot_[t] = -1;
    }
  }

  std::int32_t vocab_size_ = 0;
  std::vector<std::int32_t> ring_;      // the window, oldest at head_ once full
  std::size_t head_ = 0, size_ = 0;
  std::vector<std::int32_t> counts_;    // per id
  std::vector<std::int32_t> slot_;      // per id: index into distinct_, or -1
  std::vector<std::int32_t> distinct_;  // ids with count > 0 (first n_distinct_ entries)
  std::size_t n_distinct_ = 0;
};

namespace detail {

/// The one order every sort uses: higher logit first, then lower id (a strict total order when
/// there are no NaNs, so the result does not depend on the sort algorithm).
struct RanksBefore {
  bool operator()(const Candidate& a, const Candidate& b) const noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }
};

/// Index of the best candidate in the RanksBefore order (the argmax, ties → lowest id).
inline std::size_t best_index(std::span<const Candidate> items) noexcept {
  std::size_t best = 0;
  for (std::size_t i = 1; i < items.size(); ++i)
    if (RanksBefore{}(items[i], items[best])) best = i;
  return best;
}

/// Puts the best k candidates, in RanksBefore order, at the front of `items`.
inline void sort_best(std::span<Candidate> items, std::size_t k) {
  if (k == 0) return;
  if (k >= items.size()) {
    std::sort(items.begin(), items.end(), RanksBefore{});
  } else if (k <= items.size() / 64) {
    // A heap of k elements: one comparison per rejected candidate. Fastest for a small k.
    std::partial_sort(items.begin(), items.begin() + std::ptrdiff_t(k), items.end(), RanksBefore{});
  } else {
    std::nth_element(items.begin(), items.begin() + std::ptrdiff_t(k), items.end(), RanksBefore{});
    std::sort(items.begin(), items.begin() + std::ptrdiff_t(k), RanksBefore{});
  }
}

/// llama.cpp's penalty rule for a token seen `count` > 0 times.
inline void penalize(Candidate& c, std::int32_t count, float repeat, float frequency, float presence) noexcept {
  if (repeat != 1.0f) c.logit = c.logit <= 0.0f ? c.logit * repeat : c.logit / repeat;
  c.logit -= float(count) * frequency + presence;
}

[[noreturn]] inline void fail_nan(std::size_t token) {
  fail(ErrorKind::invalid_argument, "sampler", "logit of token ", token, " is NaN");
}

/// The fused form of fill → penalties → top_k(k) that Sampler uses when k is small: one pass over
/// the logits keeps a heap of the k best (RanksBefore) without writing a candidate per token.
/// Gives exactly the candidates, order and logits of the separate steps. Needs 0 < k < logits.size()
/// <= buffer.size(); `history` (may be null) must cover logits.size() ids.
inline CandidateList fill_top_k(std::span<Candidate> buffer, std::span<const float> logits, std::size_t k,
                                const PenaltyHistory* history, float repeat, float frequency, float presence) {
  Candidate* const heap = buffer.data();  // a max-heap on RanksBefore: heap[0] is the worst kept
  std::size_t size = 0;
  auto offer = [&](const Candidate& c) {
    if (size < k) {
      heap[size++] = c;
      std::push_heap(heap, heap + size, RanksBefore{});
    } else if (RanksBefore{}(c, heap[0])) {
      std::pop_heap(heap, heap + k, RanksBefore{});
      heap[k - 1] = c;
      std::push_heap(heap, heap + k, RanksBefore{});
    }
  };
  const bool penalized = history != nullptr && history->size() > 0 &&
                         (repeat != 1.0f || frequency != 0.0f || presence != 0.0f);
  float bar = -std::numeric_limits<float>::infinity();  // the worst kept logit once the heap is full
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (v < bar) continue;  // the common case; NaN falls through to the check below
    if (std::isnan(v)) fail_nan(i);
    if (penalized && history->count(std::int32_t(i)) > 0) continue;  // offered below, penalized
    offer(Candidate{std::int32_t(i), v, 0.0f});
    if (size == k) bar = heap[0].logit;
  }
  if (penalized) {
    for (const std::int32_t t : history->distinct()) {
      Candidate c{t, logits[std::size_t(t)], 0.0f};
      if (std::isnan(c.logit)) fail_nan(std::size_t(t));
      penalize(c, history->count(t), repeat, frequency, presence);
      offer(c);
    }
  }
  std::sort_heap(heap, heap + size, RanksBefore{});  // best first
  return CandidateList{buffer.first(size), true};
}

inline void require_nonempty(const CandidateList& list, const char* step) {
  if (list.empty()) fail(ErrorKind::invalid_argument, "sampler", step, ": no candidates");
}

}  // namespace detail

/// The individual steps of the chain. Each works in place on a CandidateList and allocates nothing.
namespace sampling {

/// Fills `buffer` with one candidate per logit, {i, logits[i], 0}, in id order, and returns the
/// list of them. Throws Error when the buffer is too small or a logit is NaN.
inline CandidateList fill(std::span<Candidate> buffer, std::span<const float> logits) {
  if (buffer.size() < logits.size())
    fail(ErrorKind::invalid_argument, "sampler", "candidate buffer of ", buffer.size(), " for ", logits.size(), " logits");
  bool has_nan = false;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    buffer[i] = Candidate{std::int32_t(i), logits[i], 0.0f};
    has_nan |= std::isnan(logits[i]);
  }
  if (has_nan)
    detail::fail_nan(std::size_t(std::find_if(logits.begin(), logits.end(), [](float x) { return std::isnan(x); }) - logits.begin()));
  return CandidateList{buffer.first(logits.size()), false};
}

/// Repetition, frequency and presence penalties for the tokens in `history` (llama.cpp's rule):
/// with c = history.count(id) > 0, a logit l becomes (l > 0 ? l / repeat : l * repeat)
/// - c * frequency - presence. Fast when the list is still in id order (as `fill` makes it).
inline void penalties(CandidateList& list, const PenaltyHistory& history, float repeat, float frequency, float presence) {
  if (history.size() == 0 || (repeat == 1.0f && frequency == 0.0f && presence == 0.0f)) return;
  auto apply = [&](Candidate& c, std::int32_t count) { detail::penalize(c, count, repeat, frequency, presence); };
  const auto distinct = history.distinct();
  const bool indexed = std::all_of(distinct.begin(), distinct.end(), [&](std::int32_t t) {
    return std::size_t(t) < list.items.size() && list.items[std::size_t(t)].id == t;
  });
  if (indexed) {
    for (const std::int32_t t : distinct) apply(list.items[std::size_t(t)], history.count(t));
  } else {
    for (Candidate& c : list.items)
      if (const std::int32_t count = history.count(c.id); count > 0) apply(c, count);
  }
  list.sorted = false;
}

/// Keeps the k best candidates (by logit; ties → lower id), sorted. k <= 0 disables the step; k is
/// raised to min_keep.
inline void top_k(CandidateList& list, std::int32_t k, std::size_t min_keep = 1) {
  if (k <= 0) return;
  const std::size_t keep = std::min(std::max(std::size_t(k), min_keep), list.size());
  if (!list.sorted) detail::sort_best(list.items, keep);
  list.items = list.items.first(keep);
  list.sorted = true;
}

/// Sets every candidate's p to the softmax of the logits. Throws Error when the list is empty or
/// every logit is -inf. When some logits are +inf, they share the probability equally.
inline void softmax(CandidateList& list) {
  detail::require_nonempty(list, "softmax");
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& c : list.items) max_logit = std::max(max_logit, c.logit);
  if (max_logit == -std::numeric_limits<float>::infinity())
    fail(ErrorKind::invalid_argument, "sampler", "softmax: all ", list.size(), " candidate logits are -inf");
  if (std::isinf(max_logit)) {  // +inf: the +inf candidates share everything
    std::size_t n = 0;
    for (const Candidate& c : list.items) n += c.logit == max_logit;
    for (Candidate& c : list.items) c.p = c.logit == max_logit ? 1.0f / float(n) : 0.0f;
    return;
  }
  double sum = 0.0;
  for (Candidate& c : list.items) {
    c.p = std::exp(c.logit - max_logit);
    sum += c.p;
  }
  const auto inv = float(1.0 / sum);
  for (Candidate& c : list.items) c.p *= inv;
}

/// Nucleus sampling: computes the softmax and keeps the shortest prefix of the candidates, best
/// first, whose cumulative probability reaches p — including the candidate that crosses p — and at
/// least min_keep candidates. p >= 1 disables the step. Leaves the kept candidates sorted. An
/// unsorted list is sorted only as far as needed: chunks of the best remaining candidates
/// (64, 128, 256, ...) until the mass reaches p.
inline void top_p(CandidateList& list, float p, std::size_t min_keep = 1) {
  if (p >= 1.0f || list.empty()) return;
  softmax(list);
  const std::size_t n = list.size();
  std::size_t sorted_n = list.sorted ? n : 0;  // items[0, sorted_n) are the best, in order
  std::size_t chunk = 64;
  double cum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (i == sorted_n) {
      const std::size_t next = std::min(n, sorted_n + chunk);
      detail::sort_best(list.items.subspan(sorted_n), next - sorted_n);
      sorted_n = next;
      chunk *= 2;
    }
    cum += list.items[i].p;
    if (cum >= double(p) && i + 1 >= min_keep) {
      list.items = list.items.first(i + 1);
      break;
    }
  }
  list.sorted = true;
}

/// Keeps the candidates whose probability is at least `ratio` times the largest one (tested on the
/// logits: logit >= max_logit + log(ratio)), and at least min_keep candidates. ratio <= 0
/// disables the step. Keeps the order of the list.
inline void min_p(CandidateList& list, float ratio, std::size_t min_keep = 1) {
  if (ratio <= 0.0f || list.empty()) return;
  const float max_logit = list.sorted ? list.items[0].logit : list.items[detail::best_index(list.items)].logit;
  const float threshold = max_logit + std::log(ratio);
  std::size_t kept = 0;
  if (list.sorted) {
    while (kept < list.size() && list.items[kept].logit >= threshold) ++kept;
  } else {
    // Stable in-place compaction: swapping keeps every candidate in the buffer.
    for (std::size_t i = 0; i < list.size(); ++i)
      if (list.items[i].logit >= threshold) std::swap(list.items[kept++], list.items[i]);
  }
  if (kept < min_keep) {
    kept = std::min(min_keep, list.size());
    if (!list.sorted) {
      detail::sort_best(list.items, kept);
      list.sorted = true;
    }
  }
  list.items = list.items.first(kept);
}

/// Divides every logit by t. t <= 0 means greedy: only the best candidate (ties → lowest id) is kept.
inline void temperature(CandidateList& list, float t) {
  if (list.empty()) return;
  if (t <= 0.0f) {
    std::swap(list.items[0], list.items[detail::best_index(list.items)]);
    list.items = list.items.first(1);
    list.sorted = true;
    return;
  }
  if (t == 1.0f) return;
  for (Candidate& c : list.items) c.logit /= t;  // monotone: the order, if any, survives
}

/// The best candidate's id: the argmax of the logits, ties → lowest id. Throws Error when empty.
inline std::int32_t greedy(const CandidateList& list) {
  detail::require_nonempty(list, "greedy");
  return list.items[detail::best_index(list.items)].id;
}

/// Computes the softmax and draws one candidate with probability p, using one rng.uniform().
/// The draw walks the list in its current order; throws Error when the list is empty or every
/// logit is -inf.
inline std::int32_t draw(CandidateList& list, Rng& rng) {
  softmax(list);
  double total = 0.0;
  for (const Candidate& c : list.items) total += c.p;
  const double target = rng.uniform() * total;
  double cum = 0.0;
  std::size_t last_positive = 0;
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (list.items[i].p <= 0.0f) continue;
    cum += list.items[i].p;
    last_positive = i;
    if (target < cum) return list.items[i].id;
  }
  return list.items[last_positive].id;  // rounding left target at the very top
}

}  // namespace sampling

/// The default sampling chain with its own candidate buffer, penalty history and RNG.
///
/// sample() runs penalties → top-k → top-p → min-p → temperature → softmax → draw over the
/// logits (or, with temperature 0, penalties → argmax); accept() records the token that was
/// actually emitted (call it for prompt tokens too if they should count for the penalties).
class Sampler {
 public:
  /// History capacity used when repeat_last_n = -1 ("the whole history"), unless given.
  static constexpr std::size_t default_max_history = 4096;

  /// Validates `params` (Error on a bad field or vocab_size <= 0) and allocates every buffer.
  /// `max_history` is the penalty window for params.repeat_last_n = -1 and the largest window
  /// accepted otherwise (a larger repeat_last_n throws Error(capacity)).
  Sampler(const SamplerParams& params, std::int32_t vocab_size, std::size_t max_history = default_max_history)
      : params_((params.validate(), params)),
        vocab_size_(check_vocab(vocab_size)),
        candidates_(std::size_t(vocab_size)),
        history_(vocab_size, window_for(params.repeat_last_n, max_history)),
        seed_(Rng::resolve_seed(params.seed)),
        rng_(seed_) {}

  /// Picks the next token from `logits` (one per vocabulary entry). Throws Error when the size is
  /// not vocab_size, a logit is NaN, or (when drawing at random) every logit is -inf.
  /// Allocation-free.
  std::int32_t sample(std::span<const float> logits) {
    if (logits.size() != candidates_.size())
      fail(ErrorKind::invalid_argument, "sampler", "got ", logits.size(), " logits for a vocabulary of ", vocab_size_);
    const bool greedy = params_.temperature <= 0.0f;
    const std::size_t k = greedy ? 1 : std::size_t(params_.top_k);  // 0 = no top-k
    const bool pen = params_.penalties_enabled();
    CandidateList list;
    if (k > 0 && k <= candidates_.size() / 64) {  // small k: one fused pass, no full candidate array
      list = detail::fill_top_k(candidates_, logits, k, pen ? &history_ : nullptr, params_.repeat_penalty,
                                params_.frequency_penalty, params_.presence_penalty);
    } else {
      list = sampling::fill(candidates_, logits);
      if (pen) sampling::penalties(list, history_, params_.repeat_penalty, params_.frequency_penalty, params_.presence_penalty);
      if (!greedy) sampling::top_k(list, params_.top_k);
    }
    if (greedy) {
      sampling::temperature(list, 0.0f);  // keeps the argmax (ties → lowest id)
      last_ = list.items;
      last_[0].p = 1.0f;
      return last_[0].id;
    }
    sampling::top_p(list, params_.top_p);
    sampling::min_p(list, params_.min_p);
    sampling::temperature(list, params_.temperature);
    last_ = list.items;
    return sampling::draw(list, rng_);
  }

  /// Records `token` in the penalty history (a ring buffer of the last repeat_last_n tokens).
  /// Throws Error when the token lies outside [0, vocab_size). Allocation-free.
  void accept(std::int32_t token) { history_.push(token); }

  /// Forgets the history and restarts the random sequence from seed().
  void reset() noexcept {
    history_.clear();
    rng_.reseed(seed_);
    last_ = {};
  }

  /// The seed in use: params.seed, or the random one drawn for default_seed.
  std::uint64_t seed() const noexcept { return seed_; }
  const SamplerParams& params() const noexcept { return params_; }
  std::int32_t vocab_size() const noexcept { return vocab_size_; }
  const PenaltyHistory& history() const noexcept { return history_; }
  /// The candidates that entered the final draw of the last sample() (with their probabilities),
  /// in the order they were drawn from. Valid until the next sample() or reset().
  std::span<const Candidate> last_candidates() const noexcept { return last_; }

 private:
  static std::int32_t check_vocab(std::int32_t vocab_size) {
    if (vocab_size <= 0) fail(ErrorKind::invalid_argument, "sampler", "vocab_size = ", vocab_size, ": expected > 0");
    return vocab_size;
  }
  static std::size_t window_for(std::int32_t repeat_last_n, std::size_t max_history) {
    if (repeat_last_n == -1) return max_history;
    if (std::size_t(repeat_last_n) > max_history)
      fail(ErrorKind::capacity, "sampler", "repeat_last_n = ", repeat_last_n, " exceeds the history capacity of ",
           max_history, " tokens (raise max_history)");
    return std::size_t(repeat_last_n);
  }

  SamplerParams params_;
  std::int32_t vocab_size_;
  std::vector<Candidate> candidates_;
  PenaltyHistory history_;
  std::uint64_t seed_;
  Rng rng_;
  std::span<Candidate> last_;
};

}  // namespace loom
