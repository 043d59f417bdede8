// Session::generate on random models: determinism, stop conditions, context limits, continuation,
// and concurrent sessions sharing one model.
#include <gtest/gtest.h>

#include <loom/generate.hpp>
#include <loom/load.hpp>
#include <atomic>
#include <chrono>
#include <thread>

#include "alloc_counter.hpp"
#include "fixtures.hpp"
#include "random_model.hpp"

namespace test_generate {

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

}  // namespace

// Outside the anonymous namespace: TEST_Fs inside it and after it derive from this fixture.
class SessionTest : public ::testing::Test {
 protected:
  loom::Config config = loom::test::llama_config();
  loom::Model model = loom::test::random_model(config, 11);
};

namespace {

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
  for (loom::DType kv_type : {loom::DType::f32, loom::DType::f16}) {
    for (int threads : {1, 2}) {
      loom::Session s(model, {.n_ctx = 64, .n_threads = threads, .kv_type = kv_type});
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
      EXPECT_EQ(many, few) << threads << " threads, KV cache " << loom::to_string(kv_type);
    }
  }
}

}  // namespace

// ---- context shift ---------------------------------------------------------------------------

// Greedy next token of a fresh session fed `history` in one batch.
std::int32_t fresh_greedy_next(const loom::Model& m, const std::vector<std::int32_t>& history, std::int32_t n_ctx) {
  loom::Session s(m, {.n_ctx = n_ctx});
  const auto logits = s.eval(history);
  const float* l = logits.data();
  return std::int32_t(std::max_element(l, l + m.config().vocab_size) - l);
}

// Reference for GenerateParams::context_shift: the history after each token, shifted exactly as
// documented (keep n_keep, drop the oldest half of the rest), evaluated from scratch each step.
std::vector<std::int32_t> shifted_reference(const loom::Model& m, std::vector<std::int32_t> h, std::int32_t n_ctx,
                                            std::int32_t n_keep, int n_new) {
  std::vector<std::int32_t> out;
  for (int i = 0; i < n_new; ++i) {
    const std::int32_t next = fresh_greedy_next(m, h, n_ctx);
    out.push_back(next);
    if (std::int32_t(h.size()) == n_ctx) {
      const std::size_t keep = std::size_t(n_keep), discard = (h.size() - keep) / 2;
      h.erase(h.begin() + std::ptrdiff_t(keep), h.begin() + std::ptrdiff_t(keep + discard));
    }
    h.push_back(next);
  }
  return out;
}

void expect_context_shift_exact(const loom::Model& model, std::int32_t n_keep) {
  constexpr std::int32_t n_ctx = 16;
  loom::Session s(model, {.n_ctx = n_ctx, .n_threads = 2});
  loom::GenerateParams p = greedy(40);
  p.context_shift = true;
  p.n_keep = n_keep;
  const Outcome o = run(s, kPrompt, p);
  EXPECT_EQ(o.stats.stop, loom::StopReason::max_tokens);
  ASSERT_EQ(o.tokens.size(), 40u);
  EXPECT_GE(o.stats.context_shifts, 3);
  EXPECT_LE(s.position(), n_ctx);
  EXPECT_EQ(o.tokens, shifted_reference(model, kPrompt, n_ctx, n_keep, 40));
  // The history the session reports is what its cache holds: the kept prefix is intact.
  ASSERT_EQ(std::int32_t(s.history().size()), s.position());
  for (std::int32_t i = 0; i < n_keep; ++i) EXPECT_EQ(s.history()[std::size_t(i)], kPrompt[std::size_t(i)]);
}

TEST_F(SessionTest, ContextShiftKeepsPrefixDropsOldestHalfAndMatchesFreshEvaluation) {
  expect_context_shift_exact(model, 0);
  expect_context_shift_exact(model, 4);
}

