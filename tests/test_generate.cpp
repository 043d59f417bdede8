// Session::generate on random models: determinism, stop conditions, context limits, continuation,
// and concurrent sessions sharing one model.
#include <gtest/gtest.h>

#include <loom/generate.hpp>
#include <thread>

#include "alloc_counter.hpp"
#include "random_model.hpp"

namespace {

struct Outcome {
  std::vector<std::int32_t> tokens;
  loom::GenerateStats stats;
};

Outcome run(loom::Session& s, std::span<const std::int32_t> prompt, const loom::GenerateParams& p) {
  Outcome r;
  r.stats = s.generate(prompt, p, [&](std::int32_t id) {
    r.tokens.push_back(id);
    return true;
  });
  return r;
}

loom::GenerateParams greedy(int n) {
  loom::GenerateParams p;
  p.sampler.temperature = 0.0f;
  p.max_new_tokens = n;
  return p;
}

const std::vector<std::int32_t> kPrompt{3, 14, 15, 92, 65, 35};

class SessionTest : public ::testing::Test {
 protected:
  loom::Config config = loom::test::llama_config();
  loom::Model model = loom::test::random_model(config, 11);
};

TEST_F(SessionTest, GreedySameForThreadsAndForBatchedOrTokenByTokenPrompt) {
  loom::Session one(model, {.n_ctx = 64, .n_threads = 1});
  loom::Session two(model, {.n_ctx = 64, .n_threads = 2});
  const Outcome a = run(one, kPrompt, greedy(20));
  const Outcome b = run(two, kPrompt, greedy(20));
  EXPECT_EQ(a.tokens.size(), 20u);
  EXPECT_EQ(a.tokens, b.tokens);
  loom::Session stepwise(model, {.n_ctx = 64});
  for (std::size_t i = 0; i + 1 < kPrompt.size(); ++i) stepwise.eval({&kPrompt[i], 1});
  const Outcome c = run(stepwise, {&kPrompt.back(), 1}, greedy(20));
  EXPECT_EQ(a.tokens, c.tokens);
}

TEST_F(SessionTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  loom::GenerateParams p;
  p.max_new_tokens = 30;
  p.sampler.temperature = 1.5f;  // flat enough that seeds matter
  p.sampler.top_k = 0;
  p.sampler.top_p = 1.0f;
  p.sampler.min_p = 0.0f;
  p.sampler.seed = 1234;
  loom::Session s(model, {.n_ctx = 64});
  const Outcome a = run(s, kPrompt, p);
  s.reset();
  const Outcome b = run(s, kPrompt, p);
  EXPECT_EQ(a.tokens, b.tokens);
  p.sampler.seed = 99;
  s.reset();
  const Outcome c = run(s, kPrompt, p);
  EXPECT_NE(a.tokens, c.tokens);
}

TEST_F(SessionTest, StopReasons) {
  loom::Session s(model, {.n_ctx = 16});
  const Outcome full = run(s, kPrompt, greedy(-1));
  EXPECT_EQ(full.stats.stop, loom::StopReason::context_full);
  EXPECT_EQ(std::int32_t(kPrompt.size() + full.tokens.size()), 16 + 1);  // the last token is emitted, not evaluated
  EXPECT_EQ(s.position(), 16);

  s.reset();
  const Outcome max = run(s, kPrompt, greedy(3));
  EXPECT_EQ(max.stats.stop, loom::StopReason::max_tokens);
  EXPECT_EQ(max.tokens.size(), 3u);

  s.reset();
  loom::GenerateParams eog = greedy(10);
  eog.end_of_generation = {full.tokens[2]};
  const Outcome e = run(s, kPrompt, eog);
  EXPECT_EQ(e.stats.stop, loom::StopReason::end_of_generation);
  EXPECT_EQ(e.tokens, std::vector<std::int32_t>(full.tokens.begin(), full.tokens.begin() + 2));
  s.reset();
  eog.ignore_eos = true;
  EXPECT_EQ(run(s, kPrompt, eog).tokens.size(), 10u);

  s.reset();
  int calls = 0;
  const auto stats = s.generate(kPrompt, greedy(10), [&](std::int32_t) { return ++calls < 4; });
  EXPECT_EQ(stats.stop, loom::StopReason::callback);
  EXPECT_EQ(calls, 4);
}

TEST_F(SessionTest, ContinuationEqualsOneLongGeneration) {
  loom::Session s(model, {.n_ctx = 64});
  const Outcome whole = run(s, kPrompt, greedy(12));
  s.reset();
  const Outcome first = run(s, kPrompt, greedy(5));
  const Outcome second = run(s, {}, greedy(7));
  std::vector<std::int32_t> joined = first.tokens;
  joined.insert(joined.end(), second.tokens.begin(), second.tokens.end());
  EXPECT_EQ(joined, whole.tokens);
}

TEST_F(SessionTest, PromptLongerThanContextIsRejectedBeforeAnyWork) {
  loom::Session s(model, {.n_ctx = 8});
  const std::vector<std::int32_t> long_prompt(9, 1);
  try {
    run(s, long_prompt, greedy(1));
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::capacity);
    EXPECT_NE(std::string(e.what()).find("9 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("context size 8"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.position(), 0);
  EXPECT_EQ(run(s, kPrompt, greedy(2)).tokens.size(), 2u);  // still usable
  loom::GenerateParams bad = greedy(2);
  bad.sampler.temperature = -1.0f;
  EXPECT_THROW(run(s, kPrompt, bad), loom::Error);
  bad = greedy(2);
  bad.sampler.top_p = 0.0f;
  EXPECT_THROW(run(s, kPrompt, bad), loom::Error);
  bad = greedy(2);
  bad.sampler.top_k = -1;
  EXPECT_THROW(run(s, kPrompt, bad), loom::Error);
  const std::vector<std::int32_t> bad_token{1, 500};
  EXPECT_THROW(run(s, bad_token, greedy(2)), loom::Error);
  s.reset();
  EXPECT_THROW(run(s, {}, greedy(2)), loom::Error);  // nothing to continue from
}

TEST_F(SessionTest, PromptLogitsCallbackSeesEveryPosition) {
  loom::Session s(model, {.n_ctx = 64});
  loom::GenerateParams p = greedy(1);
  std::int64_t rows = 0;
  p.on_prompt_logits = [&](const loom::Tensor<const float>& l) { rows = l.dim(0); };
  run(s, kPrompt, p);
  EXPECT_EQ(rows, std::int64_t(kPrompt.size()));
  EXPECT_THROW(loom::Session(model, {.n_ctx = -1}), loom::Error);
}

TEST_F(SessionTest, EightConcurrentSessionsMatchSoloRuns) {
  std::vector<loom::GenerateParams> params(8);
  std::vector<std::vector<std::int32_t>> prompts(8), solo(8), threaded(8);
  for (int i = 0; i < 8; ++i) {
    params[i].max_new_tokens = 16;
    params[i].sampler.seed = 100 + i;
    params[i].sampler.temperature = i % 2 ? 0.0f : 1.0f;
    prompts[i] = {i + 1, 2 * i + 3, 40 + i};
    loom::Session s(model, {.n_ctx = 32});
    solo[i] = run(s, prompts[i], params[i]).tokens;
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      loom::Session s(model, {.n_ctx = 32, .n_threads = 1 + i % 2});
      threaded[i] = run(s, prompts[i], params[i]).tokens;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(solo, threaded);
}

// The per-token path allocates nothing: generating 40 more tokens costs no more allocations
// than generating 5 (what generate() allocates happens once per call, for the prompt).
TEST_F(SessionTest, DecodingAllocatesNothingPerToken) {
  if (!LOOM_TEST_COUNT_ALLOCATIONS) GTEST_SKIP() << "operator new is not replaceable under AddressSanitizer";
  for (int threads : {1, 2}) {
    loom::Session s(model, {.n_ctx = 64, .n_threads = threads});
    loom::GenerateParams p;
    p.sampler.seed = 5;
    std::vector<std::int32_t> out;
    out.reserve(64);
    auto on_token = [&](std::int32_t id) {
      out.push_back(id);
      return true;
    };
    const std::function<bool(std::int32_t)> cb = on_token;
    auto allocations_for = [&](int n) {
      s.reset();
      out.clear();
      p.max_new_tokens = n;
      s.generate(kPrompt, p, cb);  // warm-up: scratch and per-thread buffers reach their size
      s.reset();
      out.clear();
      const long before = g_allocations.load();
      s.generate(kPrompt, p, cb);
      return g_allocations.load() - before;
    };
    const long few = allocations_for(5), many = allocations_for(45);
    EXPECT_EQ(many, few) << threads << " threads";
  }
}

}  // namespace
