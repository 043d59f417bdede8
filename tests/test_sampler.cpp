// Tests for loom::Rng, the sampling steps and loom::Sampler. References are computed here
// independently (plain sorts, softmax in double, brute-force window counts), never by the code
// under test.
#include <gtest/gtest.h>

#include <loom/sampling/rng.hpp>
#include <loom/sampling/sampler.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "alloc_counter.hpp"

namespace test_sampler {

namespace {

using loom::Candidate;
using loom::CandidateList;
using loom::Error;
using loom::ErrorKind;
using loom::PenaltyHistory;
using loom::Rng;
using loom::Sampler;
using loom::SamplerParams;
namespace sampling = loom::sampling;

constexpr float inf = std::numeric_limits<float>::infinity();

/// Parameters with every filter off: temperature 1, plain softmax draw.
SamplerParams plain(std::uint64_t seed = 1234) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

std::vector<float> random_logits(Rng& rng, std::size_t n, double scale = 4.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = float((rng.uniform() * 2.0 - 1.0) * scale);
  return v;
}

std::vector<double> softmax_ref(const std::vector<float>& logits, double temperature) {
  double mx = -std::numeric_limits<double>::infinity();
  for (float l : logits) mx = std::max(mx, double(l) / temperature);
  std::vector<double> p(logits.size());
  double sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(double(logits[i]) / temperature - mx);
  for (auto& x : p) x /= sum;
  return p;
}

std::vector<std::int32_t> ids_of(const CandidateList& list) {
  std::vector<std::int32_t> ids;
  for (const auto& c : list.items) ids.push_back(c.id);
  return ids;
}

std::int32_t argmax_ref(const std::vector<float>& v) {
  return std::int32_t(std::max_element(v.begin(), v.end()) - v.begin());  // first maximum = lowest id
}

// ======================================================================== Rng

TEST(Rng, SplitMix64MatchesPublishedFirstOutput) {
  // splitmix64 from state 0: first output 0xE220A8397B1DCDAF (the reference splitmix64.c).
  std::uint64_t state = 0;
  EXPECT_EQ(loom::detail::splitmix64_next(state), 0xE220A8397B1DCDAFull);
}

TEST(Rng, KnownAnswers) {
  // Computed with an independent Python transcription of splitmix64 + xoshiro256** (Vigna's
  // reference C code), big integers masked to 64 bits.
  Rng a(0);
  EXPECT_EQ(a.next(), 0x99ec5f36cb75f2b4ull);
  EXPECT_EQ(a.next(), 0xbf6e1f784956452aull);
  EXPECT_EQ(a.next(), 0x1a5f849d4933e6e0ull);
  EXPECT_EQ(a.next(), 0x6aa594f1262d2d2cull);
  Rng b(42);
  EXPECT_EQ(b.next(), 0x15780b2e0c2ec716ull);
  EXPECT_EQ(b.next(), 0x6104d9866d113a7eull);
  Rng c(42);
  EXPECT_DOUBLE_EQ(c.uniform(), double(0x15780b2e0c2ec716ull >> 11) * 0x1.0p-53);
  EXPECT_EQ(c.uniform_float(), float(0x6104d9866d113a7eull >> 40) * 0x1.0p-24f);
}

TEST(Rng, SameSeedSameSequenceDifferentSeedsDiffer) {
  Rng a(7), b(7), c(8);
  int same_ac = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    same_ac += x == c.next();
  }
  EXPECT_EQ(same_ac, 0);
  a.reseed(7);
  Rng d(7);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next(), d.next());
}

TEST(Rng, UniformStaysInUnitIntervalWithMeanOneHalf) {
  Rng r(99);
  double sum = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    const float f = r.uniform_float();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_GE(f, 0.0f);
    ASSERT_LT(f, 1.0f);
    sum += u;
  }
  // sd of the mean = sqrt(1/12 / n) ≈ 6.5e-4; 6 sd.
  EXPECT_NEAR(sum / n, 0.5, 0.004);
}

TEST(Rng, ResolveSeed) {
  EXPECT_EQ(Rng::resolve_seed(5), 5u);
  EXPECT_EQ(Rng::resolve_seed(0), 0u);
  EXPECT_EQ(LOOM_DEFAULT_SEED, 0xFFFFFFFFull);
  (void)Rng::resolve_seed(loom::default_seed);  // random: nothing to compare, but must not throw
}

// ======================================================================== params

