// llama2.c checkpoints: stories260K against run.c's reference outputs, and broken files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <loom/io/llama2c.hpp>
#include <loom/model/model.hpp>

#include "fixtures.hpp"

namespace test_llama2c {

namespace {

loom::Model load_stories(const std::filesystem::path& p) {
  auto m = loom::io::load_llama2c(p);
  return loom::Model(std::move(m.config), std::move(m.weights));
}

std::int32_t argmax(const float* v, std::int64_t n) {
  return std::int32_t(std::max_element(v, v + n) - v);
}

TEST(Llama2c, Stories260KHeader) {
  LOOM_REQUIRE_FIXTURE(path, "stories260K/stories260K.bin");
  auto m = loom::io::load_llama2c(path);
  EXPECT_EQ(m.config.dim, 64);
  EXPECT_EQ(m.config.ffn_dim, 172);
  EXPECT_EQ(m.config.n_layers, 5);
  EXPECT_EQ(m.config.n_heads, 8);
  EXPECT_EQ(m.config.n_kv_heads, 4);
  EXPECT_EQ(m.config.vocab_size, 512);
  EXPECT_EQ(m.config.max_seq_len, 512);
  EXPECT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.weights.output.weight.data, m.weights.token_embedding.data);
}

TEST(Llama2c, Stories260KLogitsSteps0To7MatchRunC) {
  LOOM_REQUIRE_FIXTURE(path, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(ref_path, "stories260K/logits_steps_0-7.json");
  const auto ref = nlohmann::json::parse(loom::test::read_text(ref_path));
  const loom::Model model = load_stories(path);
  loom::nn::KVCache kv(model.config(), 512);
  loom::Activations act;
  for (std::size_t s = 0; s < ref["pos"].size(); ++s) {
    const std::int32_t tok = ref["input_token"][s];
    const auto logits = model.forward({&tok, 1}, std::int32_t(s), kv, act);
    const auto& expected = ref["logits"][s];
    ASSERT_EQ(logits.numel(), std::int64_t(expected.size()));
    double max_err = 0;
    for (std::size_t i = 0; i < expected.size(); ++i)
      max_err = std::max(max_err, std::abs(double(logits.data()[i]) - double(float(expected[i].get<double>()))));
    EXPECT_LT(max_err, 1e-4) << "step " << s;
    EXPECT_EQ(argmax(logits.data(), logits.numel()), ref["argmax"][s].get<int>()) << "step " << s;
  }
}

TEST(Llama2c, Stories260KGreedyMatchesRunC) {
  LOOM_REQUIRE_FIXTURE(path, "stories260K/stories260K.bin");
  LOOM_REQUIRE_FIXTURE(ref_path, "stories260K/greedy_tokens.json");
  const std::vector<std::int32_t> expected = nlohmann::json::parse(loom::test::read_text(ref_path));
  const loom::Model model = load_stories(path);
  loom::nn::KVCache kv(model.config(), 512);
  loom::Activations act;
  std::vector<std::int32_t> got;
  std::int32_t tok = 1;  // run.c encodes the empty prompt as [BOS]
  for (std::int32_t pos = 0; pos < std::int32_t(expected.size()); ++pos) {
    const auto logits = model.forward({&tok, 1}, pos, kv, act);
    tok = argmax(logits.data(), logits.numel());
    got.push_back(tok);
  }
  EXPECT_EQ(got, expected);
}

// ---- broken files -------------------------------------------------------------------------

std::filesystem::path write_temp(const std::string& name, const std::vector<char>& bytes) {
  const auto p = std::filesystem::temp_directory_path() / ("loom_test_llama2c_" + name);
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return p;
}

std::vector<char> header_bytes(std::vector<std::int32_t> h, std::size_t n_floats) {
  std::vector<char> b(h.size() * 4 + n_floats * 4, 0);
  std::memcpy(b.data(), h.data(), h.size() * 4);
  return b;
}

std::size_t floats_for(std::int64_t dim, std::int64_t hidden, std::int64_t L, std::int64_t heads, std::int64_t kvh,
                       std::int64_t vocab, std::int64_t seq, bool shared) {
  const std::int64_t kv = dim * kvh / heads, hs = dim / heads;
  return std::size_t(vocab * dim + L * dim * 2 + L * dim * dim * 2 + L * kv * dim * 2 + L * hidden * dim * 3 + dim +
                     seq * hs + (shared ? 0 : vocab * dim));
}

void expect_error(const std::filesystem::path& p, loom::ErrorKind kind, const std::string& needle) {
  try {
    loom::io::load_llama2c(p);
    FAIL() << "no error for " << p;
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Llama2c, TinyValidFileLoadsBothClassifierModes) {
  for (bool shared : {true, false}) {
    auto b = header_bytes({8, 16, 2, 2, 1, shared ? 10 : -10, 4}, floats_for(8, 16, 2, 2, 1, 10, 4, shared));
    auto m = loom::io::load_llama2c(write_temp(shared ? "shared" : "separate", b));
    EXPECT_EQ(m.config.vocab_size, 10);
    EXPECT_EQ(m.config.tied_embeddings, shared);
    EXPECT_EQ(m.weights.output.weight.data == m.weights.token_embedding.data, shared);
  }
}

TEST(Llama2c, TruncatedOrLyingFilesAreRejected) {
  const auto full = header_bytes({8, 16, 2, 2, 1, 10, 4}, floats_for(8, 16, 2, 2, 1, 10, 4, true));
  expect_error(write_temp("short", std::vector<char>(full.begin(), full.begin() + 20)), loom::ErrorKind::format,
               "28-byte header");
  expect_error(write_temp("trunc", std::vector<char>(full.begin(), full.end() - 4)), loom::ErrorKind::format,
               "freq_cis_imag");
  auto longer = full;
  longer.resize(full.size() + 8);
  expect_error(write_temp("long", longer), loom::ErrorKind::format, "left over");
  // Separate classifier claimed but missing.
  auto lying = full;
  std::int32_t neg = -10;
  std::memcpy(lying.data() + 20, &neg, 4);
  expect_error(write_temp("nocls", lying), loom::ErrorKind::format, "wcls");
  expect_error(write_temp("zero_dim", header_bytes({0, 16, 2, 2, 1, 10, 4}, 10)), loom::ErrorKind::format, "dim");
  expect_error(write_temp("neg_layers", header_bytes({8, 16, -2, 2, 1, 10, 4}, 10)), loom::ErrorKind::format,
               "n_layers");
  expect_error(write_temp("heads", header_bytes({8, 16, 2, 3, 1, 10, 4}, 10)), loom::ErrorKind::format, "n_heads");
  expect_error(write_temp("kvheads", header_bytes({8, 16, 2, 2, 3, 10, 4}, 10)), loom::ErrorKind::format,
               "n_kv_heads");
  expect_error(write_temp("huge", header_bytes({4096, 11008, 32, 32, 32, 32000, 2048}, 16)),
               loom::ErrorKind::format, "past the end");
  expect_error(write_temp("vocab0", header_bytes({8, 16, 2, 2, 1, 0, 4}, 10)), loom::ErrorKind::format, "vocab_size");
  expect_error("/nonexistent/loom/model.bin", loom::ErrorKind::io, "cannot open");
}

}  // namespace

}  // namespace test_llama2c
