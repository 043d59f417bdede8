// A small command-line parser shared by the examples: flags with values, strict number parsing,
// and a UsageError that the examples turn into exit status 2 with a one-line reason.
#pragma once

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iterator>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loom::cli {

/// A bad flag or value: the program prints the message and exits with status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// `message` on one line (a line break inside would split the one-line report).
inline std::string one_line(std::string message) {
  for (char& c : message)
    if (c == '\n' || c == '\r') c = ' ';
  return message;
}

/// The one rule every tool's main follows: runs `body` (which returns the exit status) and turns
/// every exception into one line `TOOL: MESSAGE` on stderr — exit status 2 for a UsageError (bad
/// flag or value), 1 for anything else (a loom::Error from the model or its files, and any other
/// exception, which would otherwise abort the process).
template <typename F>
int run_tool(const char* tool, F&& body) noexcept {
  try {
    try {
      return body();
    } catch (const UsageError& e) {
      std::fprintf(stderr, "%s: %s\n", tool, one_line(e.what()).c_str());
      return 2;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "%s: out of memory\n", tool);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", tool, one_line(e.what()).c_str());
    } catch (...) {
      std::fprintf(stderr, "%s: unknown error\n", tool);
    }
  } catch (...) {  // printing failed (out of memory while building the line): still exit cleanly
  }
  return 1;
}

inline std::int64_t parse_int(std::string_view flag, std::string_view v, std::int64_t lo, std::int64_t hi) {
  std::int64_t x = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty())
    throw UsageError(std::string(flag) + ": expected an integer, got '" + std::string(v) + "'");
  if (x < lo || x > hi)
    throw UsageError(std::string(flag) + ": " + std::string(v) + " is outside [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return x;
}

/// A non-negative integer up to 2^64 - 1 (a seed).
inline std::uint64_t parse_u64(std::string_view flag, std::string_view v) {
  std::uint64_t x = 0;
  const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || ec == std::errc::invalid_argument || p != v.data() + v.size())
    throw UsageError(std::string(flag) + ": expected a non-negative integer, got '" + std::string(v) + "'");
  if (ec == std::errc::result_out_of_range)
    throw UsageError(std::string(flag) + ": " + std::string(v) + " is outside [0, " + std::to_string(UINT64_MAX) + "]");
  return x;
}

inline float parse_float(std::string_view flag, std::string_view v) {
  const std::string s(v);
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(x))
    throw UsageError(std::string(flag) + ": expected a number, got '" + s + "'");
  return float(x);
}

/// A byte count: digits with an optional suffix K, M or G (powers of 1024, either case).
inline std::uint64_t parse_bytes(std::string_view flag, std::string_view v) {
  std::uint64_t scale = 1;
  std::string_view digits = v;
  if (!v.empty()) {
    switch (v.back()) {
      case 'K': case 'k': scale = std::uint64_t(1) << 10; break;
      case 'M': case 'm': scale = std::uint64_t(1) << 20; break;
      case 'G': case 'g': scale = std::uint64_t(1) << 30; break;
      default: break;
    }
    if (scale != 1) digits.remove_suffix(1);
  }
  std::uint64_t x = 0;
  const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), x);
  if (digits.empty() || ec == std::errc::invalid_argument || p != digits.data() + digits.size())
    throw UsageError(std::string(flag) + ": expected a byte count such as 512M, got '" + std::string(v) + "'");
  if (ec == std::errc::result_out_of_range || x > UINT64_MAX / scale)
    throw UsageError(std::string(flag) + ": '" + std::string(v) + "' is too large");
  return x * scale;
}

