// StreamDecoder: the text of generated tokens as they come, never cutting a UTF-8 character.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "loom/tokenizer/tokenizer.hpp"
#include "loom/tokenizer/unicode.hpp"

namespace loom {

/// Streaming decode: push ids one at a time and get text that is safe to print. It never emits
/// part of a UTF-8 character (bytes wait until the character completes) and replaces invalid
/// sequences by U+FFFD. The concatenated output equals `unicode::sanitize_utf8(tok.decode(ids))`,
/// i.e. it is byte-identical to the one-shot decode whenever that is valid UTF-8.
class StreamDecoder {
 public:
  /// `tok` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tok, bool render_special = false)
      : tok_(&tok), render_special_(render_special) {}

  /// Declares `ids` as already shown (e.g. the prompt when streaming only generated tokens): they
  /// update the leading-space state but produce no output.
  void skip(std::span<const std::int32_t> ids) {
    std::string scratch;
    for (const std::int32_t id : ids) tok_->append_decoded(state_, id, render_special_, scratch);
  }

  /// Text that became printable with token `id` (possibly empty).
  std::string push(std::int32_t id) {
    std::string bytes, out;
    tok_->append_decoded(state_, id, render_special_, bytes);
    utf8_.feed(bytes, out);
    return out;
  }

  /// The rest: an unfinished character at the end becomes U+FFFD. The decoder can be reused.
  std::string finish() {
    std::string out;
    utf8_.finish(out);
    state_ = {};
    return out;
  }

 private:
  const Tokenizer* tok_;
  bool render_special_;
  detail::DecodeState state_;
  unicode::Utf8Sanitizer utf8_;
};

}  // namespace loom