TEST(SamplerParams, DefaultsAreLlamaCpps) {
  const SamplerParams p;
  EXPECT_FLOAT_EQ(p.temperature, 0.8f);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_FLOAT_EQ(p.top_p, 0.95f);
  EXPECT_FLOAT_EQ(p.min_p, 0.05f);
  EXPECT_FLOAT_EQ(p.repeat_penalty, 1.0f);
  EXPECT_EQ(p.repeat_last_n, 64);
  EXPECT_FLOAT_EQ(p.frequency_penalty, 0.0f);
  EXPECT_FLOAT_EQ(p.presence_penalty, 0.0f);
  EXPECT_EQ(p.seed, 0xFFFFFFFFull);
  EXPECT_NO_THROW(p.validate());
}

template <typename Mutate>
void expect_invalid(Mutate mutate, const std::string& field) {
  SamplerParams p = plain();
  mutate(p);
  try {
    p.validate();
    ADD_FAILURE() << "validate() accepted a bad " << field;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_EQ(e.area(), "sampler");
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[loom.invalid_argument.sampler]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler(p, 10), Error) << field;
}

TEST(SamplerParams, RejectsOutOfRangeValues) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect_invalid([](SamplerParams& p) { p.temperature = -0.1f; }, "temperature");
  expect_invalid([&](SamplerParams& p) { p.temperature = nan; }, "temperature");
  expect_invalid([](SamplerParams& p) { p.temperature = inf; }, "temperature");
  expect_invalid([](SamplerParams& p) { p.top_k = -1; }, "top_k");
  expect_invalid([](SamplerParams& p) { p.top_p = 0.0f; }, "top_p");
  expect_invalid([](SamplerParams& p) { p.top_p = -0.5f; }, "top_p");
  expect_invalid([](SamplerParams& p) { p.top_p = 1.01f; }, "top_p");
  expect_invalid([&](SamplerParams& p) { p.top_p = nan; }, "top_p");
  expect_invalid([](SamplerParams& p) { p.min_p = -0.01f; }, "min_p");
  expect_invalid([](SamplerParams& p) { p.min_p = 1.5f; }, "min_p");
  expect_invalid([&](SamplerParams& p) { p.min_p = nan; }, "min_p");
  expect_invalid([](SamplerParams& p) { p.repeat_penalty = 0.0f; }, "repeat_penalty");
  expect_invalid([](SamplerParams& p) { p.repeat_penalty = -1.0f; }, "repeat_penalty");
  expect_invalid([&](SamplerParams& p) { p.repeat_penalty = nan; }, "repeat_penalty");
  expect_invalid([](SamplerParams& p) { p.repeat_penalty = inf; }, "repeat_penalty");
  expect_invalid([](SamplerParams& p) { p.repeat_last_n = -2; }, "repeat_last_n");
  expect_invalid([&](SamplerParams& p) { p.frequency_penalty = nan; }, "frequency_penalty");
  expect_invalid([](SamplerParams& p) { p.presence_penalty = -inf; }, "presence_penalty");
}

TEST(SamplerParams, AcceptsBoundaryValues) {
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repeat_last_n = -1;
  p.frequency_penalty = -0.5f;
  p.presence_penalty = -0.5f;
  EXPECT_NO_THROW(p.validate());
  p.min_p = 0.0f;
  p.top_p = 1e-6f;
  p.repeat_last_n = 0;
  EXPECT_NO_THROW(p.validate());
}

TEST(Sampler, RejectsBadInputs) {
  Sampler s(plain(), 8);
  std::vector<float> logits(7, 0.0f);
  EXPECT_THROW(s.sample(logits), Error);
  logits.resize(9);
  EXPECT_THROW(s.sample(logits), Error);
  logits.assign(8, 0.0f);
  logits[3] = std::numeric_limits<float>::quiet_NaN();
  try {
    s.sample(logits);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.accept(-1), Error);
  EXPECT_THROW(s.accept(8), Error);
  EXPECT_NO_THROW(s.accept(7));
  EXPECT_THROW(Sampler(plain(), 0), Error);
  EXPECT_THROW(Sampler(plain(), -3), Error);
  // accept() range-checks even when penalties are off.
  SamplerParams off = plain();
  off.repeat_last_n = 0;
  Sampler s0(off, 4);
  EXPECT_THROW(s0.accept(4), Error);
}

