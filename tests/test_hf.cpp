// Hugging Face checkpoints: safetensors (single and sharded), config.json / generation_config.json,
// and the tensor-name tables, on the tiny-models fixtures and on files built byte by byte.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <loom/io/hf_config.hpp>
#include <loom/io/hf_model.hpp>
#include <loom/io/safetensors.hpp>
#include <loom/model/model.hpp>
#include <string>
#include <vector>


#include "fixtures.hpp"

namespace test_hf {

namespace fs = std::filesystem;
using json = nlohmann::json;
using loom::ErrorKind;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("loom_test_hf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string u64le(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

/// A safetensors file from a raw header text and data bytes (no padding added).
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

/// Independent IEEE half → float (not loom's), for checking decoded values.
float half_to_float(std::uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp(double(mant), -24);
  else if (exp == 31)
    v = mant ? NAN : INFINITY;
  else
    v = std::ldexp(double(mant | 0x400), exp - 25);
  return float(sign ? -v : v);
}

/// One tensor of a synthetic checkpoint.
struct Spec {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string dtype = "F32";  // F32, F16 or BF16
};

/// Deterministic values: element k of tensor t is (t*1000 + k) / 4096 (exact in f16 for small k).
float synthetic_value(std::size_t t, std::size_t k) { return float((t * 37 + k) % 2048) / 4096.0f; }

/// Writes a valid safetensors file holding `specs` (values from synthetic_value), header padded to
/// a multiple of 8 like the Python writer.
void write_safetensors(const fs::path& p, const std::vector<Spec>& specs, std::size_t first_index = 0) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const Spec& s = specs[t];
    std::int64_t n = 1;
    for (auto d : s.shape) n *= d;
    const std::size_t begin = data.size();
    for (std::int64_t k = 0; k < n; ++k) {
      const float v = synthetic_value(first_index + t, std::size_t(k));
      if (s.dtype == "F16") {
        const std::uint16_t h = loom::detail::f32_to_f16_scalar(v);
        data.append(reinterpret_cast<const char*>(&h), 2);
      } else if (s.dtype == "BF16") {
        const std::uint16_t h = std::uint16_t(loom::detail::float_to_bits(v) >> 16);  // exact for these values
        data.append(reinterpret_cast<const char*>(&h), 2);
      } else {
        data.append(reinterpret_cast<const char*>(&v), 4);
      }
    }
    header[s.name] = {{"dtype", s.dtype}, {"shape", s.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  write_bytes(p, safetensors_bytes(text, data));
}

/// Runs `f`, expecting loom::Error of `kind` whose message contains every string of `parts`.
void expect_error(const std::function<void()>& f, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected loom::Error(" << loom::to_string(kind) << ")";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "'" << p << "' not in: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
  }
}

/// Writes a safetensors file whose header is `header` (as given) and whose data is `data_size` zero bytes,
/// then expects opening it to fail.
void expect_bad_header(const std::string& header, std::size_t data_size, ErrorKind kind,
                       std::initializer_list<std::string> parts) {
  TempDir dir;
  const fs::path p = dir / "model.safetensors";
  write_bytes(p, safetensors_bytes(header, std::string(data_size, '\0')));
  expect_error([&] { loom::io::SafetensorsFile f(p); }, kind, parts);
}

/// The tensors of a tiny LLaMA: vocab 16, hidden 8, 1 layer, 2 heads, 1 KV head, head_dim 4, ffn 12.
std::vector<Spec> tiny_llama_specs(std::int64_t hidden = 8) {
  const std::int64_t q = 8, kv = 4, f = 12, v = 16;
  return {
      {"model.embed_tokens.weight", {v, hidden}, "F16"},
      {"model.layers.0.input_layernorm.weight", {hidden}},
      {"model.layers.0.self_attn.q_proj.weight", {q, hidden}},
      {"model.layers.0.self_attn.k_proj.weight", {kv, hidden}},
      {"model.layers.0.self_attn.v_proj.weight", {kv, hidden}},
      {"model.layers.0.self_attn.o_proj.weight", {hidden, q}},
      {"model.layers.0.post_attention_layernorm.weight", {hidden}},
      {"model.layers.0.mlp.gate_proj.weight", {f, hidden}},
      {"model.layers.0.mlp.up_proj.weight", {f, hidden}},
      {"model.layers.0.mlp.down_proj.weight", {hidden, f}},
      {"model.norm.weight", {hidden}},
      {"lm_head.weight", {v, hidden}},
  };
}

json tiny_llama_config() {
  return json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"vocab_size", 16},
              {"hidden_size", 8},
              {"num_hidden_layers", 1},
              {"num_attention_heads", 2},
              {"num_key_value_heads", 1},
              {"intermediate_size", 12},
              {"max_position_embeddings", 32},
              {"rms_norm_eps", 1e-6},
              {"rope_theta", 10000.0},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"tie_word_embeddings", false}};
}

void write_json(const fs::path& p, const json& j) { write_bytes(p, j.dump(2)); }

loom::Config convert(const json& j) { return loom::io::to_config(loom::io::parse_hf_config(j, "test/config.json")); }

bool inside(const loom::io::SafetensorsFile& f, const loom::TensorRef& t) {
  const std::byte* b = f.mapping().data();
  return t.data >= b && t.data + t.nbytes <= b + f.mapping().size();
}

