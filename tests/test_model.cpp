// Whole-model properties on random models: batched prompt == token-by-token decoding, rewind,
// causality, thread independence, input validation; the nn blocks composed by hand
// (examples/compose.cpp) give Model's logits.
#include <gtest/gtest.h>

#include <cmath>
#include <loom/kernels/matmul.hpp>
#include <loom/model/convert.hpp>
#include <loom/model/model.hpp>

#include "random_model.hpp"

#define LOOM_COMPOSE_NO_MAIN
#include "../examples/compose.cpp"  // nn blocks composed by hand, with random weights

namespace test_model {

namespace {

using loom::Config;

std::vector<Config> variants() {
  std::vector<Config> v;
  Config llama = loom::test::llama_config();
  v.push_back(llama);
  Config qwen = llama;  // q/k/v biases, interleaved RoPE, partial rotary
  qwen.qkv_bias = true;
  qwen.rope_layout = loom::RopeLayout::interleaved;
  qwen.rope_dim = 4;
  v.push_back(qwen);
  Config mistral = llama;  // sliding window, multi-query
  mistral.sliding_window = 4;
  mistral.n_kv_heads = 1;
  v.push_back(mistral);
  v.push_back(loom::test::gpt2_config());
  Config alibi = loom::test::gpt2_config();
  alibi.architecture = "alibi";
  alibi.position = loom::PositionKind::alibi;
  alibi.activation = loom::Activation::gelu_erf;
  v.push_back(alibi);
  Config sinus = alibi;
  sinus.position = loom::PositionKind::sinusoidal;
  v.push_back(sinus);
  return v;
}

double max_rel_diff(const float* a, const float* b, std::int64_t n) {
  double scale = 1e-6, diff = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    scale = std::max(scale, double(std::abs(b[i])));
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
  }
  return diff / scale;
}

const std::vector<std::int32_t> kTokens{5, 17, 3, 96, 0, 42, 42, 7, 11, 60, 2};

TEST(Model, BatchedPromptEqualsTokenByTokenDecoding) {
  for (const Config& c : variants()) {
    for (loom::DType t : {loom::DType::f32, loom::DType::f16}) {
      for (loom::DType kv_type : {loom::DType::f32, loom::DType::f16}) {
        const loom::Model m = loom::test::random_model(c, 3, t);
        loom::nn::KVCache kv1(c, 32, kv_type), kv2(c, 32, kv_type);
        const auto all = m.logits(kTokens, 0, kv1, loom::Logits::all);
        ASSERT_EQ(all.dim(0), std::int64_t(kTokens.size()));
        for (std::size_t i = 0; i < kTokens.size(); ++i) {
          const auto one = m.logits({&kTokens[i], 1}, std::int32_t(i), kv2);
          EXPECT_LT(max_rel_diff(one.data(), all.row(std::int64_t(i)), c.vocab_size), 1e-4)
              << c.architecture << " weights " << loom::to_string(t) << " KV cache " << loom::to_string(kv_type)
              << " position " << i;
        }
        EXPECT_EQ(kv1.size(), std::int32_t(kTokens.size()));
        EXPECT_EQ(kv2.size(), std::int32_t(kTokens.size()));
      }
    }
  }
}

TEST(Model, F16CacheLogitsStayCloseToF32Cache) {
  // An f16 cache rounds every key and value by up to 2^-11 of itself. Attention averages the
  // values and the residual stream carries the rest unrounded, so the logits must move by less
  // than rounding them to f16 would: 2^-11 of the largest logit (measured: 4-20 times less).
  // Something else (a key read as a value, a wrong position) moves them by far more.
  for (const Config& c : variants()) {
    const loom::Model m = loom::test::random_model(c, 7);
    loom::nn::KVCache kv32(c, 32), kv16(c, 32, loom::DType::f16);
    const auto a = m.logits(kTokens, 0, kv32, loom::Logits::all);
    const auto b = m.logits(kTokens, 0, kv16, loom::Logits::all);
    double diff = 0, scale = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) {
      diff = std::max(diff, double(std::abs(a.data()[i] - b.data()[i])));
      scale = std::max(scale, double(std::abs(a.data()[i])));
    }
    EXPECT_GT(diff, 0.0) << c.architecture << ": the f16 cache rounds nothing?";
    EXPECT_LT(diff, std::ldexp(scale, -11)) << c.architecture << " (largest logit " << scale << ")";
  }
}

TEST(Model, RewindThenRedecodeReproducesLogits) {
  for (const Config& c : variants()) {
    const loom::Model m = loom::test::random_model(c, 4);
    loom::nn::KVCache kv(c, 32);
    const auto all = m.logits(kTokens, 0, kv, loom::Logits::all);
    kv.rewind(4);
    const std::span<const std::int32_t> rest(kTokens.begin() + 4, kTokens.end());
    const auto again = m.logits(rest, 4, kv, loom::Logits::all);
    for (std::int64_t i = 0; i < again.dim(0); ++i)
      EXPECT_LT(max_rel_diff(again.row(i), all.row(i + 4), c.vocab_size), 1e-5) << c.architecture;
    // Different tokens after the rewind point give different logits there but the same before.
    kv.rewind(6);
    const std::int32_t other = 1;
    const auto changed = m.logits({&other, 1}, 6, kv);
    EXPECT_GT(max_rel_diff(changed.data(), all.row(6), c.vocab_size), 1e-3);
  }
}

