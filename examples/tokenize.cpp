// tokenize: print the token ids of a text.
//
//   tokenize -m MODEL_OR_TOKENIZER -p TEXT [--ids] [--no-parse-special] [--no-bos]
//
// -m accepts a tokenizer.json, a folder holding tokenizer.json, a GGUF model or vocabulary, or a
// llama2.c tokenizer.bin, told apart by content (loom::load_tokenizer); any other file is an
// error saying what it is. --ids prints one JSON array; otherwise one `id<TAB>piece` line per
// token. Exit codes: 0 ok, 1 any error from the tokenizer or its file, 2 usage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "loom/error.hpp"
#include "loom/load.hpp"
#include "loom/tokenizer/tokenizer.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace {

constexpr const char* kUsage =
    "usage: tokenize -m MODEL_OR_TOKENIZER -p TEXT [--ids] [--no-parse-special] [--no-bos]";

[[noreturn]] void usage_error(const std::string& reason) {
  std::cerr << "tokenize: " << reason << " (" << kUsage << ")\n";
  std::exit(2);
}

/// `s` with control characters and bytes that are not valid UTF-8 escaped, so each token stays
/// on one line and the output stays valid UTF-8.
std::string printable(const std::string& s) {
  std::string out;
  for (std::size_t pos = 0; pos < s.size();) {
    const auto u = loom::unicode::decode_utf8(s, pos);
    const auto c = static_cast<unsigned char>(s[pos]);
    if (u.valid && u.len > 1) {
      out.append(s, pos, u.len);
      pos += u.len;
      continue;
    }
    ++pos;
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          static const char* hex = "0123456789abcdef";
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += char(c);
        }
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, prompt;
  bool have_model = false, have_prompt = false, ids_only = false, parse_special = true, bos = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(std::string("missing value for ") + std::string(a));
      return argv[++i];
    };
    if (a == "-m" || a == "--model") {
      model = value();
      have_model = true;
    } else if (a == "-p" || a == "--prompt") {
      prompt = value();
      have_prompt = true;
    } else if (a == "--ids") {
      ids_only = true;
    } else if (a == "--no-parse-special") {
      parse_special = false;
    } else if (a == "--no-bos") {
      bos = false;
    } else if (a == "-h" || a == "--help") {
      std::cout << kUsage << "\n";
      return 0;
    } else {
      usage_error("unknown argument '" + std::string(a) + "'");
    }
  }
  if (!have_model) usage_error("-m is required");
  if (!have_prompt) usage_error("-p is required");

  return loom::cli::run_tool("tokenize", [&] {
    const loom::Tokenizer tok = loom::load_tokenizer(model);
    std::vector<std::int32_t> ids = tok.encode(prompt, /*add_special=*/true, parse_special);
    // --no-bos drops the BOS the tokenizer would add; EOS (if any) is kept.
    if (!bos && tok.add_bos() && !ids.empty() && ids.front() == tok.bos_id()) ids.erase(ids.begin());
    if (ids_only) {
      std::string line = "[";
      for (std::size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
      std::cout << line << "]\n";
    } else {
      for (const auto id : ids) std::cout << id << '\t' << printable(tok.token_to_piece(id, true)) << '\n';
    }
    std::cout << std::flush;
    return std::cout ? 0 : 1;
  });
}