/// Comma-separated integers: "1,2,3".
inline std::vector<std::int32_t> parse_int_list(std::string_view flag, std::string_view v) {
  std::vector<std::int32_t> out;
  if (v.empty()) throw UsageError(std::string(flag) + ": expected comma-separated token ids");
  std::size_t start = 0;
  while (start <= v.size()) {
    const std::size_t comma = v.find(',', start);
    const std::string_view item = v.substr(start, comma == std::string_view::npos ? v.npos : comma - start);
    out.push_back(std::int32_t(parse_int(flag, item, 0, INT32_MAX)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

/// Walks argv: `next_value(flag)` returns the argument after a flag or throws UsageError.
class Args {
 public:
  Args(int argc, char** argv) : args_(argv + 1, argv + argc) {}
  bool done() const { return i_ >= args_.size(); }
  std::string_view next() { return args_[i_++]; }
  std::string_view value(std::string_view flag) {
    if (done()) throw UsageError(std::string(flag) + ": missing value");
    return next();
  }
  /// The next argument without taking it, if there is one.
  std::optional<std::string_view> peek() const {
    return done() ? std::nullopt : std::optional<std::string_view>(args_[i_]);
  }

 private:
  std::vector<std::string_view> args_;
  std::size_t i_ = 0;
};

/// `text` with llama.cpp's escape sequences replaced (its string_process_escapes, which `-e`
/// applies to the prompt): \n \r \t \' \" \\ and \xHH (exactly two hex digits: one byte).
/// Anything else after a backslash, a \x without two hex digits and a backslash at the very end
/// stay as written. (llama.cpp reads the two characters after \x with strtol, which would also
/// take " 5" or "-1"; only hex digits count here.)
inline std::string process_escapes(std::string_view text) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    switch (c) {
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case '\'': case '"': case '\\': out += c; break;
      default:
        if (c == 'x' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
          out += char(hex(text[i + 1]) * 16 + hex(text[i + 2]));
          i += 2;
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

/// llama.cpp's flags that mean nothing on loom (GPU offload, memory locking, flash attention,
/// batch sizes), accepted so that llama.cpp command lines run unchanged. When `flag` is one of
/// them, takes its value from `args` (checked as llama.cpp checks it: a missing or malformed
/// value is a UsageError) and returns the one-line note to print; otherwise returns nothing.
inline std::optional<std::string> ignored_llama_flag(std::string_view flag, Args& args) {
  const std::string f(flag);
  if (flag == "-ngl" || flag == "--gpu-layers" || flag == "--n-gpu-layers") {
    const std::string_view v = args.value(flag);  // N, or newer llama.cpp's 'auto' / 'all'
    if (v != "auto" && v != "all") parse_int(flag, v, INT32_MIN, INT32_MAX);
    return f + " " + std::string(v) + " ignored: loom runs on the CPU, there are no GPU layers to offload";
  }
  if (flag == "--mlock") return f + " ignored: loom memory-maps the weights and does not lock them in RAM";
  if (flag == "-fa" || flag == "--flash-attn") {
    // A bare flag in older llama.cpp; a value on|off|auto (or 1|0|-1) in llama.cpp since 2025.
    static constexpr std::string_view values[] = {"on", "off", "auto", "enabled", "disabled", "1", "0", "-1"};
    std::string note = f;
    if (const std::optional<std::string_view> v = args.peek()) {
      if (std::find(std::begin(values), std::end(values), *v) != std::end(values))
        note += " " + std::string(args.next());
      else if (v->empty() || v->front() != '-')
        throw UsageError(f + ": expected on, off or auto, got '" + std::string(*v) + "'");
    }
    return note + " ignored: loom has one attention implementation on the CPU";
  }
  if (flag == "-b" || flag == "--batch-size" || flag == "-ub" || flag == "--ubatch-size") {
    const std::string_view v = args.value(flag);
    parse_int(flag, v, INT32_MIN, INT32_MAX);
    return f + " " + std::string(v) + " ignored: loom evaluates the whole prompt in one batch";
  }
  return std::nullopt;
}

}  // namespace loom::cli

namespace loom::cli {

/// Holds back generated text that might be the start of a stop string, and reports when one is
/// complete (the stop string itself is never printed).
class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  /// Adds `text`; returns what can be printed now. Sets `stopped` when a stop string appeared.
  std::string push(std::string_view text, bool& stopped) {
    held_ += text;
    std::size_t first = std::string::npos;
    for (const std::string& s : stops_)
      if (!s.empty()) first = std::min(first, held_.find(s));
    if (first != std::string::npos) {
      stopped = true;
      std::string out = held_.substr(0, first);
      held_.clear();
      return out;
    }
    // Keep the longest tail that could still grow into a stop string.
    std::size_t keep = 0;
    for (const std::string& s : stops_)
      for (std::size_t k = std::min(s.size() ? s.size() - 1 : 0, held_.size()); k > keep; --k)
        if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
    std::string out = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }
  /// Whatever is still held back (generation ended without completing a stop string).
  std::string finish() { return std::exchange(held_, {}); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

/// Draws "label [#####.....]  45%" on stderr (same line, redrawn).
inline void progress_bar(const char* label, double fraction) {
  const int width = 30, filled = int(std::clamp(fraction, 0.0, 1.0) * width + 0.5);
  std::fprintf(stderr, "\r%s [%s%s] %3d%%", label, std::string(std::size_t(filled), '#').c_str(),
               std::string(std::size_t(width - filled), '.').c_str(), int(fraction * 100 + 0.5));
  if (fraction >= 1.0) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace loom::cli