TEST(Model, CausalityLaterTokensNeverChangeEarlierLogits) {
  for (const Config& c : variants()) {
    const loom::Model m = loom::test::random_model(c, 5);
    loom::nn::KVCache kv(c, 32);
    const auto a = m.logits(kTokens, 0, kv, loom::Logits::all);
    auto changed = kTokens;
    changed.back() = 1;
    kv.clear();
    const auto b = m.logits(changed, 0, kv, loom::Logits::all);
    const std::int64_t n = std::int64_t(kTokens.size());
    for (std::int64_t i = 0; i + 1 < n; ++i)
      for (std::int64_t j = 0; j < c.vocab_size; ++j) ASSERT_EQ(a.row(i)[j], b.row(i)[j]) << c.architecture;
    EXPECT_GT(max_rel_diff(a.row(n - 1), b.row(n - 1), c.vocab_size), 1e-3);
  }
}

TEST(Model, LogitsDoNotDependOnThreadCount) {
  for (const Config& c : variants()) {
    for (loom::DType kv_type : {loom::DType::f32, loom::DType::f16}) {
      const loom::Model m = loom::test::random_model(c, 6);
      loom::kernels::ThreadPool p1(1), p2(2), p3(3);
      loom::nn::KVCache kv(c, 32, kv_type);
      const auto a = m.logits(kTokens, 0, kv, loom::Logits::all, &p1);
      kv.clear();
      const auto b = m.logits(kTokens, 0, kv, loom::Logits::all, &p2);
      kv.clear();
      const auto d = m.logits(kTokens, 0, kv, loom::Logits::all, &p3);
      for (std::int64_t i = 0; i < a.numel(); ++i) {
        ASSERT_EQ(a.data()[i], b.data()[i]) << c.architecture << " KV cache " << loom::to_string(kv_type);
        ASSERT_EQ(a.data()[i], d.data()[i]) << c.architecture << " KV cache " << loom::to_string(kv_type);
      }
    }
  }
}

// A model converted to a quantized type computes with the rounded weights in place: its batched
// prompt (more rows than the integer path takes: dequantized blocks and GEMM) gives the logits of
// the same weights dequantized to f32, up to float noise, and its decoding (integer dot products
// on 8-bit activations) within the activations' rounding. Width 256, so IQ4_XS's super-blocks fit
// every matrix (the other types' 32-weight blocks too).
TEST(Model, QuantizedWeightsComputeLikeTheirDequantizedCopy) {
  Config c = loom::test::llama_config_256();
  c.max_seq_len = 160;  // room for a prompt past the decode kernels' limit at every level (Q6_K: 128 below AVX-512)
  const loom::Model src = loom::test::random_model(c, 9);
  for (loom::DType t : {loom::DType::q8_0, loom::DType::q4_0, loom::DType::iq4_nl, loom::DType::iq4_xs, loom::DType::q4_k,
                        loom::DType::q5_k, loom::DType::q6_k}) {
    const loom::Model q(c, loom::convert_weights(src.weights(), t));
    const loom::Model f(c, loom::convert_weights(q.weights(), loom::DType::f32));
    ASSERT_EQ(q.weights().layers[0].w_down.weight.dtype, t);
    ASSERT_EQ(q.weights().token_embedding.dtype, t);
    std::vector<std::int32_t> prompt;
    while (std::int64_t(prompt.size()) <= loom::kernels::quant_dot_max_rows(t)) prompt.insert(prompt.end(), kTokens.begin(), kTokens.end());
    loom::nn::KVCache k1(c, c.max_seq_len), k2(c, c.max_seq_len);
    const auto pq = q.logits(prompt, 0, k1, loom::Logits::all), pf = f.logits(prompt, 0, k2, loom::Logits::all);
    const double prompt_diff = max_rel_diff(pq.data(), pf.data(), pq.numel());
    // The integer GEMM (AVX-512) rounds activations per 32 values, as the decode dots do; the
    // other levels dequantize the weights for the f32 GEMM, which matches the f32 copy.
    EXPECT_LT(prompt_diff, loom::kernels::detail::int8_gemm(t) ? 0.05 : 1e-4) << loom::to_string(t);
    loom::nn::KVCache k3(c, 64), k4(c, 64);
    double decode_diff = 0;
    for (std::size_t i = 0; i < kTokens.size(); ++i) {
      const auto dq = q.logits({&kTokens[i], 1}, std::int32_t(i), k3), df = f.logits({&kTokens[i], 1}, std::int32_t(i), k4);
      decode_diff = std::max(decode_diff, max_rel_diff(dq.data(), df.data(), c.vocab_size));
    }
    // Activations rounded per 32 values (q8_grouped) or, for the k-quants, per 256 with one scale (q8_k,
    // as llama.cpp's): measured 3.0-3.6 % and 5.1-5.5 % of the largest logit.
    EXPECT_LT(decode_diff, loom::kernels::q8_grouped_activations(t) ? 0.05 : 0.08) << loom::to_string(t);
    std::printf("  %s: prompt %.3g, decode %.3g of the largest logit from the f32 copy\n",
                std::string(loom::to_string(t)).c_str(), prompt_diff, decode_diff);
  }
}