TEST(Sampler, RejectsNaNOnEveryPath) {
  // Small top-k / greedy take the fused pass; NaN must be caught there too, also on a token of the
  // penalty history (which that pass handles separately).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const float temperature : {0.8f, 0.0f}) {
    for (const std::int32_t top_k : {40, 0}) {
      SamplerParams p = SamplerParams{};
      p.seed = 1;
      p.temperature = temperature;
      p.top_k = top_k;
      p.repeat_penalty = 1.2f;
      Sampler s(p, 10000);
      s.accept(1234);
      for (const std::size_t at : {0u, 777u, 1234u, 9999u}) {
        std::vector<float> logits(10000, 0.0f);
        logits[at] = nan;
        try {
          s.sample(logits);
          ADD_FAILURE() << "NaN at " << at << " accepted (temperature " << temperature << ", top_k " << top_k << ")";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("token " + std::to_string(at) + " is NaN"), std::string::npos) << e.what();
        }
      }
    }
  }
}

TEST(Sampler, RepeatLastNBeyondCapacityIsACapacityError) {
  SamplerParams p = plain();
  p.repeat_last_n = 100;
  try {
    Sampler s(p, 10, 50);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::capacity);
  }
  EXPECT_NO_THROW(Sampler(p, 10, 100));
}

TEST(Sampler, AllMinusInfinity) {
  std::vector<float> logits(5, -inf);
  Sampler random(plain(), 5);
  EXPECT_THROW(random.sample(logits), Error);
  SamplerParams g = plain();
  g.temperature = 0.0f;
  Sampler greedy(g, 5);
  EXPECT_EQ(greedy.sample(logits), 0);
}

TEST(Sampler, MinusInfinityIsNeverDrawnPlusInfinityAlwaysIs) {
  Sampler s(plain(3), 6);
  std::vector<float> logits = {-inf, 1.0f, -inf, 0.5f, -inf, 0.0f};
  for (int i = 0; i < 2000; ++i) {
    const auto t = s.sample(logits);
    ASSERT_TRUE(t == 1 || t == 3 || t == 5) << t;
  }
  std::vector<float> plus = {0.0f, inf, 3.0f, inf, 1.0f, 2.0f};
  std::set<std::int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(s.sample(plus));
  EXPECT_EQ(seen, (std::set<std::int32_t>{1, 3}));
}

// ======================================================================== top-k

TEST(TopK, StepKeepsTheKBestSortedTiesToLowerId) {
  std::vector<Candidate> buf(6);
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 2.0f};
  auto list = sampling::fill(buf, logits);
  sampling::top_k(list, 3);
  EXPECT_TRUE(list.sorted);
  EXPECT_EQ(ids_of(list), (std::vector<std::int32_t>{1, 3, 2}));
  sampling::top_k(list, 0);  // disabled
  EXPECT_EQ(list.size(), 3u);
  list = sampling::fill(buf, logits);
  sampling::top_k(list, 100);  // larger than the list: everything, sorted
  EXPECT_EQ(ids_of(list), (std::vector<std::int32_t>{1, 3, 2, 5, 0, 4}));
  list = sampling::fill(buf, logits);
  sampling::top_k(list, 1, 2);  // min_keep raises k
  EXPECT_EQ(ids_of(list), (std::vector<std::int32_t>{1, 3}));
}

TEST(TopK, StepMatchesAReferenceSortOnLargeVocabularies) {
  Rng rng(11);
  for (const std::size_t n : {1000u, 50000u}) {
    const auto logits = random_logits(rng, n);
    std::vector<std::int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return logits[a] > logits[b]; });
    std::vector<Candidate> buf(n);
    for (const std::int32_t k : {1, 40, 600, int(n) / 2}) {  // exercises partial_sort and nth_element
      auto list = sampling::fill(buf, logits);
      sampling::top_k(list, k);
      ASSERT_EQ(ids_of(list), std::vector<std::int32_t>(order.begin(), order.begin() + k)) << n << " " << k;
    }
  }
}

TEST(TopK, SamplerNeverReturnsATokenOutsideTheKBest) {
  Rng rng(2024);
  for (const std::int32_t k : {1, 5, 40}) {
    SamplerParams p = plain(77 + std::uint64_t(k));
    p.top_k = k;
    p.temperature = 5.0f;  // flatten so that every one of the k best gets drawn
    Sampler s(p, 1000);
    std::set<std::int32_t> drawn;
    for (int trial = 0; trial < 3000; ++trial) {
      const auto logits = random_logits(rng, 1000, 1.0);
      std::vector<std::int32_t> order(1000);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return logits[a] > logits[b]; });
      const std::set<std::int32_t> best(order.begin(), order.begin() + k);
      const auto t = s.sample(logits);
      ASSERT_TRUE(best.count(t)) << "k=" << k << " trial " << trial << " token " << t;
      drawn.insert(std::int32_t(std::find(order.begin(), order.end(), t) - order.begin()));  // its rank
    }
    EXPECT_EQ(drawn.size(), std::size_t(k)) << "every rank below k should appear in 3000 flat draws";
  }
}

