// Command-line options of examples/generate.cpp and their parser, in a header of their own so
// tests and the fuzz target (tests/fuzz/fuzz_cli.cpp) exercise exactly what the program runs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <loom/loom.hpp>
#include <loom/model/convert.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace loom::cli {

/// Everything the generate command line says.
struct Options {
  std::string model, tokenizer, prompt, dump_logits;
  std::optional<std::vector<std::int32_t>> prompt_ids;
  bool has_prompt = false;
  std::int32_t n_predict = -1, n_ctx = 0, threads = 1;
  /// Sampler flags the user gave; applied over the model's defaults (generation_config.json),
  /// which are applied over llama.cpp's.
  std::vector<std::function<void(loom::SamplerParams&)>> sampler_flags;
  bool ids = false, ignore_eos = false;
  bool context_shift = false;  ///< --context-shift: drop old tokens instead of stopping at a full context
  std::int32_t n_keep = 0;     ///< --keep: tokens never dropped by a context shift
  std::uint64_t max_memory = 0;  ///< --max-memory: bytes for KV cache + scratch (0: available memory)
  loom::DType kv_type = loom::DType::f32;  ///< --cache-type (or equal -ctk and -ctv): KV cache element type
  bool help = false;           ///< -h/--help was given: print usage() and exit 0
  std::vector<std::string> stop;  ///< --stop (repeatable): end generation when the text ends with one
  std::optional<loom::WeightFormat> quantize;  ///< --quantize: convert the weights in memory after loading
  bool chat = false;           ///< --chat: interactive conversation through the chat template
  std::string system;          ///< --system: the system message of the conversation
  std::string chat_template;   ///< --chat-template NAME: force a template family
  bool escape = false;         ///< -e/--escape: process_escapes() on the prompt (-p or -f) and --stop
  bool display_prompt = true;  ///< echo the prompt before the generated text (--no-display-prompt: off)
  /// One-line notes for stderr: llama.cpp flags that loom ignores, flags that act only with another.
  std::vector<std::string> notes;
};

/// Prints the usage text with the default values.
inline void usage(std::FILE* out) {
  const loom::SamplerParams d;
  std::fprintf(out,
               "usage: generate -m MODEL [options]\n"
               "  -m PATH                 model: llama2.c .bin, Hugging Face folder or .safetensors\n"
               "  -z PATH                 tokenizer file when the model carries none (llama2.c tokenizer.bin, tokenizer.json)\n"
               "  -p TEXT                 prompt text (BOS added as the tokenizer prescribes)\n"
               "  -f FILE                 read the prompt text from FILE\n"
               "  --prompt-ids 1,2,3      prompt token ids, used exactly as given (no BOS added)\n"
               "  -e, --escape            process escapes in the prompt and --stop: \\n \\r \\t \\' \\\" \\\\ \\xHH\n"
               "                          (--no-escape: leave them as written, the default)\n"
               "  --no-display-prompt     do not print the prompt before the generated text (the prompt is\n"
               "                          echoed by default, decoded from its tokens, as llama-cli does)\n"
               "  -n N                    tokens to generate (default: -1 = until end of text or full context)\n"
               "  -c N                    context size (default: 0 = the model's)\n"
               "  -t N                    threads (default: 1)\n"
               "  -s SEED                 RNG seed (default: random; the seed used is printed with the timings)\n"
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
               "  --context-shift         when the context is full, drop the oldest half of the tokens after --keep\n"
               "                          and go on (default: stop)\n"
               "  --keep N                tokens at the start kept by --context-shift (default: 0)\n"
               "  --max-memory BYTES      refuse to run when the KV cache and scratch need more (suffixes K, M, G;\n"
               "                          default: 0 = the available memory)\n"
               "  --cache-type TYPE       KV cache element type: f32, or f16 for half the memory (default: f32)\n"
               "  -ctk, -ctv TYPE         llama.cpp's --cache-type-k / --cache-type-v; loom stores keys and values\n"
               "                          in one type, so the two must be equal\n"
               "  --stop STRING           stop when the text ends with STRING (repeatable; not printed)\n"
               "  --quantize TYPE         convert the weights in memory after loading (on the -t threads): q8_0,\n"
               "                          q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k, q6_k, f16, bf16, f32,\n"
               "                          or llama.cpp's mixes q4_k_s, q4_k_m, q5_k_s, q5_k_m\n"
               "  --chat                  interactive chat through the model's chat template (-p: first message)\n"
               "  --system TEXT           system message for --chat\n"
               "  --chat-template NAME    force a template: chatml, llama2, llama3, mistral, zephyr, phi3\n"
               "  -ngl, --gpu-layers N, --mlock, -fa [on|off|auto], -b N, -ub N (and their long forms)\n"
               "                          llama.cpp's GPU, memory-locking and batch flags: accepted and ignored,\n"
               "                          with a note on stderr\n"
               "  -h, --help              this help\n",
               double(d.temperature), d.top_k, double(d.top_p), double(d.min_p), double(d.repeat_penalty),
               d.repeat_last_n, double(d.presence_penalty), double(d.frequency_penalty));
}

