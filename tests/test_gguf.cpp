// GGUF: the fixture files parse with the metadata the fixtures README lists; tiny-llama.gguf and
// tiny-gpt2.gguf reproduce llama.cpp's logits; hand-broken files built byte by byte fail with
// loom::Error of the right kind naming the key or tensor; a quantized copy of tiny-llama runs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <loom/io/gguf.hpp>
#include <loom/io/gguf_model.hpp>
#include <loom/io/hf_model.hpp>
#include <loom/kernels/quant.hpp>
#include <loom/model/model.hpp>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "fixtures.hpp"

namespace test_gguf {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using loom::DType;
using loom::ErrorKind;
using loom::io::GgufFile;
using loom::io::GgufType;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() / ("loom_test_gguf_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

/// Little-endian byte builder for GGUF files.
struct Bytes {
  std::string s;
  template <typename T>
  Bytes& put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s.append(b, sizeof(T));
    return *this;
  }
  Bytes& u32(std::uint32_t v) { return put(v); }
  Bytes& u64(std::uint64_t v) { return put(v); }
  Bytes& str(std::string_view v) {
    u64(v.size());
    s.append(v);
    return *this;
  }
  Bytes& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
    s += "GGUF";
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  Bytes& kv_string(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
  Bytes& kv_u32(std::string_view key, std::uint32_t v) { return str(key).u32(4).u32(v); }
  Bytes& kv_f32(std::string_view key, float v) { return str(key).u32(6).put(v); }
  Bytes& tensor(std::string_view name, std::initializer_list<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
    str(name).u32(std::uint32_t(ne.size()));
    for (auto n : ne) u64(n);
    return u32(type).u64(offset);
  }
  Bytes& pad(std::size_t alignment = 32) {
    while (s.size() % alignment) s += '\0';
    return *this;
  }
  Bytes& zeros(std::size_t n) {
    s.append(n, '\0');
    return *this;
  }
};

/// Writes `bytes` to a temp file and expects GgufFile to throw Error(kind) with every one of
/// `parts` in its message.
void expect_gguf_error(const std::string& bytes, ErrorKind kind, std::initializer_list<std::string> parts) {
  TempDir dir;
  const fs::path p = dir / "f.gguf";
  write_bytes(p, bytes);
  try {
    GgufFile f(p);
    ADD_FAILURE() << "expected an error containing '" << *parts.begin() << "'";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_EQ(e.area(), "gguf") << e.what();
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f.gguf"), std::string::npos) << e.what();
  }
}

/// A small valid file: two keys, one f32 tensor [2, 32] at offset 0.
std::string valid_file() {
  Bytes b;
  b.header(1, 2).kv_string("general.architecture", "llama").kv_u32("general.alignment", 32);
  b.tensor("a", {32, 2}, 0, 0).pad().zeros(256);
  return b.s;
}

// ---- the container ---------------------------------------------------------------------------------

TEST(GgufReader, ValidFileAndEveryValueType) {
  Bytes b;
  b.header(2, 15);
  b.str("u8").u32(0).put(std::uint8_t(200));
  b.str("i8").u32(1).put(std::int8_t(-5));
  b.str("u16").u32(2).put(std::uint16_t(60000));
  b.str("i16").u32(3).put(std::int16_t(-30000));
  b.kv_u32("u32", 4000000000u);
  b.str("i32").u32(5).put(std::int32_t(-7));
  b.kv_f32("f32", 0.25f);
  b.str("bool").u32(7).put(std::uint8_t(1));
  b.kv_string("string", "héllo");
  b.str("u64").u32(10).u64(std::uint64_t(1) << 40);
  b.str("i64").u32(11).put(std::int64_t(-(std::int64_t(1) << 40)));
  b.str("f64").u32(12).put(2.5);
  b.str("strings").u32(9).u32(8).u64(2).str("a").str("bc");
  b.str("nested").u32(9).u32(9).u64(2).u32(5).u64(2).put(std::int32_t(1)).put(std::int32_t(2)).u32(6).u64(1).put(1.5f);
  b.kv_u32("general.alignment", 64);
  b.tensor("w", {64, 3}, 1, 0).tensor("q", {256, 2}, 14, 448);
  b.pad(64);
  const std::size_t data = b.s.size();
  b.zeros(448 + 2 * 210);
  TempDir dir;
  write_bytes(dir / "f.gguf", b.s);
  const GgufFile f(dir / "f.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.kv_count(), 15u);
  EXPECT_EQ(f.tensor_count(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset(), data);
  EXPECT_EQ(f.keys().front(), "u8");
  EXPECT_EQ(f.get<std::uint32_t>("u8"), 200u);
  EXPECT_EQ(f.get<std::int32_t>("i8"), -5);
  EXPECT_EQ(f.get<std::uint32_t>("u16"), 60000u);
  EXPECT_EQ(f.get<std::int64_t>("i16"), -30000);
  EXPECT_EQ(f.get<std::uint32_t>("u32"), 4000000000u);
  EXPECT_EQ(f.get<std::int32_t>("i32"), -7);
  EXPECT_EQ(f.get<float>("f32"), 0.25f);
  EXPECT_TRUE(f.get<bool>("bool"));
  EXPECT_EQ(f.get<std::string>("string"), "héllo");
  EXPECT_EQ(f.get<std::uint64_t>("u64"), std::uint64_t(1) << 40);
  EXPECT_EQ(f.get<std::int64_t>("i64"), -(std::int64_t(1) << 40));
  EXPECT_EQ(f.get<double>("f64"), 2.5);
  EXPECT_EQ(f.at("strings").as_strings(), (std::vector<std::string>{"a", "bc"}));
  const auto& nested = f.at("nested").as_array();
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.element, GgufType::array);
  EXPECT_EQ(nested.items[0].as_i32s(), (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(nested.items[1].as_f32s(), (std::vector<float>{1.5f}));
  EXPECT_EQ(f.at("nested").type_name(), "array of array");
  EXPECT_FALSE(f.get_optional<std::uint32_t>("absent").has_value());

  const auto* w = f.find_tensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->ref.dtype, DType::f16);
  EXPECT_EQ(w->ref.shape, (loom::Shape{3, 64}));  // ne {64, 3} → PyTorch [3, 64]
  EXPECT_EQ(w->ref.nbytes, 3u * 64 * 2);
  EXPECT_EQ(w->ref.data, f.file().data() + data);  // zero copy
  const auto* q = f.find_tensor("q");
  EXPECT_EQ(q->ref.dtype, DType::q6_k);
  EXPECT_EQ(q->ref.nbytes, 2u * 210);
  EXPECT_EQ(q->ref.data, f.file().data() + data + 448);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);

  // Typed getters name the key and both types.
  auto expect_type_error = [&](auto fn, std::initializer_list<std::string> parts) {
    try {
      fn();
      ADD_FAILURE() << "expected a type error";
    } catch (const loom::Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::format);
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_type_error([&] { f.get<std::uint32_t>("string"); }, {"'string'", "u32", "got string", "f.gguf"});
  expect_type_error([&] { f.get<std::string>("u32"); }, {"'u32'", "expected string", "got u32"});
  expect_type_error([&] { f.get<std::uint32_t>("i8"); }, {"'i8'", "-5", "does not fit u32"});
  expect_type_error([&] { f.get<float>("bool"); }, {"'bool'", "got bool"});
  expect_type_error([&] { f.get<std::int32_t>("u64"); }, {"'u64'", "does not fit i32"});
  expect_type_error([&] { f.at("strings").as_f32s("strings"); }, {"'strings'", "array of string"});
  expect_type_error([&] { f.at("absent"); }, {"missing key 'absent'"});
}

TEST(GgufReader, VersionTwoAndDefaultAlignment) {
  Bytes b;
  b.header(1, 0, 2).tensor("t", {8}, 0, 0).pad(32).zeros(32);
  TempDir dir;
  write_bytes(dir / "v2.gguf", b.s);
  const GgufFile f(dir / "v2.gguf");
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.find_tensor("t")->ref.shape, loom::Shape{8});
}

TEST(GgufReader, BadMagicAndVersions) {
  std::string s = valid_file();
  s[0] = 'X';
  expect_gguf_error(s, ErrorKind::format, {"not a GGUF file", "magic"});
  expect_gguf_error("", ErrorKind::format, {"not a GGUF file"});
  s = valid_file();
  s[4] = 1;
  expect_gguf_error(s, ErrorKind::unsupported, {"version 1"});
  s[4] = 0;
  expect_gguf_error(s, ErrorKind::format, {"version 0"});
  s[4] = 9;
  expect_gguf_error(s, ErrorKind::unsupported, {"version 9"});
  s[4] = 0, s[7] = 3;  // big-endian 3
  expect_gguf_error(s, ErrorKind::unsupported, {"big-endian"});
}

TEST(GgufReader, TruncatedHeader) {
  expect_gguf_error(std::string("GGUF\3\0\0\0\1\0", 10), ErrorKind::format, {"tensor_count", "file ends"});
  Bytes b;
  b.header(0, 1).str("general.name").u32(8).u64(3).s += "ab";
  expect_gguf_error(b.s, ErrorKind::format, {"key 'general.name'", "string of 3 bytes"});
}

TEST(GgufReader, EveryTruncationFailsCleanly) {
  const std::string s = valid_file();
  TempDir dir;
  for (std::size_t n = 0; n < s.size(); ++n) {
    write_bytes(dir / "t.gguf", s.substr(0, n));
    EXPECT_THROW(GgufFile f(dir / "t.gguf"), loom::Error) << "prefix of " << n << " bytes";
  }
  write_bytes(dir / "t.gguf", s);
  EXPECT_NO_THROW(GgufFile f(dir / "t.gguf"));
}

TEST(GgufReader, RandomCorruptionNeverCrashes) {
  const std::string s = valid_file();
  TempDir dir;
  std::mt19937 rng(5);
  int errors = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string c = s;
    for (int k = 0; k < 3; ++k) c[rng() % 120] = char(rng() & 0xff);  // the header and infos
    write_bytes(dir / "c.gguf", c);
    try {
      GgufFile f(dir / "c.gguf");
    } catch (const loom::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 1000);
}

TEST(GgufReader, StringLengthPastEndOfFile) {
  Bytes b;
  b.header(0, 1).str("general.name").u32(8).u64(std::uint64_t(1) << 62);
  expect_gguf_error(b.s, ErrorKind::format, {"key 'general.name'", "string of 4611686018427387904 bytes"});
  Bytes k;
  k.header(0, 1).u64(1000).s += "abcdefghijklmnop";
  expect_gguf_error(k.s, ErrorKind::format, {"key 0 of 1", "1000 bytes"});
}

TEST(GgufReader, HugeArrayCountFailsFast) {
  Bytes b;
  b.header(0, 1).str("tokenizer.ggml.tokens").u32(9).u32(8).u64(std::uint64_t(1) << 60);
  const auto t0 = std::chrono::steady_clock::now();
  expect_gguf_error(b.s, ErrorKind::format, {"key 'tokenizer.ggml.tokens'", "1152921504606846976", "cannot fit"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  Bytes n;  // nested: the inner count is checked too
  n.header(0, 1).str("x").u32(9).u32(9).u64(1).u32(0).u64(std::uint64_t(1) << 60);
  expect_gguf_error(n.s, ErrorKind::format, {"key 'x'", "cannot fit"});
  Bytes t;
  t.header(0, 1).str("x").u32(9).u32(13).u64(1);
  expect_gguf_error(t.s, ErrorKind::format, {"key 'x'", "unknown array element type 13"});
  Bytes d;  // arrays of arrays nested deeper than the limit
  d.header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 20; ++i) d.u32(9).u64(1);
  d.u32(0).u64(0);
  expect_gguf_error(d.s, ErrorKind::format, {"key 'deep'", "nested"});
  Bytes c;
  c.header(0, std::uint64_t(1) << 60);
  expect_gguf_error(c.s, ErrorKind::format, {"kv_count"});
  Bytes tc;
  tc.header(std::uint64_t(1) << 61, 0);
  expect_gguf_error(tc.s, ErrorKind::format, {"tensor_count"});
}

TEST(GgufReader, DuplicateKeysAndTensors) {
  Bytes k;
  k.header(0, 2).kv_u32("llama.block_count", 1).kv_u32("llama.block_count", 2);
  expect_gguf_error(k.s, ErrorKind::format, {"duplicate key 'llama.block_count'"});
  Bytes t;
  t.header(2, 0).tensor("blk.0.attn_q.weight", {32}, 0, 0).tensor("blk.0.attn_q.weight", {32}, 0, 128).pad().zeros(256);
  expect_gguf_error(t.s, ErrorKind::format, {"duplicate tensor 'blk.0.attn_q.weight'"});
}

TEST(GgufReader, BadValueTypesAndBools) {
  Bytes b;
  b.header(0, 1).str("k").u32(13).u32(0);
  expect_gguf_error(b.s, ErrorKind::format, {"key 'k'", "unknown value type 13"});
  Bytes c;
  c.header(0, 1).str("flag").u32(7).put(std::uint8_t(2));
  expect_gguf_error(c.s, ErrorKind::format, {"key 'flag'", "bool"});
}

TEST(GgufReader, TensorDataPastEndOfFile) {
  Bytes b;
  b.header(1, 0).tensor("blk.3.attn_q.weight", {64, 64}, 0, 0).pad().zeros(1000);
  expect_gguf_error(b.s, ErrorKind::format, {"tensor 'blk.3.attn_q.weight'", "extends past the end of the file"});
  Bytes o;
  o.header(1, 0).tensor("t", {8}, 0, std::uint64_t(-32)).pad().zeros(64);
  expect_gguf_error(o.s, ErrorKind::format, {"tensor 't'", "extends past the end", "overflow"});
  Bytes e;
  e.header(1, 0).tensor("t", {8}, 0, 4096).pad().zeros(64);
  expect_gguf_error(e.s, ErrorKind::format, {"tensor 't'", "extends past the end"});
}

TEST(GgufReader, MisalignedOffset) {
  Bytes b;
  b.header(1, 0).tensor("blk.0.ffn_up.weight", {8}, 0, 16).pad().zeros(64);
  expect_gguf_error(b.s, ErrorKind::format, {"tensor 'blk.0.ffn_up.weight'", "0x10", "alignment 32"});
}

TEST(GgufReader, TensorTypes) {
  Bytes u;
  u.header(1, 0).tensor("blk.0.attn_k.weight", {32}, 99, 0).pad().zeros(64);
  expect_gguf_error(u.s, ErrorKind::format, {"tensor 'blk.0.attn_k.weight'", "unknown ggml type 99"});
  Bytes k;
  k.header(1, 0).tensor("blk.0.attn_k.weight", {256}, 16, 0).pad().zeros(256);
  expect_gguf_error(k.s, ErrorKind::unsupported, {"tensor 'blk.0.attn_k.weight'", "IQ2_XXS"});
  // The types loom reads, by their ggml numbers (ggml.h), with their block sizes in bytes.
  for (auto [number, type, bytes] : {std::tuple{3u, DType::q4_1, 20u}, std::tuple{6u, DType::q5_0, 22u},
                                     std::tuple{7u, DType::q5_1, 24u}, std::tuple{13u, DType::q5_k, 176u},
                                     std::tuple{10u, DType::q2_k, 84u}, std::tuple{11u, DType::q3_k, 110u},
                                     std::tuple{20u, DType::iq4_nl, 18u}, std::tuple{23u, DType::iq4_xs, 136u}}) {
    const std::uint64_t cols = loom::block_elems(type);
    Bytes ok;
    ok.header(1, 0).tensor("t", {cols, 2}, number, 0).pad().zeros(512);
    TempDir dir;
    write_bytes(dir / "t.gguf", ok.s);
    const GgufFile f(dir / "t.gguf");
    EXPECT_EQ(f.find_tensor("t")->ref.dtype, type) << number;
    EXPECT_EQ(f.find_tensor("t")->ref.nbytes, 2 * bytes) << number;
  }
  Bytes i;
  i.header(1, 0).tensor("x", {256}, 21, 0).pad().zeros(256);
  expect_gguf_error(i.s, ErrorKind::unsupported, {"tensor 'x'", "IQ3_S"});
  Bytes blk;  // Q8_0 rows must be whole 32-blocks
  blk.header(1, 0).tensor("x", {33, 2}, 8, 0).pad().zeros(256);
  expect_gguf_error(blk.s, ErrorKind::format, {"tensor 'x'", "innermost dimension 33", "block size 32"});
}

TEST(GgufReader, DimensionLimits) {
  Bytes n;
  n.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad().zeros(64);
  expect_gguf_error(n.s, ErrorKind::format, {"tensor 't'", "n_dims 5"});
  Bytes z;
  z.header(1, 0).str("t").u32(0).u32(0).u64(0).pad().zeros(64);
  expect_gguf_error(z.s, ErrorKind::format, {"tensor 't'", "n_dims 0"});
  Bytes o;
  o.header(1, 0).tensor("t", {std::uint64_t(1) << 32, std::uint64_t(1) << 32}, 0, 0).pad().zeros(64);
  expect_gguf_error(o.s, ErrorKind::format, {"tensor 't'", "overflows"});
  Bytes big;
  big.header(1, 0).tensor("t", {std::uint64_t(-1)}, 0, 0).pad().zeros(64);
  expect_gguf_error(big.s, ErrorKind::format, {"tensor 't'", "too large"});
  Bytes bytes;  // element count fits int64, byte count does not fit uint64
  bytes.header(1, 0).tensor("t", {std::uint64_t(1) << 31, std::uint64_t(1) << 31}, 0, 0).pad().zeros(64);
  expect_gguf_error(bytes.s, ErrorKind::format, {"tensor 't'"});
}

TEST(GgufReader, Alignment) {
  for (std::uint32_t al : {0u, 3u, 48u}) {
    Bytes b;
    b.header(0, 1).kv_u32("general.alignment", al);
    expect_gguf_error(b.s, ErrorKind::format, {"general.alignment", std::to_string(al), "power of two"});
  }
  Bytes s;
  s.header(0, 1).kv_string("general.alignment", "32");
  expect_gguf_error(s.s, ErrorKind::format, {"general.alignment", "got string"});
}

// ---- fixtures --------------------------------------------------------------------------------------

TEST(GgufFixtures, VocabGpt2Metadata) {
  LOOM_REQUIRE_FIXTURE(path, "tokenizers/ggml-vocab-gpt-2.gguf");
  const GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensor_count(), 0u);
  EXPECT_EQ(f.get<std::string>("general.architecture"), "gpt2");
  EXPECT_EQ(f.get<std::string>("general.name"), "gpt-2");
  EXPECT_EQ(f.get<std::uint32_t>("general.file_type"), 1u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.block_count"), 12u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.context_length"), 1024u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.embedding_length"), 768u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.feed_forward_length"), 3072u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.attention.head_count"), 12u);
  EXPECT_FLOAT_EQ(f.get<float>("gpt2.attention.layer_norm_epsilon"), 1e-5f);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "gpt-2");
  const auto tokens = f.at("tokenizer.ggml.tokens").as_strings("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 50257u);
  EXPECT_EQ(tokens[50256], "<|endoftext|>");
  EXPECT_EQ(tokens[83], "t");
  const auto types = f.at("tokenizer.ggml.token_type").as_i32s();
  ASSERT_EQ(types.size(), 50257u);
  EXPECT_EQ(types[50256], 3);
  EXPECT_EQ(std::count(types.begin(), types.end(), 1), 50256);
  const auto merges = f.at("tokenizer.ggml.merges").as_strings();
  ASSERT_EQ(merges.size(), 50000u);
  for (const auto& m : merges) ASSERT_EQ(std::count(m.begin(), m.end(), ' '), 1) << m;
  EXPECT_EQ(f.at("tokenizer.ggml.bos_token_id").type(), GgufType::u32);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), 50256u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.eos_token_id"), 50256u);
  EXPECT_FALSE(f.contains("tokenizer.ggml.add_bos_token"));
  const loom::Config c = loom::io::gguf_config(f);
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.dim, 768);
  EXPECT_EQ(c.position, loom::PositionKind::learned);
}

