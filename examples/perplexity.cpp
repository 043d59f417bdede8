// perplexity: how well a model predicts a text file.
//
//   perplexity -m MODEL -f TEXT [-c CTX] [--stride N] [--chunks N] [-t THREADS] [-z TOKENIZER]
//
// The whole file is tokenized once (BOS added when the tokenizer prescribes it, special tokens
// in the text not parsed). Each window of up to CTX tokens is evaluated from an empty KV cache in
// one batched forward pass with the logits of every position; each scored token contributes
// -log p(token | the tokens before it in its window), computed with a log-softmax in double.
//
// Default: llama.cpp's llama-perplexity method. The text is cut into floor(N / CTX)
// non-overlapping chunks of exactly CTX tokens (the remainder is dropped; at least 2*CTX tokens
// are required); when the tokenizer adds BOS, the first token of every chunk is replaced by BOS.
// In each chunk only the second half is scored: the tokens at positions CTX/2+1 .. CTX-1, each
// predicted from all the tokens before it in the chunk, so every scored token has at least CTX/2
// tokens of context. CTX - 1 - CTX/2 tokens are scored per chunk.
//
// --stride S (1 <= S <= CTX): Hugging Face's strided sliding window. Windows start at token 0,
// S, 2S, ... and span min(CTX, N - start) tokens; each window scores the tokens that no earlier
// window scored (every token but the first of the text is scored exactly once, with at least
// CTX - S tokens of context once the first window is past); the last window is the one that
// reaches the end of the text. With S = CTX the windows do not overlap and every token but the
// first of each window is scored: the method tools/train_demo.py uses for the validation loss
// of models/tiny-shakespeare.
//
// --chunks N (llama.cpp's flag): only the first N chunks (with --stride, windows) are evaluated;
// -1, the default, evaluates them all.
//
// Progress goes to stderr. The last line on stdout is `PPL = x ± y`, x = exp(mean NLL) and y its
// standard error as llama.cpp estimates it: y = x * sqrt((mean(NLL²) - mean(NLL)²) / (n - 1)).
// Bad flags or values exit with status 2; a bad model or text file exits 1.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <loom/generate.hpp>
#include <loom/limits.hpp>
#include <loom/load.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"

namespace {

struct Options {
  std::string model, tokenizer, file;
  std::int32_t n_ctx = 0, stride = 0, threads = 1;
  std::int32_t chunks = -1;        ///< --chunks: at most this many chunks or windows (-1: all)
  std::vector<std::string> notes;  ///< llama.cpp flags accepted and ignored, one line each
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: perplexity -m MODEL -f TEXT [options]\n"
               "  -m PATH         model: Hugging Face folder or .safetensors, llama2.c .bin\n"
               "  -z PATH         tokenizer file when the model carries none\n"
               "  -f FILE         the text to score\n"
               "  -c N            tokens per window (default: 0 = the model's context)\n"
               "  --stride N      sliding windows N tokens apart, scoring each token once (N = CTX: non-overlapping);\n"
               "                  default: llama.cpp's method (CTX-token chunks, second half of each scored)\n"
               "  --chunks N      evaluate at most the first N chunks (with --stride: windows) (default: -1 = all)\n"
               "  -t N            threads (default: 1)\n"
               "  -ngl N, --mlock, -fa [on|off|auto], -b N, -ub N (and their long forms)\n"
               "                  llama.cpp's GPU, memory-locking and batch flags: accepted and ignored (a note on stderr)\n"
               "  -h, --help      this help\n");
}

