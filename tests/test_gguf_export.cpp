// GGUF writing: the writer's output read back by GgufFile, and models exported from Hugging Face
// checkpoints read back by loom with the same logits and tokenization.
#include <gtest/gtest.h>

#include <loom/io/gguf_export.hpp>
#include <loom/io/gguf_writer.hpp>
#include <loom/load.hpp>
#include <loom/model/convert.hpp>

#include "fixtures.hpp"
#include "random_model.hpp"

namespace {

namespace fs = std::filesystem;

fs::path temp(const std::string& name) { return fs::temp_directory_path() / ("loom_test_gguf_export_" + name); }

TEST(GgufWriter, EveryValueTypeAndTensorsRoundTrip) {
  loom::io::GgufWriter w(64);
  w.add_u8("a.u8", 200);
  w.add_i8("a.i8", -100);
  w.add_u16("a.u16", 60000);
  w.add_i16("a.i16", -30000);
  w.add_u32("a.u32", 4000000000u);
  w.add_i32("a.i32", -2000000000);
  w.add_u64("a.u64", 1ull << 40);
  w.add_i64("a.i64", -(1ll << 40));
  w.add_f32("a.f32", 0.25f);
  w.add_f64("a.f64", 1e300);
  w.add_bool("a.bool", true);
  w.add_string("a.str", "héllo");
  w.add_strings("a.strs", {"x", "", "yz"});
  w.add_f32s("a.f32s", {1.5f, -2.0f});
  w.add_i32s("a.i32s", {7, -8, 9});
  std::vector<float> m{1, 2, 3, 4, 5, 6};
  std::vector<std::byte> bytes(24);
  std::memcpy(bytes.data(), m.data(), 24);
  w.add_tensor("m", loom::DType::f32, {2, 3}, bytes);
  std::vector<float> q(64);
  for (int i = 0; i < 64; ++i) q[i] = float(i - 32) / 8.0f;
  std::vector<std::byte> qb(2 * sizeof(loom::block_q8_0));
  loom::kernels::quantize_row(loom::DType::q8_0, q.data(), qb.data(), 64);
  w.add_tensor("q", loom::DType::q8_0, {1, 64}, qb);
  EXPECT_THROW(w.add_u32("a.u32", 1), loom::Error);                          // duplicate key
  EXPECT_THROW(w.add_tensor("m", loom::DType::f32, {2, 3}, bytes), loom::Error);  // duplicate tensor
  EXPECT_THROW(w.add_tensor("bad", loom::DType::f32, {2, 4}, bytes), loom::Error);  // size mismatch
  EXPECT_THROW(loom::io::GgufWriter(48), loom::Error);
  const fs::path p = temp("values.gguf");
  w.write(p);

  const loom::io::GgufFile f(p);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.get<std::uint32_t>("a.u32"), 4000000000u);
  EXPECT_EQ(f.get<std::int64_t>("a.i8"), -100);
  EXPECT_EQ(f.get<std::int64_t>("a.u16"), 60000);
  EXPECT_EQ(f.get<std::int64_t>("a.i16"), -30000);
  EXPECT_EQ(f.get<std::int64_t>("a.u8"), 200);
  EXPECT_EQ(f.get<std::int32_t>("a.i32"), -2000000000);
  EXPECT_EQ(f.get<std::uint64_t>("a.u64"), 1ull << 40);
  EXPECT_EQ(f.get<std::int64_t>("a.i64"), -(1ll << 40));
  EXPECT_EQ(f.get<float>("a.f32"), 0.25f);
  EXPECT_EQ(f.get<double>("a.f64"), 1e300);
  EXPECT_TRUE(f.get<bool>("a.bool"));
  EXPECT_EQ(f.get<std::string>("a.str"), "héllo");
  EXPECT_EQ(f.at("a.strs").as_strings(), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f.at("a.f32s").as_f32s(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.at("a.i32s").as_i32s(), (std::vector<std::int32_t>{7, -8, 9}));
  const auto* mt = f.find_tensor("m");
  ASSERT_NE(mt, nullptr);
  EXPECT_EQ(mt->ref.shape, (loom::Shape{2, 3}));
  EXPECT_EQ(reinterpret_cast<const float*>(mt->ref.data)[5], 6.0f);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(mt->ref.data) % 64, 0u);
  const auto* qt = f.find_tensor("q");
  ASSERT_NE(qt, nullptr);
  EXPECT_EQ(qt->ref.dtype, loom::DType::q8_0);
  EXPECT_EQ(std::memcmp(qt->ref.data, qb.data(), qb.size()), 0);
}

struct Tiny {
  const char* name;
  const char* tokenizer;
};
const Tiny kTiny[] = {{"tiny-llama", "tokenizers/hf/llama2-tokenizer.nbsp-restored.json"},
                      {"tiny-gpt2", "tokenizers/hf/gpt2-tokenizer.json"}};
const std::vector<std::int32_t> kTokens{1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889};

double max_diff(const loom::Model& a, const loom::Model& b) {
  loom::KVCache k1(a.config(), 16), k2(b.config(), 16);
  const auto x = a.logits(kTokens, 0, k1, loom::Logits::all), y = b.logits(kTokens, 0, k2, loom::Logits::all);
  double m = 0;
  for (std::int64_t i = 0; i < x.numel(); ++i) m = std::max(m, double(std::abs(x.data()[i] - y.data()[i])));
  return m;
}