TEST(GgufFixtures, VocabLlamaSpmMetadata) {
  LOOM_REQUIRE_FIXTURE(path, "tokenizers/ggml-vocab-llama-spm.gguf");
  const GgufFile f(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensor_count(), 0u);
  EXPECT_EQ(f.get<std::string>("general.architecture"), "llama");
  EXPECT_EQ(f.get<std::string>("general.name"), "llama-spm");
  EXPECT_EQ(f.get<std::uint32_t>("llama.attention.head_count_kv"), 32u);
  EXPECT_EQ(f.get<std::uint32_t>("llama.vocab_size"), 32000u);
  EXPECT_EQ(f.get<std::uint32_t>("llama.rope.dimension_count"), 128u);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "default");
  const auto tokens = f.at("tokenizer.ggml.tokens").as_strings();
  ASSERT_EQ(tokens.size(), 32000u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(tokens[259], "\xe2\x96\x81\xe2\x96\x81");  // "▁▁"
  EXPECT_EQ(f.at("tokenizer.ggml.scores").as_f32s().size(), 32000u);
  const auto types = f.at("tokenizer.ggml.token_type").as_i32s();
  EXPECT_EQ(types[0], 2);
  EXPECT_EQ(types[1], 3);
  EXPECT_EQ(types[2], 3);
  EXPECT_EQ(types[3], 6);
  EXPECT_EQ(types[258], 6);
  EXPECT_EQ(types[259], 1);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(f.get<bool>("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get<bool>("tokenizer.ggml.add_eos_token"));
  EXPECT_FALSE(f.contains("tokenizer.ggml.add_space_prefix"));
  const loom::Config c = loom::io::gguf_config(f);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::interleaved);
}

TEST(GgufFixtures, TinyGpt2Metadata) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-gpt2/tiny-gpt2.gguf");
  const GgufFile f(path);
  EXPECT_EQ(f.tensor_count(), 29u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.keys()[0], "general.architecture");
  EXPECT_EQ(f.get<std::string>("general.type"), "model");
  EXPECT_EQ(f.get<std::string>("general.name"), "tiny-gpt2");
  EXPECT_EQ(f.get<std::string>("general.size_label"), "6.5M");
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.block_count"), 2u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.context_length"), 128u);
  EXPECT_EQ(f.get<std::uint32_t>("gpt2.feed_forward_length"), 256u);
  EXPECT_EQ(f.get<std::uint32_t>("general.quantization_version"), 2u);
  EXPECT_EQ(f.at("tokenizer.ggml.merges").size(), 50000u);
  const auto* te = f.find_tensor("token_embd.weight");
  ASSERT_NE(te, nullptr);
  EXPECT_EQ(te->ref.dtype, DType::f16);
  EXPECT_EQ(te->ref.shape, (loom::Shape{50257, 64}));
  EXPECT_EQ(f.find_tensor("blk.1.attn_qkv.weight")->ref.shape, (loom::Shape{192, 64}));
  EXPECT_EQ(f.find_tensor("blk.0.ffn_down.weight")->ref.shape, (loom::Shape{64, 256}));
  EXPECT_EQ(f.find_tensor("position_embd.weight")->ref.dtype, DType::f32);
  for (const auto& t : f.tensors()) EXPECT_EQ(t.offset % 32, 0u) << t.name;
}