/// The raw bytes of tensor `name` in a safetensors file, found by an independent header parse.
std::string raw_tensor_bytes(const fs::path& p, const std::string& name, std::string* dtype = nullptr) {
  const std::string file = loom::test::read_text(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(file[std::size_t(i)]);
  const json h = json::parse(file.substr(8, n));
  const auto& e = h.at(name);
  if (dtype) *dtype = e.at("dtype").get<std::string>();
  const std::uint64_t b = e.at("data_offsets")[0], en = e.at("data_offsets")[1];
  return file.substr(8 + n + b, en - b);
}

// ---------------------------------------------------------------------------------------------
// Fixtures: tiny-gpt2 and tiny-llama

TEST(HfModel, TinyGpt2LoadsWithDocumentedShapes) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-gpt2/hf");
  const auto m = loom::io::load_hf_model(dir);
  const loom::Config& c = m.config;
  EXPECT_EQ(c.architecture, "gpt2");
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.ffn_dim, 256);  // n_inner null ⇒ 4·n_embd
  EXPECT_EQ(c.max_seq_len, 128);
  EXPECT_EQ(c.norm, loom::NormKind::layer_norm);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.position, loom::PositionKind::learned);
  EXPECT_EQ(c.activation, loom::Activation::gelu_tanh);
  EXPECT_FALSE(c.gated_ffn);
  EXPECT_TRUE(c.qkv_bias && c.out_bias && c.ffn_bias);
  EXPECT_TRUE(c.tied_embeddings);
  ASSERT_EQ(m.special_tokens.eos, std::vector<std::int32_t>{50256});
  EXPECT_EQ(m.special_tokens.bos_id(), 50256);
  EXPECT_FALSE(m.has_generation_config);

  const loom::Weights& w = m.weights;
  ASSERT_EQ(m.files.size(), 1u);
  EXPECT_EQ(w.token_embedding.dtype, loom::DType::f16);
  EXPECT_EQ(w.token_embedding.shape, (loom::Shape{50257, 64}));
  EXPECT_TRUE(inside(*m.files[0], w.token_embedding)) << "F16 embedding must be used in place";
  EXPECT_EQ(w.output.weight.data, w.token_embedding.data);  // tied
  EXPECT_EQ(w.position_embedding.dtype, loom::DType::f32);
  EXPECT_EQ(w.position_embedding.shape, (loom::Shape{128, 64}));
  ASSERT_EQ(w.layers.size(), 2u);
  for (const auto& l : w.layers) {
    EXPECT_TRUE(l.wqkv.in_out && l.wo.in_out && l.w_up.in_out && l.w_down.in_out);
    EXPECT_EQ(l.wqkv.weight.shape, (loom::Shape{64, 192}));
    EXPECT_EQ(l.wqkv.bias.shape, (loom::Shape{192}));
    EXPECT_EQ(l.w_up.weight.shape, (loom::Shape{64, 256}));
    EXPECT_EQ(l.w_down.weight.shape, (loom::Shape{256, 64}));
    EXPECT_TRUE(l.wq.empty());
    EXPECT_FALSE(l.attn_norm.bias.empty());
    EXPECT_TRUE(inside(*m.files[0], l.wqkv.weight));
  }
  EXPECT_FALSE(w.final_norm.bias.empty());
  EXPECT_EQ(w.storage.size(), 1u);
  EXPECT_EQ(m.files[0]->copied_tensors(), 0u);
}

TEST(HfModel, TinyLlamaLoadsWithDocumentedShapes) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-llama/hf");
  const auto m = loom::io::load_hf_model(dir);
  const loom::Config& c = m.config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.max_seq_len, 256);
  EXPECT_EQ(c.norm, loom::NormKind::rms_norm);
  EXPECT_EQ(c.position, loom::PositionKind::rope);
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::half_split);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rope_scaling.kind, loom::RopeScalingKind::none);
  EXPECT_EQ(c.activation, loom::Activation::silu);
  EXPECT_TRUE(c.gated_ffn);
  EXPECT_FALSE(c.qkv_bias || c.out_bias || c.ffn_bias);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(m.special_tokens.bos, std::vector<std::int32_t>{1});
  EXPECT_EQ(m.special_tokens.eos, std::vector<std::int32_t>{2});

  const loom::Weights& w = m.weights;
  EXPECT_EQ(w.token_embedding.dtype, loom::DType::f16);
  EXPECT_EQ(w.token_embedding.shape, (loom::Shape{32000, 64}));
  EXPECT_TRUE(inside(*m.files[0], w.token_embedding));
  EXPECT_EQ(w.output.weight.dtype, loom::DType::f16);
  EXPECT_EQ(w.output.weight.shape, (loom::Shape{32000, 64}));
  EXPECT_NE(w.output.weight.data, w.token_embedding.data);  // untied
  EXPECT_TRUE(inside(*m.files[0], w.output.weight));
  EXPECT_TRUE(w.position_embedding.empty());
  for (const auto& l : w.layers) {
    EXPECT_TRUE(l.wqkv.empty());
    EXPECT_EQ(l.wq.weight.shape, (loom::Shape{64, 64}));
    EXPECT_EQ(l.wk.weight.shape, (loom::Shape{32, 64}));
    EXPECT_EQ(l.wv.weight.shape, (loom::Shape{32, 64}));
    EXPECT_EQ(l.wo.weight.shape, (loom::Shape{64, 64}));
    EXPECT_EQ(l.w_gate.weight.shape, (loom::Shape{172, 64}));
    EXPECT_EQ(l.w_down.weight.shape, (loom::Shape{64, 172}));
    EXPECT_FALSE(l.wq.in_out);
    EXPECT_TRUE(l.wq.bias.empty());
    EXPECT_EQ(l.wq.weight.dtype, loom::DType::f32);
  }
}

TEST(HfModel, TinyLlamaValuesEqualIndependentlyDecodedBytes) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-llama/hf");
  const auto m = loom::io::load_hf_model(dir);
  const fs::path file = dir / "model.safetensors";

  // An F32 matrix: k_proj of layer 1, [32, 64].
  std::string dtype;
  const std::string k = raw_tensor_bytes(file, "model.layers.1.self_attn.k_proj.weight", &dtype);
  ASSERT_EQ(dtype, "F32");
  ASSERT_EQ(k.size(), 32u * 64u * 4u);
  const auto kt = m.weights.layers[1].wk.weight.as<float>();
  for (int r : {0, 5, 31})
    for (int col : {0, 17, 63}) {
      float expected;
      std::memcpy(&expected, k.data() + (std::size_t(r) * 64 + std::size_t(col)) * 4, 4);
      EXPECT_EQ(kt(r, col), expected) << r << "," << col;
    }
  EXPECT_NE(kt(0, 0), 0.0f);

  // An F16 matrix: the embedding, [32000, 64].
  const std::string e = raw_tensor_bytes(file, "model.embed_tokens.weight", &dtype);
  ASSERT_EQ(dtype, "F16");
  const auto et = m.weights.token_embedding.as<loom::f16>();
  for (int r : {0, 1, 15043, 31999})
    for (int col : {0, 7, 63}) {
      const std::size_t at = (std::size_t(r) * 64 + std::size_t(col)) * 2;
      const std::uint16_t bits = std::uint16_t(std::uint8_t(e[at]) | (std::uint8_t(e[at + 1]) << 8));
      EXPECT_EQ(et(r, col).bits, bits);
      EXPECT_EQ(loom::to_float(et(r, col)), half_to_float(bits));
    }

  // Norm weights are documented as 1.
  const auto norm = m.weights.final_norm.weight.as<float>();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(norm(i), 1.0f);
}

