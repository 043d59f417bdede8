// loom::Error — the one exception type for every failure caused by outside input.
//
// Every message starts with a stable id, `[loom.<kind>.<area>]`, followed by what was wrong and
// where: the file, tensor, key or parameter, and what was expected. For example
//   [loom.format.gguf] tensor 'blk.3.attn_q.weight': data [0x1234, 0x5678) extends past the end
//   of the file (0x4000 bytes)
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace loom {

/// What kind of failure an Error reports.
enum class ErrorKind {
  io,                ///< a file could not be opened, read or mapped
  format,            ///< bytes or JSON that do not follow their format
  unsupported,       ///< a valid input that loom does not implement (architecture, dtype, option)
  invalid_argument,  ///< a parameter or token id outside its allowed range
  capacity,          ///< a context, cache or memory budget would be exceeded
};

constexpr std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::io: return "io";
    case ErrorKind::format: return "format";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::invalid_argument: return "invalid_argument";
    case ErrorKind::capacity: return "capacity";
  }
  return "unknown";
}

/// The exception loom throws for bad input. `area` names the component ("gguf", "safetensors",
/// "sampler", ...); the message says what is wrong and names the file / field / value.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string_view area, std::string_view message)
      : std::runtime_error(compose(kind, area, message)), kind_(kind), area_(area) {}

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& area() const noexcept { return area_; }

 private:
  static std::string compose(ErrorKind kind, std::string_view area, std::string_view message) {
    std::string s = "[loom.";
    s += to_string(kind);
    s += '.';
    s += area;
    s += "] ";
    s += message;
    return s;
  }
  ErrorKind kind_;
  std::string area_;
};

namespace detail {

/// Concatenates anything printable into a string: `cat("tensor '", name, "': ", n, " bytes")`.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

/// `0x1a2b` formatting for offsets in messages.
inline std::string hex(std::uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

}  // namespace detail

/// Throws Error(kind, area, cat(args...)).
template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, std::string_view area, const Args&... args) {
  throw Error(kind, area, detail::cat(args...));
}

}  // namespace loom
