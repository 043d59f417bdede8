// batched: one prompt, N continuations decoded together (llama.cpp's llama-batched).
//
//   batched -m MODEL [-z TOKENIZER] [-p TEXT | --prompt-ids 1,2,3] --parallel N [-n N] [options]
//
// The prompt is evaluated once; its N continuations share its KV pages and are decoded in one
// forward pass per step (loom::BatchSession). Continuation i samples with seed + i, so with
// --temp 0 they are all the greedy text, and with sampling they differ. Every other flag is
// generate's (sampling, -t, -c, --cache-type, --max-memory, --ids, ...). Prints each
// continuation's text; with --ids, one JSON array of generated ids per continuation, one per
// line, in order, as the last N lines of stdout. Bad flags or values exit with status 2.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <loom/loom.hpp>
#include <string>
#include <vector>

#include "generate_args.hpp"

namespace {

struct BatchedArgs {
  loom::cli::Options o;
  std::int32_t parallel = 4;
};

/// Takes --parallel / -np N out of argv and hands the rest to generate's parser.
BatchedArgs parse(int argc, char** argv) {
  BatchedArgs a;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string_view f = argv[i];
    if (f == "--parallel" || f == "-np") {
      if (i + 1 >= argc) throw loom::cli::UsageError(std::string(f) + " needs a value");
      a.parallel = std::int32_t(loom::cli::parse_int(f, argv[++i], 1, 4096));
    } else {
      rest.push_back(argv[i]);
    }
  }
  a.o = loom::cli::parse(int(rest.size()), rest.data());
  const loom::cli::Options& o = a.o;
  if (o.chat) throw loom::cli::UsageError("--chat is not supported by batched (use generate)");
  if (!o.dump_logits.empty()) throw loom::cli::UsageError("--dump-logits is not supported by batched (use generate)");
  if (o.context_shift) throw loom::cli::UsageError("--context-shift is not supported by batched");
  if (!o.stop.empty()) throw loom::cli::UsageError("--stop is not supported by batched");
  return a;
}

int run(const BatchedArgs& a) {
  const loom::cli::Options& o = a.o;
  using clock = std::chrono::steady_clock;
  loom::Loaded loaded = loom::load(o.model, o.tokenizer);
  const loom::Model& model = *loaded.model;
  const loom::Tokenizer* tok = loaded.tokenizer ? &*loaded.tokenizer : nullptr;

  const std::vector<std::int32_t> prompt = loom::cli::prompt_tokens(o, loaded, "batched");

  loom::BatchRequest request;
  request.prompt = prompt;
  request.n = a.parallel;
  request.params.sampler = loaded.sampler;
  for (const auto& f : o.sampler_flags) f(request.params.sampler);
  request.params.sampler.validate();
  while (request.params.sampler.seed == loom::default_seed)
    request.params.sampler.seed = loom::Rng::resolve_seed(loom::default_seed);
  const std::uint64_t seed = request.params.sampler.seed;
  request.params.max_new_tokens = o.n_predict;
  request.params.ignore_eos = o.ignore_eos;
  request.params.end_of_generation = loaded.end_of_generation;
  std::vector<std::vector<std::int32_t>> ids(std::size_t(a.parallel));
  std::vector<loom::GenerateStats> stats(std::size_t(a.parallel));
  request.on_token = [&](std::int32_t i, std::int32_t id) {
    ids[std::size_t(i)].push_back(id);
    return true;
  };
  request.on_done = [&](std::int32_t i, const loom::GenerateStats& s) { stats[std::size_t(i)] = s; };

  loom::BatchSession batch(model, {.n_ctx = o.n_ctx,
                                   .n_threads = o.threads,
                                   .max_sequences = a.parallel,
                                   .max_batch_tokens = std::max(512, a.parallel),
                                   .max_memory = o.max_memory,
                                   .kv_type = o.kv_type});
  const auto t0 = clock::now();
  batch.submit(std::move(request));
  batch.run();
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();

  for (std::size_t i = 0; i < ids.size(); ++i) {
    std::cout << "sequence " << i << ":\n";
    if (tok) {
      std::cout << (o.display_prompt ? tok->decode(prompt) : std::string()) << tok->decode(ids[i]) << "\n\n";
    } else {
      for (std::int32_t id : ids[i]) std::cout << id << ' ';
      std::cout << "\n\n";
    }
  }
  if (o.ids)
    for (const auto& seq : ids) {
      std::cout << '[';
      for (std::size_t i = 0; i < seq.size(); ++i) std::cout << (i ? ", " : "") << seq[i];
      std::cout << "]\n";
    }
  std::cout << std::flush;

  std::int64_t generated = 0;
  double prompt_seconds = 0;
  for (const auto& s : stats) {
    generated += s.generated_tokens;
    prompt_seconds = std::max(prompt_seconds, s.prompt_seconds);
  }
  std::fprintf(stderr, "\nprompt eval    = %10.2f ms / %5zu tokens (evaluated once for %d continuations)\n",
               prompt_seconds * 1e3, prompt.size(), a.parallel);
  std::fprintf(stderr, "generated      = %10lld tokens in %.2f ms (%.2f tokens/s in total)\n",
               static_cast<long long>(generated), seconds * 1e3, seconds > 0 ? double(generated) / seconds : 0.0);
  std::fprintf(stderr, "seed           = %llu (continuation i: seed + i)\n", static_cast<unsigned long long>(seed));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loom::cli::run_tool("batched", [&] {
    const BatchedArgs a = parse(argc, argv);
    if (a.o.help) {
      std::printf("batched: one prompt, --parallel N continuations decoded together (default 4).\n"
                  "  batched -m MODEL [-z TOKENIZER] [-p TEXT | --prompt-ids 1,2,3] --parallel N [-n N] [generate's options]\n"
                  "  --ids prints one JSON array per continuation, one per line, as the last N lines of stdout.\n\n");
      loom::cli::usage(stdout);
      return 0;
    }
    if (a.o.model.empty()) throw loom::cli::UsageError("-m MODEL is required");
    return run(a);
  });
}
