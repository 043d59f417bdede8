// The README's API example: load a model, encode a prompt, stream the generated text.
//   minimal MODEL [TOKENIZER] [PROMPT]
#include <iostream>
#include <loom/loom.hpp>

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: minimal MODEL [TOKENIZER] [PROMPT]\n";
    return 2;
  }
  loom::Loaded m = loom::load(argv[1], argc > 2 ? argv[2] : "");
  if (!m.tokenizer) throw loom::Error(loom::ErrorKind::invalid_argument, "minimal", "this model needs a tokenizer");
  const std::vector<std::int32_t> prompt = m.tokenizer->encode(argc > 3 ? argv[3] : "Once upon a time");

  loom::Session session(*m.model, {.n_ctx = 256, .n_threads = 2});
  loom::GenerateParams params;
  params.sampler = m.sampler;  // the model's generation_config.json over llama.cpp's defaults
  params.max_new_tokens = 64;
  params.end_of_generation = m.end_of_generation;
  loom::StreamDecoder text(*m.tokenizer);
  const loom::GenerateStats stats = session.generate(prompt, params, [&](std::int32_t id) {
    std::cout << text.push(id) << std::flush;
    return true;  // return false to stop early
  });
  std::cout << text.finish() << "\n";
  std::cerr << stats.decode_tokens_per_second() << " tokens/s\n";
} catch (const loom::Error& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
