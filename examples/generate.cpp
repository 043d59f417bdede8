// generate: stream text (or token ids) from a model.
//
//   generate -m MODEL [-z TOKENIZER] [-p TEXT | -f FILE | --prompt-ids 1,2,3] [-n N] [options]
//
// Flags follow llama.cpp's names. Timings go to stderr; with --ids the generated ids are printed
// as one JSON array on the last line of stdout. Bad flags or values exit with status 2.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <loom/loom.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

struct Options {
  std::string model, tokenizer, prompt, dump_logits;
  std::optional<std::vector<std::int32_t>> prompt_ids;
  bool has_prompt = false;
  std::int32_t n_predict = -1, n_ctx = 0, threads = 1;
  /// Sampler flags the user gave; applied over the model's defaults (generation_config.json),
  /// which are applied over llama.cpp's.
  std::vector<std::function<void(loom::SamplerParams&)>> sampler_flags;
  bool ids = false, ignore_eos = false;
};

void usage(std::FILE* out) {
  const loom::SamplerParams d;
  std::fprintf(out,
               "usage: generate -m MODEL [options]\n"
               "  -m PATH                 model: llama2.c .bin, Hugging Face folder or .safetensors\n"
               "  -z PATH                 tokenizer file when the model carries none (llama2.c tokenizer.bin, tokenizer.json)\n"
               "  -p TEXT                 prompt text (BOS added as the tokenizer prescribes)\n"
               "  -f FILE                 read the prompt text from FILE\n"
               "  --prompt-ids 1,2,3      prompt token ids, used exactly as given (no BOS added)\n"
               "  -n N                    tokens to generate (default: -1 = until end of text or full context)\n"
               "  -c N                    context size (default: 0 = the model's)\n"
               "  -t N                    threads (default: 1)\n"
               "  -s SEED                 RNG seed (default: random)\n"
               "  --temp T                temperature, 0 = greedy (default: %.2f)\n"
               "  --top-k K               top-k, 0 = off (default: %d)\n"
               "  --top-p P               top-p, 1 = off (default: %.2f)\n"
               "  --min-p P               min-p, 0 = off (default: %.2f)\n"
               "  --repeat-penalty R      repetition penalty, 1 = off (default: %.2f)\n"
               "  --repeat-last-n N       tokens considered by penalties, -1 = context (default: %d)\n"
               "  --presence-penalty P    (default: %.2f)\n"
               "  --frequency-penalty P   (default: %.2f)\n"
               "  --ignore-eos            keep generating past end-of-text tokens\n"
               "  --ids                   print the generated ids as a JSON array on the last line\n"
               "  --dump-logits FILE      write the prompt logits as raw float32 [n_prompt, vocab]\n"
               "  -h, --help              this help\n",
               double(d.temperature), d.top_k, double(d.top_p), double(d.min_p), double(d.repeat_penalty),
               d.repeat_last_n, double(d.presence_penalty), double(d.frequency_penalty));
}

Options parse(int argc, char** argv) {
  using namespace loom::cli;
  Options o;
  Args args(argc, argv);
  auto set_sampler = [&](auto member, auto value) {
    o.sampler_flags.push_back([member, value](loom::SamplerParams& s) { s.*member = value; });
  };
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-h" || f == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (f == "-m" || f == "--model") {
      o.model = args.value(f);
    } else if (f == "-z" || f == "--tokenizer") {
      o.tokenizer = args.value(f);
    } else if (f == "-p" || f == "--prompt") {
      o.prompt = args.value(f);
      o.has_prompt = true;
    } else if (f == "-f" || f == "--file") {
      const std::string path(args.value(f));
      std::ifstream in(path, std::ios::binary);
      if (!in) throw UsageError("-f: cannot read '" + path + "'");
      std::ostringstream ss;
      ss << in.rdbuf();
      o.prompt = ss.str();
      o.has_prompt = true;
    } else if (f == "--prompt-ids") {
      o.prompt_ids = parse_int_list(f, args.value(f));
    } else if (f == "-n" || f == "--n-predict") {
      o.n_predict = std::int32_t(parse_int(f, args.value(f), -1, INT32_MAX));
    } else if (f == "-c" || f == "--ctx-size") {
      o.n_ctx = std::int32_t(parse_int(f, args.value(f), 0, INT32_MAX));
    } else if (f == "-t" || f == "--threads") {
      o.threads = std::int32_t(parse_int(f, args.value(f), 1, 1024));
    } else if (f == "-s" || f == "--seed") {
      set_sampler(&loom::SamplerParams::seed, std::uint64_t(parse_int(f, args.value(f), 0, INT64_MAX)));
    } else if (f == "--temp") {
      set_sampler(&loom::SamplerParams::temperature, parse_float(f, args.value(f)));
    } else if (f == "--top-k") {
      set_sampler(&loom::SamplerParams::top_k, std::int32_t(parse_int(f, args.value(f), INT32_MIN, INT32_MAX)));
    } else if (f == "--top-p") {
      set_sampler(&loom::SamplerParams::top_p, parse_float(f, args.value(f)));
    } else if (f == "--min-p") {
      set_sampler(&loom::SamplerParams::min_p, parse_float(f, args.value(f)));
    } else if (f == "--repeat-penalty") {
      set_sampler(&loom::SamplerParams::repeat_penalty, parse_float(f, args.value(f)));
    } else if (f == "--repeat-last-n") {
      set_sampler(&loom::SamplerParams::repeat_last_n, std::int32_t(parse_int(f, args.value(f), INT32_MIN, INT32_MAX)));
    } else if (f == "--presence-penalty") {
      set_sampler(&loom::SamplerParams::presence_penalty, parse_float(f, args.value(f)));
    } else if (f == "--frequency-penalty") {
      set_sampler(&loom::SamplerParams::frequency_penalty, parse_float(f, args.value(f)));
    } else if (f == "--ignore-eos") {
      o.ignore_eos = true;
    } else if (f == "--ids") {
      o.ids = true;
    } else if (f == "--dump-logits") {
      o.dump_logits = args.value(f);
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "' (see -h)");
    }
  }
  if (o.model.empty()) throw UsageError("-m MODEL is required (see -h)");
  if (o.prompt_ids && o.has_prompt) throw UsageError("--prompt-ids and -p/-f are mutually exclusive");
  loom::SamplerParams check;
  for (const auto& f : o.sampler_flags) f(check);
  try {
    check.validate();
  } catch (const loom::Error& e) {
    throw UsageError(e.what());
  }
  return o;
}

