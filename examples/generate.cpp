// generate: stream text (or token ids) from a model, or chat with it.
//
//   generate -m MODEL [-z TOKENIZER] [-p TEXT | -f FILE | --prompt-ids 1,2,3] [-n N] [options]
//   generate -m MODEL --chat [--system TEXT] [--chat-template NAME]
//
// Options and their parser live in generate_args.hpp. Flags follow llama.cpp's names. The prompt
// is echoed before the generated text (--no-display-prompt: not); timings and the seed used go to
// stderr; with --ids the generated ids are printed as one JSON array on the last line of stdout.
// Bad flags or values exit with status 2. Ctrl-C stops generation cleanly (a second Ctrl-C ends
// the program). Piped into --chat (stdin not a terminal), every non-empty line is a turn, to EOF.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <loom/loom.hpp>
#include <loom/machine.hpp>
#include <loom/model/convert.hpp>
#include <optional>
#include <string>
#include <vector>

#include "generate_args.hpp"

namespace {

using loom::cli::Options;

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  if (g_interrupted) {  // second Ctrl-C: leave at once
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  g_interrupted = 1;
}

/// Reads the model's files once with a progress bar when they are large (> 100 MB), so the
/// mapping that follows finds them in the page cache and the user sees progress. Only regular
/// files are read (a missing path, a FIFO or a device is left to loom::load to report).
void prefetch_with_progress(const std::filesystem::path& model) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  if (loom::io::is_directory(model)) {
    for (fs::directory_iterator it(model, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".safetensors" && loom::io::is_regular_file(it->path())) files.push_back(it->path());
  } else if (loom::io::is_regular_file(model)) {
    files.push_back(model);
  }
  std::uintmax_t total = 0;
  for (const auto& f : files) total += loom::io::path_info(f).size;
  if (total <= 100'000'000) return;
  std::vector<char> buf(std::size_t(16) << 20);
  std::uintmax_t done = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    while (in.read(buf.data(), std::streamsize(buf.size())) || in.gcount() > 0) {
      done += std::uintmax_t(in.gcount());
      loom::cli::progress_bar("loading", double(done) / double(total));
      if (done >= total) break;
    }
  }
  if (done < total) loom::cli::progress_bar("loading", 1.0);
}

void print_timings(const loom::Model& model, int threads, double load_seconds, const loom::GenerateStats& stats,
                   bool stopped_by_string, std::uint64_t seed) {
  std::fprintf(stderr, "\nload time      = %10.2f ms\n", load_seconds * 1e3);
  std::fprintf(stderr, "prompt eval    = %10.2f ms / %5d tokens (%8.2f tokens/s)\n", stats.prompt_seconds * 1e3,
               stats.prompt_tokens, stats.prompt_tokens_per_second());
  std::fprintf(stderr, "eval           = %10.2f ms / %5d tokens (%8.2f tokens/s)\n", stats.decode_seconds * 1e3,
               stats.generated_tokens > 0 ? stats.generated_tokens - 1 : 0, stats.decode_tokens_per_second());
  std::fprintf(stderr, "first token    = %10.2f ms\n", stats.first_token_seconds * 1e3);
  if (stats.decode_tokens_per_second() > 0) {
    // How close decoding came to the memory-bandwidth limit: every token reads every weight once.
    loom::kernels::ThreadPool pool(threads);
    const auto weights = loom::weight_ranges(model);  // read from the very memory decoding read
    const double bandwidth = loom::measure_read_bandwidth(pool, weights, 2);
    const double reads = loom::weight_bytes_per_token(model) * stats.decode_tokens_per_second();
    std::fprintf(stderr, "decode reads   = %10.2f GB/s of weights (%.1f %% of the measured %.2f GB/s)\n", reads / 1e9,
                 100.0 * reads / bandwidth, bandwidth / 1e9);
  }
  const char* why = stopped_by_string ? "stop string" : g_interrupted ? "interrupted" : loom::to_string(stats.stop);
  std::fprintf(stderr, "kernels        : %s\n", loom::cpu_features().summary().c_str());
  std::fprintf(stderr, "stopped        : %s\n", why);
  std::fprintf(stderr, "seed           = %llu\n", static_cast<unsigned long long>(seed));
  if (stats.context_shifts) std::fprintf(stderr, "context shifts : %d\n", stats.context_shifts);
}