TEST(SessionContextShift, ExactForLearnedPositions) {
  const loom::Config c = loom::test::gpt2_config();
  const loom::Model m = loom::test::random_model(c, 5);
  ASSERT_GE(c.max_seq_len, 16);
  expect_context_shift_exact(m, 2);
}

TEST_F(SessionTest, WithoutContextShiftAFullContextStops) {
  loom::Session s(model, {.n_ctx = 16});
  loom::GenerateParams p = greedy(40);
  const Outcome o = run(s, kPrompt, p);
  EXPECT_EQ(o.stats.stop, loom::StopReason::context_full);
  EXPECT_EQ(o.stats.context_shifts, 0);
  // The next call cannot continue without a shift ...
  EXPECT_THROW(run(s, {}, p), loom::Error);
  // ... and can with one: the pending token and a new prompt go after the kept tail.
  p.context_shift = true;
  p.n_keep = 2;
  const std::vector<std::int32_t> more{7, 8, 9};
  const Outcome next = run(s, more, p);
  EXPECT_EQ(next.tokens.size(), 40u);
  EXPECT_GE(next.stats.context_shifts, 1);
}

TEST_F(SessionTest, ContextShiftThatCannotMakeRoomIsRefused) {
  loom::Session s(model, {.n_ctx = 8});
  loom::GenerateParams p = greedy(20);
  p.context_shift = true;
  p.n_keep = 8;  // everything is kept: nothing can be dropped
  const Outcome o = run(s, kPrompt, p);
  EXPECT_EQ(o.stats.stop, loom::StopReason::context_full);
  p.n_keep = -1;
  s.reset();
  EXPECT_THROW(run(s, kPrompt, p), loom::Error);
  // A prompt longer than the whole context is rejected even with context_shift.
  p.n_keep = 0;
  const std::vector<std::int32_t> long_prompt(9, 1);
  EXPECT_THROW(run(s, long_prompt, p), loom::Error);
  EXPECT_EQ(s.position(), 0);
}

// ---- memory budget ---------------------------------------------------------------------------

TEST_F(SessionTest, MemoryBudgetIsCheckedBeforeAllocating) {
  const std::uint64_t kv = loom::nn::KVCache::bytes_needed(config, 64);
  const std::uint64_t one = loom::Activations::bytes_needed(config, 1, 64, 1);
  {
    loom::Session s(model, {.n_ctx = 64, .max_memory = kv + one});  // exactly enough for decoding
    EXPECT_EQ(s.cache().bytes(), kv);
    EXPECT_EQ(s.memory_budget(), kv + one);
    // A prompt batch needs more scratch than the budget allows: refused, session unchanged.
    try {
      run(s, kPrompt, greedy(2));
      FAIL() << "expected a capacity error";
    } catch (const loom::Error& e) {
      EXPECT_EQ(e.kind(), loom::ErrorKind::capacity);
      EXPECT_NE(std::string(e.what()).find(std::to_string(kv + one)), std::string::npos) << e.what();
    }
    EXPECT_EQ(s.position(), 0);
    // Token by token fits.
    for (std::int32_t id : kPrompt) s.eval({&id, 1});
    EXPECT_EQ(s.position(), std::int32_t(kPrompt.size()));
  }
  try {
    loom::Session s(model, {.n_ctx = 64, .max_memory = kv + one - 1});
    FAIL() << "expected a capacity error";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::capacity);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::to_string(kv + one) + " bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(kv + one - 1) + " bytes"), std::string::npos) << msg;
  }
  // Default: the available memory; a context of 2^30 tokens does not fit any machine this runs on.
  EXPECT_THROW(loom::Session(model, {.n_ctx = 1 << 30}), loom::Error);
  EXPECT_GT(loom::detail::available_memory(), 0u);
  EXPECT_GT(loom::memory_limit().bytes, 0u);
}