TEST(HfModel, TinyGpt2ValuesEqualIndependentlyDecodedBytes) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-gpt2/hf");
  const auto m = loom::io::load_hf_model(dir);
  const fs::path file = dir / "model.safetensors";
  // The file uses the "transformer." prefix (as save_pretrained writes it).
  const std::string b = raw_tensor_bytes(file, "transformer.h.0.attn.c_attn.bias");
  const auto bt = m.weights.layers[0].wqkv.bias.as<float>();
  ASSERT_EQ(b.size(), 192u * 4u);
  for (int i : {0, 63, 64, 191}) {
    float expected;
    std::memcpy(&expected, b.data() + std::size_t(i) * 4, 4);
    EXPECT_EQ(bt(i), expected);
  }
  // Conv1D weight [in=64, out=256]: element (in 3, out 200).
  const std::string fc = raw_tensor_bytes(file, "transformer.h.1.mlp.c_fc.weight");
  float expected;
  std::memcpy(&expected, fc.data() + (3 * 256 + 200) * 4, 4);
  EXPECT_EQ(m.weights.layers[1].w_up.weight.as<float>()(3, 200), expected);
}

TEST(HfModel, AcceptsSafetensorsFilePath) {
  LOOM_REQUIRE_FIXTURE(file, "tiny-models/tiny-llama/hf/model.safetensors");
  const auto m = loom::io::load_hf_model(file);
  EXPECT_EQ(m.config.dim, 64);
  EXPECT_EQ(m.weights.layers.size(), 2u);
}

TEST(HfModel, SafetensorsFileOnFixture) {
  LOOM_REQUIRE_FIXTURE(file, "tiny-models/tiny-llama/hf/model.safetensors");
  const loom::io::SafetensorsFile f(file);
  EXPECT_EQ(f.tensors().size(), 21u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.data_offset() % 8, 0u);
  EXPECT_NE(f.find("lm_head.weight"), nullptr);
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { (void)f.at("nope"); }, ErrorKind::format, {"nope", "model.safetensors"});
}

TEST(HfModel, ConfigMismatchNamesTensorAndShapes) {
  LOOM_REQUIRE_FIXTURE(src, "tiny-models/tiny-llama/hf");
  TempDir dir;
  json cfg = json::parse(loom::test::read_text(src / "config.json"));
  cfg["hidden_size"] = 32;  // tensors are 64 wide; head_dim 16 given explicitly
  write_json(dir / "config.json", cfg);
  fs::create_symlink(fs::absolute(src / "model.safetensors"), dir / "model.safetensors");
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format,
               {"model.embed_tokens.weight", "[32000, 32]", "[32000, 64]"});
}

TEST(HfModel, ConfigWithMoreLayersReportsMissingTensor) {
  LOOM_REQUIRE_FIXTURE(src, "tiny-models/tiny-gpt2/hf");
  TempDir dir;
  json cfg = json::parse(loom::test::read_text(src / "config.json"));
  cfg["n_layer"] = 3;
  write_json(dir / "config.json", cfg);
  fs::create_symlink(fs::absolute(src / "model.safetensors"), dir / "model.safetensors");
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format, {"missing tensor", "h.2.ln_1.weight"});
}

/// Runs the 9 reference tokens and compares every position's logits with llama.cpp's.
void check_reference_logits(const fs::path& model_dir, const fs::path& ref_path, double tol) {
  auto m = loom::io::load_hf_model(model_dir);
  const json ref = json::parse(loom::test::read_text(ref_path));
  const auto tokens = ref.at("tokens").get<std::vector<std::int32_t>>();
  loom::Model model(std::move(m.config), std::move(m.weights));
  loom::nn::KVCache kv(model.config(), 128);
  const loom::Tensor<float> logits = model.logits(tokens, 0, kv, loom::Logits::all);
  ASSERT_EQ(logits.dim(0), std::int64_t(tokens.size()));
  ASSERT_EQ(logits.dim(1), model.config().vocab_size);
  const auto& rl = ref.at("logits");
  ASSERT_EQ(rl.size(), tokens.size());
  for (std::size_t p = 0; p < tokens.size(); ++p) {
    ASSERT_EQ(rl[p].size(), std::size_t(model.config().vocab_size));
    double max_err = 0;
    std::int64_t best = 0, ref_best = 0;
    for (std::int64_t v = 0; v < logits.dim(1); ++v) {
      const float r = float(rl[p][std::size_t(v)].get<double>());
      max_err = std::max(max_err, double(std::fabs(logits(p, v) - r)));
      if (logits(p, v) > logits(p, best)) best = v;
      if (r > float(rl[p][std::size_t(ref_best)].get<double>())) ref_best = v;
    }
    EXPECT_LE(max_err, tol) << "position " << p;
    EXPECT_EQ(best, ref_best) << "argmax at position " << p;
    std::printf("  position %zu: max |logit error| = %.3g\n", p, max_err);
  }
}

TEST(HfModel, TinyLlamaReferenceLogits) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-llama/hf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-llama/reference_logits.json");
  check_reference_logits(dir, ref, 2e-4);
}

TEST(HfModel, TinyGpt2ReferenceLogits) {
  LOOM_REQUIRE_FIXTURE(dir, "tiny-models/tiny-gpt2/hf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-gpt2/reference_logits.json");
  check_reference_logits(dir, ref, 2e-4);
}

// ---------------------------------------------------------------------------------------------
// Synthetic checkpoints: sharding, name tables, missing and unexpected tensors

