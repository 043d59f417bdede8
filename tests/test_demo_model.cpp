// The demo model that ships with the repository (models/tiny-shakespeare, trained by
// tools/train_demo.py) measured end to end: loom's perplexity on the Tiny Shakespeare
// validation split must equal exp(the validation loss PyTorch recorded in eval.json) within 1 %.
//
// Method (the same as train_demo.py's `evaluate`): the validation split is the corpus after the
// first newline at or after 90 % of its bytes; it is tokenized as one text without special
// tokens and cut into non-overlapping windows of n_ctx tokens (the last one shorter); in each
// window every token after the first is scored given the tokens before it in that window; the
// loss is the mean natural-log cross-entropy per scored token.
//
// Optimized builds score the whole split (~49k tokens, a few seconds). Builds without NDEBUG or
// with a sanitizer score the first kPrefixWindows windows and compare with the sum of the same
// windows in eval.json, to keep the test within a minute.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "loom/generate.hpp"
#include "loom/load.hpp"

namespace test_demo_model {

namespace {

#if defined(__SANITIZE_ADDRESS__) || !defined(NDEBUG)
constexpr bool kSlowBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
constexpr bool kSlowBuild = true;
#else
constexpr bool kSlowBuild = false;
#endif
#else
constexpr bool kSlowBuild = false;
#endif
constexpr std::size_t kPrefixWindows = 16;

const std::filesystem::path kModel = std::filesystem::path(LOOM_SOURCE_DIR) / "models" / "tiny-shakespeare";

/// The validation split as README.md of the corpus defines it.
std::string validation_split(const std::string& corpus) {
  const std::size_t nl = corpus.find('\n', corpus.size() * 9 / 10);
  return nl == std::string::npos ? std::string() : corpus.substr(nl + 1);
}

nlohmann::json read_eval() { return nlohmann::json::parse(loom::test::read_text(kModel / "eval.json")); }

}  // namespace

TEST(DemoModel, LoadsAsLlamaWithItsTokenizer) {
  ASSERT_TRUE(std::filesystem::exists(kModel / "config.json")) << kModel.string();
  const loom::Loaded m = loom::load(kModel);
  EXPECT_EQ(m.format, loom::FileFormat::hf_folder);
  EXPECT_EQ(m.model->config().architecture, "llama");
  EXPECT_LT(m.model->config().n_kv_heads, m.model->config().n_heads);  // grouped-query attention
  EXPECT_TRUE(m.model->config().tied_embeddings);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->vocab_size(), m.model->config().vocab_size);
  EXPECT_FALSE(m.tokenizer->add_bos());
  const std::string text = "ROMEO:\nWhat light through yonder window breaks?\n";
  EXPECT_EQ(m.tokenizer->decode(m.tokenizer->encode(text)), text);
  EXPECT_FLOAT_EQ(m.sampler.temperature, 0.8f);  // generation_config.json
  EXPECT_EQ(m.sampler.top_k, 40);
}

TEST(DemoModel, PerplexityOnValidationSplitMatchesTraining) {
  LOOM_REQUIRE_FIXTURE(corpus_path, "../corpora/tinyshakespeare/input.txt");
  const nlohmann::json eval = read_eval();
  const std::string val = validation_split(loom::test::read_text(corpus_path));
  ASSERT_EQ(val.size(), eval.at("validation_bytes").get<std::size_t>()) << "not the corpus the model was evaluated on";

  const loom::Loaded m = loom::load(kModel);
  const loom::Tokenizer& tok = *m.tokenizer;
  const std::vector<std::int32_t> ids = tok.encode(val, /*add_special=*/false, /*parse_special=*/false);
  ASSERT_EQ(ids.size(), eval.at("validation_tokens").get<std::size_t>()) << "tokenization differs from the script's";
  EXPECT_EQ(tok.decode(ids), val);

  const auto n_ctx = eval.at("n_ctx").get<std::size_t>();
  const auto& windows = eval.at("windows");
  const std::size_t n_windows = (ids.size() + n_ctx - 1) / n_ctx;
  ASSERT_EQ(windows.size(), n_windows);
  const std::size_t use = kSlowBuild ? std::min(kPrefixWindows, n_windows) : n_windows;

  loom::Session session(*m.model, {.n_ctx = std::int32_t(n_ctx), .n_threads = 2});
  const std::int32_t vocab = m.model->config().vocab_size;
  double nll = 0, expected_nll = 0;
  std::size_t count = 0, expected_count = 0;
  double worst = 0;  // largest relative difference of one window's mean loss
  for (std::size_t w = 0; w < use; ++w) {
    const std::size_t begin = w * n_ctx, end = std::min(begin + n_ctx, ids.size());
    session.reset();
    const std::vector<std::int32_t> input(ids.begin() + std::ptrdiff_t(begin), ids.begin() + std::ptrdiff_t(end));
    const loom::Tensor<const float> logits = session.eval(input, loom::Logits::all);
    double window_nll = 0;
    for (std::size_t p = 1; p < input.size(); ++p) {
      const float* row = logits.row(std::int64_t(p - 1));
      double mx = row[0];
      for (std::int32_t v = 1; v < vocab; ++v) mx = std::max(mx, double(row[v]));
      double sum = 0;
      for (std::int32_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
      window_nll -= double(row[input[p]]) - mx - std::log(sum);
    }
    const double ref = windows[w].at(0).get<double>();
    const auto ref_count = windows[w].at(1).get<std::size_t>();
    ASSERT_EQ(ref_count, input.size() - 1);
    worst = std::max(worst, std::abs(window_nll - ref) / ref);
    nll += window_nll;
    count += input.size() - 1;
    expected_nll += ref;
    expected_count += ref_count;
  }

  const double ppl = std::exp(nll / double(count));
  const double expected = std::exp(expected_nll / double(expected_count));
  if (use == n_windows) {  // the per-window sums add up to the recorded loss
    EXPECT_NEAR(expected_nll / double(expected_count), eval.at("validation_loss").get<double>(), 1e-6);
  }
  RecordProperty("windows", std::to_string(use) + "/" + std::to_string(n_windows));
  RecordProperty("loom_perplexity", std::to_string(ppl));
  RecordProperty("pytorch_perplexity", std::to_string(expected));
  std::printf("%zu/%zu windows, %zu tokens scored: loom PPL %.5f, PyTorch PPL %.5f (%+.4f %%), worst window %.4f %%\n",
              use, n_windows, count, ppl, expected, 100 * (ppl / expected - 1), 100 * worst);
  EXPECT_NEAR(ppl / expected, 1.0, 0.01);
}

TEST(DemoModel, GeneratesText) {
  const loom::Loaded m = loom::load(kModel);
  loom::Session session(*m.model, {.n_ctx = 0, .n_threads = 2});
  loom::GenerateParams params;
  params.sampler = m.sampler;
  params.max_new_tokens = 40;
  params.end_of_generation = m.end_of_generation;
  params.sampler.seed = 42;
  std::vector<std::int32_t> out;
  const auto stats = session.generate(m.tokenizer->encode("ROMEO:"), params, [&](std::int32_t id) {
    out.push_back(id);
    return true;
  });
  EXPECT_EQ(stats.generated_tokens, 40);
  const std::string text = m.tokenizer->decode(out);
  EXPECT_GT(text.size(), 40u);
  for (unsigned char c : text) EXPECT_TRUE(c == '\n' || (c >= 32 && c < 127)) << "byte " << int(c);
}

}  // namespace test_demo_model
