// Batched decoding: the paged KV cache (sharing, copy on write, accounting), Model::forward over
// several sequences against each sequence run alone, and BatchSession's scheduling (mixed prompt
// lengths, requests joining and leaving, forks, cancellation, per-sequence seeds) against
// Session::generate, on random models and on the fixture checkpoints.
#include <gtest/gtest.h>

#include <loom/batch.hpp>
#include <loom/load.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "fixtures.hpp"
#include "random_model.hpp"

namespace test_batch {

namespace {

using loom::nn::KVPageCount;
using loom::nn::PagedKVCache;

std::vector<std::int32_t> solo(const loom::Model& m, std::span<const std::int32_t> prompt,
                               const loom::GenerateParams& p, std::int32_t n_ctx) {
  loom::Session s(m, {.n_ctx = n_ctx, .n_threads = 1});
  std::vector<std::int32_t> out;
  s.generate(prompt, p, [&](std::int32_t id) {
    out.push_back(id);
    return true;
  });
  return out;
}

loom::GenerateParams greedy(int n) {
  loom::GenerateParams p;
  p.sampler.temperature = 0.0f;
  p.max_new_tokens = n;
  return p;
}

loom::GenerateParams sampled(int n, std::uint64_t seed) {
  loom::GenerateParams p;
  p.sampler.temperature = 1.0f;
  p.sampler.top_k = 0;
  p.sampler.top_p = 1.0f;
  p.sampler.min_p = 0.0f;
  p.sampler.seed = seed;
  p.max_new_tokens = n;
  return p;
}

std::vector<std::int32_t> prompt_of(std::int32_t length, std::int32_t vocab, std::int32_t salt) {
  std::vector<std::int32_t> p;
  for (std::int32_t i = 0; i < length; ++i) p.push_back((i * 7 + salt * 13 + 1) % vocab);
  return p;
}

/// Collects every continuation's tokens, by request and continuation.
struct Collector {
  std::map<std::pair<std::uint64_t, int>, std::vector<std::int32_t>> tokens;
  std::map<std::pair<std::uint64_t, int>, loom::GenerateStats> done;
  std::vector<std::int32_t>& t(std::uint64_t key, int i) { return tokens[std::make_pair(key, i)]; }
  loom::GenerateStats& d(std::uint64_t key, int i) { return done[std::make_pair(key, i)]; }
  loom::BatchRequest request(std::uint64_t key, std::vector<std::int32_t> prompt, loom::GenerateParams p, int n = 1) {
    loom::BatchRequest r;
    r.prompt = std::move(prompt);
    r.params = std::move(p);
    r.n = n;
    r.on_token = [this, key](std::int32_t i, std::int32_t id) {
      t(key, i).push_back(id);
      return true;
    };
    r.on_done = [this, key](std::int32_t i, const loom::GenerateStats& s) { d(key, i) = s; };
    return r;
  }
};

// ---- PagedKVCache -------------------------------------------------------------------------------

TEST(PagedKVCache, ForksSharePagesAndCopyOnlyTheSharedPageTheyWriteInto) {
  const loom::nn::KVCacheShape shape{2, 2, 8};
  PagedKVCache kv(shape, KVPageCount{16, 16, 128}, 8);
  const auto a = kv.add();
  kv.reserve_append(a, 40);  // 3 pages: 16 + 16 + 8
  kv.commit(a, 40);
  EXPECT_EQ(kv.used_pages(), 3);
  const auto b = kv.fork(a), c = kv.fork(a);
  EXPECT_EQ(kv.used_pages(), 3);  // shared
  EXPECT_EQ(kv.pages_to_append(b, 1), 1);  // the partial third page is shared: copy
  kv.reserve_append(b, 1);
  kv.commit(b, 41);
  EXPECT_EQ(kv.used_pages(), 4);
  EXPECT_EQ(kv.pages(b)[0], kv.pages(a)[0]);
  EXPECT_EQ(kv.pages(b)[1], kv.pages(a)[1]);
  EXPECT_NE(kv.pages(b)[2], kv.pages(a)[2]);
  kv.reserve_append(c, 1);  // still shared with a
  kv.commit(c, 41);
  EXPECT_EQ(kv.used_pages(), 5);
  EXPECT_EQ(kv.pages_to_append(a, 1), 0);  // a's third page is now its own
  kv.remove(a);
  EXPECT_EQ(kv.used_pages(), 4);  // b and c still hold the first two
  kv.remove(b);
  kv.remove(c);
  EXPECT_EQ(kv.used_pages(), 0);
  EXPECT_EQ(kv.free_pages(), 16);
}

TEST(PagedKVCache, CopyOnWriteCopiesTheWrittenPositions) {
  const loom::nn::KVCacheShape shape{1, 1, 16};
  PagedKVCache kv(shape, KVPageCount{4, 16, 64}, 2);
  const auto a = kv.add();
  kv.reserve_append(a, 5);
  std::vector<float> k(5 * 16), v(5 * 16);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = float(i), v[i] = -float(i);
  kv.cache().store(0, kv.pages(a), 0, loom::TensorView<const float>(k.data(), loom::Shape{5, 16}),
                   loom::TensorView<const float>(v.data(), loom::Shape{5, 16}));
  kv.commit(a, 5);
  const auto b = kv.fork(a);
  kv.reserve_append(b, 1);
  ASSERT_NE(kv.pages(b)[0], kv.pages(a)[0]);
  const float* va = kv.cache().page_values<float>(0, 0, kv.pages(a)[0]);
  const float* vb = kv.cache().page_values<float>(0, 0, kv.pages(b)[0]);
  for (int i = 0; i < 5 * 16; ++i) EXPECT_EQ(va[i], vb[i]);
  const float* ka = kv.cache().page_keys<float>(0, 0, kv.pages(a)[0]);
  const float* kb = kv.cache().page_keys<float>(0, 0, kv.pages(b)[0]);
  for (int i = 0; i < 16 * 16; ++i) EXPECT_EQ(ka[i], kb[i]);
}

TEST(PagedKVCache, RefusesWhatDoesNotFitAndChangesNothing) {
  const loom::nn::KVCacheShape shape{1, 1, 8};
  PagedKVCache kv(shape, KVPageCount{3, 16, 64}, 2);
  const auto a = kv.add(), b = kv.add();
  EXPECT_THROW(kv.add(), loom::Error);  // two slots
  kv.reserve_append(a, 32);
  kv.commit(a, 32);
  EXPECT_THROW(kv.reserve_append(b, 20), loom::Error);  // needs 2 pages, 1 free
  EXPECT_EQ(kv.free_pages(), 1);
  EXPECT_EQ(kv.size(b), 0);
  EXPECT_THROW(kv.reserve_append(a, 33), loom::Error);  // beyond 64 positions
  EXPECT_THROW(kv.size(7), loom::Error);
  EXPECT_THROW(kv.rewind(a, 33), loom::Error);
  kv.rewind(a, 10);
  EXPECT_EQ(kv.free_pages(), 2);
  EXPECT_THROW(PagedKVCache(shape, KVPageCount{3, 10, 64}, 2), loom::Error);  // not whole key tiles
  EXPECT_THROW(PagedKVCache(shape, KVPageCount{0, 16, 64}, 2), loom::Error);
  EXPECT_THROW(PagedKVCache(shape, KVPageCount{3, 16, 64}, 0), loom::Error);
}

// ---- Model::forward over a batch ----------------------------------------------------------------

/// Each sequence's logits from one batched pass over several sequences (mixed lengths, some
/// decoding one token, some with a prompt chunk) equal its logits run alone in a Session.
void expect_batch_equals_solo(const loom::Model& m, loom::DType kv_type) {
  const std::int32_t vocab = m.config().vocab_size;
  PagedKVCache kv(m.config(), KVPageCount{40, 16, 64}, 4, kv_type);
  std::vector<std::vector<std::int32_t>> history = {prompt_of(3, vocab, 1), prompt_of(17, vocab, 2),
                                                    prompt_of(33, vocab, 3), prompt_of(1, vocab, 4)};
  std::vector<PagedKVCache::SeqId> seqs;
  loom::Activations act;
  loom::kernels::ThreadPool pool(2);
  for (std::size_t i = 0; i < history.size(); ++i) seqs.push_back(kv.add());
  // Step 1: every prompt at once; step 2..: one token each (and a late second chunk for one).
  std::vector<std::vector<std::int32_t>> steps[3] = {
      history, {{5}, {6}, {7}, {8}}, {{9}, prompt_of(20, vocab, 5), {10}, {11}}};
  for (auto& h : history) h.clear();
  for (const auto& step : steps) {
    std::vector<loom::SequenceInput> in;
    for (std::size_t i = 0; i < step.size(); ++i) in.push_back({seqs[i], step[i], loom::Logits::all});
    const loom::Tensor<const float> got = m.forward(in, kv, act, &pool);
    std::int64_t row = 0;
    for (std::size_t i = 0; i < step.size(); ++i) {
      loom::nn::KVCache solo_kv(m.config(), 64, kv_type);
      const std::size_t before = history[i].size();
      history[i].insert(history[i].end(), step[i].begin(), step[i].end());
      const loom::Tensor<float> want = m.logits(history[i], 0, solo_kv, loom::Logits::all);
      for (std::size_t t = before; t < history[i].size(); ++t, ++row) {
        double worst = 0;
        for (std::int32_t j = 0; j < vocab; ++j)
          worst = std::max(worst, std::abs(double(got.row(row)[j]) - want.row(std::int64_t(t))[j]));
        EXPECT_LT(worst, 1e-4) << "sequence " << i << " position " << t;
      }
    }
    EXPECT_EQ(row, got.dim(0));
  }
}

TEST(BatchForward, EachSequenceGetsItsSoloLogitsLlama) {
  expect_batch_equals_solo(loom::test::random_model(loom::test::llama_config()), loom::DType::f32);
  expect_batch_equals_solo(loom::test::random_model(loom::test::llama_config()), loom::DType::f16);
}
TEST(BatchForward, EachSequenceGetsItsSoloLogitsGpt2) {
  expect_batch_equals_solo(loom::test::random_model(loom::test::gpt2_config()), loom::DType::f32);
}
TEST(BatchForward, SlidingWindowAndAlibi) {
  loom::Config c = loom::test::llama_config();
  c.sliding_window = 20;  // crosses the 16-position pages
  expect_batch_equals_solo(loom::test::random_model(c), loom::DType::f32);
  loom::Config alibi = loom::test::llama_config();
  alibi.position = loom::PositionKind::alibi;
  expect_batch_equals_solo(loom::test::random_model(alibi), loom::DType::f32);
}

TEST(BatchForward, BadBatchesAreRefusedBeforeAnythingMoves) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config());
  PagedKVCache kv(m.config(), KVPageCount{4, 16, 64}, 4);
  loom::Activations act;
  const auto a = kv.add(), b = kv.add();
  const std::vector<std::int32_t> ok{1, 2, 3}, bad{1, 97}, big(50, 1);
  EXPECT_THROW(m.forward(std::vector<loom::SequenceInput>{{a, ok}, {a, ok}}, kv, act), loom::Error);  // twice
  EXPECT_THROW(m.forward(std::vector<loom::SequenceInput>{{a, ok}, {b, bad}}, kv, act), loom::Error);  // bad id
  EXPECT_THROW(m.forward(std::vector<loom::SequenceInput>{{a, ok}, {9, ok}}, kv, act), loom::Error);  // no such sequence
  EXPECT_THROW(m.forward(std::vector<loom::SequenceInput>{{a, big}, {b, big}}, kv, act), loom::Error);  // 8 pages > 4
  EXPECT_THROW(m.forward(std::vector<loom::SequenceInput>{{a, {}}}, kv, act), loom::Error);  // empty
  EXPECT_EQ(kv.size(a), 0);
  EXPECT_EQ(kv.size(b), 0);
  EXPECT_EQ(kv.used_pages(), 0);
}