TEST(HfModel, ShardedCheckpointLoads) {
  TempDir dir;
  const auto specs = tiny_llama_specs();
  const std::vector<Spec> a(specs.begin(), specs.begin() + 6), b(specs.begin() + 6, specs.end());
  write_safetensors(dir / "model-00001-of-00002.safetensors", a, 0);
  write_safetensors(dir / "model-00002-of-00002.safetensors", b, 6);
  json index = {{"metadata", {{"total_size", 1234}}}, {"weight_map", json::object()}};
  for (const auto& s : a) index["weight_map"][s.name] = "model-00001-of-00002.safetensors";
  for (const auto& s : b) index["weight_map"][s.name] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", index);
  write_json(dir / "config.json", tiny_llama_config());
  write_json(dir / "generation_config.json",
             {{"do_sample", true}, {"temperature", 0.6}, {"top_p", 0.9}, {"eos_token_id", {2, 3}}});

  const auto m = loom::io::load_hf_model(dir.path());
  ASSERT_EQ(m.files.size(), 2u);
  EXPECT_EQ(m.weights.storage.size(), 2u);
  EXPECT_FALSE(m.config.tied_embeddings);
  EXPECT_EQ(m.config.n_kv_heads, 1);
  EXPECT_EQ(m.config.head_dim, 4);
  // Values come from the right shard: lm_head is tensor 11, down_proj tensor 9.
  EXPECT_EQ(m.weights.output.weight.as<float>()(1, 2), synthetic_value(11, 10));
  EXPECT_EQ(m.weights.layers[0].w_down.weight.as<float>()(0, 5), synthetic_value(9, 5));
  EXPECT_EQ(loom::to_float(m.weights.token_embedding.as<loom::f16>()(2, 3)), synthetic_value(0, 19));
  EXPECT_TRUE(inside(*m.files[1], m.weights.output.weight));
  EXPECT_TRUE(m.has_generation_config);
  EXPECT_EQ(m.generation.temperature, 0.6);
  EXPECT_EQ(m.generation.eos_token_id, (std::vector<std::int64_t>{2, 3}));
  EXPECT_FALSE(m.generation.greedy());

  // The set API directly.
  const loom::io::SafetensorsSet set(dir.path());
  EXPECT_EQ(set.tensors().size(), specs.size());
  EXPECT_NE(set.file_of("lm_head.weight").find("00002"), std::string::npos);
}

TEST(HfModel, ShardedIndexErrors) {
  TempDir dir;
  const auto specs = tiny_llama_specs();
  write_safetensors(dir / "a.safetensors", {specs[0], specs[1]});
  write_safetensors(dir / "b.safetensors", {specs[2]});
  // Index points a tensor at a shard that does not hold it.
  write_json(dir / "model.safetensors.index.json",
             {{"weight_map",
               {{specs[0].name, "a.safetensors"}, {specs[1].name, "b.safetensors"}, {specs[2].name, "b.safetensors"}}}});
  expect_error([&] { loom::io::SafetensorsSet s(dir.path()); }, ErrorKind::format,
               {specs[1].name, "does not contain"});
  // A shard holds a tensor the index does not list.
  write_json(dir / "model.safetensors.index.json",
             {{"weight_map", {{specs[0].name, "a.safetensors"}, {specs[2].name, "b.safetensors"}}}});
  expect_error([&] { loom::io::SafetensorsSet s(dir.path()); }, ErrorKind::format,
               {specs[1].name, "not listed in the index"});
  // Shard names must stay beside the index.
  write_json(dir / "model.safetensors.index.json", {{"weight_map", {{specs[0].name, "../a.safetensors"}}}});
  expect_error([&] { loom::io::SafetensorsSet s(dir.path()); }, ErrorKind::format, {specs[0].name, "../a"});
  // weight_map values must be strings.
  write_json(dir / "model.safetensors.index.json", {{"weight_map", {{specs[0].name, 3}}}});
  expect_error([&] { loom::io::SafetensorsSet s(dir.path()); }, ErrorKind::format, {specs[0].name});
  // A missing shard file is an io error naming it.
  write_json(dir / "model.safetensors.index.json", {{"weight_map", {{specs[0].name, "c.safetensors"}}}});
  expect_error([&] { loom::io::SafetensorsSet s(dir.path()); }, ErrorKind::io, {"c.safetensors"});
}

TEST(HfModel, MissingTensorIsNamed) {
  TempDir dir;
  auto specs = tiny_llama_specs();
  specs.erase(specs.begin() + 8);  // mlp.up_proj.weight
  write_safetensors(dir / "model.safetensors", specs);
  write_json(dir / "config.json", tiny_llama_config());
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format,
               {"missing tensor", "model.layers.0.mlp.up_proj.weight", "[12, 8]"});
}

TEST(HfModel, UnexpectedTensorIsNamed) {
  TempDir dir;
  auto specs = tiny_llama_specs();
  specs.push_back({"model.layers.0.self_attn.q_proj.bias", {8}});  // config has attention_bias false
  specs.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {2}});  // a known buffer: skipped
  write_safetensors(dir / "model.safetensors", specs);
  write_json(dir / "config.json", tiny_llama_config());
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format,
               {"unexpected tensor", "model.layers.0.self_attn.q_proj.bias"});
  // With attention_bias the q/k/v and o biases are expected.
  json cfg = tiny_llama_config();
  cfg["attention_bias"] = true;
  write_json(dir / "config.json", cfg);
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format,
               {"missing tensor", "model.layers.0.self_attn.k_proj.bias", "[4]"});
}

TEST(HfModel, WrongShapeOfSyntheticTensor) {
  TempDir dir;
  auto specs = tiny_llama_specs();
  specs[3].shape = {8, 8};  // k_proj should be [4, 8] with one KV head
  write_safetensors(dir / "model.safetensors", specs);
  write_json(dir / "config.json", tiny_llama_config());
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format,
               {"model.layers.0.self_attn.k_proj.weight", "expected shape [4, 8]", "got [8, 8]"});
}

TEST(HfModel, NoLmHeadMeansTied) {
  TempDir dir;
  auto specs = tiny_llama_specs();
  specs.pop_back();
  specs[2].dtype = "BF16";  // q_proj stays BF16
  write_safetensors(dir / "model.safetensors", specs);
  json cfg = tiny_llama_config();
  cfg["tie_word_embeddings"] = true;  // SmolLM style
  write_json(dir / "config.json", cfg);
  const auto m = loom::io::load_hf_model(dir.path());
  EXPECT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.weights.output.weight.data, m.weights.token_embedding.data);
  const loom::TensorRef& q = m.weights.layers[0].wq.weight;
  EXPECT_EQ(q.dtype, loom::DType::bf16);
  EXPECT_TRUE(inside(*m.files[0], q));
  EXPECT_EQ(loom::to_float(q.as<loom::bf16>()(1, 3)), synthetic_value(2, 11));
}

