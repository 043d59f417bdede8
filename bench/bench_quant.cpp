// Quantized matmul benchmarks: matrix-vector (decode) and small/large batches per weight type at
// LLaMA-7B-like sizes (2048×2048, 5632×2048), reporting weight bytes/s.
#include <benchmark/benchmark.h>

#include <loom/huge_pages.hpp>
#include <loom/kernels/matmul.hpp>
#include <loom/kernels/quant.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "random_blocks.hpp"

namespace {

struct Weight {
  std::vector<std::byte> bytes;
  loom::TensorRef ref;
};

/// Random weights (std 0.02) quantized to t; k-quants as random bytes with small scales.
Weight make_weight(loom::DType t, std::int64_t rows, std::int64_t cols) {
  Weight w;
  w.bytes.resize(std::size_t(*loom::row_bytes(t, cols)) * std::size_t(rows));
  std::mt19937 rng(1);
  if (loom::block_elems(t) == 32 && t != loom::DType::iq4_nl) {
    std::normal_distribution<float> dist(0.0f, 0.02f);
    std::vector<float> f(std::size_t(rows * cols));
    for (float& v : f) v = dist(rng);
    loom::kernels::quantize_row(t, f.data(), w.bytes.data(), rows * cols);
  } else {
    loom::bench::random_blocks(t, w.bytes.data(), w.bytes.size(), 0.001f, [&] { return rng() & 0xff; });
  }
  w.ref = loom::TensorRef{t, loom::Shape{rows, cols}, w.bytes.data(), w.bytes.size()};
  return w;
}

const loom::DType types[] = {loom::DType::q8_0, loom::DType::q4_0, loom::DType::q4_1, loom::DType::q5_0,
                             loom::DType::q5_1, loom::DType::iq4_nl, loom::DType::iq4_xs, loom::DType::q2_k, loom::DType::q3_k,
                             loom::DType::q4_k, loom::DType::q5_k, loom::DType::q6_k};

// args: out, in, n tokens, threads, type index
void BM_QuantMatmul(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1), n = state.range(2);
  const loom::DType t = types[state.range(4)];
  const Weight w = make_weight(t, out, in);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(std::size_t(n * in)), y(std::size_t(n * out));
  for (float& v : x) v = dist(rng);
  loom::kernels::ThreadPool pool(int(state.range(3)));
  for (auto _ : state) {
    loom::kernels::matmul(x.data(), n, in, w.ref, false, y.data(), out, &pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(loom::to_string(t)) + " " + std::string(loom::kernels::quant_simd_name()));
  state.counters["weight_B/s"] =
      benchmark::Counter(double(w.bytes.size()) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * double(out * in * n) * double(state.iterations()), benchmark::Counter::kIsRate);
}

void args(benchmark::internal::Benchmark* b) {
  for (int ti = 0; ti < int(std::size(types)); ++ti)
    for (auto [out, in] : {std::pair{2048, 2048}, std::pair{5632, 2048}})
      for (int n : {1, 4, 8, 16, 64, 256})
        for (int threads : {1, 2}) b->Args({out, in, n, threads, ti});
}
BENCHMARK(BM_QuantMatmul)->Apply(args)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Decoding from DRAM: copies of one matrix filling 512 MiB of huge-page memory (as loom maps a
// model's weights), each multiplied by one input row in turn, as a token's matmuls read theirs.
// args: out, in, threads, type index. weight_B/s against the machine's read bandwidth (loom-bench
// prints it) is how close a kernel comes to the decoding bound.
void BM_QuantDecodeFromMemory(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1);
  const loom::DType t = types[state.range(3)];
  const Weight one = make_weight(t, out, in);
  const std::size_t copies = std::max<std::size_t>(1, (std::size_t(512) << 20) / one.bytes.size());
  loom::HugePageBuffer all(one.bytes.size() * copies, false);
  for (std::size_t c = 0; c < copies; ++c) std::memcpy(all.data() + c * one.bytes.size(), one.bytes.data(), one.bytes.size());
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(in)), y(static_cast<std::size_t>(out));
  for (float& v : x) v = dist(rng);
  loom::kernels::ThreadPool pool(int(state.range(2)));
  for (auto _ : state) {
    for (std::size_t c = 0; c < copies; ++c) {
      const loom::TensorRef w{t, one.ref.shape, all.data() + c * one.bytes.size(), one.bytes.size()};
      loom::kernels::matmul(x.data(), 1, in, w, false, y.data(), out, &pool);
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(loom::to_string(t)) + " " + std::string(loom::kernels::quant_simd_name()));
  state.counters["weight_B/s"] =
      benchmark::Counter(double(one.bytes.size() * copies), benchmark::Counter::kIsIterationInvariantRate);
}
// TinyLlama's gate/up (5632×2048) and down (2048×5632) shapes.
BENCHMARK(BM_QuantDecodeFromMemory)
    ->ArgNames({"out", "in", "threads", "type"})
    ->ArgsProduct({{5632}, {2048}, {1, 2}, {0, 1, 2, 3}})
    ->ArgsProduct({{2048}, {5632}, {1, 2}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