// The exported file read back gives the source's logits (f32: float noise; f16: f16 rounding),
// and a quantized export equals the same quantization done in memory, bit for bit.
TEST(GgufExport, HfCheckpointsRoundTripThroughGguf) {
  for (const Tiny& t : kTiny) {
    LOOM_REQUIRE_FIXTURE(hf, std::string("tiny-models/") + t.name + "/hf");
    LOOM_REQUIRE_FIXTURE(tok, t.tokenizer);
    const loom::Loaded src = loom::load(hf, tok);
    const loom::Config& c = src.model->config();
    for (loom::DType type : {loom::DType::f32, loom::DType::f16, loom::DType::q8_0, loom::DType::q4_0, loom::DType::q4_1,
                             loom::DType::q5_0, loom::DType::q5_1, loom::DType::iq4_nl, loom::DType::iq4_xs,
                             loom::DType::q4_k, loom::DType::q5_k, loom::DType::q6_k}) {
      const fs::path out = temp(std::string(t.name) + "." + std::string(loom::to_string(type)) + ".gguf");
      loom::io::write_gguf_model(out, c, src.model->weights(), &*src.tokenizer, {.type = type, .name = t.name, .chat_template = ""});
      const loom::Loaded back = loom::load(out);
      ASSERT_TRUE(back.tokenizer.has_value());
      const std::string text = "Hello world, this is a test. Ünïcödé 1234 <s>";
      EXPECT_EQ(back.tokenizer->encode(text, true), src.tokenizer->encode(text, true)) << t.name;
      const loom::Model in_memory(c, loom::convert_weights(src.model->weights(), type));
      const double vs_memory = max_diff(*back.model, in_memory), vs_source = max_diff(*back.model, *src.model);
      if (type == loom::DType::f32) {
        EXPECT_LT(vs_source, 1e-5) << t.name;
      }
      if (type == loom::DType::f16) {
        EXPECT_LT(vs_source, 5e-4) << t.name;
      }
      if (type == loom::DType::q8_0) {
        EXPECT_LT(vs_source, 0.03) << t.name;
      }  // (the logits have std ~0.16)
      EXPECT_LT(vs_memory, 1e-5) << t.name << " " << loom::to_string(type);
    }
  }
}

// The tiny checkpoints' 64-wide rows fall back to IQ4_NL under --type iq4_xs; a model whose
// matrices are whole 256-weight super-blocks writes IQ4_XS tensors, and reading them back gives
// the logits of the same quantization done in memory.
TEST(GgufExport, IQ4_XSTensorsRoundTrip) {
  const loom::Config c = loom::test::llama_config_256();
  const loom::Model src = loom::test::random_model(c, 11);
  const fs::path out = temp("iq4_xs.gguf");
  loom::io::write_gguf_model(out, c, src.weights(), nullptr, {.type = loom::DType::iq4_xs, .name = "random", .chat_template = ""});
  loom::io::GgufModel back = loom::io::load_gguf_model(out);
  EXPECT_EQ(back.weights.layers[1].wq.weight.dtype, loom::DType::iq4_xs);
  EXPECT_EQ(back.weights.layers[1].w_down.weight.dtype, loom::DType::iq4_xs);
  EXPECT_EQ(back.weights.output.weight.dtype, loom::DType::iq4_xs);
  const loom::Model read(std::move(back.config), std::move(back.weights));
  const loom::Model in_memory(c, loom::convert_weights(src.weights(), loom::DType::iq4_xs));
  const std::vector<std::int32_t> tokens{1, 200, 17, 299, 42, 5};
  loom::KVCache k1(c, 16), k2(c, 16);
  const auto x = read.logits(tokens, 0, k1, loom::Logits::all), y = in_memory.logits(tokens, 0, k2, loom::Logits::all);
  for (std::int64_t i = 0; i < x.numel(); ++i) ASSERT_NEAR(x.data()[i], y.data()[i], 1e-5) << i;
}

// Weights converted from a model stay valid after that model is gone: the model's f32 copies of
// small f16 vectors (norm scales) are owned through Weights::storage, not by the Model.
// (Regression: generate --quantize freed them; found by the AddressSanitizer CI stage.)
TEST(Convert, ConvertedWeightsOutliveTheSourceModel) {
  const auto demo = fs::path(LOOM_SOURCE_DIR) / "models" / "tiny-shakespeare";  // F16 norms
  const std::vector<std::int32_t> ids{1, 2, 3, 4};
  for (loom::DType type : {loom::DType::q8_0, loom::DType::f32}) {
    std::shared_ptr<const loom::Model> src = loom::load(demo).model;
    const loom::Config c = src->config();
    const auto converted = std::make_shared<const loom::Model>(c, loom::convert_weights(src->weights(), type));
    loom::KVCache k1(c, 8);
    const auto before = converted->logits(ids, 0, k1);
    ASSERT_EQ(src.use_count(), 1);
    src.reset();  // destroys the source Model
    loom::KVCache k2(c, 8);
    const auto after = converted->logits(ids, 0, k2);
    for (std::int64_t i = 0; i < before.numel(); ++i) ASSERT_EQ(before.data()[i], after.data()[i]);
  }
}

TEST(GgufExport, RejectsWhatItCannotWrite) {
  LOOM_REQUIRE_FIXTURE(hf, "tiny-models/tiny-llama/hf");
  const loom::Loaded src = loom::load(hf);
  loom::Config c = src.model->config();
  c.architecture = "falcon";
  EXPECT_THROW(loom::io::write_gguf_model(temp("bad.gguf"), c, src.model->weights(), nullptr), loom::Error);
  EXPECT_THROW(loom::convert_weights(src.model->weights(), loom::DType::q3_k), loom::Error);
}

}  // namespace