TEST(HfModel, UnsupportedWeightDtype) {
  TempDir dir;
  // F64 is readable by SafetensorsFile but not by the kernels.
  const std::string header = R"({"model.norm.weight":{"dtype":"F64","shape":[8],"data_offsets":[0,64]}})";
  write_bytes(dir / "model.safetensors", safetensors_bytes(header, std::string(64, '\0')));
  const loom::io::SafetensorsFile f(dir / "model.safetensors");
  EXPECT_EQ(f.at("model.norm.weight").dtype, loom::DType::f64);
  auto specs = tiny_llama_specs();
  write_safetensors(dir / "model.safetensors", specs);
  // Replace one tensor's dtype by rewriting: simplest is a bf16 embedding (supported) plus an F64 norm.
  json h = json::object();
  std::string data;
  for (const auto& s : specs) {
    std::int64_t n = 1;
    for (auto d : s.shape) n *= d;
    const bool f64 = s.name == "model.norm.weight";
    const std::size_t bytes = std::size_t(n) * (f64 ? 8 : s.dtype == "F16" ? 2 : 4);
    h[s.name] = {{"dtype", f64 ? "F64" : s.dtype}, {"shape", s.shape}, {"data_offsets", {data.size(), data.size() + bytes}}};
    data.append(bytes, '\0');
  }
  write_bytes(dir / "model.safetensors", safetensors_bytes(h.dump(), data));
  write_json(dir / "config.json", tiny_llama_config());
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::unsupported, {"model.norm.weight", "f64"});
}

TEST(HfModel, Gpt2NamesWithAndWithoutTransformerPrefix) {
  const std::int64_t d = 8, v = 16, ctx = 8, f = 32;
  auto specs_for = [&](const std::string& prefix) {
    std::vector<Spec> s = {{prefix + "wte.weight", {v, d}, "F16"}, {prefix + "wpe.weight", {ctx, d}}};
    for (const char* part : {"ln_1", "ln_2"}) {
      s.push_back({prefix + "h.0." + part + ".weight", {d}});
      s.push_back({prefix + "h.0." + part + ".bias", {d}});
    }
    s.push_back({prefix + "h.0.attn.c_attn.weight", {d, 3 * d}});
    s.push_back({prefix + "h.0.attn.c_attn.bias", {3 * d}});
    s.push_back({prefix + "h.0.attn.c_proj.weight", {d, d}});
    s.push_back({prefix + "h.0.attn.c_proj.bias", {d}});
    s.push_back({prefix + "h.0.mlp.c_fc.weight", {d, f}});
    s.push_back({prefix + "h.0.mlp.c_fc.bias", {f}});
    s.push_back({prefix + "h.0.mlp.c_proj.weight", {f, d}});
    s.push_back({prefix + "h.0.mlp.c_proj.bias", {d}});
    s.push_back({prefix + "h.0.attn.bias", {1, 1, ctx, ctx}});  // causal-mask buffer: skipped
    s.push_back({prefix + "ln_f.weight", {d}});
    s.push_back({prefix + "ln_f.bias", {d}});
    return s;
  };
  // Both spellings of the size fields (GPT-2's own and the generic ones).
  const json cfg = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", v},      {"hidden_size", d},
                    {"num_hidden_layers", 1},               {"n_head", 2},          {"n_positions", ctx},
                    {"activation_function", "gelu"},        {"eos_token_id", 15}};
  for (const std::string prefix : {"", "transformer."}) {
    TempDir dir;
    write_safetensors(dir / "model.safetensors", specs_for(prefix));
    write_json(dir / "config.json", cfg);
    const auto m = loom::io::load_hf_model(dir / "model.safetensors");
    EXPECT_EQ(m.config.dim, d) << prefix;
    EXPECT_EQ(m.config.head_dim, 4) << prefix;
    EXPECT_EQ(m.config.ffn_dim, f) << prefix;
    EXPECT_EQ(m.config.activation, loom::Activation::gelu_erf);
    EXPECT_TRUE(m.weights.layers[0].wqkv.in_out);
    EXPECT_EQ(m.weights.output.weight.data, m.weights.token_embedding.data);
  }
  // Both prefixed and unprefixed copies of one tensor is ambiguous.
  TempDir dir;
  auto specs = specs_for("transformer.");
  specs.push_back({"wte.weight", {v, d}, "F16"});
  write_safetensors(dir / "model.safetensors", specs);
  write_json(dir / "config.json", cfg);
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::format, {"transformer.wte.weight", "'wte.weight'"});
}

TEST(HfModel, MissingConfigIsIoError) {
  TempDir dir;
  write_safetensors(dir / "model.safetensors", tiny_llama_specs());
  expect_error([&] { loom::io::load_hf_model(dir.path()); }, ErrorKind::io, {"config.json"});
  expect_error([&] { loom::io::load_hf_model(dir / "nothing-here"); }, ErrorKind::io, {"nothing-here"});
  TempDir empty;
  write_json(empty / "config.json", tiny_llama_config());
  expect_error([&] { loom::io::load_hf_model(empty.path()); }, ErrorKind::io, {"model.safetensors"});
}

// ---------------------------------------------------------------------------------------------
// Safetensors built byte by byte

TEST(Safetensors, ValidFileInPlaceAndMetadata) {
  TempDir dir;
  const std::string header =
      R"({"__metadata__":{"format":"pt","note":"x"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[16,16]}})";
  std::string padded = header;
  while ((8 + padded.size()) % 8) padded += ' ';
  write_bytes(dir / "x.safetensors", safetensors_bytes(padded, f32_bytes({1, 2, 3, 4})));
  const loom::io::SafetensorsFile f(dir / "x.safetensors");
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("note"), "x");
  const auto a = f.at("a").as<float>();
  const auto b = f.at("b").as<float>();
  EXPECT_EQ(a(0), 1.0f);
  EXPECT_EQ(b(1), 4.0f);
  EXPECT_TRUE(f.in_place(f.at("a")));
  EXPECT_EQ(f.copied_tensors(), 0u);
  EXPECT_EQ(f.at("e").numel(), 0);
  EXPECT_EQ(f.at("e").shape, (loom::Shape{0, 3}));
}

