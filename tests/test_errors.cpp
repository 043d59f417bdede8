// The error table of docs/errors.md, checked: every documented bad input is built here, run
// through loom, and the message the user sees must be exactly the one in the document (and every
// case here must be documented). Paths inside messages are written `<dir>` in the document.
//
// To regenerate the table after changing a message: LOOM_PRINT_ERRORS=1 build/tests/loom_test_errors
// prints the rows in the document's format.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <loom/generate.hpp>
#include <loom/io/gguf.hpp>
#include <loom/io/hf_config.hpp>
#include <loom/io/llama2c.hpp>
#include <loom/io/llama2c_tokenizer.hpp>
#include <loom/io/safetensors.hpp>
#include <loom/io/tokenizer_json.hpp>
#include <loom/load.hpp>
#include <map>
#include <string>
#include <vector>

#include "../examples/generate_args.hpp"
#include "fixtures.hpp"
#include "random_model.hpp"
#include "temp_dir.hpp"

namespace test_errors {

namespace {

namespace fs = std::filesystem;

/// A temporary folder for the broken files, removed at exit.
const fs::path& dir() { return loom::test::process_temp_dir("loom-errors"); }

std::string write(const std::string& name, const std::string& bytes) {
  const fs::path p = dir() / name;
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
  return p.string();
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)};
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((v >> (8 * i)) & 255);
  return s;
}

/// A safetensors file with `header` (JSON text) and `data_bytes` zero bytes of data.
std::string safetensors(const std::string& header, std::size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

/// A llama2.c checkpoint: dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 4, seq_len 4,
/// with `extra` floats more (negative: fewer) than the header describes.
std::string llama2c(std::vector<std::int32_t> h = {8, 16, 1, 2, 2, 4, 4}, std::int64_t extra = 0) {
  const std::int64_t d = 8, f = 16, L = 1, kv = 8, vocab = 4, seq = 4, hs = 4;
  const std::int64_t floats = vocab * d + L * d + L * d * d + 2 * L * kv * d + L * d * d + L * d + 3 * L * f * d + d +
                              2 * seq * (hs / 2) + extra;
  return raw(h) + std::string(std::size_t(floats * 4), '\0');
}

/// A llama2.c tokenizer.bin with the given (piece, declared length) entries.
std::string tokenizer_bin(std::int32_t max_len, const std::vector<std::pair<std::string, std::int32_t>>& entries) {
  std::string s = raw(std::vector<std::int32_t>{max_len});
  for (const auto& [piece, len] : entries) {
    const float score = 0.0f;
    s += std::string(reinterpret_cast<const char*>(&score), 4);
    s += std::string(reinterpret_cast<const char*>(&len), 4);
    s += piece;
  }
  return s;
}

std::string small_tokenizer_json(const std::string& model) {
  return R"({"model":)" + model + "}";
}

std::string gguf_str(const std::string& v) { return le64(v.size()) + v; }
std::string u32(std::uint32_t v) { return raw(std::vector<std::uint32_t>{v}); }

/// `n` opening brackets: JSON nested n levels deep (and never closed).
std::string deep(std::size_t n) { return std::string(n, '['); }

/// A tokenizer.json whose normalizer is `normalizer` (JSON), over a three-piece vocabulary.
std::string tokenizer_with_normalizer(const std::string& normalizer) {
  return R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"normalizer":)" + normalizer + "}";
}

/// A GGUF v3 file with two F32 [8] tensors whose data are at the given offsets.
std::string gguf_two_tensors(std::uint64_t a, std::uint64_t b) {
  std::string s = "GGUF" + u32(3) + le64(2) + le64(1) + gguf_str("general.architecture") + u32(8) + gguf_str("llama");
  for (const auto& [name, off] : {std::pair{"a", a}, std::pair{"b", b}})
    s += gguf_str(name) + u32(1) + le64(8) + u32(0) + le64(off);
  s += std::string((32 - s.size() % 32) % 32, '\0');
  return s + std::string(64, '\0');
}