// ---- BatchSession -------------------------------------------------------------------------------

/// Greedy: each request of a batch (mixed prompt lengths, joining while others run, forks)
/// produces exactly its tokens alone; cancelled requests stop and free their room.
void expect_greedy_batch_equals_solo(const loom::Model& m, int max_tokens_per_step) {
  const std::int32_t vocab = m.config().vocab_size, n_ctx = std::min(m.config().max_seq_len, 96);
  loom::BatchSession batch(m, {.n_ctx = n_ctx, .n_threads = 2, .max_sequences = 6,
                               .max_batch_tokens = max_tokens_per_step, .page_positions = 16});
  Collector got;
  const std::vector<std::int32_t> lengths{5, 23, 1, 40};
  std::vector<std::vector<std::int32_t>> prompts;
  for (std::size_t i = 0; i < lengths.size(); ++i) prompts.push_back(prompt_of(lengths[i], vocab, std::int32_t(i)));
  batch.submit(got.request(0, prompts[0], greedy(12)));
  batch.submit(got.request(1, prompts[1], greedy(30), 2));  // a fork: both continuations are the same greedy text
  batch.step();
  batch.step();
  batch.submit(got.request(2, prompts[2], greedy(20)));  // joins mid-run
  for (int i = 0; i < 5; ++i) batch.step();
  batch.submit(got.request(3, prompts[3], greedy(8)));
  batch.run();
  EXPECT_EQ(batch.running(), 0u);
  EXPECT_EQ(batch.cache().used_pages(), 0);
  const int budgets[] = {12, 30, 20, 8};
  for (std::uint64_t r = 0; r < 4; ++r) {
    const auto want = solo(m, prompts[r], greedy(budgets[r]), n_ctx);
    EXPECT_EQ(got.t(r, 0), want) << "request " << r;
    EXPECT_EQ(got.d(r, 0).generated_tokens, std::int32_t(want.size()));
  }
  EXPECT_EQ(got.t(1, 1), got.t(1, 0));
}

