// The bodies of loom's fuzz targets, shared by the libFuzzer binary (tests/fuzz/fuzz_main.cpp,
// built with -DLOOM_FUZZ=ON and clang) and by the gtest that replays the checked-in crash inputs
// (tests/test_fuzz_regressions.cpp, built everywhere, including the sanitizer build).
//
// Contract of every target: any input is allowed; parsing may fail only with loom::Error (or
// loom::cli::UsageError for the command line). Any other exception escapes the target and is
// reported by libFuzzer as a crash, as are sanitizer findings and failed property checks
// (LOOM_FUZZ_CHECK aborts with a message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include <loom/io/gguf.hpp>
#include <loom/io/gguf_model.hpp>
#include <loom/io/hf_config.hpp>
#include <loom/io/llama2c.hpp>
#include <loom/io/llama2c_tokenizer.hpp>
#include <loom/io/safetensors.hpp>
#include <loom/chat.hpp>
#include <loom/io/tokenizer_json.hpp>
#include <loom/load.hpp>
#include <loom/tokenizer/tokenizer.hpp>
#include <loom/tokenizer/unicode.hpp>

#include "../../examples/generate_args.hpp"

#define LOOM_FUZZ_CHECK(cond, what)                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "fuzz property violated: %s (%s)\n", what, #cond);        \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

