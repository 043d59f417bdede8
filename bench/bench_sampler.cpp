// Sampler throughput: one sample() + accept() per item, over GPT-2/LLaMA-2 (32k), LLaMA-3 (128k)
// and Qwen2 (152k) vocabulary sizes. Logits are fixed random numbers in [-10, 10).
#include <benchmark/benchmark.h>

#include <loom/sampling/rng.hpp>
#include <loom/sampling/sampler.hpp>

#include <cstdint>
#include <vector>

namespace {

enum Mode : int { default_chain = 0, greedy = 1, no_top_k = 2 };

void BM_Sampler(benchmark::State& state) {
  const auto vocab = std::int32_t(state.range(0));
  const auto mode = Mode(state.range(1));
  loom::SamplerParams p;  // llama.cpp defaults: temp .8, top_k 40, top_p .95, min_p .05
  p.seed = 1;
  if (mode == greedy) p.temperature = 0.0f;
  if (mode == no_top_k) p.top_k = 0;  // top-p must sort the whole vocabulary
  loom::Sampler sampler(p, vocab);

  loom::Rng rng(7);
  std::vector<float> logits(static_cast<std::size_t>(vocab));
  for (auto& x : logits) x = float(rng.uniform() * 20.0 - 10.0);

  for (auto _ : state) {
    const std::int32_t token = sampler.sample(logits);
    sampler.accept(token);
    benchmark::DoNotOptimize(token);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(mode == default_chain ? "default" : mode == greedy ? "greedy" : "top_k=0");
}

BENCHMARK(BM_Sampler)
    ->ArgNames({"vocab", "mode"})
    ->ArgsProduct({{32000, 128256, 151936}, {default_chain, greedy, no_top_k}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