/// A KV cache element type flag's value: f32 or f16.
inline loom::DType parse_cache_type(std::string_view flag, std::string_view v) {
  for (loom::DType d : {loom::DType::f32, loom::DType::f16})
    if (loom::to_string(d) == v) return d;
  throw UsageError(std::string(flag) + ": expected f32 or f16, got '" + std::string(v) + "'");
}

/// The text of a prompt file (`-f`): a regular file of at most limits::text_file_bytes; anything
/// else (missing, a directory, a FIFO, /dev/zero, too large) is a UsageError saying why.
inline std::string read_text_file(std::string_view flag, std::string_view path) {
  try {
    return loom::io::read_input(std::string(path), "cli", loom::limits::text_file_bytes, "text file");
  } catch (const loom::Error& e) {
    throw UsageError(std::string(flag) + ": " + e.what());
  }
}

/// Parses argv. Throws UsageError for a bad flag or value; never exits (`-h` sets `help`).
inline Options parse(int argc, char** argv) {
  Options o;
  Args args(argc, argv);
  loom::DType cache_k = o.kv_type, cache_v = o.kv_type;  // -ctk / -ctv; --cache-type sets both
  auto set_sampler = [&](auto member, auto value) {
    o.sampler_flags.push_back([member, value](loom::SamplerParams& s) { s.*member = value; });
  };
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-h" || f == "--help") {
      o.help = true;
      return o;
    } else if (f == "-m" || f == "--model") {
      o.model = args.value(f);
    } else if (f == "-z" || f == "--tokenizer") {
      o.tokenizer = args.value(f);
    } else if (f == "-p" || f == "--prompt") {
      o.prompt = args.value(f);
      o.has_prompt = true;
    } else if (f == "-f" || f == "--file") {
      o.prompt = read_text_file(f, args.value(f));
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
      set_sampler(&loom::SamplerParams::seed, parse_u64(f, args.value(f)));  // any seed the timings print
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
    } else if (f == "--context-shift") {
      o.context_shift = true;
    } else if (f == "--keep") {
      o.n_keep = std::int32_t(parse_int(f, args.value(f), 0, INT32_MAX));
    } else if (f == "--max-memory") {
      o.max_memory = parse_bytes(f, args.value(f));
    } else if (f == "--cache-type") {
      cache_k = cache_v = parse_cache_type(f, args.value(f));
    } else if (f == "-ctk" || f == "--cache-type-k") {
      cache_k = parse_cache_type(f, args.value(f));
    } else if (f == "-ctv" || f == "--cache-type-v") {
      cache_v = parse_cache_type(f, args.value(f));
    } else if (f == "--stop") {
      o.stop.emplace_back(args.value(f));
      if (o.stop.back().empty()) throw UsageError("--stop: the stop string is empty");
    } else if (f == "--quantize") {
      const std::string_view t = args.value(f);
      o.quantize = loom::parse_weight_format(t);
      if (!o.quantize)
        throw UsageError("--quantize: expected " + std::string(loom::weight_format_names) + ", got '" + std::string(t) + "'");
    } else if (f == "--chat") {
      o.chat = true;
    } else if (f == "--system") {
      o.system = args.value(f);
    } else if (f == "-e" || f == "--escape") {
      o.escape = true;
    } else if (f == "--no-escape") {
      o.escape = false;
    } else if (f == "--no-display-prompt") {
      o.display_prompt = false;
    } else if (std::optional<std::string> note = ignored_llama_flag(f, args)) {
      o.notes.push_back(std::move(*note));
    } else if (f == "--chat-template") {
      o.chat_template = args.value(f);
      try {
        loom::chat_format_from_name(o.chat_template);
      } catch (const loom::Error& e) {
        throw UsageError(std::string("--chat-template: ") + e.what());
      }
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "' (see -h)");
    }
  }
  if (cache_k != cache_v)
    throw UsageError("-ctk " + std::string(loom::to_string(cache_k)) + " and -ctv " +
                     std::string(loom::to_string(cache_v)) +
                     " differ: loom stores keys and values in one type (use --cache-type)");
  o.kv_type = cache_k;
  if (o.model.empty()) throw UsageError("-m MODEL is required (see -h)");
  if (o.prompt_ids && o.has_prompt) throw UsageError("--prompt-ids and -p/-f are mutually exclusive");
  if (o.chat && o.prompt_ids) throw UsageError("--chat takes text (-p), not --prompt-ids");
  if (!o.chat && !o.system.empty()) o.notes.emplace_back("--system has no effect without --chat (ignored)");
  if (!o.chat && !o.chat_template.empty()) o.notes.emplace_back("--chat-template has no effect without --chat (ignored)");
  if (!o.context_shift && o.n_keep > 0) o.notes.emplace_back("--keep has no effect without --context-shift (ignored)");
  if (o.escape) {
    o.prompt = process_escapes(o.prompt);
    for (std::string& s : o.stop) s = process_escapes(s);
  }
  loom::SamplerParams check;
  for (const auto& f : o.sampler_flags) f(check);
  try {
    check.validate();
  } catch (const loom::Error& e) {
    throw UsageError(e.what());
  }
  return o;
}