TEST(GgufFixtures, TinyLlamaMetadata) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/tiny-llama.gguf");
  const GgufFile f(path);
  EXPECT_EQ(f.tensor_count(), 21u);
  EXPECT_EQ(f.get<std::uint32_t>("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(f.get<float>("llama.rope.freq_base"), 10000.0f);
  EXPECT_EQ(f.get<std::uint32_t>("llama.attention.key_length"), 16u);
  EXPECT_EQ(f.get<std::uint32_t>("llama.vocab_size"), 32000u);
  EXPECT_EQ(f.find_tensor("blk.0.attn_k.weight")->ref.shape, (loom::Shape{32, 64}));
  EXPECT_EQ(f.find_tensor("blk.1.ffn_down.weight")->ref.shape, (loom::Shape{64, 172}));
  EXPECT_EQ(f.find_tensor("output.weight")->ref.dtype, DType::f16);

  const auto m = loom::io::load_gguf_model(path);
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
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::interleaved);
  EXPECT_EQ(c.rotary_dim(), 16);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.weights.layers[1].wq.weight.data, m.file->find_tensor("blk.1.attn_q.weight")->ref.data);
  EXPECT_EQ(m.weights.storage.back(), m.file);
}

/// Runs the 9 reference tokens and compares every position with llama.cpp's logits.
double check_reference_logits(const loom::Model& model, const fs::path& ref_path, double tol, bool argmax = true) {
  const json ref = json::parse(loom::test::read_text(ref_path));
  const auto tokens = ref.at("tokens").get<std::vector<std::int32_t>>();
  loom::nn::KVCache kv(model.config(), 128);
  const loom::Tensor<float> logits = model.logits(tokens, 0, kv, loom::Logits::all);
  const auto& rl = ref.at("logits");
  EXPECT_EQ(rl.size(), tokens.size());
  double worst = 0;
  for (std::size_t p = 0; p < tokens.size(); ++p) {
    double max_err = 0;
    std::int64_t best = 0, ref_best = 0;
    for (std::int64_t v = 0; v < logits.dim(1); ++v) {
      const float r = float(rl[p][std::size_t(v)].get<double>());
      max_err = std::max(max_err, double(std::fabs(logits(p, v) - r)));
      if (logits(p, v) > logits(p, best)) best = v;
      if (r > float(rl[p][std::size_t(ref_best)].get<double>())) ref_best = v;
    }
    EXPECT_LE(max_err, tol) << "position " << p;
    if (argmax) {
      EXPECT_EQ(best, ref_best) << "argmax at position " << p;
    }
    worst = std::max(worst, max_err);
  }
  std::printf("  max |logit error| over %zu positions = %.3g\n", tokens.size(), worst);
  return worst;
}

