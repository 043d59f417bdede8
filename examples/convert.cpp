// convert: write any model loom loads (Hugging Face folder, GGUF, llama2.c) as a GGUF file that
// llama.cpp can read, optionally quantized.
//
//   convert -m IN --out OUT.gguf
//           [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl|iq4_xs|q4_k|q5_k|q6_k]
//           [-z TOKENIZER] [--name NAME]
#include <cstdio>
#include <loom/io/gguf_export.hpp>
#include <loom/loom.hpp>
#include <string>

#include "cli.hpp"

namespace {

struct Options {
  std::string in, out, tokenizer, name;
  loom::DType type = loom::DType::f16;
};

loom::DType parse_type(std::string_view s) {
  for (loom::DType t : {loom::DType::f32, loom::DType::f16, loom::DType::bf16, loom::DType::q8_0, loom::DType::q4_0,
                        loom::DType::q4_1, loom::DType::q5_0, loom::DType::q5_1, loom::DType::iq4_nl,
                        loom::DType::iq4_xs, loom::DType::q4_k, loom::DType::q5_k, loom::DType::q6_k})
    if (loom::to_string(t) == s) return t;
  throw loom::cli::UsageError(
      "--type: expected f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k or q6_k, got '" +
      std::string(s) + "'");
}

Options parse(int argc, char** argv) {
  using namespace loom::cli;
  Options o;
  Args args(argc, argv);
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-m") {
      o.in = args.value(f);
    } else if (f == "--out" || f == "-o") {
      o.out = args.value(f);
    } else if (f == "--type") {
      o.type = parse_type(args.value(f));
    } else if (f == "-z") {
      o.tokenizer = args.value(f);
    } else if (f == "--name") {
      o.name = args.value(f);
    } else if (f == "-h" || f == "--help") {
      std::printf(
          "usage: convert -m IN --out OUT.gguf\n"
          "               [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl|iq4_xs|q4_k|q5_k|q6_k]\n"
          "               [-z TOKENIZER] [--name NAME]\n");
      std::exit(0);
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "' (see -h)");
    }
  }
  if (o.in.empty() || o.out.empty()) throw UsageError("-m IN and --out OUT.gguf are required");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const loom::cli::UsageError& e) {
    std::fprintf(stderr, "convert: %s\n", e.what());
    return 2;
  }
  try {
    const loom::Loaded m = loom::load(o.in, o.tokenizer);
    loom::io::GgufExportOptions opt;
    opt.type = o.type;
    opt.name = o.name.empty() ? std::filesystem::path(o.in).filename().string() : o.name;
    opt.chat_template = m.chat_template;
    loom::io::write_gguf_model(o.out, m.model->config(), m.model->weights(), m.tokenizer ? &*m.tokenizer : nullptr, opt);
    std::fprintf(stderr, "convert: wrote '%s' (%s, %s)\n", o.out.c_str(), m.model->config().architecture.c_str(),
                 std::string(loom::to_string(o.type)).c_str());
    return 0;
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "convert: %s\n", e.what());
    return 1;
  }
}