TEST(Safetensors, MisalignedTensorIsCopied) {
  TempDir dir;
  // Header of 10 bytes... made so that 8 + N is 2 mod 4: the F32 tensor at offset 0 is misaligned,
  // the F16 one at offset 8 is aligned for 2 bytes and stays in place.
  std::string header =
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}})";
  while ((8 + header.size()) % 4 != 2) header += ' ';
  std::string data = f32_bytes({1.5f, -2.25f});
  const std::uint16_t h0 = 0x3c00, h1 = 0xc000;  // 1.0, -2.0
  data.append(reinterpret_cast<const char*>(&h0), 2);
  data.append(reinterpret_cast<const char*>(&h1), 2);
  write_bytes(dir / "x.safetensors", safetensors_bytes(header, data));
  const loom::io::SafetensorsFile f(dir / "x.safetensors");
  const loom::TensorRef& w = f.at("w");
  EXPECT_FALSE(f.in_place(w));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(w.data) % alignof(float), 0u);
  EXPECT_EQ(w.as<float>()(0), 1.5f);
  EXPECT_EQ(w.as<float>()(1), -2.25f);
  EXPECT_TRUE(f.in_place(f.at("h")));
  EXPECT_EQ(loom::to_float(f.at("h").as<loom::f16>()(1)), -2.0f);
  EXPECT_EQ(f.copied_tensors(), 1u);
}

TEST(Safetensors, FileTooShort) {
  TempDir dir;
  write_bytes(dir / "x.safetensors", std::string("\x05\x00\x00\x00\x00", 5));
  expect_error([&] { loom::io::SafetensorsFile f(dir / "x.safetensors"); }, ErrorKind::format,
               {"x.safetensors", "too short"});
  write_bytes(dir / "empty.safetensors", "");
  expect_error([&] { loom::io::SafetensorsFile f(dir / "empty.safetensors"); }, ErrorKind::format, {"too short"});
}

TEST(Safetensors, HeaderLengthPastEnd) {
  TempDir dir;
  write_bytes(dir / "x.safetensors", u64le(1000) + "{}");
  expect_error([&] { loom::io::SafetensorsFile f(dir / "x.safetensors"); }, ErrorKind::format,
               {"header length 1000", "past the end"});
  write_bytes(dir / "y.safetensors", u64le(~0ull) + "{}");
  expect_error([&] { loom::io::SafetensorsFile f(dir / "y.safetensors"); }, ErrorKind::format, {"past the end"});
}

TEST(Safetensors, HeaderNotJson) {
  expect_bad_header("{\"a\": {\"dtype\": ", 0, ErrorKind::format, {"not valid JSON"});
  expect_bad_header("\xff\xfe", 0, ErrorKind::format, {"not valid JSON"});
}

TEST(Safetensors, HeaderNotAnObject) {
  expect_bad_header("[1, 2, 3]", 0, ErrorKind::format, {"expected an object"});
  expect_bad_header(R"({"t": [1]})", 0, ErrorKind::format, {"'t'", "expected an object"});
}

TEST(Safetensors, MetadataMustBeStrings) {
  expect_bad_header(R"({"__metadata__": {"format": 1}})", 0, ErrorKind::format, {"__metadata__", "format"});
  expect_bad_header(R"({"__metadata__": ["pt"]})", 0, ErrorKind::format, {"__metadata__"});
}

TEST(Safetensors, UnknownDtype) {
  expect_bad_header(R"({"my.tensor": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}})", 4, ErrorKind::format,
                    {"'my.tensor'", "F17"});
  expect_bad_header(R"({"my.tensor": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", 4, ErrorKind::format,
                    {"'my.tensor'", "dtype"});
  expect_bad_header(R"({"my.tensor": {"shape": [1], "data_offsets": [0, 4]}})", 4, ErrorKind::format,
                    {"'my.tensor'", "missing 'dtype'"});
}

TEST(Safetensors, ValidButUnsupportedDtypes) {
  for (const char* dt : {"I8", "I32", "BOOL", "F8_E4M3", "U8", "I64"})
    expect_bad_header(std::string(R"({"q.weight": {"dtype": ")") + dt + R"(", "shape": [0], "data_offsets": [0, 0]}})",
                      0, ErrorKind::unsupported, {"'q.weight'", dt});
}

TEST(Safetensors, ShapeOffsetSizeMismatch) {
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", 24, ErrorKind::format,
                    {"'w'", "[2, 3]", "24 bytes", "[0, 20]"});
  // Overflowing element count.
  expect_bad_header(
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 16]}})", 16,
      ErrorKind::format, {"'w'", "overflow"});
}

TEST(Safetensors, RangePastDataEnd) {
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 12, ErrorKind::format,
                    {"'w'", "[0, 16]", "past the end of the data section"});
}

TEST(Safetensors, OverlappingRanges) {
  expect_bad_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                    R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                    16, ErrorKind::format, {"'b'", "overlap", "'a'"});
}

TEST(Safetensors, DuplicateNames) {
  expect_bad_header(R"({"model.norm.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                    R"( "model.norm.weight": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                    8, ErrorKind::format, {"duplicate", "'model.norm.weight'"});
  // A duplicate field inside an entry is caught too.
  expect_bad_header(R"({"w": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}})", 4,
                    ErrorKind::format, {"duplicate", "'dtype'", "'w'"});
}

TEST(Safetensors, BeginAfterEnd) {
  expect_bad_header(R"({"model.norm.weight": {"dtype": "F32", "shape": [2], "data_offsets": [16, 8]}})", 16,
                    ErrorKind::format, {"'model.norm.weight'", "data_offsets [16, 8]", "begin is after end"});
}

TEST(Safetensors, BadShapeValues) {
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}})", 8, ErrorKind::format,
                    {"'w'", "-1", "non-negative integers"});
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8, ErrorKind::format,
                    {"'w'", "2.5"});
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})", 8, ErrorKind::format,
                    {"'w'", "'shape'"});
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}})", 8, ErrorKind::format,
                    {"'w'", "data_offsets"});
  expect_bad_header(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", 8, ErrorKind::format,
                    {"'w'", "data_offsets"});
}

TEST(Safetensors, RankFive) {
  expect_bad_header(R"({"w5": {"dtype": "F32", "shape": [1, 1, 1, 1, 2], "data_offsets": [0, 8]}})", 8,
                    ErrorKind::unsupported, {"'w5'", "rank 5"});
}

// ---------------------------------------------------------------------------------------------
// config.json