TEST_F(SessionTest, F16CacheHalvesTheKVBytesTheBudgetCounts) {
  const std::uint64_t kv32 = loom::nn::KVCache::bytes_needed(config, 64);
  const std::uint64_t kv16 = loom::nn::KVCache::bytes_needed(config, 64, loom::DType::f16);
  const std::uint64_t one = loom::Activations::bytes_needed(config, 1, 64, 1);
  EXPECT_EQ(2 * kv16, kv32);
  // A budget the f16 cache fits and the f32 cache does not.
  loom::Session s(model, {.n_ctx = 64, .max_memory = kv16 + one, .kv_type = loom::DType::f16});
  EXPECT_EQ(s.cache().type(), loom::DType::f16);
  EXPECT_EQ(s.cache().bytes(), kv16);
  EXPECT_EQ(s.memory_needed(1), kv16 + one);
  EXPECT_THROW(loom::Session(model, {.n_ctx = 64, .max_memory = kv16 + one}), loom::Error);
  for (std::int32_t id : kPrompt) s.eval({&id, 1});
  EXPECT_EQ(s.position(), std::int32_t(kPrompt.size()));
  // Greedy generation with an f16 cache is reproducible and does not depend on the thread count
  // or on evaluating the prompt at once or token by token.
  loom::Session one_thread(model, {.n_ctx = 64, .n_threads = 1, .kv_type = loom::DType::f16});
  loom::Session two_threads(model, {.n_ctx = 64, .n_threads = 2, .kv_type = loom::DType::f16});
  const Outcome a = run(one_thread, kPrompt, greedy(20));
  EXPECT_EQ(a.tokens, run(two_threads, kPrompt, greedy(20)).tokens);
  loom::Session stepwise(model, {.n_ctx = 64, .kv_type = loom::DType::f16});
  for (std::size_t i = 0; i + 1 < kPrompt.size(); ++i) stepwise.eval({&kPrompt[i], 1});
  EXPECT_EQ(a.tokens, run(stepwise, {&kPrompt.back(), 1}, greedy(20)).tokens);
  EXPECT_THROW(loom::Session(model, {.n_ctx = 64, .kv_type = loom::DType::q8_0}), loom::Error);
}

TEST(SessionMemory, SizesMatchWhatIsAllocated) {
  const loom::Config c = loom::test::llama_config();
  const loom::nn::KVCache kv(c, 37);
  EXPECT_EQ(kv.bytes(), loom::nn::KVCache::bytes_needed(c, 37));
  loom::Activations act;
  act.reserve(c, 5, 37, 3);
  std::uint64_t floats = 0;
  for (auto* v : {&act.residual, &act.normed, &act.block_out, &act.logits, &act.block_scratch})
    floats += v->size();
  EXPECT_EQ(floats * sizeof(float), loom::Activations::bytes_needed(c, 5, 37, 3));
}

// ---- errors and threads ----------------------------------------------------------------------