// ======================================================================== top-p

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(float(std::log(x)));
  return l;
}

TEST(TopP, KeepsTheTokenThatCrossesP) {
  const auto logits = log_probs({0.1, 0.2, 0.3, 0.4});
  std::vector<Candidate> buf(4);
  auto keep = [&](float p, std::size_t min_keep = 1) {
    auto list = sampling::fill(buf, logits);
    sampling::top_p(list, p, min_keep);
    return ids_of(list);
  };
  EXPECT_EQ(keep(0.7f), (std::vector<std::int32_t>{3, 2}));        // .4 + .3 reaches .7
  EXPECT_EQ(keep(0.8f), (std::vector<std::int32_t>{3, 2, 1}));     // .7 < .8: .2 crosses it
  EXPECT_EQ(keep(0.35f), (std::vector<std::int32_t>{3}));          // .4 alone crosses .35
  EXPECT_EQ(keep(0.05f), (std::vector<std::int32_t>{3}));          // at least one
  EXPECT_EQ(keep(0.05f, 3), (std::vector<std::int32_t>{3, 2, 1})); // min_keep
  EXPECT_EQ(keep(0.95f), (std::vector<std::int32_t>{3, 2, 1, 0}));
  EXPECT_EQ(keep(1.0f).size(), 4u);  // disabled (and unsorted: id order)
  EXPECT_EQ(keep(1.0f), (std::vector<std::int32_t>{0, 1, 2, 3}));
  auto list = sampling::fill(buf, logits);
  sampling::top_p(list, 0.7f);
  EXPECT_NEAR(list.items[0].p, 0.4, 1e-6);  // the softmax it computed along the way
  EXPECT_NEAR(list.items[1].p, 0.3, 1e-6);
}

TEST(TopP, UnsortedLargeListMatchesAFullSortReference) {
  Rng rng(77);
  for (const double scale : {0.5, 3.0, 10.0}) {  // flat to peaked: nuclei from thousands to a few tokens
    const auto logits = random_logits(rng, 20000, scale);
    const auto probs = softmax_ref(logits, 1.0);
    std::vector<std::int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return logits[a] > logits[b]; });
    std::vector<Candidate> buf(logits.size());
    for (const float p : {0.1f, 0.5f, 0.9f, 0.99f}) {
      double cum = 0;
      std::size_t want = 0;
      while (want < order.size() && cum < double(p)) cum += probs[std::size_t(order[want++])];
      auto list = sampling::fill(buf, logits);
      sampling::top_p(list, p);
      EXPECT_TRUE(list.sorted);
      // Float vs double sums may move the cut by one token right at the boundary.
      EXPECT_NEAR(double(list.size()), double(want), 1.0) << "scale " << scale << " p " << p;
      const std::size_t common = std::min(list.size(), want);
      ASSERT_EQ(ids_of(list).size(), list.size());
      for (std::size_t i = 0; i < common; ++i) ASSERT_EQ(list.items[i].id, order[i]) << i;
    }
  }
}

TEST(TopP, SamplerDrawsOnlyTheNucleus) {
  SamplerParams p = plain(5);
  p.top_p = 0.7f;
  Sampler s(p, 4);
  const auto logits = log_probs({0.1, 0.2, 0.3, 0.4});
  std::map<std::int32_t, int> n;
  for (int i = 0; i < 4000; ++i) ++n[s.sample(logits)];
  EXPECT_EQ(n.size(), 2u);
  EXPECT_GT(n[3], 0);
  EXPECT_GT(n[2], 0);
  // Renormalized nucleus: .4/.7 ≈ .571 (sd of the fraction ≈ .008).
  EXPECT_NEAR(n[3] / 4000.0, 4.0 / 7.0, 0.04);
}

// ======================================================================== min-p

TEST(MinP, KeepsTokensWithAtLeastMinPTimesTheBest) {
  // p = {.15, .5, .1, .25}: thresholds min_p * .5
  const auto logits = log_probs({0.15, 0.5, 0.1, 0.25});
  std::vector<Candidate> buf(4);
  auto keep = [&](float m, bool sort_first = false) {
    auto list = sampling::fill(buf, logits);
    if (sort_first) sampling::top_k(list, 4);
    sampling::min_p(list, m);
    return ids_of(list);
  };
  EXPECT_EQ(keep(0.25f), (std::vector<std::int32_t>{0, 1, 3}));  // >= .125; unsorted order kept
  EXPECT_EQ(keep(0.25f, true), (std::vector<std::int32_t>{1, 3, 0}));
  EXPECT_EQ(keep(0.4f), (std::vector<std::int32_t>{1, 3}));      // >= .2
  EXPECT_EQ(keep(0.6f), (std::vector<std::int32_t>{1}));         // >= .3
  EXPECT_EQ(keep(1.0f), (std::vector<std::int32_t>{1}));
  EXPECT_EQ(keep(0.1f), (std::vector<std::int32_t>{0, 1, 2, 3})); // >= .05
  EXPECT_EQ(keep(0.0f), (std::vector<std::int32_t>{0, 1, 2, 3})); // disabled
  auto list = sampling::fill(buf, logits);
  sampling::min_p(list, 0.6f, 3);  // min_keep falls back to the best 3
  EXPECT_EQ(ids_of(list), (std::vector<std::int32_t>{1, 3, 0}));
}

