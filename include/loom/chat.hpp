// Chat templates: turn a conversation into the text a chat model was trained on.
//
// Models ship their template as Jinja source (`chat_template` in tokenizer_config.json,
// `tokenizer.chat_template` in GGUF). loom does not run Jinja; like llama.cpp it recognizes the
// well-known template families from characteristic markers in that source and formats them
// natively. An unrecognized template is an error that lists the names loom knows.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "loom/error.hpp"

namespace loom {

struct ChatMessage {
  std::string role;  ///< "system", "user" or "assistant"
  std::string content;
};

enum class ChatFormat { chatml, llama2, llama3, mistral, zephyr, phi3 };

inline constexpr std::string_view chat_format_names = "chatml, llama2, llama3, mistral, zephyr, phi3";

constexpr std::string_view to_string(ChatFormat f) {
  switch (f) {
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::llama2: return "llama2";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::zephyr: return "zephyr";
    case ChatFormat::phi3: return "phi3";
  }
  return "unknown";
}

/// A chat format by name (as for `--chat-template NAME`); throws Error(invalid_argument) listing
/// the known names otherwise.
inline ChatFormat chat_format_from_name(std::string_view name) {
  for (ChatFormat f : {ChatFormat::chatml, ChatFormat::llama2, ChatFormat::llama3, ChatFormat::mistral,
                       ChatFormat::zephyr, ChatFormat::phi3})
    if (to_string(f) == name) return f;
  fail(ErrorKind::invalid_argument, "chat", "unknown chat template '", name, "'; known templates: ", chat_format_names);
}

/// Recognizes the template family of a model's Jinja chat template. Throws Error(unsupported)
/// listing the known names when no family matches.
inline ChatFormat detect_chat_format(std::string_view jinja) {
  auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) return ChatFormat::chatml;
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::llama2 : ChatFormat::mistral;
  if (has("<|user|>")) return has("<|end|>") ? ChatFormat::phi3 : ChatFormat::zephyr;
  if (jinja.empty()) fail(ErrorKind::unsupported, "chat", "the model has no chat template; pass one of: ", chat_format_names);
  fail(ErrorKind::unsupported, "chat", "unrecognized chat template (", jinja.size(), " characters, starting '",
       jinja.substr(0, 60), "'); force one of: ", chat_format_names);
}

/// Formats a conversation. With `add_generation_prompt` the text ends where the assistant's
/// reply begins. Special tokens appear as text (`<s>`, `<|im_start|>`): encode the result with
/// special-token parsing on and without adding BOS again.
///
/// Formats (one turn each; `S` system, `U` user, `A` assistant):
///   chatml   `<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n`
///   llama2   `<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s>` then `<s>[INST] U [/INST]` ...
///   mistral  `<s>[INST] S\n\nU [/INST] A</s>` then `[INST] U [/INST]` ...
///   llama3   `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>` ...
///   zephyr   `<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\nA</s>\n`
///   phi3     `<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\nA<|end|>\n`
inline std::string format_chat(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  for (const ChatMessage& m : messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail(ErrorKind::invalid_argument, "chat", "unknown role '", m.role, "' (expected system, user or assistant)");
  std::string out;
  switch (f) {
    case ChatFormat::chatml:
      for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::llama3:
      out += "<|begin_of_text|>";
      for (const ChatMessage& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::llama2:
    case ChatFormat::mistral: {
      const bool l2 = f == ChatFormat::llama2;
      std::string system;
      bool first_user = true;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system = m.content;
        } else if (m.role == "user") {
          std::string content = m.content;
          if (first_user && !system.empty())
            content = l2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
          out += (l2 || first_user ? "<s>" : "") + std::string("[INST] ") + content + " [/INST]";
          first_user = false;
        } else {
          out += (l2 ? " " : "") + m.content + (l2 ? " </s>" : "</s>");
        }
      }
      break;
    }
    case ChatFormat::zephyr:
    case ChatFormat::phi3: {
      const std::string end = f == ChatFormat::zephyr ? "</s>" : "<|end|>";
      for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + end + "\n";
      if (add_generation_prompt) out += "<|assistant|>\n";
      break;
    }
  }
  return out;
}

/// The text to feed for the newest messages when the context already holds the conversation
/// up to `history` (formatted without a generation prompt): the KV cache is reused across turns.
inline std::string format_chat_delta(ChatFormat f, const std::vector<ChatMessage>& history,
                                     const std::vector<ChatMessage>& all, bool add_generation_prompt) {
  const std::string before = format_chat(f, history, false);
  const std::string after = format_chat(f, all, add_generation_prompt);
  if (after.compare(0, before.size(), before) != 0)
    fail(ErrorKind::unsupported, "chat", "the ", to_string(f), " template rewrites earlier turns; cannot reuse the cache");
  return after.substr(before.size());
}

}  // namespace loom
