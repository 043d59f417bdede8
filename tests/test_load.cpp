// loom::load: content-based format detection, tokenizer pairing, generation_config defaults.
#include <gtest/gtest.h>

#include <fstream>
#include <loom/load.hpp>

#include "fixtures.hpp"

namespace test_load {

namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("loom_test_load_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Load, DetectsFormatsFromContentNotExtension) {
  LOOM_REQUIRE_FIXTURE(stories, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/tiny-llama/tiny-llama.gguf");
  const auto d = scratch("detect");
  fs::copy_file(stories, d / "model.gguf");  // misleading extension
  EXPECT_EQ(loom::detect_format(d / "model.gguf"), loom::FileFormat::llama2c);
  EXPECT_EQ(loom::detect_format(hf), loom::FileFormat::hf_folder);
  EXPECT_EQ(loom::detect_format(hf / "model.safetensors"), loom::FileFormat::safetensors);
  EXPECT_EQ(loom::detect_format(hf / "config.json"), loom::FileFormat::json);
  EXPECT_EQ(loom::detect_format(gguf), loom::FileFormat::gguf);
  fs::copy_file(gguf, d / "weights.bin");  // a GGUF with another name
  EXPECT_EQ(loom::detect_format(d / "weights.bin"), loom::FileFormat::gguf);
  std::ofstream(d / "junk.bin") << "definitely not a model";
  EXPECT_EQ(loom::detect_format(d / "junk.bin"), loom::FileFormat::unknown);
  try {
    loom::load(d / "junk.bin");
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::format);
    EXPECT_NE(std::string(e.what()).find("junk.bin"), std::string::npos);
  }
  EXPECT_THROW(loom::load(d / "missing"), loom::Error);
  // The llama2.c checkpoint loads whatever its name.
  const loom::Loaded m = loom::load(d / "model.gguf");
  EXPECT_EQ(m.format, loom::FileFormat::llama2c);
  EXPECT_EQ(m.bos_id, 1);
}

TEST(Load, HfFolderWithTokenizerAndGenerationConfig) {
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  LOOM_REQUIRE_FIXTURE(tok, "tokenizers/hf/llama2-tokenizer.nbsp-restored.json");
  const auto d = scratch("hf");
  for (const auto& e : fs::directory_iterator(hf)) fs::copy_file(e.path(), d / e.path().filename());
  fs::copy_file(tok, d / "tokenizer.json");
  std::ofstream(d / "generation_config.json")
      << R"({"do_sample": true, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [2, 5], "bos_token_id": 1})";
  const loom::Loaded m = loom::load(d);
  ASSERT_TRUE(m.tokenizer.has_value());
  EXPECT_EQ(m.tokenizer->encode("Hello world, this is a test.", false),
            (std::vector<std::int32_t>{15043, 3186, 29892, 445, 338, 263, 1243, 29889}));
  EXPECT_FLOAT_EQ(m.sampler.temperature, 0.6f);
  EXPECT_FLOAT_EQ(m.sampler.top_p, 0.9f);
  EXPECT_EQ(m.sampler.top_k, loom::SamplerParams{}.top_k);  // untouched fields keep llama.cpp's defaults
  EXPECT_NE(std::find(m.end_of_generation.begin(), m.end_of_generation.end(), 5), m.end_of_generation.end());
  EXPECT_NE(std::find(m.end_of_generation.begin(), m.end_of_generation.end(), 2), m.end_of_generation.end());
  EXPECT_EQ(m.bos_id, 1);

  std::ofstream(d / "generation_config.json") << R"({"do_sample": false, "temperature": 0.6})";
  EXPECT_EQ(loom::load(d).sampler.temperature, 0.0f);  // greedy asked for
  std::ofstream(d / "generation_config.json") << R"({"top_p": 7})";
  EXPECT_THROW(loom::load(d), loom::Error);
}

TEST(Load, TokenizerLargerThanTheModelVocabularyIsRejected) {
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  LOOM_REQUIRE_FIXTURE(gpt2_tok, "tokenizers/hf/gpt2-tokenizer.json");
  try {
    loom::load(hf, gpt2_tok);  // 50257 tokens for a 32000-row embedding
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_NE(std::string(e.what()).find("50257"), std::string::npos) << e.what();
  }
}

// A GGUF file carries its vocabulary: load() returns a tokenizer that reproduces the documented
// tokenization, and the model gives the same logits as the Hugging Face copy of the same weights.
TEST(Load, GgufWithEmbeddedVocabulary) {
  for (const std::string name : {"tiny-llama", "tiny-gpt2"}) {
    LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/" + name + "/" + name + ".gguf");
    LOOM_REQUIRE_FIXTURE(hf, "tiny-models/" + name + "/hf");
    const loom::Loaded g = loom::load(gguf);
    ASSERT_TRUE(g.tokenizer.has_value()) << name;
    const std::vector<std::int32_t> expected =
        name == "tiny-llama" ? std::vector<std::int32_t>{15043, 3186, 29892, 445, 338, 263, 1243, 29889}
                             : std::vector<std::int32_t>{15496, 995, 11, 428, 318, 257, 1332, 13};
    EXPECT_EQ(g.tokenizer->encode("Hello world, this is a test.", false), expected) << name;
    EXPECT_FALSE(g.end_of_generation.empty());
    const loom::Loaded h = loom::load(hf);
    loom::nn::KVCache kv1(g.model->config(), 16), kv2(h.model->config(), 16);
    const auto a = g.model->logits(expected, 0, kv1, loom::Logits::all);
    const auto b = h.model->logits(expected, 0, kv2, loom::Logits::all);
    ASSERT_EQ(a.numel(), b.numel());
    double max_diff = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) max_diff = std::max(max_diff, double(std::abs(a.data()[i] - b.data()[i])));
    EXPECT_LT(max_diff, 1e-5) << name;
  }
}

}  // namespace

}  // namespace test_load
