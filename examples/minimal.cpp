// loom in twenty lines: load a model (format detected from the file), stream a completion.
//   minimal MODEL [PROMPT]
#include <iostream>
#include <loom/loom.hpp>

int main(int argc, char** argv) try {
  if (argc < 2) return std::cerr << "usage: minimal MODEL [PROMPT]\n", 2;
  const loom::Loaded m = loom::load(argv[1]);  // HF folder, .safetensors, .gguf or llama2.c .bin
  if (!m.tokenizer) return std::cerr << "this model carries no tokenizer\n", 2;

  loom::Session session(*m.model, {.n_ctx = 256, .n_threads = 2});
  loom::GenerateParams params;
  params.sampler = m.sampler;  // llama.cpp's defaults under the model's generation_config.json
  params.max_new_tokens = 64;
  params.end_of_generation = m.end_of_generation;

  const auto stats = session.generate(argc > 2 ? argv[2] : "ROMEO:", *m.tokenizer, params, [](std::string_view piece) {
    std::cout << piece << std::flush;
    return true;  // false stops generation
  });
  std::cout << "\n" << stats.decode_tokens_per_second() << " tokens/s\n";
} catch (const loom::Error& e) {  // every bad input: a message naming the file / key / value
  std::cerr << e.what() << "\n";
  return 1;
}