TEST(BatchSession, GreedyEqualsSoloOnRandomModels) {
  expect_greedy_batch_equals_solo(loom::test::random_model(loom::test::llama_config()), 512);
  expect_greedy_batch_equals_solo(loom::test::random_model(loom::test::gpt2_config()), 512);
  // Prompts in chunks of at most 8 tokens per step, shared with the decoding sequences.
  expect_greedy_batch_equals_solo(loom::test::random_model(loom::test::llama_config()), 8);
}

TEST(BatchSession, SampledTokensDependOnlyOnTheSequencesSeed) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config());
  const auto prompt = prompt_of(9, m.config().vocab_size, 3);
  // Alone.
  Collector alone;
  {
    loom::BatchSession b(m, {.n_ctx = 64, .max_sequences = 4, .page_positions = 16});
    b.submit(alone.request(0, prompt, sampled(20, 1234)));
    b.run();
  }
  // With others, and as continuation 0 of a fork of three (continuation i samples with seed + i).
  Collector crowd;
  {
    loom::BatchSession b(m, {.n_ctx = 64, .n_threads = 2, .max_sequences = 8, .page_positions = 16});
    b.submit(crowd.request(1, prompt_of(30, m.config().vocab_size, 1), sampled(25, 7)));
    b.step();
    b.submit(crowd.request(0, prompt, sampled(20, 1234), 3));
    b.submit(crowd.request(2, prompt_of(3, m.config().vocab_size, 2), sampled(25, 8)));
    b.run();
  }
  ASSERT_EQ(alone.t(0, 0).size(), 20u);
  EXPECT_EQ(crowd.t(0, 0), alone.t(0, 0));
  EXPECT_NE(crowd.t(0, 1), crowd.t(0, 0));
  // And a session with seed 1235 gives continuation 1's tokens.
  EXPECT_EQ(crowd.t(0, 1), solo(m, prompt, sampled(20, 1235), 64));
}