TEST(GgufModel, TinyLlamaReferenceLogits) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/tiny-llama.gguf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-llama/reference_logits.json");
  auto m = loom::io::load_gguf_model(path);
  const loom::Model model(std::move(m.config), std::move(m.weights));
  check_reference_logits(model, ref, 2e-4);
}

TEST(GgufModel, TinyGpt2ReferenceLogits) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-gpt2/tiny-gpt2.gguf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-gpt2/reference_logits.json");
  auto m = loom::io::load_gguf_model(path);
  EXPECT_EQ(m.config.norm, loom::NormKind::layer_norm);
  EXPECT_EQ(m.config.position, loom::PositionKind::learned);
  EXPECT_EQ(m.config.activation, loom::Activation::gelu_tanh);
  EXPECT_FALSE(m.config.gated_ffn);
  EXPECT_FALSE(m.config.tied_embeddings);  // the converter writes output.weight
  EXPECT_FALSE(m.weights.layers[0].wqkv.in_out);
  EXPECT_EQ(m.bos_id, 50256);
  const loom::Model model(std::move(m.config), std::move(m.weights));
  check_reference_logits(model, ref, 2e-4);
}

TEST(GgufModel, RopeLayoutComesFromTheArchitecture) {
  // tiny-llama's Q/K rows are permuted for adjacent pairs: half-split RoPE on them is wrong.
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/tiny-llama.gguf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-llama/reference_logits.json");
  auto m = loom::io::load_gguf_model(path);
  m.config.rope_layout = loom::RopeLayout::half_split;
  const loom::Model wrong(std::move(m.config), std::move(m.weights));
  const json r = json::parse(loom::test::read_text(ref));
  const auto tokens = r.at("tokens").get<std::vector<std::int32_t>>();
  loom::nn::KVCache kv(wrong.config(), 128);
  const auto logits = wrong.logits(tokens, 0, kv, loom::Logits::all);
  double err = 0;
  for (std::int64_t v = 0; v < logits.dim(1); ++v)
    err = std::max(err, double(std::fabs(logits(8, v) - r["logits"][8][std::size_t(v)].get<double>())));
  EXPECT_GT(err, 1e-3);

  // qwen2 metadata selects the half-split layout.
  Bytes b;
  b.header(0, 8).kv_string("general.architecture", "qwen2").kv_u32("qwen2.embedding_length", 64);
  b.kv_u32("qwen2.block_count", 1).kv_u32("qwen2.feed_forward_length", 128).kv_u32("qwen2.context_length", 32);
  b.kv_u32("qwen2.attention.head_count", 4).kv_u32("qwen2.vocab_size", 100).kv_f32("qwen2.rope.freq_base", 1e6f);
  TempDir dir;
  write_bytes(dir / "q.gguf", b.s);
  const loom::Config c = loom::io::gguf_config(GgufFile(dir / "q.gguf"));
  EXPECT_EQ(c.rope_layout, loom::RopeLayout::half_split);
  EXPECT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
}

