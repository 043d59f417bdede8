// JSON text from outside: a nesting-depth check that runs before any parser sees the text, a
// parser that refuses duplicate keys, and the helpers messages about JSON values use.
//
// nlohmann::json parses iteratively, but copying, comparing and printing a value (dump(), used in
// error messages) recurse once per level, so ~100k nested '[' would overflow the stack. Scanning
// the text first and refusing anything deeper than limits::json_depth keeps every later step
// shallow. The scan is linear, allocates nothing, and skips brackets inside strings.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

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

/// Parses `text` as JSON and rejects duplicate keys in any object (nlohmann's DOM parser silently
/// keeps the last one). Throws Error(format, area) naming `source`, `what` ("header", "config")
/// and the key (with the path of the enclosing object when nested).
inline nlohmann::json parse_json_unique_keys(std::string_view text, std::string_view area, std::string_view source,
                                             std::string_view what) {
  using json = nlohmann::json;
  check_json_depth(text, area, source, what);
  struct Level {
    std::set<std::string, std::less<>> keys;
    std::string last_key;
  };
  std::vector<Level> stack;
  std::optional<std::string> duplicate;  // first duplicate key, with its location
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start: stack.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key:
        if (!stack.empty() && parsed.is_string()) {
          Level& top = stack.back();
          top.last_key = parsed.get<std::string>();
          if (!top.keys.insert(top.last_key).second && !duplicate) {
            std::string where;
            for (std::size_t i = 0; i + 1 < stack.size(); ++i) where += (where.empty() ? "" : ".") + stack[i].last_key;
            duplicate = "duplicate key '" + top.last_key + "'" + (where.empty() ? "" : " in object '" + where + "'");
          }
        }
        break;
      default: break;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    fail(ErrorKind::format, area, "'", source, "': ", what, " is not valid JSON: ", e.what());
  }
  if (duplicate) fail(ErrorKind::format, area, "'", source, "': ", what, ": ", *duplicate);
  return j;
}

/// A readable name of a JSON value's type for messages ("string", "number", ...).
inline std::string json_type(const nlohmann::json& j) {
  if (j.is_number_unsigned() || j.is_number_integer()) return "integer";
  if (j.is_number_float()) return "number";
  return j.type_name();
}

/// A short rendering of a JSON value for messages (truncated).
inline std::string json_brief(const nlohmann::json& j) {
  std::string s = j.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

/// A JSON value as a non-negative integer (no floats, no negatives).
inline std::optional<std::uint64_t> json_non_negative(const nlohmann::json& j) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  if (j.is_number_integer()) {
    const std::int64_t v = j.get<std::int64_t>();
    if (v >= 0) return std::uint64_t(v);
  }
  return std::nullopt;
}

}  // namespace loom::io::detail