TEST(HfConfig, WrongTypeNamesKey) {
  json j = tiny_llama_config();
  j["hidden_size"] = "64";
  expect_error([&] { convert(j); }, ErrorKind::format, {"test/config.json", "'hidden_size'", "integer", "string"});
  j = tiny_llama_config();
  j["rms_norm_eps"] = "1e-5";
  expect_error([&] { convert(j); }, ErrorKind::format, {"'rms_norm_eps'", "number"});
  j = tiny_llama_config();
  j["tie_word_embeddings"] = 1;
  expect_error([&] { convert(j); }, ErrorKind::format, {"'tie_word_embeddings'", "boolean"});
  j = tiny_llama_config();
  j["num_attention_heads"] = 2.0;
  expect_error([&] { convert(j); }, ErrorKind::format, {"'num_attention_heads'", "integer"});
  j = tiny_llama_config();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", "2"}};
  expect_error([&] { convert(j); }, ErrorKind::format, {"'rope_scaling.factor'"});
  j = tiny_llama_config();
  j["architectures"] = "LlamaForCausalLM";
  expect_error([&] { convert(j); }, ErrorKind::format, {"'architectures'"});
}

TEST(HfConfig, UnknownArchitecture) {
  json j = tiny_llama_config();
  j["architectures"] = {"FalconForCausalLM"};
  expect_error([&] { convert(j); }, ErrorKind::unsupported, {"FalconForCausalLM"});
  j.erase("architectures");
  j["model_type"] = "falcon";
  expect_error([&] { convert(j); }, ErrorKind::unsupported, {"falcon"});
  j.erase("model_type");
  expect_error([&] { convert(j); }, ErrorKind::format, {"architectures"});
  // model_type alone is enough.
  j["model_type"] = "llama";
  EXPECT_EQ(convert(j).architecture, "llama");
}

TEST(HfConfig, UnsupportedRopeScaling) {
  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    json j = tiny_llama_config();
    j["rope_scaling"] = {{"type", type}, {"factor", 4.0}};
    expect_error([&] { convert(j); }, ErrorKind::unsupported, {"rope_scaling", type});
  }
  json j = tiny_llama_config();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 10000.0}};
  expect_error([&] { convert(j); }, ErrorKind::unsupported, {"rope_parameters", "yarn"});
}

TEST(HfConfig, HeadsNotDividing) {
  json j = tiny_llama_config();
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 3;
  expect_error([&] { convert(j); }, ErrorKind::format, {"'hidden_size'", "'num_attention_heads'"});
  j = tiny_llama_config();
  j["num_key_value_heads"] = 3;
  j["num_attention_heads"] = 4;
  expect_error([&] { convert(j); }, ErrorKind::format, {"'num_key_value_heads'"});
  // With an explicit head_dim the width need not divide.
  j = tiny_llama_config();
  j["num_attention_heads"] = 3;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = 4;
  const loom::Config c = convert(j);
  EXPECT_EQ(c.q_dim(), 12);
}

TEST(HfConfig, MissingRequiredField) {
  for (const char* key : {"num_hidden_layers", "hidden_size", "vocab_size", "intermediate_size", "num_attention_heads"}) {
    json j = tiny_llama_config();
    j.erase(key);
    expect_error([&] { convert(j); }, ErrorKind::format, {"missing required key", key});
  }
  json k = tiny_llama_config();
  k.erase("num_hidden_layers");
  expect_error([&] { convert(k); }, ErrorKind::format, {"'num_hidden_layers' (or 'n_layer')"});
  json j = tiny_llama_config();
  j["hidden_size"] = nullptr;  // null is absent
  expect_error([&] { convert(j); }, ErrorKind::format, {"missing required key", "hidden_size"});
  j = tiny_llama_config();
  j["hidden_size"] = 0;
  expect_error([&] { convert(j); }, ErrorKind::format, {"'hidden_size'", "positive"});
}

TEST(HfConfig, BothSpellings) {
  json gpt = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 32}, {"n_layer", 2},
              {"n_head", 4},  {"n_positions", 64},   {"layer_norm_epsilon", 1e-5}};
  loom::Config a = convert(gpt);
  EXPECT_EQ(a.dim, 32);
  EXPECT_EQ(a.n_layers, 2);
  EXPECT_EQ(a.n_heads, 4);
  EXPECT_EQ(a.ffn_dim, 128);
  EXPECT_EQ(a.max_seq_len, 64);
  EXPECT_EQ(a.activation, loom::Activation::gelu_tanh);  // gelu_new is the default
  json gen = {{"architectures", {"GPT2LMHeadModel"}},
              {"vocab_size", 100},
              {"hidden_size", 32},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"max_position_embeddings", 64},
              {"intermediate_size", 96},
              {"hidden_act", "gelu_new"}};
  loom::Config b = convert(gen);
  EXPECT_EQ(b.dim, 32);
  EXPECT_EQ(b.n_layers, 2);
  EXPECT_EQ(b.ffn_dim, 96);
  EXPECT_EQ(b.max_seq_len, 64);
  // A llama config with GPT-2 spellings.
  json l = tiny_llama_config();
  l.erase("hidden_size");
  l["n_embd"] = 8;
  l.erase("rms_norm_eps");
  l["layer_norm_epsilon"] = 1e-5;
  const loom::Config c = convert(l);
  EXPECT_EQ(c.dim, 8);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  // Spellings that disagree.
  gpt["hidden_size"] = 64;
  expect_error([&] { convert(gpt); }, ErrorKind::format, {"'hidden_size'", "'n_embd'", "disagree"});
}

TEST(HfConfig, RopeParameters) {
  json j = tiny_llama_config();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "default"}};
  const loom::Config c = convert(j);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.kind, loom::RopeScalingKind::none);
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::half_split);

  j["rope_parameters"] = {{"rope_theta", 500000.0},
                          {"rope_type", "llama3"},
                          {"factor", 32.0},
                          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  const loom::Config d = convert(j);
  EXPECT_EQ(d.rope_scaling.kind, loom::RopeScalingKind::llama3);
  EXPECT_FLOAT_EQ(d.rope_scaling.factor, 32.0f);

  j["rope_theta"] = 10000.0;  // disagrees with rope_parameters
  expect_error([&] { convert(j); }, ErrorKind::format, {"rope_theta", "disagree"});
}