TEST(GgufModel, SameLogitsAsTheHuggingFaceCheckpoint) {
  for (const char* name : {"tiny-llama", "tiny-gpt2"}) {
    LOOM_REQUIRE_FIXTURE(gguf, std::string("tiny-models/") + name + "/" + name + ".gguf");
    LOOM_REQUIRE_FIXTURE(hf, std::string("tiny-models/") + name + "/hf");
    auto g = loom::io::load_gguf_model(gguf);
    auto h = loom::io::load_hf_model(hf);
    const loom::Model mg(std::move(g.config), std::move(g.weights));
    const loom::Model mh(std::move(h.config), std::move(h.weights));
    const std::vector<std::int32_t> tokens = {1, 15043, 3186, 29892, 445, 338, 263, 1243, 29889, 5, 77, 3000};
    loom::nn::KVCache kg(mg.config(), 64), kh(mh.config(), 64);
    const auto lg = mg.logits(tokens, 0, kg, loom::Logits::all);
    const auto lh = mh.logits(tokens, 0, kh, loom::Logits::all);
    double err = 0;
    for (std::int64_t i = 0; i < lg.numel(); ++i) err = std::max(err, double(std::fabs(lg.data()[i] - lh.data()[i])));
    EXPECT_LE(err, 1e-5) << name;
    std::printf("  %s: max |gguf − hf| = %.3g\n", name, err);
  }
}