int run(const Options& o) {
  using clock = std::chrono::steady_clock;
  const auto t_load = clock::now();
  loom::Loaded loaded = loom::load(o.model, o.tokenizer);
  const loom::Model& model = *loaded.model;
  const loom::Tokenizer* tok = loaded.tokenizer ? &*loaded.tokenizer : nullptr;
  const double load_seconds = std::chrono::duration<double>(clock::now() - t_load).count();

  std::vector<std::int32_t> prompt;
  if (o.prompt_ids) {
    prompt = *o.prompt_ids;
    for (std::int32_t id : prompt)
      if (id >= model.config().vocab_size)
        throw loom::cli::UsageError("--prompt-ids: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                    std::to_string(model.config().vocab_size) + ")");
  } else if (o.has_prompt) {
    if (!tok) throw loom::Error(loom::ErrorKind::invalid_argument, "generate",
                                "a text prompt needs a tokenizer: pass -z TOKENIZER or use --prompt-ids");
    prompt = tok->encode(o.prompt, /*add_special=*/true, /*parse_special=*/true);
  } else {
    prompt = {loaded.bos_id >= 0 ? loaded.bos_id : 0};  // no prompt: start from BOS, as llama2.c does
  }
  if (prompt.empty())
    throw loom::Error(loom::ErrorKind::invalid_argument, "generate", "the prompt encodes to no tokens");

  loom::Session session(model, {.n_ctx = o.n_ctx, .n_threads = o.threads});
  loom::GenerateParams params;
  params.sampler = loaded.sampler;
  for (const auto& f : o.sampler_flags) f(params.sampler);
  params.sampler.validate();
  params.max_new_tokens = o.n_predict;
  params.ignore_eos = o.ignore_eos;
  params.end_of_generation = loaded.end_of_generation;
  if (!o.dump_logits.empty()) {
    params.on_prompt_logits = [&](const loom::Tensor<const float>& logits) {
      std::ofstream out(o.dump_logits, std::ios::binary);
      out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.numel() * sizeof(float)));
      if (!out) throw loom::Error(loom::ErrorKind::io, "generate", "cannot write '" + o.dump_logits + "'");
    };
  }

  std::vector<std::int32_t> generated;
  std::optional<loom::StreamDecoder> decoder;
  if (tok) {
    decoder.emplace(*tok);
    decoder->skip(prompt);  // the prompt is not printed, but it decides e.g. the leading-space rule
  }
  const loom::GenerateStats stats = session.generate(prompt, params, [&](std::int32_t id) {
    generated.push_back(id);
    if (decoder) {
      std::cout << decoder->push(id) << std::flush;
    } else if (!o.ids) {
      std::cout << id << ' ' << std::flush;
    }
    return true;
  });
  if (decoder) std::cout << decoder->finish();
  std::cout << '\n';
  if (o.ids) {
    std::cout << '[';
    for (std::size_t i = 0; i < generated.size(); ++i) std::cout << (i ? ", " : "") << generated[i];
    std::cout << "]\n";
  }
  std::cout << std::flush;

  std::fprintf(stderr, "\nload time      = %10.2f ms\n", load_seconds * 1e3);
  std::fprintf(stderr, "prompt eval    = %10.2f ms / %5d tokens (%8.2f tokens/s)\n", stats.prompt_seconds * 1e3,
               stats.prompt_tokens, stats.prompt_tokens_per_second());
  std::fprintf(stderr, "eval           = %10.2f ms / %5d tokens (%8.2f tokens/s)\n", stats.decode_seconds * 1e3,
               stats.generated_tokens > 0 ? stats.generated_tokens - 1 : 0, stats.decode_tokens_per_second());
  std::fprintf(stderr, "first token    = %10.2f ms\n", stats.first_token_seconds * 1e3);
  std::fprintf(stderr, "stopped        : %s\n", loom::to_string(stats.stop));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const loom::cli::UsageError& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const loom::cli::UsageError& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 2;
  } catch (const loom::Error& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
}
