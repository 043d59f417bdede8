// generate: stream text (or token ids) from a model.
//
//   generate -m MODEL [-z TOKENIZER] [-p TEXT | -f FILE | --prompt-ids 1,2,3] [-n N] [options]
//
// Options and their parser live in generate_args.hpp.
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

#include "generate_args.hpp"

namespace {

using loom::cli::Options;

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

  loom::Session session(model, {.n_ctx = o.n_ctx, .n_threads = o.threads, .max_memory = o.max_memory});
  loom::GenerateParams params;
  params.sampler = loaded.sampler;
  for (const auto& f : o.sampler_flags) f(params.sampler);
  params.sampler.validate();
  params.max_new_tokens = o.n_predict;
  params.ignore_eos = o.ignore_eos;
  params.end_of_generation = loaded.end_of_generation;
  params.context_shift = o.context_shift;
  params.n_keep = o.n_keep;
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
  if (stats.context_shifts) std::fprintf(stderr, "context shifts : %d\n", stats.context_shifts);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = loom::cli::parse(argc, argv);
  } catch (const loom::cli::UsageError& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 2;
  }
  if (o.help) {
    loom::cli::usage(stdout);
    return 0;
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
