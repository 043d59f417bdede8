// What an application built with its own default flags computes: the kernel level loom chose at
// run time, the prompt's logits, and a greedy continuation, compared with loom's own build
// (tests/cmake/run_consumer.cmake runs generate on the same model and prompt first).
//   consumer_logits MODEL REFERENCE_LOGITS N_DECODE ID [ID ...]
// Prints "kernels: <level>", how far its prompt logits are from REFERENCE_LOGITS (raw float32,
// generate --dump-logits), and then the generated ids as one JSON array. Exits 1 when a logit
// differs by more than 1e-4 of the largest magnitude: the same kernels run in both builds, and only
// the code compiled with each build's own flags (FMA contraction in the norms) may differ.
#include <cstdio>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <loom/loom.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  if (argc < 5) return std::fprintf(stderr, "usage: consumer_logits MODEL LOGITS_OUT N_DECODE ID [ID ...]\n"), 2;
  std::printf("kernels: %s\n", loom::cpu_features().summary().c_str());
  const loom::Loaded m = loom::load(argv[1]);
  std::vector<std::int32_t> prompt;
  for (int i = 4; i < argc; ++i) prompt.push_back(std::int32_t(std::atoi(argv[i])));
  loom::Session session(*m.model, {.n_ctx = 256, .n_threads = 2});
  loom::GenerateParams p;
  p.sampler.temperature = 0.0f;
  p.max_new_tokens = std::atoi(argv[3]);
  std::vector<float> reference;
  {
    std::ifstream in(argv[2], std::ios::binary);
    float v;
    while (in.read(reinterpret_cast<char*>(&v), sizeof v)) reference.push_back(v);
  }
  bool close = false;
  p.on_prompt_logits = [&](const loom::Tensor<const float>& logits) {
    if (std::size_t(logits.numel()) != reference.size()) {
      std::fprintf(stderr, "consumer_logits: %lld logits, the reference has %zu\n", (long long)logits.numel(),
                   reference.size());
      return;
    }
    double largest = 0, diff = 0;
    for (std::size_t i = 0; i < reference.size(); ++i) {
      largest = std::max(largest, double(std::fabs(reference[i])));
      diff = std::max(diff, double(std::fabs(logits.data()[i] - reference[i])));
    }
    std::printf("prompt logits: max difference %.3g (largest magnitude %.3g)\n", diff, largest);
    close = diff <= 1e-4 * largest;
  };
  std::vector<std::int32_t> ids;
  const loom::GenerateStats stats = session.generate(prompt, p, [&](std::int32_t id) {
    ids.push_back(id);
    return true;
  });
  std::fprintf(stderr, "decode: %.1f tokens/s\n", stats.decode_tokens_per_second());
  std::printf("[");
  for (std::size_t i = 0; i < ids.size(); ++i) std::printf(i ? ", %d" : "%d", ids[i]);
  std::printf("]\n");
  return close ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer_logits: %s\n", e.what());
  return 1;
}