TEST(BatchSession, CancelStopsARequestAndFreesItsRoom) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config());
  loom::BatchSession b(m, {.n_ctx = 64, .max_sequences = 2, .page_positions = 16});
  Collector got;
  const auto a = b.submit(got.request(0, prompt_of(5, 97, 1), greedy(-1), 2));  // takes both slots
  const auto w = b.submit(got.request(1, prompt_of(5, 97, 2), greedy(4)));     // waits
  b.step();
  b.step();
  EXPECT_EQ(b.running(), 1u);
  EXPECT_EQ(b.waiting(), 1u);
  b.cancel(a);
  b.run();
  EXPECT_EQ(got.d(0, 0).stop, loom::StopReason::cancelled);
  EXPECT_EQ(got.d(0, 1).stop, loom::StopReason::cancelled);
  EXPECT_EQ(got.t(1, 0), solo(m, prompt_of(5, 97, 2), greedy(4), 64));
  EXPECT_EQ(got.d(1, 0).stop, loom::StopReason::max_tokens);
  (void)w;
}

TEST(BatchSession, StopReasonsAndCallbackStop) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config());
  loom::BatchSession b(m, {.n_ctx = 32, .max_sequences = 4, .page_positions = 16});
  Collector got;
  const auto p = prompt_of(4, 97, 1);
  const auto ref = solo(m, p, greedy(40), 32);  // runs into the context: 32 − 4 evaluated + the last one sampled
  ASSERT_EQ(ref.size(), 29u);
  b.submit(got.request(0, p, greedy(-1)));
  loom::GenerateParams eos = greedy(-1);
  eos.end_of_generation = {ref[3]};
  b.submit(got.request(1, p, eos));
  loom::BatchRequest stop = got.request(2, p, greedy(-1));
  stop.on_token = [&](std::int32_t, std::int32_t id) {
    got.t(2, 0).push_back(id);
    return got.t(2, 0).size() < 5;
  };
  b.submit(std::move(stop));
  b.run();
  EXPECT_EQ(got.d(0, 0).stop, loom::StopReason::context_full);
  EXPECT_EQ(got.t(0, 0), ref);
  EXPECT_EQ(got.d(1, 0).stop, loom::StopReason::end_of_generation);
  EXPECT_EQ(got.t(1, 0), std::vector<std::int32_t>(ref.begin(), ref.begin() + 3));
  EXPECT_EQ(got.d(2, 0).stop, loom::StopReason::callback);
  EXPECT_EQ(got.t(2, 0).size(), 5u);
}

