// End-to-end decoding of stories260K (llama2.c checkpoint from the shared fixtures): tokens/s
// for single-token decode steps and for a 64-token batched prompt.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <loom/io/llama2c.hpp>
#include <loom/model/model.hpp>
#include <memory>

namespace {

std::unique_ptr<loom::Model> load() {
  const char* env = std::getenv("LOOM_FIXTURES");
  const std::filesystem::path root = env ? env : std::filesystem::path(LOOM_SOURCE_DIR) / ".." / "shared" / "fixtures";
  const auto path = root / "stories260K" / "stories260K.bin";
  if (!std::filesystem::exists(path)) return nullptr;
  auto m = loom::io::load_llama2c(path);
  return std::make_unique<loom::Model>(std::move(m.config), std::move(m.weights));
}

void BM_DecodeStories260K(benchmark::State& state) {
  const auto model = load();
  if (!model) {
    state.SkipWithError("stories260K fixture not found (set LOOM_FIXTURES)");
    return;
  }
  loom::nn::KVCache kv(model->config(), 512);
  loom::Activations act;
  loom::kernels::ThreadPool pool(int(state.range(0)));
  std::int32_t token = 1;
  for (auto _ : state) {
    if (kv.size() == kv.capacity()) kv.clear();
    const auto logits = model->forward({&token, 1}, kv.size(), kv, act, loom::Logits::last, &pool);
    token = std::int32_t(std::max_element(logits.data(), logits.data() + logits.numel()) - logits.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DecodeStories260K)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

void BM_PromptStories260K(benchmark::State& state) {
  const auto model = load();
  if (!model) {
    state.SkipWithError("stories260K fixture not found (set LOOM_FIXTURES)");
    return;
  }
  loom::nn::KVCache kv(model->config(), 512);
  loom::Activations act;
  loom::kernels::ThreadPool pool(int(state.range(0)));
  std::vector<std::int32_t> prompt(64);
  for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = std::int32_t(1 + (i * 37) % 511);
  for (auto _ : state) {
    kv.clear();
    benchmark::DoNotOptimize(model->forward(prompt, 0, kv, act, loom::Logits::last, &pool).data());
  }
  state.counters["tokens/s"] = benchmark::Counter(64.0, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PromptStories260K)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