TEST(ThreadPoolErrors, ExceptionInAWorkerReachesTheCallerAndThePoolStaysUsable) {
  loom::kernels::ThreadPool pool(4);
  const auto caller = std::this_thread::get_id();
  for (int round = 0; round < 3; ++round) {
    // The caller holds on to its own index until a worker has thrown (or a second has passed),
    // so that the exception surely comes from a worker, whichever indices the workers run.
    std::atomic<bool> thrown{false};
    try {
      pool.parallel_for(4, [&](std::int64_t, std::int64_t, int t) {
        if (t == 0) {
          EXPECT_EQ(std::this_thread::get_id(), caller);
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
          while (!thrown.load() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
          return;
        }
        EXPECT_NE(std::this_thread::get_id(), caller);  // a worker, not the caller
        thrown.store(true);
        loom::fail(loom::ErrorKind::format, "test", "thrown by a worker");
      });
      FAIL() << "expected the worker's exception";
    } catch (const loom::Error& e) {
      EXPECT_STREQ(e.what(), "[loom.format.test] thrown by a worker");
    }
    std::vector<int> hits(4, 0);
    pool.parallel_for(4, [&](std::int64_t b, std::int64_t e, int) {
      for (auto i = b; i < e; ++i) ++hits[std::size_t(i)];
    });
    EXPECT_EQ(hits, std::vector<int>(4, 1));
  }
}

TEST_F(SessionTest, SessionIsUsableAfterErrorsFromCallbacksAndInputs) {
  loom::Session s(model, {.n_ctx = 32, .n_threads = 2});
  loom::Session fresh(model, {.n_ctx = 32, .n_threads = 2});
  const Outcome expected = run(fresh, kPrompt, greedy(8));
  // An exception from on_token propagates; the session keeps what it evaluated.
  EXPECT_THROW(s.generate(kPrompt, greedy(8), [](std::int32_t) -> bool { throw std::runtime_error("user"); }),
               std::runtime_error);
  s.reset();
  loom::GenerateParams p = greedy(8);
  p.on_prompt_logits = [](const loom::Tensor<const float>&) { throw std::runtime_error("user"); };
  EXPECT_THROW(run(s, kPrompt, p), std::runtime_error);
  s.reset();
  const std::vector<std::int32_t> bad{1, 2, config.vocab_size};
  EXPECT_THROW(run(s, bad, greedy(8)), loom::Error);
  EXPECT_EQ(s.position(), 0);
  EXPECT_EQ(run(s, kPrompt, greedy(8)).tokens, expected.tokens);
}

// ---- determinism and concurrency on real fixture models ---------------------------------------

void expect_deterministic_and_thread_safe(const loom::Model& model) {
  const std::int32_t vocab = model.config().vocab_size;
  std::vector<loom::GenerateParams> params(8);
  std::vector<std::vector<std::int32_t>> prompts(8), solo(8), again(8), threaded(8);
  for (int i = 0; i < 8; ++i) {
    params[i].max_new_tokens = 12;
    params[i].sampler.seed = 7 + i;
    params[i].sampler.temperature = i % 2 ? 0.0f : 0.9f;
    prompts[i] = {1, (5 + 37 * i) % vocab, (11 + 101 * i) % vocab};
    loom::Session s(model, {.n_ctx = 32});
    solo[i] = run(s, prompts[i], params[i]).tokens;
    s.reset();
    again[i] = run(s, prompts[i], params[i]).tokens;
  }
  EXPECT_EQ(solo, again);  // same seed and input, same tokens, run after run
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      loom::Session s(model, {.n_ctx = 32, .n_threads = 1 + i % 2});
      threaded[i] = run(s, prompts[i], params[i]).tokens;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(solo, threaded);

  // Greedy: 1 vs 2 threads, prompt in one batch vs token by token.
  loom::Session one(model, {.n_ctx = 32, .n_threads = 1}), two(model, {.n_ctx = 32, .n_threads = 2});
  const auto a = run(one, prompts[1], greedy(12)).tokens;
  EXPECT_EQ(a, run(two, prompts[1], greedy(12)).tokens);
  loom::Session step(model, {.n_ctx = 32, .n_threads = 2});
  for (std::size_t i = 0; i + 1 < prompts[1].size(); ++i) step.eval({&prompts[1][i], 1});
  EXPECT_EQ(a, run(step, {&prompts[1].back(), 1}, greedy(12)).tokens);
}

TEST(FixtureModels, Stories260KDeterministicAndThreadSafe) {
  LOOM_REQUIRE_FIXTURE(path, "stories260K/stories260K.bin");
  const loom::Loaded m = loom::load(path);
  expect_deterministic_and_thread_safe(*m.model);
}

TEST(FixtureModels, TinyLlamaHfDeterministicAndThreadSafe) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/hf");
  const loom::Loaded m = loom::load(path);
  expect_deterministic_and_thread_safe(*m.model);
}

}  // namespace test_generate