TEST(MinP, SamplerNeverDrawsBelowTheThreshold) {
  Rng rng(8);
  SamplerParams p = plain(9);
  p.min_p = 0.2f;
  Sampler s(p, 200);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto logits = random_logits(rng, 200, 3.0);
    const auto ref = softmax_ref(logits, 1.0);
    const double pmax = *std::max_element(ref.begin(), ref.end());
    const auto t = s.sample(logits);
    ASSERT_GE(ref[std::size_t(t)], 0.2 * pmax * (1 - 1e-5)) << trial;
  }
}

// ======================================================================== temperature / greedy

TEST(Temperature, DividesLogitsAndZeroKeepsTheArgmax) {
  std::vector<Candidate> buf(4);
  const std::vector<float> logits = {1.0f, -2.0f, 4.0f, 4.0f};
  auto list = sampling::fill(buf, logits);
  sampling::temperature(list, 0.5f);
  EXPECT_FLOAT_EQ(list.items[0].logit, 2.0f);
  EXPECT_FLOAT_EQ(list.items[1].logit, -4.0f);
  EXPECT_FLOAT_EQ(list.items[2].logit, 8.0f);
  list = sampling::fill(buf, logits);
  sampling::temperature(list, 0.0f);
  EXPECT_EQ(ids_of(list), (std::vector<std::int32_t>{2}));  // tie 2/3 → lowest id
  list = sampling::fill(buf, logits);
  EXPECT_EQ(sampling::greedy(list), 2);
}

TEST(Temperature, NearZeroAndZeroEqualGreedyArgmax) {
  Rng rng(31);
  SamplerParams zero = SamplerParams{};  // default chain otherwise
  zero.temperature = 0.0f;
  zero.seed = 1;
  SamplerParams tiny = zero;
  tiny.temperature = 1e-6f;
  Sampler s0(zero, 5000), s1(tiny, 5000);
  for (int trial = 0; trial < 300; ++trial) {
    const auto logits = random_logits(rng, 5000, 10.0);
    const auto want = argmax_ref(logits);
    ASSERT_EQ(s0.sample(logits), want) << trial;
    ASSERT_EQ(s1.sample(logits), want) << trial;
  }
  std::vector<float> ties(5000, 0.0f);
  ties[17] = ties[42] = ties[4999] = 5.0f;
  EXPECT_EQ(s0.sample(ties), 17);
}

// ======================================================================== distribution (chi-square)

/// Pearson's chi-square statistic of `counts` against `probs` (all expected counts >= 5 here).
double chi_square(const std::vector<long>& counts, const std::vector<double>& probs, long n) {
  double x2 = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const double e = probs[i] * double(n);
    EXPECT_GE(e, 5.0) << "bin " << i << " too small for the chi-square approximation";
    x2 += (double(counts[i]) - e) * (double(counts[i]) - e) / e;
  }
  return x2;
}

// Upper critical values of the chi-square distribution at significance 0.001, from the
// NIST/SEMATECH e-Handbook of Statistical Methods, section 1.3.6.7.4 ("Critical Values of the
// Chi-Square Distribution"), column 0.999: df 3 → 16.266, df 9 → 27.877.
constexpr double chi2_crit_df3_p001 = 16.266;
constexpr double chi2_crit_df9_p001 = 27.877;

TEST(Distribution, DrawsFollowSoftmaxOfTemperatureScaledLogits) {
  const std::vector<float> logits = {0.3f, -1.2f, 1.7f, 0.0f, -0.4f, 2.1f, -2.0f, 0.9f, 1.1f, -0.7f};
  const float temperature = 0.7f;
  SamplerParams p = plain(20240611);
  p.temperature = temperature;
  Sampler s(p, 10);
  const long n = 100000;
  std::vector<long> counts(10, 0);
  for (long i = 0; i < n; ++i) ++counts[std::size_t(s.sample(logits))];
  const double x2 = chi_square(counts, softmax_ref(logits, temperature), n);
  EXPECT_LT(x2, chi2_crit_df9_p001) << "df = 9";
}