TEST(HfConfig, Llama3RopeScaling) {
  json j = tiny_llama_config();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192},
                       {"rope_type", "llama3"}};
  j["eos_token_id"] = {2, 9, 15};
  const auto hf = loom::io::parse_hf_config(j, "llama3/config.json");
  ASSERT_TRUE(hf.rope_scaling);
  EXPECT_EQ(hf.rope_scaling->rope_type, "llama3");
  const loom::Config c = loom::io::to_config(hf);
  EXPECT_EQ(c.rope_scaling.kind, loom::RopeScalingKind::llama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(hf.special_tokens().eos, (std::vector<std::int32_t>{2, 9, 15}));

  j["rope_scaling"].erase("low_freq_factor");
  expect_error([&] { convert(j); }, ErrorKind::format, {"low_freq_factor"});
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  const loom::Config lin = convert(j);
  EXPECT_EQ(lin.rope_scaling.kind, loom::RopeScalingKind::linear);
  EXPECT_FLOAT_EQ(lin.rope_scaling.factor, 2.0f);
  j["rope_scaling"] = {{"factor", 2.0}};
  expect_error([&] { convert(j); }, ErrorKind::format, {"rope_scaling", "rope_type"});
}

TEST(HfConfig, MistralAndQwen2) {
  json m = tiny_llama_config();
  m["architectures"] = {"MistralForCausalLM"};
  m["sliding_window"] = 4096;
  loom::Config c = convert(m);
  EXPECT_EQ(c.architecture, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);
  m["sliding_window"] = nullptr;
  EXPECT_EQ(convert(m).sliding_window, 0);

  json q = tiny_llama_config();
  q["architectures"] = {"Qwen2ForCausalLM"};
  q["sliding_window"] = 4096;
  q["use_sliding_window"] = false;
  q["max_window_layers"] = 21;
  c = convert(q);
  EXPECT_EQ(c.architecture, "qwen2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.out_bias);
  EXPECT_FALSE(c.ffn_bias);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::half_split);
  q["use_sliding_window"] = true;
  q["max_window_layers"] = 0;
  EXPECT_EQ(convert(q).sliding_window, 4096);
  q["max_window_layers"] = 28;  // ≥ layers: no layer uses the window
  EXPECT_EQ(convert(q).sliding_window, 0);
  q["num_hidden_layers"] = 30;
  expect_error([&] { convert(q); }, ErrorKind::unsupported, {"max_window_layers"});
}

TEST(HfConfig, OtherOptions) {
  json j = tiny_llama_config();
  j["partial_rotary_factor"] = 0.5;
  j["head_dim"] = 16;
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 2;
  EXPECT_EQ(convert(j).rope_dim, 8);
  j = tiny_llama_config();
  j["hidden_act"] = "quick_gelu";
  expect_error([&] { convert(j); }, ErrorKind::unsupported, {"hidden_act", "quick_gelu"});
  j = tiny_llama_config();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  const loom::Config c = convert(j);
  EXPECT_TRUE(c.qkv_bias && c.out_bias && c.ffn_bias);
  j = tiny_llama_config();
  j["eos_token_id"] = 16;  // vocab is 16
  expect_error([&] { convert(j); }, ErrorKind::format, {"eos_token_id", "16"});
  j = tiny_llama_config();
  j["eos_token_id"] = {1, "2"};
  expect_error([&] { convert(j); }, ErrorKind::format, {"eos_token_id"});
  json g = {{"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 100}, {"n_embd", 32}, {"n_layer", 2},
            {"n_head", 4}, {"scale_attn_by_inverse_layer_idx", true}};
  expect_error([&] { convert(g); }, ErrorKind::unsupported, {"scale_attn_by_inverse_layer_idx"});
}

TEST(HfConfig, ReadsFilesAndRejectsDuplicateKeys) {
  TempDir dir;
  write_bytes(dir / "config.json", R"({"hidden_size": 8, "hidden_size": 16})");
  expect_error([&] { loom::io::read_hf_config(dir / "config.json"); }, ErrorKind::format,
               {"config.json", "duplicate", "hidden_size"});
  write_bytes(dir / "config.json", "[1]");
  expect_error([&] { loom::io::read_hf_config(dir / "config.json"); }, ErrorKind::format, {"expected an object"});
  write_bytes(dir / "config.json", "{");
  expect_error([&] { loom::io::read_hf_config(dir / "config.json"); }, ErrorKind::format, {"not valid JSON"});
  expect_error([&] { loom::io::read_hf_config(dir / "missing.json"); }, ErrorKind::io, {"missing.json"});
}

TEST(HfConfig, GenerationConfig) {
  using loom::io::parse_hf_generation_config;
  const auto g = parse_hf_generation_config(
      {{"do_sample", false}, {"temperature", 0.7}, {"top_k", 40}, {"top_p", 0.95},
       {"repetition_penalty", 1.1}, {"bos_token_id", 1}, {"eos_token_id", {2, 32000}}, {"min_p", nullptr}},
      "gen.json");
  EXPECT_TRUE(g.greedy());
  EXPECT_EQ(g.temperature, 0.7);
  EXPECT_EQ(g.top_k, 40);
  EXPECT_EQ(g.top_p, 0.95);
  EXPECT_FALSE(g.min_p.has_value());
  EXPECT_EQ(g.repetition_penalty, 1.1);
  EXPECT_EQ(g.bos_token_id, 1);
  EXPECT_EQ(g.eos_token_id, (std::vector<std::int64_t>{2, 32000}));
  EXPECT_EQ(parse_hf_generation_config({{"eos_token_id", 7}}).eos_token_id, std::vector<std::int64_t>{7});
  EXPECT_FALSE(parse_hf_generation_config(json::object()).greedy());
  expect_error([&] { parse_hf_generation_config({{"top_k", "40"}}, "gen.json"); }, ErrorKind::format,
               {"gen.json", "'top_k'"});
  expect_error([&] { parse_hf_generation_config({{"do_sample", "yes"}}); }, ErrorKind::format, {"'do_sample'"});
  expect_error([&] { parse_hf_generation_config({{"top_p", 1.5}}); }, ErrorKind::format, {"'top_p'"});
  expect_error([&] { parse_hf_generation_config({{"temperature", -1}}); }, ErrorKind::format, {"'temperature'"});
}

}  // namespace

}  // namespace test_hf