TEST(BatchSession, BadRequestsAndOptionsAreRefused) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config());
  EXPECT_THROW(loom::BatchSession(m, {.n_ctx = -1}), loom::Error);
  EXPECT_THROW(loom::BatchSession(m, {.max_sequences = 0}), loom::Error);
  EXPECT_THROW(loom::BatchSession(m, {.page_positions = 24}), loom::Error);
  EXPECT_THROW(loom::BatchSession(m, {.max_memory = 1000}), loom::Error);
  loom::BatchSession b(m, {.n_ctx = 32, .max_sequences = 2, .page_positions = 16, .kv_pages = 3});
  Collector c;
  EXPECT_THROW(b.submit(c.request(0, {}, greedy(3))), loom::Error);
  EXPECT_THROW(b.submit(c.request(0, {1, 97}, greedy(3))), loom::Error);
  EXPECT_THROW(b.submit(c.request(0, prompt_of(32, 97, 1), greedy(3))), loom::Error);  // no room to generate
  EXPECT_THROW(b.submit(c.request(0, {1}, greedy(3), 3)), loom::Error);               // n > max_sequences
  EXPECT_THROW(b.submit(c.request(0, {1}, greedy(-1), 2)), loom::Error);              // 4 pages > 3
  loom::GenerateParams hot = greedy(3);
  hot.sampler.temperature = -1;
  EXPECT_THROW(b.submit(c.request(0, {1}, hot)), loom::Error);
  loom::GenerateParams shift = greedy(3);
  shift.context_shift = true;
  EXPECT_THROW(b.submit(c.request(0, {1}, shift)), loom::Error);
  EXPECT_FALSE(b.step());  // nothing was queued
}

TEST(BatchSession, ForksStoreTheirPromptOnce) {
  const loom::Model m = loom::test::random_model(loom::test::llama_config_256());
  const std::int32_t P = 16, prompt_len = 500, n = 8;
  loom::BatchSession b(m, {.n_ctx = 640, .max_sequences = n, .page_positions = P});
  Collector c;
  const auto prompt = prompt_of(prompt_len, m.config().vocab_size, 1);
  std::int32_t max_used = 0;
  loom::BatchRequest r = c.request(0, prompt, greedy(4), n);
  r.on_token = [&](std::int32_t, std::int32_t) {
    max_used = std::max(max_used, b.cache().used_pages());
    return true;
  };
  b.submit(std::move(r));
  b.run();
  // The prompt's 32 pages (31 whole + one of 4 positions) once, then each fork's copy of the
  // last page: 32 + 7 (the last fork to write keeps the original).
  const std::int32_t prompt_pages = (prompt_len + P - 1) / P;
  EXPECT_EQ(max_used, prompt_pages + n - 1);
  EXPECT_LT(max_used, 2 * prompt_pages);  // not n × the prompt
}

// ---- Fixtures -----------------------------------------------------------------------------------

void expect_fixture(const std::filesystem::path& path) {
  const loom::Loaded l = loom::load(path);
  expect_greedy_batch_equals_solo(*l.model, 512);
  expect_greedy_batch_equals_solo(*l.model, 8);
}

TEST(BatchFixtures, Stories260K) {
  LOOM_REQUIRE_FIXTURE(path, "stories260K/stories260K.bin");
  expect_fixture(path);
}
TEST(BatchFixtures, TinyLlamaHf) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/hf");
  expect_fixture(path);
}
TEST(BatchFixtures, TinyLlamaGguf) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/tiny-llama.gguf");
  expect_fixture(path);
}
TEST(BatchFixtures, TinyGpt2Hf) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-gpt2/hf");
  expect_fixture(path);
}
TEST(BatchFixtures, TinyGpt2Gguf) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-gpt2/tiny-gpt2.gguf");
  expect_fixture(path);
}

}  // namespace

}  // namespace test_batch
