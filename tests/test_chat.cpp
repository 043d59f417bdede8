// Chat templates: detection from real templates' markers and the formatted text of each family,
// written out by hand from the model cards' documented formats.
#include <gtest/gtest.h>

#include <loom/chat.hpp>
#include <loom/chat_session.hpp>
#include <loom/load.hpp>

#include "fixtures.hpp"

namespace test_chat {

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

// Two turns through a real model file: the second turn feeds only the new text (the context
// grows by exactly the delta's tokens plus the reply), never the history again.
TEST(ChatSession, ReusesTheCacheAcrossTurns) {
  LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/tiny-llama/tiny-llama.gguf");
  const loom::Loaded m = loom::load(gguf);
  ASSERT_TRUE(m.tokenizer.has_value());
  loom::Session session(*m.model, {.n_ctx = 256});
  loom::ChatSession chat(session, *m.tokenizer, ChatFormat::zephyr, "Be brief.");
  loom::GenerateParams p;
  p.sampler.temperature = 0.0f;
  p.max_new_tokens = 6;
  p.ignore_eos = true;
  std::string streamed;
  const auto s1 = chat.reply("Hi", p, [&](std::string_view t) {
    streamed += t;
    return true;
  });
  EXPECT_EQ(streamed, chat.messages().back().content);
  EXPECT_EQ(chat.messages().size(), 3u);  // system, user, assistant
  const std::int32_t after_first = session.position();
  // The first prompt is BOS + the formatted system and user turns.
  const auto first_ids = m.tokenizer->encode(
      loom::format_chat(ChatFormat::zephyr, {{"system", "Be brief."}, {"user", "Hi"}}, true), true, true);
  EXPECT_EQ(s1.prompt_tokens, std::int32_t(first_ids.size()));
  EXPECT_EQ(after_first, s1.prompt_tokens + s1.generated_tokens - 1);  // the last reply token is pending

  const auto s2 = chat.reply("Bye", p, [](std::string_view) { return true; });
  // Fed so far: the first formatted prompt and the reply's text; the rest of the template
  // (the end of the assistant turn, the new user turn, the generation prompt) is the delta.
  const std::vector<ChatMessage> msgs = chat.messages();
  const std::string seen = loom::format_chat(ChatFormat::zephyr, {msgs[0], msgs[1]}, true) + msgs[2].content;
  const std::string full = loom::format_chat(ChatFormat::zephyr, {msgs[0], msgs[1], msgs[2], msgs[3]}, true);
  ASSERT_EQ(full.compare(0, seen.size(), seen), 0);
  EXPECT_EQ(s2.prompt_tokens, std::int32_t(m.tokenizer->encode(full.substr(seen.size()), false, true).size()));
  EXPECT_LT(s2.prompt_tokens, s1.prompt_tokens + 10);
  EXPECT_EQ(session.position(), after_first + 1 + s2.prompt_tokens + s2.generated_tokens - 1);
  EXPECT_EQ(chat.messages().size(), 5u);
}

// Session::generate with text in and text out equals encoding, generating ids and decoding them.
TEST(Session, TextInTextOutMatchesTheTokenApi) {
  LOOM_REQUIRE_FIXTURE(gguf, "tiny-models/tiny-llama/tiny-llama.gguf");
  const loom::Loaded m = loom::load(gguf);
  ASSERT_TRUE(m.tokenizer.has_value());
  loom::GenerateParams p;
  p.sampler.temperature = 0.0f;
  p.max_new_tokens = 12;
  p.ignore_eos = true;
  loom::Session a(*m.model, {.n_ctx = 64}), b(*m.model, {.n_ctx = 64});
  std::string text;
  a.generate("Hello world", *m.tokenizer, p, [&](std::string_view piece) {
    text += piece;
    return true;
  });
  const std::vector<std::int32_t> ids = m.tokenizer->encode("Hello world", true, true);
  EXPECT_EQ(ids.front(), m.tokenizer->bos_id());
  std::vector<std::int32_t> out;
  b.generate(ids, p, [&](std::int32_t id) {
    out.push_back(id);
    return true;
  });
  loom::StreamDecoder d(*m.tokenizer);
  d.skip(ids);
  std::string expected;
  for (std::int32_t id : out) expected += d.push(id);
  expected += d.finish();
  EXPECT_EQ(text, expected);
  EXPECT_EQ(out.size(), 12u);
}

}  // namespace

}  // namespace test_chat