Options parse(int argc, char** argv) {
  using namespace loom::cli;
  Options o;
  Args args(argc, argv);
  while (!args.done()) {
    const std::string_view f = args.next();
    if (f == "-h" || f == "--help") {
      usage(stdout);
      std::exit(0);
    } else if (f == "-m" || f == "--model") {
      o.model = args.value(f);
    } else if (f == "-z" || f == "--tokenizer") {
      o.tokenizer = args.value(f);
    } else if (f == "-f" || f == "--file") {
      o.file = args.value(f);
    } else if (f == "-c" || f == "--ctx-size") {
      o.n_ctx = std::int32_t(parse_int(f, args.value(f), 0, INT32_MAX));
    } else if (f == "--stride") {
      o.stride = std::int32_t(parse_int(f, args.value(f), 1, INT32_MAX));
    } else if (f == "--chunks") {
      o.chunks = std::int32_t(parse_int(f, args.value(f), -1, INT32_MAX));
      if (o.chunks == 0) throw UsageError("--chunks: 0 chunks would score nothing (-1 evaluates them all)");
    } else if (f == "-t" || f == "--threads") {
      o.threads = std::int32_t(parse_int(f, args.value(f), 1, 1024));
    } else if (std::optional<std::string> note = ignored_llama_flag(f, args)) {
      o.notes.push_back(std::move(*note));
    } else {
      throw UsageError("unknown flag '" + std::string(f) + "' (see -h)");
    }
  }
  if (o.model.empty()) throw UsageError("-m MODEL is required (see -h)");
  if (o.file.empty()) throw UsageError("-f FILE is required (see -h)");
  return o;
}

/// One window: evaluate tokens [begin, end) and score the targets at positions [first, end).
struct Window {
  std::size_t begin, end, first;
};

/// -log softmax(row)[target], in double.
double nll_of(const float* row, std::int32_t vocab, std::int32_t target) {
  const float mx = *std::max_element(row, row + vocab);
  double sum = 0;
  for (std::int32_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - double(mx));
  return -(double(row[target]) - double(mx) - std::log(sum));
}