// ---- model-level errors ---------------------------------------------------------------------------

/// A tiny llama GGUF (dim 32, 1 block, 2 heads, ffn 64, vocab 8) with every tensor f32 unless
/// `types` says otherwise; `drop` omits a tensor, `reshape` changes one's ne.
std::string tiny_llama_gguf(const std::string& drop = "", const std::string& reshape = "",
                            std::uint32_t vocab_key = 8) {
  struct T {
    std::string name;
    std::vector<std::uint64_t> ne;
  };
  std::vector<T> ts = {{"token_embd.weight", {32, 8}},       {"blk.0.attn_norm.weight", {32}},
                       {"blk.0.attn_q.weight", {32, 32}},    {"blk.0.attn_k.weight", {32, 32}},
                       {"blk.0.attn_v.weight", {32, 32}},    {"blk.0.attn_output.weight", {32, 32}},
                       {"blk.0.ffn_norm.weight", {32}},      {"blk.0.ffn_gate.weight", {32, 64}},
                       {"blk.0.ffn_up.weight", {32, 64}},    {"blk.0.ffn_down.weight", {64, 32}},
                       {"output_norm.weight", {32}}};
  Bytes b;
  std::size_t n = 0;
  for (const auto& t : ts) n += t.name != drop;
  b.header(n, 8).kv_string("general.architecture", "llama").kv_u32("llama.embedding_length", 32);
  b.kv_u32("llama.block_count", 1).kv_u32("llama.feed_forward_length", 64).kv_u32("llama.context_length", 16);
  b.kv_u32("llama.attention.head_count", 2).kv_u32("llama.vocab_size", vocab_key).kv_u32("tokenizer.ggml.bos_token_id", 1);
  std::uint64_t off = 0;
  for (auto t : ts) {
    if (t.name == drop) continue;
    if (t.name == reshape) t.ne.back() += 1;
    b.str(t.name).u32(std::uint32_t(t.ne.size()));
    std::uint64_t numel = 1;
    for (auto v : t.ne) b.u64(v), numel *= v;
    b.u32(0).u64(off);
    off += (numel * 4 + 31) / 32 * 32;
  }
  b.pad();
  const std::size_t data = b.s.size();
  b.zeros(off);
  // Norm weights 1, everything else small values.
  for (std::size_t i = data; i + 4 <= b.s.size(); i += 4) {
    const float v = 0.01f * float((i / 4) % 7) - 0.03f;
    std::memcpy(b.s.data() + i, &v, 4);
  }
  return b.s;
}