TEST(Distribution, DefaultChainWithTopKFollowsTheRenormalizedTopK) {
  // top_k = 4 (top-p / min-p loose enough to keep all four): draws follow softmax over the 4
  // best logits at temperature 1.5.
  const std::vector<float> logits = {0.3f, -1.2f, 1.7f, 0.0f, -0.4f, 2.1f, -2.0f, 0.9f, 1.1f, -0.7f};
  SamplerParams p;
  p.seed = 99;
  p.top_k = 4;
  p.top_p = 1.0f;
  p.min_p = 0.05f;
  p.temperature = 1.5f;
  Sampler s(p, 10);
  const std::vector<std::int32_t> best = {5, 2, 8, 7};
  std::vector<float> best_logits;
  for (auto id : best) best_logits.push_back(logits[std::size_t(id)]);
  const long n = 100000;
  std::map<std::int32_t, long> hist;
  for (long i = 0; i < n; ++i) ++hist[s.sample(logits)];
  ASSERT_EQ(hist.size(), 4u);
  std::vector<long> counts;
  for (auto id : best) counts.push_back(hist[id]);
  EXPECT_LT(chi_square(counts, softmax_ref(best_logits, 1.5), n), chi2_crit_df3_p001) << "df = 3";
}

// ======================================================================== seeds

std::vector<std::int32_t> run(Sampler& s, int n, std::uint64_t logit_seed) {
  Rng rng(logit_seed);
  std::vector<std::int32_t> out;
  for (int i = 0; i < n; ++i) {
    const auto logits = random_logits(rng, 500, 2.0);
    out.push_back(s.sample(logits));
    s.accept(out.back());
  }
  return out;
}

TEST(Seeds, SameSeedSameSequenceDifferentSeedsDiffer) {
  SamplerParams p;  // default chain
  p.repeat_penalty = 1.1f;
  p.seed = 42;
  Sampler a(p, 500), b(p, 500);
  p.seed = 43;
  Sampler c(p, 500);
  const auto ra = run(a, 300, 1), rb = run(b, 300, 1), rc = run(c, 300, 1);
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
  EXPECT_EQ(a.seed(), 42u);
  a.reset();
  EXPECT_EQ(run(a, 300, 1), ra);
}

TEST(Seeds, DefaultSeedIsRandomButReportedAndReproducible) {
  SamplerParams p;
  ASSERT_EQ(p.seed, loom::default_seed);
  Sampler a(p, 500);
  const auto ra = run(a, 100, 3);
  p.seed = a.seed();
  Sampler b(p, 500);
  EXPECT_EQ(run(b, 100, 3), ra);
  a.reset();
  EXPECT_EQ(a.seed(), p.seed);
  EXPECT_EQ(run(a, 100, 3), ra);
}

// ======================================================================== penalties

TEST(Penalties, StepMatchesHandComputedValues) {
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 0.0f, 3.0f, -2.0f};
  PenaltyHistory h(6, 64);
  for (auto t : {0, 1, 0, 3}) h.push(t);  // counts: 0→2, 1→1, 3→1
  std::vector<Candidate> buf(6);
  auto list = sampling::fill(buf, logits);
  sampling::penalties(list, h, 2.0f, 0.5f, 0.25f);
  // token 0: 2 / 2 - 2 * .5 - .25 = -0.25 ; token 1: -1 * 2 - .5 - .25 = -2.75
  // token 3: 0 * 2 - .5 - .25 = -0.75     ; tokens 2, 4, 5 unchanged
  const std::vector<float> want = {-0.25f, -2.75f, 0.5f, -0.75f, 3.0f, -2.0f};
  for (std::size_t i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(list.items[i].logit, want[i]) << i;
  EXPECT_FALSE(list.sorted);

  // Same result when the list is not in id order (the general path).
  list = sampling::fill(buf, logits);
  std::reverse(list.items.begin(), list.items.end());
  sampling::penalties(list, h, 2.0f, 0.5f, 0.25f);
  for (const auto& c : list.items) EXPECT_FLOAT_EQ(c.logit, want[std::size_t(c.id)]) << c.id;

  // Repetition alone.
  list = sampling::fill(buf, logits);
  sampling::penalties(list, h, 1.5f, 0.0f, 0.0f);
  EXPECT_FLOAT_EQ(list.items[0].logit, 2.0f / 1.5f);
  EXPECT_FLOAT_EQ(list.items[1].logit, -1.5f);
  EXPECT_FLOAT_EQ(list.items[3].logit, 0.0f);
  EXPECT_FLOAT_EQ(list.items[4].logit, 3.0f);
}