namespace loom::fuzz {

using Bytes = std::span<const std::uint8_t>;

inline std::span<const std::byte> as_bytes(Bytes b) { return {reinterpret_cast<const std::byte*>(b.data()), b.size()}; }
inline std::string_view as_text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

/// $LOOM_FIXTURES, else ../shared/fixtures beside the source tree.
inline std::filesystem::path fixtures_root() {
  if (const char* env = std::getenv("LOOM_FIXTURES"); env && *env) return env;
  return std::filesystem::path(LOOM_SOURCE_DIR) / ".." / "shared" / "fixtures";
}

/// safetensors header: the whole file from memory; every tensor must then lie inside the buffer.
inline void safetensors(Bytes data) {
  try {
    const io::SafetensorsFile f(io::MappedFile::from_bytes(as_bytes(data), "fuzz.safetensors"));
    for (const auto& [name, t] : f.tensors()) {
      LOOM_FUZZ_CHECK(t.nbytes == 0 || !f.in_place(t) ||
                          (t.data >= f.mapping().data() && t.data + t.nbytes <= f.mapping().data() + f.mapping().size()),
                      "tensor data inside the file");
      if (t.nbytes > 0) {  // touch the first and last byte (ASan checks the copies too)
        volatile std::byte first = t.data[0], last = t.data[t.nbytes - 1];
        (void)first;
        (void)last;
      }
    }
  } catch (const Error&) {
  }
}

/// config.json → HfConfig → Config (and generation_config.json parsing of the same object).
inline void hf_config(Bytes data) {
  try {
    const nlohmann::json j = io::detail::parse_json_unique_keys(as_text(data), "hf_config", "fuzz/config.json", "config");
    try {
      (void)io::parse_hf_generation_config(j, "fuzz/generation_config.json");
    } catch (const Error&) {
    }
    const io::HfConfig hf = io::parse_hf_config(j, "fuzz/config.json");
    (void)hf.special_tokens();
    const Config c = io::to_config(hf);
    c.validate("fuzz");
  } catch (const Error&) {
  }
}

/// tokenizer.json text; a tokenizer that loads must then encode and decode its own pieces.
inline void tokenizer_json(Bytes data) {
  try {
    const Tokenizer tok = io::load_tokenizer_json_string(as_text(data), "fuzz/tokenizer.json");
    const std::string text = "Hello world! 123 <s> \xe2\x96\x81x \xff";
    const auto ids = tok.encode(text, true, true);
    (void)tok.decode(ids, true);
    for (std::int32_t id = 0; id < std::min(tok.vocab_size(), 64); ++id) (void)tok.token_to_piece(id, true);
  } catch (const Error&) {
  }
}

/// llama2.c checkpoint from memory: the weights that load must be views inside the buffer.
inline void llama2c(Bytes data) {
  try {
    const auto file = std::make_shared<const io::MappedFile>(io::MappedFile::from_bytes(as_bytes(data), "fuzz.bin"));
    const io::Llama2cModel m = io::load_llama2c(file);
    const std::byte* b = file->data();
    auto inside = [&](const TensorRef& t) {
      return t.nbytes == 0 || (t.data >= b && t.data + t.nbytes <= b + file->size());
    };
    LOOM_FUZZ_CHECK(inside(m.weights.token_embedding), "embedding inside the file");
    LOOM_FUZZ_CHECK(inside(m.weights.output.weight), "classifier inside the file");
    for (const auto& l : m.weights.layers) {
      LOOM_FUZZ_CHECK(inside(l.wq.weight) && inside(l.wk.weight) && inside(l.wv.weight) && inside(l.wo.weight),
                      "attention weights inside the file");
      LOOM_FUZZ_CHECK(inside(l.w_gate.weight) && inside(l.w_up.weight) && inside(l.w_down.weight),
                      "feed-forward weights inside the file");
    }
  } catch (const Error&) {
  }
}

/// llama2.c tokenizer.bin for several vocabulary sizes; a tokenizer that loads encodes and
/// decodes the input itself.
inline void llama2c_tokenizer(Bytes data) {
  for (std::int32_t vocab : {1, 3, 259, 512, 32000}) {
    try {
      const Tokenizer tok = io::load_llama2c_tokenizer_bytes(as_bytes(data), vocab, "fuzz/tokenizer.bin");
      const std::string_view text = as_text(data.subspan(0, std::min<std::size_t>(data.size(), 64)));
      const auto ids = tok.encode(text, true, false);
      for (std::int32_t id : ids) LOOM_FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode gives ids in the vocabulary");
      (void)tok.decode(ids);
    } catch (const Error&) {
    }
  }
}

/// The two reference tokenizers, loaded once.
struct ReferenceTokenizers {
  Tokenizer gpt2, llama;
  static const ReferenceTokenizers& get() {
    static const ReferenceTokenizers t = [] {
      const auto root = fixtures_root() / "tokenizers" / "hf";
      if (!std::filesystem::exists(root / "gpt2-tokenizer.json"))
        throw std::runtime_error("fixtures not found at " + root.string() + " (set LOOM_FIXTURES)");
      return ReferenceTokenizers{io::load_tokenizer_json(root / "gpt2-tokenizer.json"),
                                 io::load_tokenizer_json(root / "llama2-tokenizer.nbsp-restored.json")};
    }();
    return t;
  }
};

/// Encode/decode of arbitrary bytes (including invalid UTF-8) with GPT-2's byte-level BPE and
/// LLaMA's SentencePiece BPE. Byte 0 picks the tokenizer and flags; the rest is the text.
/// Properties: ids are in the vocabulary; byte-level BPE round-trips any bytes; streamed decode
/// equals the sanitized one-shot decode; decoding arbitrary ids fails only with loom::Error.
inline void tokenizer_roundtrip(Bytes data) {
  if (data.empty()) return;
  const ReferenceTokenizers& t = ReferenceTokenizers::get();
  const std::uint8_t flags = data[0];
  const Tokenizer& tok = flags & 1 ? t.llama : t.gpt2;
  const bool add_special = flags & 2, parse_special = flags & 4;
  const std::string_view text = as_text(data.subspan(1));
  const std::vector<std::int32_t> ids = tok.encode(text, add_special, parse_special);
  for (std::int32_t id : ids) LOOM_FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode gives ids in the vocabulary");
  const std::string back = tok.decode(ids);
  if (!(flags & 1) && !add_special && !parse_special) LOOM_FUZZ_CHECK(back == text, "byte-level BPE round-trips");
  StreamDecoder stream(tok);
  std::string streamed;
  for (std::int32_t id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  LOOM_FUZZ_CHECK(streamed == unicode::sanitize_utf8(back), "streamed decode equals sanitized decode");

  // The same bytes read as token ids, some outside the vocabulary.
  std::vector<std::int32_t> raw;
  for (std::size_t i = 1; i + 4 <= data.size(); i += 4) {
    std::int32_t v;
    std::memcpy(&v, data.data() + i, 4);
    raw.push_back(flags & 8 ? v : std::int32_t(std::uint32_t(v) % std::uint32_t(tok.vocab_size() + 2)));
  }
  try {
    (void)tok.decode(raw, flags & 16);
  } catch (const Error&) {
  }
  try {
    StreamDecoder d(tok, flags & 16);
    for (std::int32_t id : raw) (void)d.push(id);
    (void)d.finish();
  } catch (const Error&) {
  }
}

/// The generate command line: NUL-separated arguments. `-f` (which reads a file) is skipped.
inline void cli(Bytes data) {
  std::vector<std::string> args{"generate"};
  std::string cur;
  for (std::uint8_t c : data) {
    if (c == 0) {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(char(c));
    }
  }
  if (!cur.empty()) args.push_back(cur);
  for (const std::string& a : args)
    if (a == "-f" || a == "--file") return;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  try {
    const cli::Options o = cli::parse(int(args.size()), argv.data());
    if (!o.help) {
      LOOM_FUZZ_CHECK(!o.model.empty(), "a parsed command line has a model");
      LOOM_FUZZ_CHECK(o.threads >= 1, "threads >= 1");
      SamplerParams s;
      for (const auto& f : o.sampler_flags) f(s);
      s.validate();  // parse() already validated: must not throw
    }
  } catch (const cli::UsageError&) {
  }
}

/// The path of an in-memory file (memfd, opened through /proc/self/fd) holding `data`, for the
/// readers that take a path. One file per process, rewritten by every call.
inline std::string memory_file(Bytes data) {
  static const int fd = ::memfd_create("loom-fuzz", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error("memfd_create failed");
  if (::ftruncate(fd, 0) != 0) throw std::runtime_error("ftruncate failed");
  for (std::size_t off = 0; off < data.size();) {
    const ssize_t w = ::pwrite(fd, data.data() + off, data.size() - off, off_t(off));
    if (w <= 0) throw std::runtime_error("pwrite failed");
    off += std::size_t(w);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

/// A GGUF file (header, metadata, tensor infos) and the model loader on top of it.
inline void gguf(Bytes data) {
  const std::string path = memory_file(data);
  try {
    const io::GgufFile f(path);
    for (const auto& t : f.tensors()) {
      const std::byte* b = f.file().data();
      LOOM_FUZZ_CHECK(t.ref.nbytes == 0 || (t.ref.data >= b && t.ref.data + t.ref.nbytes <= b + f.file().size()),
                      "tensor data inside the file");
    }
    (void)io::load_gguf_model(path);
  } catch (const Error&) {
  }
}

/// tokenizer_config.json text → its chat template → the template family → a formatted chat.
inline void tokenizer_config(Bytes data) {
  try {
    const std::string jinja = detail::parse_chat_template(as_text(data), "fuzz/tokenizer_config.json");
    const ChatFormat f = detect_chat_format(jinja);
    (void)format_chat(f, {{"system", "s"}, {"user", jinja.substr(0, 64)}}, true);
  } catch (const Error&) {
  }
}

/// Chat templates: byte 0 picks a family; the rest is split at NUL into alternating messages
/// (the first may be a system message). Detecting a family from the same text must not crash;
/// formatting must keep every message's text and reuse earlier turns (format_chat_delta).
inline void chat_template(Bytes data) {
  if (data.empty()) return;
  const ChatFormat formats[] = {ChatFormat::chatml, ChatFormat::llama2, ChatFormat::llama3,
                                ChatFormat::mistral, ChatFormat::zephyr, ChatFormat::phi3};
  const ChatFormat f = formats[data[0] % 6];
  const std::string_view text = as_text(data.subspan(1));
  try {
    (void)detect_chat_format(text);
  } catch (const Error&) {
  }
  std::vector<ChatMessage> messages;
  const bool system = data[0] & 8;
  std::size_t start = 0, turn = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '\0') {
      const char* role = system && messages.empty() ? "system" : turn++ % 2 == 0 ? "user" : "assistant";
      messages.push_back({role, std::string(text.substr(start, i - start))});
      start = i + 1;
    }
  }
  const std::string all = format_chat(f, messages, true);
  for (const ChatMessage& m : messages)
    if (m.role != "system") LOOM_FUZZ_CHECK(all.find(m.content) != std::string::npos, "every turn is in the chat");
  try {
    const std::vector<ChatMessage> history(messages.begin(), messages.end() - 1);
    (void)format_chat_delta(f, history, messages, true);
  } catch (const Error&) {
  }
  try {
    (void)format_chat(f, {{std::string(text.substr(0, 16)), "x"}}, false);  // roles other than the three are errors
  } catch (const Error&) {
  }
}

/// Format detection of the tokenize tool and loom::load: any file must be recognized as what it
/// is, or refused with an Error — never an empty tokenizer.
inline void detect(Bytes data) {
  const std::string path = memory_file(data);
  try {
    (void)detect_format(path);
  } catch (const Error&) {
  }
  try {
    const Tokenizer t = load_tokenizer(path);
    LOOM_FUZZ_CHECK(t.vocab_size() > 0, "a tokenizer that loads has a vocabulary");
    (void)t.encode("Hello world", true, false);
  } catch (const Error&) {
  }
  try {
    (void)load(path);
  } catch (const Error&) {
  }
}

/// A named target.
struct Target {
  std::string_view name;
  void (*run)(Bytes);
};

/// Every target, by the name its command and regression folder use (fuzz_<name>, regressions/<name>/).
inline constexpr Target targets[] = {
    {"safetensors", safetensors},       {"hf_config", hf_config},
    {"tokenizer_json", tokenizer_json}, {"llama2c", llama2c},
    {"llama2c_tokenizer", llama2c_tokenizer}, {"tokenizer_roundtrip", tokenizer_roundtrip},
    {"cli", cli}, {"gguf", gguf},
    {"tokenizer_config", tokenizer_config}, {"chat_template", chat_template},
    {"detect", detect},
};

}  // namespace loom::fuzz