TEST(GgufModel, TinySyntheticLoadsTiedAndRuns) {
  TempDir dir;
  write_bytes(dir / "m.gguf", tiny_llama_gguf());
  auto m = loom::io::load_gguf_model(dir / "m.gguf");
  EXPECT_TRUE(m.config.tied_embeddings);
  EXPECT_EQ(m.weights.output.weight.data, m.weights.token_embedding.data);
  EXPECT_EQ(m.bos_id, 1);
  EXPECT_FALSE(m.eos_id.has_value());
  const loom::Model model(std::move(m.config), std::move(m.weights));
  loom::nn::KVCache kv(model.config(), 16);
  const std::vector<std::int32_t> tokens = {1, 2, 3};
  const auto logits = model.logits(tokens, 0, kv);
  for (std::int64_t i = 0; i < logits.numel(); ++i) EXPECT_TRUE(std::isfinite(logits.data()[i]));
}

TEST(GgufModel, MissingOrMisshapenTensorsAreNamed) {
  auto expect_model_error = [](const std::string& bytes, ErrorKind kind, std::initializer_list<std::string> parts) {
    TempDir dir;
    write_bytes(dir / "m.gguf", bytes);
    try {
      loom::io::load_gguf_model(dir / "m.gguf");
      ADD_FAILURE() << "expected an error";
    } catch (const loom::Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  };
  expect_model_error(tiny_llama_gguf("blk.0.attn_k.weight"), ErrorKind::format,
                     {"missing tensor 'blk.0.attn_k.weight'", "[32, 32]"});
  expect_model_error(tiny_llama_gguf("", "blk.0.ffn_up.weight"), ErrorKind::format,
                     {"tensor 'blk.0.ffn_up.weight'", "expected shape [64, 32]", "got [65, 32]"});
  expect_model_error(tiny_llama_gguf("", "", 9), ErrorKind::format,
                     {"vocabulary sizes disagree", "llama.vocab_size", "token_embd.weight"});
  Bytes b;
  b.header(0, 1).kv_string("general.architecture", "mamba");
  expect_model_error(b.s, ErrorKind::unsupported, {"'mamba'", "general.architecture"});
}

// ---- quantized weights end to end ------------------------------------------------------------------

/// Writes a copy of a GGUF file with every 2-D weight whose rows are whole 32-blocks quantized
/// to `type`, or every tensor converted to f32 when `type` is f32 (a minimal GGUF writer:
/// metadata copied value by value).
void write_quantized_copy(const GgufFile& src, const fs::path& out, DType type) {
  Bytes b;
  b.header(src.tensor_count(), src.kv_count());
  std::function<void(const loom::io::GgufValue&)> value = [&](const loom::io::GgufValue& v) {
    switch (v.type()) {
      case GgufType::u8: b.put(std::uint8_t(v.as_u64())); break;
      case GgufType::i8: b.put(std::int8_t(v.as_i64())); break;
      case GgufType::u16: b.put(std::uint16_t(v.as_u64())); break;
      case GgufType::i16: b.put(std::int16_t(v.as_i64())); break;
      case GgufType::u32: b.put(std::uint32_t(v.as_u64())); break;
      case GgufType::i32: b.put(std::int32_t(v.as_i64())); break;
      case GgufType::f32: b.put(v.as_f32()); break;
      case GgufType::boolean: b.put(std::uint8_t(v.as_bool())); break;
      case GgufType::string: b.str(v.as_string()); break;
      case GgufType::u64: b.put(v.as_u64()); break;
      case GgufType::i64: b.put(v.as_i64()); break;
      case GgufType::f64: b.put(v.as_f64()); break;
      case GgufType::array:
        b.u32(std::uint32_t(v.as_array().element)).u64(v.as_array().size());
        for (std::size_t i = 0; i < v.as_array().size(); ++i) value(v.as_array().at(i));
        break;
    }
  };
  for (const auto& key : src.keys()) {
    b.str(key).u32(std::uint32_t(src.at(key).type()));
    value(src.at(key));
  }
  std::vector<std::string> blobs;
  std::uint64_t off = 0;
  for (const auto& t : src.tensors()) {
    const loom::TensorRef& r = t.ref;
    std::string blob;
    DType dt = r.dtype;
    std::vector<float> f(static_cast<std::size_t>(r.numel()));
    loom::kernels::to_f32(r.dtype, r.data, f.data(), r.numel());
    if (type == DType::f32) {  // every tensor as f32
      dt = DType::f32;
      blob.assign(reinterpret_cast<const char*>(f.data()), f.size() * sizeof(float));
    } else if (r.shape.rank == 2 && r.cols() % 32 == 0) {
      dt = type;
      blob.resize(std::size_t(*loom::row_bytes(type, r.cols()) * std::uint64_t(r.rows())));
      loom::kernels::quantize_row(type, f.data(), reinterpret_cast<std::byte*>(blob.data()), r.numel());
    } else {
      blob.assign(reinterpret_cast<const char*>(r.data), std::size_t(r.nbytes));
    }
    b.str(t.name).u32(std::uint32_t(r.shape.rank));
    for (int d = r.shape.rank - 1; d >= 0; --d) b.u64(std::uint64_t(r.shape[d]));
    b.u32(loom::io::ggml_type_of(dt)).u64(off);
    off += (blob.size() + 31) / 32 * 32;
    blob.resize((blob.size() + 31) / 32 * 32, '\0');
    blobs.push_back(std::move(blob));
  }
  b.pad();
  for (const auto& blob : blobs) b.s += blob;
  write_bytes(out, b.s);
}

/// Writes a copy of a GGUF file with every tensor converted to f32 (dequantized).
void write_f32_copy(const GgufFile& src, const fs::path& out) { write_quantized_copy(src, out, DType::f32); }

/// Logits at every position, decoding one token at a time (the n = 1 integer path).
loom::Tensor<float> decode_logits(const loom::Model& model, const std::vector<std::int32_t>& tokens) {
  loom::nn::KVCache kv(model.config(), 128);
  loom::Tensor<float> out({std::int64_t(tokens.size()), model.config().vocab_size});
  for (std::size_t p = 0; p < tokens.size(); ++p) {
    const auto l = model.logits(std::span(tokens).subspan(p, 1), std::int32_t(p), kv);
    std::copy(l.data(), l.data() + l.numel(), out.row(std::int64_t(p)));
  }
  return out;
}

double max_diff(const loom::Tensor<float>& a, const loom::Tensor<float>& b) {
  double e = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) e = std::max(e, double(std::fabs(a.data()[i] - b.data()[i])));
  return e;
}