TEST(Penalties, HistoryCountsOnlyTheLastNTokens) {
  // Brute force against a plain vector over many random pushes.
  Rng rng(5);
  for (const std::size_t window : {1u, 3u, 16u}) {
    PenaltyHistory h(10, window);
    std::vector<std::int32_t> all;
    for (int i = 0; i < 500; ++i) {
      const auto t = std::int32_t(rng.next() % 10);
      h.push(t);
      all.push_back(t);
      const std::size_t from = all.size() > window ? all.size() - window : 0;
      std::set<std::int32_t> distinct;
      for (std::int32_t id = 0; id < 10; ++id) {
        const auto want = std::count(all.begin() + std::ptrdiff_t(from), all.end(), id);
        ASSERT_EQ(h.count(id), want) << "window " << window << " step " << i << " id " << id;
        if (want) distinct.insert(id);
      }
      ASSERT_EQ(std::set<std::int32_t>(h.distinct().begin(), h.distinct().end()), distinct);
    }
    h.clear();
    EXPECT_EQ(h.size(), 0u);
    EXPECT_TRUE(h.distinct().empty());
    for (std::int32_t id = 0; id < 10; ++id) EXPECT_EQ(h.count(id), 0);
  }
}

TEST(Penalties, SamplerAppliesThemOverTheLastNBeforeGreedy) {
  // Token 4 is the best by far unless penalized; with a huge presence penalty it loses to 2.
  const std::vector<float> logits = {0.0f, 0.0f, 1.0f, 0.0f, 3.0f, 0.0f};
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.presence_penalty = 10.0f;
  p.repeat_last_n = 2;
  Sampler s(p, 6);
  EXPECT_EQ(s.sample(logits), 4);
  s.accept(4);
  EXPECT_EQ(s.sample(logits), 2);  // 4 in the last 2
  s.accept(0);
  EXPECT_EQ(s.sample(logits), 2);  // still
  s.accept(1);
  EXPECT_EQ(s.sample(logits), 4);  // 4 dropped out of the window
  s.accept(4);
  s.reset();
  EXPECT_EQ(s.history().size(), 0u);
  EXPECT_EQ(s.sample(logits), 4);

  // repeat_last_n = 0 disables, -1 counts everything up to max_history.
  p.repeat_last_n = 0;
  Sampler off(p, 6);
  off.accept(4);
  EXPECT_EQ(off.sample(logits), 4);
  p.repeat_last_n = -1;
  Sampler all(p, 6, 100);
  all.accept(4);
  for (int i = 0; i < 99; ++i) all.accept(0);
  EXPECT_EQ(all.sample(logits), 2);
  all.accept(0);  // the 4 now falls out of the 100-token capacity
  EXPECT_EQ(all.sample(logits), 4);
}

TEST(Penalties, RepeatPenaltyDividesPositiveMultipliesNegative) {
  // Greedy over {1: 2.0 (repeated), 2: 1.5}: 2.0 / 1.5 = 1.33 < 1.5 ⇒ 2 wins.
  // Over {0: -0.5 (repeated), 3: -0.9}: -0.5 * 2 = -1.0 < -0.9 ⇒ 3 wins (dividing would not).
  SamplerParams p = plain();
  p.temperature = 0.0f;
  p.repeat_penalty = 1.5f;
  Sampler s(p, 4);
  s.accept(1);
  EXPECT_EQ(s.sample(std::vector<float>{-9.0f, 2.0f, 1.5f, -9.0f}), 2);
  p.repeat_penalty = 2.0f;
  Sampler t(p, 4);
  t.accept(0);
  EXPECT_EQ(t.sample(std::vector<float>{-0.5f, -9.0f, -9.0f, -0.9f}), 3);
}

// ======================================================================== misc