int run(const Options& o) {
  using clock = std::chrono::steady_clock;
  using loom::cli::UsageError;
  const loom::Loaded loaded = loom::load(o.model, o.tokenizer);
  const loom::Model& model = *loaded.model;
  if (!loaded.tokenizer)
    throw loom::Error(loom::ErrorKind::invalid_argument, "perplexity", "the model carries no tokenizer: pass -z TOKENIZER");
  const loom::Tokenizer& tok = *loaded.tokenizer;
  const std::int32_t vocab = model.config().vocab_size;
  const std::int32_t max_ctx = model.config().max_seq_len;

  const std::int32_t n_ctx = o.n_ctx > 0 ? o.n_ctx : max_ctx;
  // Beyond the trained context: an error for learned positions, a warning for RoPE (as generate).
  if (const std::string w = loom::check_context_size(model.config(), n_ctx); !w.empty())
    std::fprintf(stderr, "perplexity: warning: %s\n", w.c_str());
  if (n_ctx < 2) throw UsageError("-c: a window needs at least 2 tokens");
  if (o.stride > n_ctx)
    throw UsageError("--stride: " + std::to_string(o.stride) + " exceeds the window of " + std::to_string(n_ctx));

  const std::string text = loom::io::read_input(o.file, "perplexity", loom::limits::text_file_bytes, "text file");
  const auto t_tok = clock::now();
  std::vector<std::int32_t> tokens = tok.encode(text, /*add_special=*/true, /*parse_special=*/false);
  const std::size_t n = tokens.size();
  std::fprintf(stderr, "perplexity: %zu bytes -> %zu tokens in %.2f s\n", text.size(), n,
               std::chrono::duration<double>(clock::now() - t_tok).count());

  // The windows.
  std::vector<Window> windows;
  const std::size_t ctx = std::size_t(n_ctx);
  const bool replace_bos = o.stride == 0 && tok.add_bos() && loaded.bos_id >= 0;
  if (o.stride == 0) {
    if (n < 2 * ctx)
      loom::fail(loom::ErrorKind::invalid_argument, "perplexity", "the text has ", n,
                 " tokens; llama.cpp's method needs at least 2*CTX = ", 2 * ctx, " (use a smaller -c, or --stride)");
    for (std::size_t i = 0; i + ctx <= n; i += ctx) windows.push_back({i, i + ctx, i + ctx / 2 + 1});
  } else {
    if (n < 2) throw loom::Error(loom::ErrorKind::invalid_argument, "perplexity", "the text has fewer than 2 tokens");
    std::size_t scored_to = 1;  // the next position not yet scored
    for (std::size_t b = 0;; b += std::size_t(o.stride)) {
      const std::size_t e = std::min(b + ctx, n);
      windows.push_back({b, e, std::max(b + 1, scored_to)});
      scored_to = e;
      if (e == n) break;
    }
  }
  const std::size_t all_windows = windows.size();
  if (o.chunks > 0 && windows.size() > std::size_t(o.chunks)) windows.resize(std::size_t(o.chunks));
  std::size_t to_score = 0;
  for (const Window& w : windows) to_score += w.end > w.first ? w.end - w.first : 0;
  if (to_score == 0)
    loom::fail(loom::ErrorKind::invalid_argument, "perplexity", "no token would be scored (", windows.size(),
               " windows of ", n_ctx, " tokens; llama.cpp's method scores positions CTX/2+1 .. CTX-1): use a larger -c, "
               "or --stride");
  std::fprintf(stderr, "perplexity: %zu windows of %d tokens%s, %s, %d thread%s\n", windows.size(), n_ctx,
               windows.size() < all_windows ? (" (--chunks; the text has " + std::to_string(all_windows) + ")").c_str() : "",
               o.stride ? ("stride " + std::to_string(o.stride)).c_str() : "llama.cpp chunks (second half scored)",
               o.threads, o.threads == 1 ? "" : "s");

  loom::Session session(model, {.n_ctx = n_ctx, .n_threads = o.threads});
  const bool tty = isatty(STDERR_FILENO);
  double nll = 0, nll2 = 0;
  std::size_t count = 0, evaluated = 0;
  std::vector<std::int32_t> input;
  const auto t0 = clock::now();
  for (std::size_t w = 0; w < windows.size(); ++w) {
    const Window& win = windows[w];
    input.assign(tokens.begin() + std::ptrdiff_t(win.begin), tokens.begin() + std::ptrdiff_t(win.end));
    if (replace_bos) input.front() = loaded.bos_id;
    session.reset();
    evaluated += input.size();
    const loom::Tensor<const float> logits = session.eval(input, loom::Logits::all);
    for (std::size_t p = win.first; p < win.end; ++p) {  // row p-1-begin predicts token p
      const double v = nll_of(logits.row(std::int64_t(p - 1 - win.begin)), vocab, tokens[p]);
      nll += v;
      nll2 += v * v;
      ++count;
    }
    const double elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    const double ppl = count ? std::exp(nll / double(count)) : 0.0;
    if (tty) {
      const double eta = elapsed / double(w + 1) * double(windows.size() - w - 1);
      constexpr int width = 30;
      const int filled = int(double(width) * double(w + 1) / double(windows.size()));
      std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu  PPL %.4f  ETA %.0f s ", filled, "==============================",
                   width - filled, "", w + 1, windows.size(), ppl, eta);
    } else {
      std::fprintf(stderr, "[%zu]%.4f,", w + 1, ppl);
    }
    std::fflush(stderr);
  }
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
  std::fprintf(stderr, "\n");

  if (!std::isfinite(nll) || !std::isfinite(nll2))
    loom::fail(loom::ErrorKind::format, "perplexity", "the model's predictions are not finite (NaN or infinite "
               "log-probabilities over ", count, " scored tokens): its weights hold NaN or infinite values");
  const double mean = nll / double(count);
  const double ppl = std::exp(mean);
  const double var = nll2 / double(count) - mean * mean;
  const double err = var > 0 && count > 1 ? ppl * std::sqrt(var / double(count - 1)) : 0.0;
  std::fprintf(stderr, "perplexity: %zu tokens scored, mean NLL %.6f nats/token, %.2f s (%.1f tokens evaluated/s)\n", count,
               mean, seconds, double(evaluated) / seconds);
  std::printf("PPL = %.4f ± %.5f\n", ppl, err);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return loom::cli::run_tool("perplexity", [&] {
    const Options o = parse(argc, argv);
    for (const std::string& note : o.notes) std::fprintf(stderr, "perplexity: note: %s\n", note.c_str());
    return run(o);
  });
}
