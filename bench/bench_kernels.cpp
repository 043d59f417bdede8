// Kernel micro-benchmarks: matmul at model sizes (decode n = 1 and prompt n = 128) per stored
// type, reporting bytes/s of weights read and FLOP/s; decode attention at context 128 / 512 /
// 2048 with f32 and f16 KV caches (in cache, and from memory), reporting bytes/s of keys and
// values read.
#include <benchmark/benchmark.h>

#include <loom/kernels/matmul.hpp>
#include <loom/model/config.hpp>
#include <loom/nn/attention.hpp>
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

namespace {

struct Weight {
  std::vector<std::byte> bytes;
  loom::TensorRef ref;
};

Weight make_weight(loom::DType t, std::int64_t rows, std::int64_t cols) {
  Weight w;
  w.bytes.resize(std::size_t(rows * cols) * loom::block_bytes(t));
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  for (std::int64_t i = 0; i < rows * cols; ++i) {
    const float v = dist(rng);
    if (t == loom::DType::f32) std::memcpy(w.bytes.data() + 4 * i, &v, 4);
    if (t == loom::DType::f16) {
      const auto h = loom::to_f16(v);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
    if (t == loom::DType::bf16) {
      const auto h = loom::to_bf16(v);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  }
  w.ref = loom::TensorRef{t, loom::Shape{rows, cols}, w.bytes.data(), w.bytes.size()};
  return w;
}

// args: rows (out), cols (in), n tokens, threads, dtype
void BM_Matmul(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1), n = state.range(2);
  const auto dtype = loom::DType(state.range(4));
  loom::kernels::ThreadPool pool(int(state.range(3)));
  const Weight w = make_weight(dtype, out, in);
  std::vector<float> x(std::size_t(n * in), 0.5f), y(std::size_t(n * out));
  for (auto _ : state) {
    loom::kernels::matmul(x.data(), n, in, w.ref, false, y.data(), out, &pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(loom::to_string(dtype)));
  state.counters["weight_bytes/s"] =
      benchmark::Counter(double(w.bytes.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(out * in * n), benchmark::Counter::kIsIterationInvariantRate);
}
// TinyLlama-1.1B shapes: q/o 2048x2048, gate/up 5632x2048, down 2048x5632.
BENCHMARK(BM_Matmul)
    ->ArgNames({"out", "in", "n", "threads", "dtype"})
    ->Args({2048, 2048, 1, 1, int(loom::DType::f32)})
    ->Args({2048, 2048, 1, 2, int(loom::DType::f32)})
    ->Args({5632, 2048, 1, 2, int(loom::DType::f32)})
    ->Args({2048, 2048, 1, 2, int(loom::DType::f16)})
    ->Args({2048, 2048, 1, 2, int(loom::DType::bf16)})
    ->Args({2048, 2048, 128, 2, int(loom::DType::f32)})
    ->Args({2048, 2048, 128, 2, int(loom::DType::f16)})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Decode from memory, one core: matrices of the given shape cycled through 512 MiB, so that every
// row comes from DRAM as in a real model. variant 0 = one row at a time (the baseline), 1 = the
// grouping matmul uses (rows of K parts of the range read side by side; kernels/matmul.hpp).
// args: rows (out), cols (in), dtype, variant

/// The fused f32 / f16 / bf16 decode kernels of one level, for calling its templates directly.
#define LOOM_FUSED_TAG(Name, ns)                                                                        \
  struct Name {                                                                                          \
    template <loom::DType T, typename... A>                                                              \
    static void range(A... a) { loom::kernels::ns::dot_rows_range<T>(a...); }                          \
    template <loom::DType T>                                                                             \
    static void group(const loom::TensorRef& w, std::size_t rb, const float* x, std::int64_t n, std::int64_t ldx, \
                      float* y, std::int64_t ldy, std::int64_t first, std::int64_t stride) {             \
      const std::byte* rows[1];                                                                          \
      loom::kernels::ns::stored_rows<1>(w, rb, first, stride, rows);                                     \
      loom::kernels::ns::dot_row_group<T, 1>(rows, w.cols(), x, n, ldx, y, ldy, first, stride);          \
    }                                                                                                    \
  };
LOOM_FUSED_TAG(ScalarFused, scalar)
#if LOOM_X86
LOOM_FUSED_TAG(Avx2Fused, avx2)
LOOM_FUSED_TAG(Avx512Fused, avx512)
#endif
#undef LOOM_FUSED_TAG

void BM_DecodeFromMemory(benchmark::State& state) {
  const std::int64_t out = state.range(0), in = state.range(1);
  const auto dtype = loom::DType(state.range(2));
  const bool grouped = state.range(3) != 0;
  const Weight one = make_weight(dtype, out, in);
  const std::size_t copies = std::max<std::size_t>(1, (std::size_t(512) << 20) / one.bytes.size());
  std::vector<std::byte> all(one.bytes.size() * copies);
  for (std::size_t c = 0; c < copies; ++c) std::memcpy(all.data() + c * one.bytes.size(), one.bytes.data(), one.bytes.size());
  std::vector<float> x(static_cast<std::size_t>(in), 0.5f), y(static_cast<std::size_t>(out));
  const std::size_t rb = one.ref.row_bytes();
  for (auto _ : state) {
    for (std::size_t c = 0; c < copies; ++c) {
      const loom::TensorRef w{dtype, one.ref.shape, all.data() + c * one.bytes.size(), one.bytes.size()};
      // The kernels of the level in use: its namespace's templates, called directly.
      auto at_level = [&]<loom::DType T>(auto level_tag) {
        using L = decltype(level_tag);
        if (grouped)
          L::template range<T>(w, x.data(), 1, in, y.data(), out, 0, out);
        else
          for (std::int64_t o = 0; o < out; ++o) L::template group<T>(w, rb, x.data(), 1, in, y.data(), out, o, 0);
      };
      auto run = [&]<loom::DType T>() {
        switch (loom::cpu_features().level) {
#if LOOM_X86
          case loom::KernelLevel::avx512: return at_level.template operator()<T>(Avx512Fused{});
          case loom::KernelLevel::avx2: return at_level.template operator()<T>(Avx2Fused{});
#endif
          default: return at_level.template operator()<T>(ScalarFused{});
        }
      };
      if (dtype == loom::DType::f32) run.template operator()<loom::DType::f32>();
      else if (dtype == loom::DType::f16) run.template operator()<loom::DType::f16>();
      else run.template operator()<loom::DType::bf16>();
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(loom::to_string(dtype)) + (grouped ? " grouped" : " one row at a time"));
  state.counters["weight_bytes/s"] =
      benchmark::Counter(double(all.size()), benchmark::Counter::kIsIterationInvariantRate);
}
// TinyLlama's gate/up (5632x2048) and down (2048x5632) shapes, GPT-2's QKV (2304x768).
BENCHMARK(BM_DecodeFromMemory)
    ->ArgNames({"out", "in", "dtype", "grouped"})
    ->ArgsProduct({{5632}, {2048}, {int(loom::DType::f32), int(loom::DType::f16)}, {0, 1}})
    ->ArgsProduct({{2048}, {5632}, {int(loom::DType::f32), int(loom::DType::f16), int(loom::DType::bf16)}, {0, 1}})
    ->ArgsProduct({{2304}, {768}, {int(loom::DType::f32)}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// args: context length, threads, KV cache type. TinyLlama's heads: 32 query heads sharing 4 KV
// heads, head_dim 64. One query row at the last position (decoding); kv_bytes/s counts every
// cached key and value attention reads once.
void BM_Attention(benchmark::State& state) {
  const int ctx = int(state.range(0));
  const auto type = loom::DType(state.range(2));
  loom::Config c;
  c.n_layers = 1;
  c.n_heads = 32;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  loom::nn::KVCache kv(c, ctx, type);
  kv.reserve_append(0, ctx);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> k(std::size_t(c.kv_dim())), v(k.size());
  for (int p = 0; p < ctx; ++p) {
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = dist(rng), v[i] = dist(rng);
    kv.store(0, p, k.data(), v.data());
  }
  kv.commit(ctx);
  loom::kernels::ThreadPool pool(int(state.range(1)));
  const loom::nn::AttentionShape s{32, 4, 64, 0, nullptr};
  std::vector<float> q(32 * 64), out(32 * 64);
  std::vector<float> scratch(std::size_t(pool.size() * loom::nn::attention_scratch_floats(s, ctx)));
  for (float& x : q) x = dist(rng);
  for (auto _ : state) {
    loom::nn::attention(s, loom::TensorView<const float>(q.data(), {1, 32 * 64}), {kv, 0, ctx - 1},
                        loom::TensorView<float>(out.data(), {1, 32 * 64}), {scratch, &pool});
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(loom::to_string(type)));
  state.counters["kv_bytes/s"] = benchmark::Counter(double(kv.bytes()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Attention)
    ->ArgNames({"ctx", "threads", "kv"})
    ->ArgsProduct({{128, 512, 2048}, {1}, {int(loom::DType::f32), int(loom::DType::f16)}})
    ->Args({2048, 2, int(loom::DType::f32)})
    ->Args({2048, 2, int(loom::DType::f16)})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Decode attention from memory, one core: a cache of as many layers as fill 256 MiB, context 544
// (a tg run at depth 512), one query row per layer, so that every key and value comes from DRAM
// as in a real model. args: query heads per KV head (1: GPT-2's 12 / 12 heads; 8: TinyLlama's
// 32 / 4), KV cache type. kv_bytes/s counts the keys and values read.
void BM_AttentionFromMemory(benchmark::State& state) {
  const int group = int(state.range(0)), ctx = 544;
  const auto type = loom::DType(state.range(1));
  loom::Config c;
  c.n_kv_heads = group == 1 ? 12 : 4;
  c.n_heads = c.n_kv_heads * group;
  c.head_dim = 64;
  c.n_layers = 1;
  const std::uint64_t layer_bytes = loom::nn::KVCache::bytes_needed(c, ctx, type);
  c.n_layers = int((std::uint64_t(256) << 20) / layer_bytes + 1);
  loom::nn::KVCache kv(c, ctx, type);
  kv.reserve_append(0, ctx);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> k(std::size_t(c.kv_dim())), v(k.size());
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  for (int l = 0; l < c.n_layers; ++l)
    for (int p = 0; p < ctx; ++p) kv.store(l, p, k.data(), v.data());
  kv.commit(ctx);
  const loom::nn::AttentionShape s{c.n_heads, c.n_kv_heads, c.head_dim, 0, nullptr};
  std::vector<float> q(std::size_t(c.q_dim())), out(q.size());
  std::vector<float> scratch(std::size_t(loom::nn::attention_scratch_floats(s, ctx)));
  for (float& x : q) x = dist(rng);
  for (auto _ : state) {
    for (int l = 0; l < c.n_layers; ++l)
      loom::nn::attention(s, loom::TensorView<const float>(q.data(), {1, c.q_dim()}), {kv, l, ctx - 1},
                          loom::TensorView<float>(out.data(), {1, c.q_dim()}), {scratch});
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(std::string(loom::to_string(type)));
  const double read = 2.0 * c.n_layers * ctx * c.kv_dim() * double(loom::nn::KVCache::element_bytes(type));
  state.counters["kv_bytes/s"] = benchmark::Counter(read, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionFromMemory)
    ->ArgNames({"group", "kv"})
    ->ArgsProduct({{1, 8}, {int(loom::DType::f32), int(loom::DType::f16)}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
