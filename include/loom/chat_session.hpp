// ChatSession: a multi-turn conversation on top of a Session. Each turn feeds only the new text
// (the template's delta since what the model has already seen), so the KV cache is reused across
// turns and the history is never processed twice.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/chat.hpp"
#include "loom/error.hpp"
#include "loom/generate.hpp"
#include "loom/tokenizer/stream_decoder.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom {

class ChatSession {
 public:
  /// `session` and `tokenizer` must outlive the chat. `system` (optional) opens the conversation.
  ChatSession(Session& session, const Tokenizer& tokenizer, ChatFormat format, std::string system = {})
      : session_(&session), tok_(&tokenizer), format_(format) {
    if (!system.empty()) messages_.push_back({"system", std::move(system)});
  }

  /// Adds the user's message, generates the assistant's reply (streamed through on_text as
  /// UTF-8-safe pieces) and records it. Returns the generation statistics.
  GenerateStats reply(std::string_view user, const GenerateParams& params,
                      const std::function<bool(std::string_view)>& on_text) {
    std::vector<ChatMessage> next = messages_;
    next.push_back({"user", std::string(user)});
    const std::string full = format_chat(format_, next, /*add_generation_prompt=*/true);
    if (full.compare(0, fed_.size(), fed_) != 0)
      fail(ErrorKind::unsupported, "chat", "the ", to_string(format_), " template changed earlier text; cannot continue");
    const std::string delta = full.substr(fed_.size());
    std::vector<std::int32_t> ids = tok_->encode(delta, /*add_special=*/false, /*parse_special=*/true);
    // The first turn starts the sequence: add BOS when the tokenizer wants one and the template
    // did not write it as text.
    if (fed_.empty() && tok_->add_bos() && tok_->bos_id() >= 0 && (ids.empty() || ids.front() != tok_->bos_id()))
      ids.insert(ids.begin(), tok_->bos_id());

    StreamDecoder decoder(*tok_);
    std::string text;
    const GenerateStats stats = session_->generate(ids, params, [&](std::int32_t id) {
      const std::string piece = decoder.push(id);
      text += piece;
      return on_text(piece);
    });
    const std::string rest = decoder.finish();
    text += rest;
    if (!rest.empty()) on_text(rest);
    fed_ = full + text;
    messages_ = std::move(next);
    messages_.push_back({"assistant", text});
    return stats;
  }

  const std::vector<ChatMessage>& messages() const { return messages_; }
  ChatFormat format() const { return format_; }

 private:
  Session* session_;
  const Tokenizer* tok_;
  ChatFormat format_;
  std::vector<ChatMessage> messages_;
  std::string fed_;  // the conversation text the model has seen so far
};

}  // namespace loom