/// The prompt the options give, as token ids: --prompt-ids exactly as given (ids outside the
/// vocabulary are a UsageError), -p / -f text encoded with BOS as the tokenizer prescribes, or, with
/// no prompt, BOS alone (as llama2.c starts). Throws loom::Error naming `tool` when a text prompt
/// has no tokenizer or encodes to nothing.
inline std::vector<std::int32_t> prompt_tokens(const Options& o, const loom::Loaded& loaded, const char* tool) {
  const std::int32_t vocab = loaded.model->config().vocab_size;
  std::vector<std::int32_t> prompt;
  if (o.prompt_ids) {
    prompt = *o.prompt_ids;
    for (std::int32_t id : prompt)
      if (id >= vocab)
        throw UsageError("--prompt-ids: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                         std::to_string(vocab) + ")");
  } else if (o.has_prompt) {
    if (!loaded.tokenizer)
      throw loom::Error(loom::ErrorKind::invalid_argument, tool,
                        "a text prompt needs a tokenizer: pass -z TOKENIZER or use --prompt-ids");
    prompt = loaded.tokenizer->encode(o.prompt, /*add_special=*/true, /*parse_special=*/true);
  } else {
    prompt = {loaded.bos_id >= 0 ? loaded.bos_id : 0};
  }
  if (prompt.empty()) throw loom::Error(loom::ErrorKind::invalid_argument, tool, "the prompt encodes to no tokens");
  return prompt;
}

}  // namespace loom::cli