int run(const Options& o) {
  using clock = std::chrono::steady_clock;
  const auto t_load = clock::now();
  prefetch_with_progress(o.model);
  loom::Loaded loaded = loom::load(o.model, o.tokenizer);
  if (o.quantize) {
    loom::kernels::ThreadPool pool(o.threads);
    loaded.model = std::make_shared<const loom::Model>(loaded.model->config(),
                                                       loom::convert_weights(loaded.model->weights(), *o.quantize, &pool));
  }
  const loom::Model& model = *loaded.model;
  const loom::Tokenizer* tok = loaded.tokenizer ? &*loaded.tokenizer : nullptr;
  const double load_seconds = std::chrono::duration<double>(clock::now() - t_load).count();
  const std::string context_warning =
      loom::check_context_size(model.config(), o.n_ctx > 0 ? o.n_ctx : model.config().max_seq_len);
  if (!context_warning.empty()) std::fprintf(stderr, "generate: warning: %s\n", context_warning.c_str());

  loom::Session session(model,
                        {.n_ctx = o.n_ctx, .n_threads = o.threads, .max_memory = o.max_memory, .kv_type = o.kv_type});
  loom::GenerateParams params;
  params.sampler = loaded.sampler;
  for (const auto& f : o.sampler_flags) f(params.sampler);
  params.sampler.validate();
  // The random seed is drawn here rather than in the sampler, so that the timing block can print
  // it and `-s` can repeat the run (default_seed itself would mean "random" again).
  while (params.sampler.seed == loom::default_seed) params.sampler.seed = loom::Rng::resolve_seed(loom::default_seed);
  params.max_new_tokens = o.n_predict;
  params.ignore_eos = o.ignore_eos;
  params.end_of_generation = loaded.end_of_generation;
  params.context_shift = o.context_shift;
  params.n_keep = o.n_keep;
  std::signal(SIGINT, on_sigint);

  if (o.chat) {
    if (!tok) throw loom::Error(loom::ErrorKind::invalid_argument, "generate", "--chat needs a tokenizer (-z TOKENIZER)");
    const loom::ChatFormat format = o.chat_template.empty() ? loom::detect_chat_format(loaded.chat_template)
                                                            : loom::chat_format_from_name(o.chat_template);
    // From a terminal an empty line ends the chat; piped, every non-empty line is a turn until EOF.
    const bool piped = !isatty(STDIN_FILENO);
    std::fprintf(stderr, "chat template: %s. %s; Ctrl-C stops a reply.\n", std::string(loom::to_string(format)).c_str(),
                 piped ? "Reading turns from stdin to its end (empty lines skipped)" : "Empty line or Ctrl-D ends the chat");
    auto read_turn = [piped](std::string& line) {
      while (std::getline(std::cin, line)) {
        if (piped && !line.empty() && line.back() == '\r') line.pop_back();  // CRLF input
        if (!line.empty()) return true;
        if (!piped) return false;
      }
      return false;
    };
    loom::ChatSession chat(session, *tok, format, o.system);
    loom::GenerateStats stats;
    bool first = true, stopped_by_string = false;
    for (;;) {
      std::string line;
      if (first && o.has_prompt) {
        line = o.prompt;
        std::fprintf(stderr, "> %s\n", line.c_str());
      } else {
        std::fprintf(stderr, "\n> ");
        if (!read_turn(line)) break;
      }
      first = false;
      g_interrupted = 0;
      loom::cli::StopFilter filter(o.stop);
      stopped_by_string = false;
      stats = chat.reply(line, params, [&](std::string_view piece) {
        std::cout << filter.push(piece, stopped_by_string) << std::flush;
        return !stopped_by_string && !g_interrupted;
      });
      if (!stopped_by_string) std::cout << filter.finish();
      std::cout << std::endl;
    }
    print_timings(model, o.threads, load_seconds, stats, stopped_by_string, params.sampler.seed);
    return 0;
  }

  const std::vector<std::int32_t> prompt = loom::cli::prompt_tokens(o, loaded, "generate");
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
    // The prompt is echoed as llama-cli does: decoded from its tokens (--prompt-ids too), control
    // tokens such as BOS left out. Not echoed, it still decides e.g. the leading-space rule.
    decoder.emplace(*tok);
    if (o.display_prompt) {
      for (std::int32_t id : prompt) std::cout << decoder->push(id);
      std::cout << std::flush;
    } else {
      decoder->skip(prompt);
    }
  }
  loom::cli::StopFilter filter(o.stop);
  bool stopped_by_string = false;
  const loom::GenerateStats stats = session.generate(prompt, params, [&](std::int32_t id) {
    generated.push_back(id);
    if (decoder) {
      std::cout << filter.push(decoder->push(id), stopped_by_string) << std::flush;
    } else if (!o.ids) {
      std::cout << id << ' ' << std::flush;
    }
    return !stopped_by_string && !g_interrupted;
  });
  if (decoder && !stopped_by_string) std::cout << filter.push(decoder->finish(), stopped_by_string);
  if (!stopped_by_string) std::cout << filter.finish();
  std::cout << '\n';
  if (o.ids) {
    std::cout << '[';
    for (std::size_t i = 0; i < generated.size(); ++i) std::cout << (i ? ", " : "") << generated[i];
    std::cout << "]\n";
  }
  std::cout << std::flush;
  print_timings(model, o.threads, load_seconds, stats, stopped_by_string, params.sampler.seed);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loom::cli::run_tool("generate", [&] {
    const Options o = loom::cli::parse(argc, argv);
    for (const std::string& note : o.notes) std::fprintf(stderr, "generate: note: %s\n", note.c_str());
    if (o.help) {
      loom::cli::usage(stdout);
      return 0;
    }
    return run(o);
  });
}