TEST(GgufModel, QuantizedTinyLlama) {
  LOOM_REQUIRE_FIXTURE(path, "tiny-models/tiny-llama/tiny-llama.gguf");
  LOOM_REQUIRE_FIXTURE(ref, "tiny-models/tiny-llama/reference_logits.json");
  const json r = json::parse(loom::test::read_text(ref));
  const auto tokens = r.at("tokens").get<std::vector<std::int32_t>>();
  TempDir dir;
  const GgufFile src(path);
  // Bounds measured on this model (logits std ≈ 0.16): the weights' own rounding error; against
  // llama.cpp's f32 logits the max errors were q8_0 0.010, q4_0 0.18, q4_1 0.12, q5_0 0.068, q5_1 0.061,
  // iq4_nl 0.125.
  for (auto [type, tol_ref, tol_act] : {std::tuple{DType::q8_0, 2e-2, 2e-2}, std::tuple{DType::q4_0, 0.4, 2e-2},
                                        std::tuple{DType::q4_1, 0.25, 2e-2}, std::tuple{DType::q5_0, 0.15, 2e-2},
                                        std::tuple{DType::q5_1, 0.15, 2e-2}, std::tuple{DType::iq4_nl, 0.25, 2e-2}}) {
    const std::string name(loom::to_string(type));
    write_quantized_copy(src, dir / (name + ".gguf"), type);
    const GgufFile qfile(dir / (name + ".gguf"));
    write_f32_copy(qfile, dir / (name + "-f32.gguf"));  // the same rounded weights, in f32
    auto mq = loom::io::load_gguf_model(dir / (name + ".gguf"));
    auto md = loom::io::load_gguf_model(dir / (name + "-f32.gguf"));
    EXPECT_EQ(mq.weights.layers[0].wq.weight.dtype, type);
    EXPECT_EQ(mq.weights.token_embedding.dtype, type);
    EXPECT_EQ(mq.weights.layers[0].w_down.weight.dtype, DType::f32);  // 172 columns: not whole blocks
    EXPECT_EQ(md.weights.layers[0].wq.weight.dtype, DType::f32);
    const loom::Model q(std::move(mq.config), std::move(mq.weights));
    const loom::Model d(std::move(md.config), std::move(md.weights));
    loom::nn::KVCache kq(q.config(), 128), kd(d.config(), 128);
    // A long prompt (more rows than quant_dot_max_rows): with the integer GEMM (AVX-512) within
    // the activation rounding as decode; elsewhere dequantized blocks and the f32 GEMM, equal to
    // the f32 copy up to float rounding.
    std::vector<std::int32_t> long_prompt;
    while (std::int64_t(long_prompt.size()) <= loom::kernels::quant_dot_max_rows(type))
      long_prompt.insert(long_prompt.end(), tokens.begin(), tokens.end());
    const auto pq = q.logits(long_prompt, 0, kq, loom::Logits::all);
    const auto pd = d.logits(long_prompt, 0, kd, loom::Logits::all);
    const double prompt_err = max_diff(pq, pd);
    EXPECT_LE(prompt_err, loom::kernels::detail::int8_gemm(type) ? tol_act : 1e-5) << name;
    // Decode (integer dot products on 8-bit activations) is within the activation rounding.
    loom::nn::KVCache kd2(d.config(), 128);
    const auto ref_d = d.logits(tokens, 0, kd2, loom::Logits::all);
    const auto dq = decode_logits(q, tokens);
    const double decode_err = max_diff(dq, ref_d);
    EXPECT_LE(decode_err, tol_act) << name;
    std::printf("  %s: prompt vs f32 copy %.3g, decode vs f32 copy %.3g, vs llama.cpp f32 reference:", name.c_str(),
                prompt_err, decode_err);
    check_reference_logits(q, ref, tol_ref, false);
  }
}

}  // namespace

}  // namespace test_gguf
