// Chat templates: detection from real templates' markers and the formatted text of each family,
// written out by hand from the model cards' documented formats.
#include <gtest/gtest.h>

#include <loom/chat.hpp>

namespace {

using loom::ChatFormat;
using loom::ChatMessage;

const std::vector<ChatMessage> kConversation{
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};

TEST(Chat, DetectsFamiliesFromJinjaSource) {
  // Abbreviated from the templates shipped in tokenizer_config.json of each model family.
  EXPECT_EQ(loom::detect_chat_format(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                "'<|im_end|>' + '\n'}}{% endfor %}"),
            ChatFormat::chatml);
  EXPECT_EQ(loom::detect_chat_format("{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
                                     "messages[0]['content'] %}...{{ bos_token + '[INST] ' + content + ' [/INST]' }}"),
            ChatFormat::llama2);
  EXPECT_EQ(loom::detect_chat_format("{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + "
                                     "' [/INST]' }}{% endfor %}"),
            ChatFormat::mistral);
  EXPECT_EQ(loom::detect_chat_format("{% set content = '<|start_header_id|>' + message['role'] + "
                                     "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"),
            ChatFormat::llama3);
  EXPECT_EQ(loom::detect_chat_format("{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + "
                                     "eos_token }}{% endif %}"),
            ChatFormat::zephyr);
  EXPECT_EQ(loom::detect_chat_format("{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>'}}"),
            ChatFormat::phi3);
  try {
    loom::detect_chat_format("{{ something else entirely }}");
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("chatml, llama2, llama3, mistral, zephyr, phi3"), std::string::npos);
  }
  EXPECT_EQ(loom::chat_format_from_name("llama3"), ChatFormat::llama3);
  EXPECT_THROW(loom::chat_format_from_name("vicuna"), loom::Error);
}

TEST(Chat, FormatsEachFamily) {
  EXPECT_EQ(loom::format_chat(ChatFormat::chatml, kConversation, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(loom::format_chat(ChatFormat::llama2, kConversation, true),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]");
  EXPECT_EQ(loom::format_chat(ChatFormat::mistral, kConversation, true),
            "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Bye [/INST]");
  EXPECT_EQ(loom::format_chat(ChatFormat::llama3, kConversation, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(loom::format_chat(ChatFormat::zephyr, kConversation, true),
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n<|assistant|>\n");
  EXPECT_EQ(loom::format_chat(ChatFormat::phi3, kConversation, true),
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n"
            "<|assistant|>\n");
  EXPECT_THROW(loom::format_chat(ChatFormat::chatml, {{"tool", "x"}}, true), loom::Error);
}

TEST(Chat, DeltasReuseTheHistory) {
  for (ChatFormat f : {ChatFormat::chatml, ChatFormat::llama2, ChatFormat::llama3, ChatFormat::mistral,
                       ChatFormat::zephyr, ChatFormat::phi3}) {
    const std::vector<ChatMessage> history(kConversation.begin(), kConversation.begin() + 3);
    const std::string delta = loom::format_chat_delta(f, history, kConversation, true);
    EXPECT_EQ(loom::format_chat(f, history, false) + delta, loom::format_chat(f, kConversation, true))
        << loom::to_string(f);
    EXPECT_NE(delta.find("Bye"), std::string::npos);
    EXPECT_EQ(delta.find("Hello!"), std::string::npos);
  }
}

}  // namespace