/// A minimal GGUF v3 header with no tensors and no keys, then `tail`.
std::string gguf(std::uint32_t version, std::uint64_t tensors, std::uint64_t kvs, const std::string& tail = {}) {
  return "GGUF" + raw(std::vector<std::uint32_t>{version}) + le64(tensors) + le64(kvs) + tail;
}

const loom::Model& model() {
  static const loom::Model m = loom::test::random_model(loom::test::llama_config(), 3);
  return m;
}

loom::GenerateParams greedy() {
  loom::GenerateParams p;
  p.sampler.temperature = 0;
  p.max_new_tokens = 1;
  return p;
}

void generate(loom::Session& s, std::vector<std::int32_t> prompt, const loom::GenerateParams& p = greedy()) {
  s.generate(prompt, p, [](std::int32_t) { return true; });
}

void cli(std::vector<std::string> args) {
  args.insert(args.begin(), "generate");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  (void)loom::cli::parse(int(args.size()), argv.data());
}

struct Case {
  std::string id, area, input;
  std::function<void()> run;
};

// Every row of docs/errors.md. Ids are stable: add new rows at the end of their area.
std::vector<Case> cases() {
  using namespace loom;
  const std::uint64_t kv_bytes = nn::KVCache::bytes_needed(model().config(), 64);
  return {
      // llama2.c checkpoints
      {"L1", "llama2.c", "file shorter than the 28-byte header", [] { io::load_llama2c(write("short.bin", "abc")); }},
      {"L2", "llama2.c", "header field out of range (dim = 0)",
       [] { io::load_llama2c(write("dim0.bin", llama2c({0, 16, 1, 2, 2, 4, 4}))); }},
      {"L3", "llama2.c", "dim not a multiple of n_heads",
       [] { io::load_llama2c(write("heads.bin", llama2c({8, 16, 1, 3, 3, 4, 4}))); }},
      {"L4", "llama2.c", "truncated weights", [] { io::load_llama2c(write("trunc.bin", llama2c({8, 16, 1, 2, 2, 4, 4}, -100))); }},
      {"L5", "llama2.c", "bytes left over after the weights",
       [] { io::load_llama2c(write("extra.bin", llama2c({8, 16, 1, 2, 2, 4, 4}, 3))); }},
      {"L6", "llama2.c", "versioned export (magic ak42)",
       [] { io::load_llama2c(write("v1.bin", "ak42" + std::string(60, '\0'))); }},
      // safetensors
      {"S1", "safetensors", "file shorter than the 8-byte length", [] { io::SafetensorsFile(write("a.safetensors", "abc")); }},
      {"S2", "safetensors", "header length past the end of the file",
       [] { io::SafetensorsFile(write("b.safetensors", le64(1000) + "{}")); }},
      {"S3", "safetensors", "header is not JSON", [] { io::SafetensorsFile(write("c.safetensors", safetensors("{\"a\":", 0))); }},
      {"S4", "safetensors", "unknown dtype",
       [] { io::SafetensorsFile(write("d.safetensors", safetensors(R"({"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", 4))); }},
      {"S5", "safetensors", "dtype loom does not read (I32)",
       [] { io::SafetensorsFile(write("e.safetensors", safetensors(R"({"w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", 4))); }},
      {"S6", "safetensors", "data_offsets past the end of the data",
       [] { io::SafetensorsFile(write("f.safetensors", safetensors(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8))); }},
      {"S7", "safetensors", "shape does not match the byte count",
       [] { io::SafetensorsFile(write("g.safetensors", safetensors(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16))); }},
      {"S8", "safetensors", "two tensors share bytes",
       [] {
         io::SafetensorsFile(write("h.safetensors", safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)));
       }},
      {"S9", "safetensors", "duplicate tensor name",
       [] {
         io::SafetensorsFile(write("i.safetensors", safetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                                                R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)));
       }},
      // config.json
      {"C1", "config.json", "unsupported architecture",
       [] { io::to_config(io::parse_hf_config(nlohmann::json::parse(R"({"architectures":["BertModel"]})"))); }},
      {"C2", "config.json", "missing hidden_size",
       [] {
         io::to_config(io::parse_hf_config(nlohmann::json::parse(R"({"architectures":["LlamaForCausalLM"],"vocab_size":32})")));
       }},
      {"C3", "config.json", "wrong JSON type", [] { io::parse_hf_config(nlohmann::json::parse(R"({"num_hidden_layers":"two"})")); }},
      {"C4", "config.json", "hidden_size not divisible by the head count",
       [] {
         io::to_config(io::parse_hf_config(nlohmann::json::parse(
             R"({"architectures":["LlamaForCausalLM"],"vocab_size":32,"hidden_size":10,"num_hidden_layers":1,)"
             R"("num_attention_heads":3,"intermediate_size":8})")));
       }},
      {"C5", "config.json", "config.json is not an object", [] { io::read_hf_config(write("cfg/config.json", "[1, 2]")); }},
      // generation_config.json
      {"G1", "generation_config.json", "top_p above 1",
       [] { io::parse_hf_generation_config(nlohmann::json::parse(R"({"top_p":1.5})")); }},
      {"G2", "generation_config.json", "negative temperature",
       [] { io::parse_hf_generation_config(nlohmann::json::parse(R"({"temperature":-0.5})")); }},
      // tokenizer.json
      {"T1", "tokenizer.json", "not JSON", [] { io::load_tokenizer_json_string("{\"model\": ", "tokenizer.json"); }},
      {"T2", "tokenizer.json", "model type other than BPE",
       [] { io::load_tokenizer_json_string(small_tokenizer_json(R"({"type":"WordPiece","vocab":{}})"), "tokenizer.json"); }},
      {"T3", "tokenizer.json", "merge of a token missing from the vocabulary",
       [] {
         io::load_tokenizer_json_string(small_tokenizer_json(R"({"type":"BPE","vocab":{"a":0,"ab":1},"merges":["a b"]})"),
                                        "tokenizer.json");
       }},
      {"T4", "tokenizer.json", "two pieces with the same id",
       [] { io::load_tokenizer_json_string(small_tokenizer_json(R"({"type":"BPE","vocab":{"a":0,"b":0},"merges":[]})"), "tokenizer.json"); }},
      {"T5", "tokenizer.json", "more tokens than the model's embedding",
       [] {
         write("tok/tokenizer.json", small_tokenizer_json(R"({"type":"BPE","vocab":{"a":0,"b":1,"c":2},"merges":[]})"));
         load_tokenizer(dir() / "tok" / "tokenizer.json", 2);
       }},
      // llama2.c tokenizer.bin
      {"B1", "tokenizer.bin", "fewer entries than the vocabulary",
       [] { io::load_llama2c_tokenizer(write("tok1.bin", tokenizer_bin(4, {{"a", 1}})), 512); }},
      {"B2", "tokenizer.bin", "negative piece length",
       [] { io::load_llama2c_tokenizer(write("tok2.bin", tokenizer_bin(4, {{"a", 1}, {"", -3}, {"", 0}})), 3); }},
      {"B3", "tokenizer.bin", "piece longer than max_token_length",
       [] { io::load_llama2c_tokenizer(write("tok3.bin", tokenizer_bin(2, {{"abc", 3}, {"", 0}, {"", 0}})), 3); }},
      // GGUF
      {"F1", "GGUF", "GGUF version 1", [] { io::GgufFile(write("v1.gguf", gguf(1, 0, 0))); }},
      {"F2", "GGUF", "more tensors declared than the file holds",
       [] { io::GgufFile(write("t.gguf", gguf(3, 1000000, 0))); }},
      {"F3", "GGUF", "file shorter than the header", [] { io::GgufFile(write("s.gguf", "GGUF")); }},
      // formats
      {"D1", "any model", "not a model file",
       [] { load(write("notes.txt", "these are not weights, just a few words of text")); }},
      {"D2", "any model", "path does not exist", [] { load(dir() / "missing.bin"); }},
      // token ids
      {"I1", "token ids", "prompt id outside the vocabulary",
       [] {
         Session s(model(), {.n_ctx = 16});
         generate(s, {1, 2, 999});
       }},
      {"I2", "token ids", "decoding an id outside the vocabulary",
       [] {
         const Tokenizer t = io::load_tokenizer_json_string(
             small_tokenizer_json(R"({"type":"BPE","vocab":{"a":0,"b":1},"merges":[]})"), "tokenizer.json");
         const std::vector<std::int32_t> ids{0, 7};
         (void)t.decode(ids);
       }},
      {"I3", "token ids", "end-of-generation id outside the vocabulary",
       [] {
         Session s(model(), {.n_ctx = 16});
         GenerateParams p = greedy();
         p.end_of_generation = {-1};
         generate(s, {1}, p);
       }},
      // sampler parameters
      {"P1", "sampler", "negative temperature",
       [] {
         SamplerParams p;
         p.temperature = -1;
         p.validate();
       }},
      {"P2", "sampler", "top_p = 0",
       [] {
         SamplerParams p;
         p.top_p = 0;
         p.validate();
       }},
      {"P3", "sampler", "negative top_k",
       [] {
         SamplerParams p;
         p.top_k = -5;
         p.validate();
       }},
      {"P4", "sampler", "repeat_last_n below -1",
       [] {
         SamplerParams p;
         p.repeat_last_n = -2;
         p.validate();
       }},
      // context and memory
      {"X1", "context", "prompt longer than the context",
       [] {
         Session s(model(), {.n_ctx = 8});
         generate(s, std::vector<std::int32_t>(9, 1));
       }},
      {"X2", "context", "negative context size", [] { Session s(model(), {.n_ctx = -4}); }},
      {"X3", "context", "negative n_keep with context shift",
       [] {
         Session s(model(), {.n_ctx = 8});
         GenerateParams p = greedy();
         p.context_shift = true;
         p.n_keep = -1;
         generate(s, {1, 2});
         generate(s, {3}, p);
       }},
      {"X4", "context", "empty prompt and nothing to continue",
       [] {
         Session s(model(), {.n_ctx = 8});
         generate(s, {});
       }},
      {"X5", "memory", "KV cache + scratch over the memory budget",
       [kv_bytes] { Session s(model(), {.n_ctx = 64, .max_memory = kv_bytes}); }},
      {"X6", "memory", "prompt batch whose scratch exceeds the budget",
       [kv_bytes] {
         const std::uint64_t one = Activations::bytes_needed(model().config(), 1, 64, 1);
         Session s(model(), {.n_ctx = 64, .max_memory = kv_bytes + one});
         generate(s, {1, 2, 3, 4});
       }},
      {"X7", "threads", "zero threads", [] { Session s(model(), {.n_ctx = 8, .n_threads = 0}); }},
      {"X8", "KV cache", "KV cache type other than f32 or f16",
       [] { Session s(model(), {.n_ctx = 8, .kv_type = DType::q8_0}); }},
      // command line (generate; the program prints `generate: MESSAGE` and exits 2)
      {"U1", "generate CLI", "unknown flag", [] { cli({"-m", "m.bin", "--tempp", "1"}); }},
      {"U2", "generate CLI", "flag without its value", [] { cli({"-m", "m.bin", "-n"}); }},
      {"U3", "generate CLI", "not an integer", [] { cli({"-m", "m.bin", "-n", "ten"}); }},
      {"U4", "generate CLI", "thread count out of range", [] { cli({"-m", "m.bin", "-t", "0"}); }},
      {"U5", "generate CLI", "bad byte count", [] { cli({"-m", "m.bin", "--max-memory", "12X"}); }},
      {"U6", "generate CLI", "no model", [] { cli({"-p", "hello"}); }},
      {"U7", "generate CLI", "--prompt-ids together with -p", [] { cli({"-m", "m.bin", "-p", "hi", "--prompt-ids", "1,2"}); }},
      {"U8", "generate CLI", "bad --prompt-ids list", [] { cli({"-m", "m.bin", "--prompt-ids", "1,,2"}); }},
      {"U9", "generate CLI", "sampler value out of range", [] { cli({"-m", "m.bin", "--top-p", "2"}); }},
      {"U10", "generate CLI", "not a number", [] { cli({"-m", "m.bin", "--temp", "warm"}); }},
      {"U11", "generate CLI", "KV cache type other than f32 or f16", [] { cli({"-m", "m.bin", "--cache-type", "q8_0"}); }},
      {"U12", "generate CLI", "-ctk and -ctv differ", [] { cli({"-m", "m.bin", "-ctk", "f16"}); }},
      // JSON nesting (limits::json_depth), checked before parsing
      {"J1", "JSON", "tokenizer.json nested 10^5 levels",
       [] { io::load_tokenizer_json_string(R"({"model":)" + deep(100'000), "tokenizer.json"); }},
      {"J2", "JSON", "config.json nested 10^6 levels",
       [] { io::read_hf_config(write("deep/config.json", R"({"architectures":)" + deep(1'000'000))); }},
      {"J3", "JSON", "safetensors header nested 10^5 levels",
       [] { io::SafetensorsFile(write("deep.safetensors", safetensors(R"({"a":)" + deep(100'000), 0))); }},
      {"J4", "JSON", "tokenizer_config.json nested 10^5 levels",
       [] { detail::parse_chat_template(R"({"chat_template":)" + deep(100'000), "tokenizer_config.json"); }},
      {"J5", "JSON", "tokenizer_config.json: a template name that is a number",
       [] { detail::parse_chat_template(R"({"chat_template":[{"name":5,"template":"x"}]})", "tokenizer_config.json"); }},
      {"J6", "JSON", "tokenizer_config.json: chat_template of the wrong type",
       [] { detail::parse_chat_template(R"({"chat_template":3})", "tokenizer_config.json"); }},
      // tokenizer.json components (limits::tokenizer_*, limits::normalizer_growth)
      {"N1", "tokenizer.json", "Sequence normalizers nested 20 levels",
       [] {
         std::string n = R"({"type":"NFC"})";
         for (int i = 0; i < 20; ++i) n = R"({"type":"Sequence","normalizers":[)" + n + "]}";
         io::load_tokenizer_json_string(tokenizer_with_normalizer(n), "tokenizer.json");
       }},
      {"N2", "tokenizer.json", "40 chained Replace normalizers that each double the text",
       [] {
         std::string list;
         for (int i = 0; i < 40; ++i) list += std::string(i ? "," : "") + R"({"type":"Replace","pattern":{"String":"a"},"content":"aa"})";
         io::load_tokenizer_json_string(tokenizer_with_normalizer(R"({"type":"Sequence","normalizers":[)" + list + "]}"),
                                        "tokenizer.json");
       }},
      {"N3", "tokenizer.json", "more than 64 pre-tokenizer steps",
       [] {
         std::string list;
         for (int i = 0; i < 65; ++i) list += std::string(i ? "," : "") + R"({"type":"Digits"})";
         io::load_tokenizer_json_string(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":)"
                                        R"({"type":"Sequence","pretokenizers":[)" + list + "]}}",
                                        "tokenizer.json");
       }},
      // the paths a user passes
      {"R1", "paths", "a character device as the model", [] { load("/dev/zero"); }},
      {"R2", "paths", "a FIFO as the model",
       [] {
         const fs::path fifo = dir() / "fifo";
         ::mkfifo(fifo.c_str(), 0600);
         load(fifo);
       }},
      {"R3", "paths", "a directory as a text file",
       [] { io::read_input(dir(), "cli", limits::text_file_bytes, "text file"); }},
      {"R4", "paths", "a text file over the size limit",
       [] {
         const fs::path big = write("big.txt", "");
         fs::resize_file(big, limits::text_file_bytes + 1);  // sparse: no disk space used
         io::read_input(big, "cli", limits::text_file_bytes, "text file");
       }},
      {"R5", "paths", "a symlink loop",
       [] {
         std::error_code ec;
         fs::create_symlink(dir() / "loop", dir() / "loop", ec);
         load(dir() / "loop");
       }},
      {"R6", "paths", "a file name over the length limit", [] { load(dir() / std::string(300, 'x')); }},
      {"R7", "paths", "a character device as the tokenizer", [] { load_tokenizer("/dev/null"); }},
      // GGUF checks
      {"F4", "GGUF", "two tensors share bytes", [] { io::GgufFile(write("overlap.gguf", gguf_two_tensors(0, 0))); }},
      {"F5", "GGUF", "gpt2 vocabulary without tokenizer.ggml.merges",
       [] {
         write("nomerges.gguf", "GGUF" + u32(3) + le64(0) + le64(2) + gguf_str("tokenizer.ggml.model") + u32(8) +
                                    gguf_str("gpt2") + gguf_str("tokenizer.ggml.tokens") + u32(9) + u32(8) + le64(1) +
                                    gguf_str("a"));
         load_tokenizer(dir() / "nomerges.gguf");
       }},
      {"F6", "GGUF", "a vocabulary (no tensors) as the model",
       [] { load(write("vocab.gguf", gguf(3, 0, 1, gguf_str("tokenizer.ggml.model") + u32(8) + gguf_str("gpt2")))); }},
      {"F7", "GGUF", "metadata array over the element limit",
       [] {
         const fs::path p = write("array.gguf", "GGUF" + u32(3) + le64(0) + le64(1) + gguf_str("x") + u32(9) + u32(0) +
                                                      le64(limits::gguf_array_elements + 1));
         fs::resize_file(p, fs::file_size(p) + limits::gguf_array_elements + 1);  // sparse zeros
         io::GgufFile g(p);
       }},
      // format detection (tokenizers and models)
      {"D3", "any tokenizer", "SentencePiece tokenizer.model",
       [] {
         load_tokenizer(write("tokenizer.model", std::string("\x0a\x0e\x0a\x05<unk>\x15\0\0\0\0\x18\x02", 16)));
       }},
      {"D4", "any tokenizer", "a llama2.c checkpoint as the tokenizer",
       [] { load_tokenizer(write("model.bin", llama2c())); }},
      {"D5", "any tokenizer", "a file that is no tokenizer",
       [] { load_tokenizer(write("words.txt", "these are not tokens, just a few words of text")); }},
      {"D6", "any model", "a llama2.c tokenizer.bin as the model",
       [] { load(write("tok4.bin", tokenizer_bin(4, {{"a", 1}, {"b", 1}}))); }},
      {"D7", "any model", "tokenizer_config.json with a wrong type beside a model",
       [] { detail::read_chat_template(fs::path(write("tc/tokenizer_config.json", R"({"chat_template":{"a":1}})")).parent_path()); }},
      // context
      {"X9", "context", "context beyond the learned positions (GPT-2)",
       [] {
         static const Model gpt2 = test::random_model(test::gpt2_config(), 3);
         Session s(gpt2, {.n_ctx = gpt2.config().max_seq_len + 1});
       }},
      // kernel levels (LOOM_CPU), checked against a CPU with AVX2 but no AVX-512
      {"K1", "LOOM_CPU", "unknown kernel level",
       [] {
         CpuFeatures avx2;
         avx2.avx2 = avx2.fma = avx2.f16c = avx2.bmi2 = true;
         avx2.best = KernelLevel::avx2;
         loom::detail::with_requested_level(avx2, "sse");
       }},
      {"K2", "LOOM_CPU", "a level the CPU lacks",
       [] {
         CpuFeatures avx2;
         avx2.avx2 = avx2.fma = avx2.f16c = avx2.bmi2 = true;
         avx2.best = KernelLevel::avx2;
         loom::detail::with_requested_level(avx2, "avx512");
       }},
      {"K3", "LOOM_BF16", "neither 0 nor 1", [] { loom::detail::with_bf16_choice(CpuFeatures{}, "on"); }},
  };
}

/// Runs a case and returns the message the user sees, with the temporary folder written `<dir>`.
std::string message_of(const Case& c) {
  std::string msg;
  try {
    c.run();
    return "(no error)";
  } catch (const loom::cli::UsageError& e) {
    msg = std::string("generate: ") + e.what();
  } catch (const loom::Error& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    return std::string("(not a loom::Error) ") + e.what();
  }
  const std::string d = dir().string();
  for (std::size_t p; (p = msg.find(d)) != std::string::npos;) msg.replace(p, d.size(), "<dir>");
  return msg;
}

std::string escape_cell(std::string s) {
  for (std::size_t p = 0; (p = s.find('|', p)) != std::string::npos; p += 2) s.replace(p, 1, "\\|");
  return s;
}

/// Rows of the table in docs/errors.md: id → message (between the backticks of the last cell).
std::map<std::string, std::string> documented() {
  std::ifstream f(fs::path(LOOM_SOURCE_DIR) / "docs" / "errors.md");
  std::map<std::string, std::string> rows;
  std::string line;
  bool in_table = false;  // rows are read after the "## The table" heading only
  while (std::getline(f, line)) {
    if (line.rfind("## ", 0) == 0) in_table = line == "## The table";
    if (!in_table || line.rfind("| ", 0) != 0) continue;
    const std::size_t id_end = line.find(" |", 2);
    const std::string id = line.substr(2, id_end - 2);
    const std::size_t open = line.find("| `");
    const std::size_t close = line.rfind("` |");
    if (open == std::string::npos || close == std::string::npos || close <= open) continue;
    std::string msg = line.substr(open + 3, close - open - 3);
    for (std::size_t p = 0; (p = msg.find("\\|", p)) != std::string::npos; ++p) msg.replace(p, 2, "|");
    rows[id] = msg;
  }
  return rows;
}

TEST(ErrorTable, EveryDocumentedMessageIsWhatTheCodeSays) {
  const std::vector<Case> all = cases();
  if (const char* p = std::getenv("LOOM_PRINT_ERRORS"); p && *p) {
    std::cout << "| id | input | bad input | message |\n|---|---|---|---|\n";
    for (const Case& c : all)
      std::cout << "| " << c.id << " | " << c.area << " | " << c.input << " | `" << escape_cell(message_of(c)) << "` |\n";
  }
  const auto doc = documented();
  ASSERT_GE(doc.size(), 30u) << "docs/errors.md must list at least 30 bad inputs";
  std::map<std::string, bool> seen;
  for (const Case& c : all) {
    SCOPED_TRACE(c.id + ": " + c.input);
    const std::string got = message_of(c);
    EXPECT_EQ(got.rfind("[loom.", 0) == 0 || got.rfind("generate: ", 0) == 0, true) << got;
    EXPECT_EQ(got.find('`'), std::string::npos) << "a backtick would break the table: " << got;
    const auto it = doc.find(c.id);
    if (it == doc.end()) {
      ADD_FAILURE() << c.id << " is not in docs/errors.md; its message is:\n" << got;
      continue;
    }
    EXPECT_EQ(it->second, got) << "docs/errors.md row " << c.id << " differs from the code";
    seen[c.id] = true;
  }
  for (const auto& [id, msg] : doc) EXPECT_TRUE(seen.count(id)) << "docs/errors.md row " << id << " has no test case";
}

TEST(ErrorTable, IdsAreUnique) {
  std::map<std::string, int> n;
  for (const Case& c : cases()) EXPECT_EQ(++n[c.id], 1) << c.id;
}

}  // namespace

}  // namespace test_errors
