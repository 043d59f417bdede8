// JSON text from outside: a nesting-depth check that runs before any parser sees the text.
//
// nlohmann::json parses iteratively, but copying, comparing and printing a value (dump(), used in
// error messages) recurse once per level, so ~100k nested '[' would overflow the stack. Scanning
// the text first and refusing anything deeper than limits::json_depth keeps every later step
// shallow. The scan is linear, allocates nothing, and skips brackets inside strings.
#pragma once

#include <cstddef>
#include <string_view>

#include "loom/error.hpp"
#include "loom/limits.hpp"

namespace loom::io::detail {

/// Throws Error(format, area) naming `source` and `what` ("header", "config") when `text` nests
/// arrays and objects more than limits::json_depth levels deep. Malformed text is left to the
/// parser (this only counts brackets).
inline void check_json_depth(std::string_view text, std::string_view area, std::string_view source,
                             std::string_view what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limits::json_depth)
        fail(ErrorKind::format, area, "'", source, "': ", what, " nests arrays/objects more than ", limits::json_depth,
             " levels deep (at byte ", i, ")");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

}  // namespace loom::io::detail