TEST(Model, RejectsBadTokensAndPositions) {
  const Config c = loom::test::llama_config();
  const loom::Model m = loom::test::random_model(c);
  loom::nn::KVCache kv(c, 8);
  auto expect = [&](auto&& f, loom::ErrorKind kind, const char* needle) {
    try {
      f();
      FAIL() << "no error";
    } catch (const loom::Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::vector<std::int32_t> too_big{1, c.vocab_size}, negative{-1};
  expect([&] { m.logits(too_big, 0, kv); }, loom::ErrorKind::invalid_argument, "token id 97 at index 1");
  expect([&] { m.logits(negative, 0, kv); }, loom::ErrorKind::invalid_argument, "token id -1");
  expect([&] { m.logits({}, 0, kv); }, loom::ErrorKind::invalid_argument, "at least one token");
  const std::vector<std::int32_t> nine(9, 1);
  expect([&] { m.logits(nine, 0, kv); }, loom::ErrorKind::capacity, "context size 8");
  EXPECT_EQ(kv.size(), 0);  // nothing was written
  const std::vector<std::int32_t> three(3, 1);
  expect([&] { m.logits(three, 1, kv); }, loom::ErrorKind::invalid_argument, "position 1");
  // Learned positions cannot go past the table.
  Config g = loom::test::gpt2_config();
  g.max_seq_len = 4;
  const loom::Model gm = loom::test::random_model(g);
  loom::nn::KVCache gkv(g, 8);
  const std::vector<std::int32_t> five(5, 1);
  expect([&] { gm.logits(five, 0, gkv); }, loom::ErrorKind::capacity, "learned positions");
}

TEST(Model, RejectsWeightsThatDoNotMatchTheConfig) {
  Config c = loom::test::llama_config();
  const loom::Model m = loom::test::random_model(c);
  loom::Weights w = m.weights();
  w.layers[1].wk.weight.shape = loom::Shape{8, 32};
  try {
    loom::Model bad(c, w);
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layers.1.wk.weight': expected shape [16, 32], got [8, 32]"), std::string::npos)
        << e.what();
  }
  c.n_kv_heads = 3;  // does not divide 4 heads
  EXPECT_THROW(loom::Model(c, m.weights()), loom::Error);
}

/// examples/compose.cpp builds a model from nn blocks without loom::Model; the same weights put
/// into a Config + Weights and run by Model must give the same logits at every position.
TEST(Model, HandComposedBlocksGiveModelsLogits) {
  const compose::Parameters p = compose::random_parameters(7);
  Config c;
  c.vocab_size = compose::vocab;
  c.dim = compose::dim;
  c.n_layers = compose::layers;
  c.n_heads = compose::heads;
  c.n_kv_heads = compose::kv_heads;
  c.head_dim = compose::head_dim;
  c.ffn_dim = compose::hidden;
  c.max_seq_len = 32;
  c.norm = loom::NormKind::rms_norm;
  c.norm_eps = 1e-5f;
  c.position = loom::PositionKind::rope;
  c.rope_layout = loom::RopeLayout::interleaved;
  c.activation = loom::Activation::silu;
  c.gated_ffn = true;
  loom::Weights w;
  w.token_embedding = p.embedding;
  for (const compose::Layer& l : p.layer)
    w.layers.push_back({l.attn_norm, {}, l.q, l.k, l.v, l.out, l.ffn_norm, l.gate, l.up, l.down});
  w.final_norm = p.final_norm;
  w.output = loom::nn::Linear{p.embedding, {}};
  const loom::Model model(c, w);

  const std::vector<std::int32_t> tokens{1, 17, 42, 5, 79, 0, 33};
  loom::nn::KVCache kv(c, 32);
  const loom::Tensor<float> expected = model.logits(tokens, 0, kv, loom::Logits::all);
  const std::vector<float> composed = compose::forward(p, tokens);
  ASSERT_EQ(std::int64_t(composed.size()), expected.numel());
  EXPECT_LT(max_rel_diff(composed.data(), expected.data(), expected.numel()), 1e-6);
  double spread = 0;  // the logits are not all alike (random weights did something)
  for (int i = 1; i < compose::vocab; ++i) spread = std::max(spread, double(std::abs(composed[std::size_t(i)] - composed[0])));
  EXPECT_GT(spread, 0.1);
}

}  // namespace

}  // namespace test_model
