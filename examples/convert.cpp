// convert: write any model loom loads (Hugging Face folder, GGUF, llama2.c) as a GGUF file that
// llama.cpp can read, optionally quantized.
//
//   convert -m IN --out OUT.gguf
//           [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl|iq4_xs|q4_k|q5_k|q6_k
//                  |q4_k_s|q4_k_m|q5_k_s|q5_k_m]
//           [-t THREADS] [-z TOKENIZER] [--name NAME]
#include <algorithm>
#include <cstdio>
#include <loom/io/gguf_export.hpp>
#include <loom/loom.hpp>
#include <string>
#include <thread>

#include "cli.hpp"

namespace {

struct Options {
  std::string in, out, tokenizer, name;
  loom::WeightFormat format{loom::DType::f16};
  int threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 1024u));  // what llama-quantize uses
};

loom::WeightFormat parse_type(std::string_view s) {
  if (const auto f = loom::parse_weight_format(s)) return *f;
  throw loom::cli::UsageError("--type: expected " + std::string(loom::weight_format_names) + ", got '" + std::string(s) + "'");
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
      o.format = parse_type(args.value(f));
    } else if (f == "-t" || f == "--threads") {
      o.threads = int(parse_int(f, args.value(f), 1, 1024));
    } else if (f == "-z") {
      o.tokenizer = args.value(f);
    } else if (f == "--name") {
      o.name = args.value(f);
    } else if (f == "-h" || f == "--help") {
      std::printf(
          "usage: convert -m IN --out OUT.gguf\n"
          "               [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|iq4_nl|iq4_xs|q4_k|q5_k|q6_k\n"
          "                      |q4_k_s|q4_k_m|q5_k_s|q5_k_m]   (default f16; the mixes as llama-quantize's)\n"
          "               [-t THREADS]   (threads that convert; default: all)\n"
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
  return loom::cli::run_tool("convert", [&] {
    const Options o = parse(argc, argv);
    const loom::Loaded m = loom::load(o.in, o.tokenizer);
    loom::kernels::ThreadPool pool(o.threads);
    loom::io::GgufExportOptions opt;
    opt.format = o.format;
    opt.pool = &pool;
    opt.name = o.name.empty() ? std::filesystem::path(o.in).filename().string() : o.name;
    opt.chat_template = m.chat_template;
    loom::io::write_gguf_model(o.out, m.model->config(), m.model->weights(), m.tokenizer ? &*m.tokenizer : nullptr, opt);
    std::fprintf(stderr, "convert: wrote '%s' (%s, %s)\n", o.out.c_str(), m.model->config().architecture.c_str(),
                 loom::to_string(o.format).c_str());
    return 0;
  });
}