TEST(Sampler, MatchesTheChainComposedFromTheSteps) {
  // Sampler::sample takes a fused fill+penalties+top-k pass for small k; it must give exactly
  // what the separate steps give: same tokens, same final candidates. Logits are quantized to
  // make ties common, with some -inf; penalties include negative ones (which raise logits).
  const std::int32_t n = 5000;
  Rng rng(123);
  struct Case { std::int32_t top_k; float temp, repeat, freq, presence; };
  const Case cases[] = {{1, 0.8f, 1.3f, 0.2f, 0.1f},   {10, 1.0f, 0.7f, -0.3f, -0.5f}, {40, 0.5f, 1.1f, 0.0f, 0.0f},
                        {78, 1.2f, 1.0f, 0.0f, -2.0f}, {40, 0.0f, 1.5f, 0.5f, 0.5f},   {0, 0.0f, 0.6f, 0.0f, 0.0f},
                        {500, 0.9f, 1.2f, 0.1f, 0.0f}};
  for (const Case& cs : cases) {
    SamplerParams p;
    p.seed = 555;
    p.top_k = cs.top_k;
    p.temperature = cs.temp;
    p.repeat_penalty = cs.repeat;
    p.frequency_penalty = cs.freq;
    p.presence_penalty = cs.presence;
    p.repeat_last_n = 32;
    Sampler s(p, n);
    Rng ref_rng(555);
    PenaltyHistory ref_history(n, 32);
    std::vector<Candidate> buf(static_cast<std::size_t>(n));
    for (int step = 0; step < 200; ++step) {
      std::vector<float> logits(static_cast<std::size_t>(n));
      for (auto& x : logits) x = std::round(float(rng.uniform() * 8.0 - 4.0) * 4.0f) / 4.0f;
      for (int j = 0; j < 50; ++j) logits[std::size_t(rng.next() % std::uint64_t(n))] = -inf;
      // Reference: the documented chain, step by step.
      auto list = sampling::fill(buf, logits);
      sampling::penalties(list, ref_history, p.repeat_penalty, p.frequency_penalty, p.presence_penalty);
      std::int32_t want;
      if (p.temperature <= 0.0f) {
        want = sampling::greedy(list);
      } else {
        sampling::top_k(list, p.top_k);
        sampling::top_p(list, p.top_p);
        sampling::min_p(list, p.min_p);
        sampling::temperature(list, p.temperature);
        want = sampling::draw(list, ref_rng);
      }
      const auto got = s.sample(logits);
      ASSERT_EQ(got, want) << "top_k " << cs.top_k << " temp " << cs.temp << " step " << step;
      if (p.temperature > 0.0f) {
        const auto last = s.last_candidates();
        ASSERT_EQ(last.size(), list.size());
        for (std::size_t i = 0; i < last.size(); ++i) {
          ASSERT_EQ(last[i].id, list.items[i].id) << i;
          ASSERT_EQ(last[i].logit, list.items[i].logit) << i;
        }
      }
      // Feed back a mix of the sampled token and a few frequent ones so penalties bite.
      const std::int32_t fed = step % 3 == 0 ? got : std::int32_t(rng.next() % 20);
      s.accept(fed);
      ref_history.push(fed);
    }
  }
}

TEST(Sampler, LastCandidatesHoldTheFinalDistribution) {
  SamplerParams p = plain(4);
  p.top_k = 3;
  Sampler s(p, 6);
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, 3.0f, -1.0f, 0.5f};
  const auto t = s.sample(logits);
  const auto last = s.last_candidates();
  ASSERT_EQ(last.size(), 3u);
  double sum = 0;
  bool found = false;
  for (const auto& c : last) {
    sum += c.p;
    found |= c.id == t;
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_TRUE(found);
  EXPECT_EQ(last[0].id, 3);
  EXPECT_NEAR(last[0].p, softmax_ref({3.0f, 2.0f, 1.0f}, 1.0)[0], 1e-6);
}

TEST(Sampler, SampleAndAcceptAllocateNothing) {
  if (!LOOM_TEST_COUNT_ALLOCATIONS) GTEST_SKIP() << "operator new is not replaceable under AddressSanitizer";
  {  // the counter works
    const long before = g_allocations.load();
    int* volatile q = new int(1);  // volatile: a plain `delete new int` may be elided
    delete q;
    ASSERT_EQ(g_allocations.load() - before, 1);
  }
  Rng rng(1);
  const auto logits = random_logits(rng, 32000);
  for (const bool greedy : {false, true}) {
    for (const std::int32_t top_k : {40, 0}) {
      SamplerParams p;
      p.seed = 3;
      p.top_k = top_k;
      p.repeat_penalty = 1.1f;
      p.frequency_penalty = 0.1f;
      p.presence_penalty = 0.1f;
      p.repeat_last_n = -1;
      if (greedy) p.temperature = 0.0f;
      Sampler s(p, 32000, 256);
      const long before = g_allocations.load();
      for (int i = 0; i < 300; ++i) s.accept(s.sample(logits));
      s.reset();
      EXPECT_EQ(g_allocations.load() - before, 0) << "greedy " << greedy << " top_k " << top_k;
    }
  }
}

}  // namespace

}  // namespace test_sampler
