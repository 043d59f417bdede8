// Kernels against naive double-precision implementations written here from the definitions.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <loom/dtype.hpp>
#include <loom/kernels/matmul.hpp>
#include <loom/kernels/ops.hpp>
#include <loom/kernels/thread_pool.hpp>
#include <loom/nn/linear.hpp>
#include <random>
#include <vector>

#include "random.hpp"

namespace {

using loom::test::random_vector;

// ---- f16 / bf16 ---------------------------------------------------------------------------

TEST(DType, F16KnownValues) {
  // Values from the IEEE 754 binary16 definition.
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(1.0f), 0x3c00);
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(-2.0f), 0xc000);
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(65504.0f), 0x7bff);
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(65520.0f), 0x7c00);  // rounds to +inf
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(std::ldexp(1.0f, -26)), 0x0000);  // below half of it
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie → even
  EXPECT_EQ(loom::detail::f32_to_f16_scalar(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie → even (up)
  EXPECT_FLOAT_EQ(loom::detail::f16_to_f32_scalar(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(loom::detail::f16_to_f32_scalar(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(loom::detail::f16_to_f32_scalar(0xfc00)));
  EXPECT_TRUE(std::isnan(loom::detail::f16_to_f32_scalar(0x7e00)));
}

TEST(DType, F16RoundTripsEveryHalfAndFastPathMatchesScalar) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = loom::detail::f16_to_f32_scalar(std::uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(loom::detail::f32_to_f16_scalar(f), h);
    EXPECT_EQ(loom::to_float(loom::f16{std::uint16_t(h)}), f);
    EXPECT_EQ(loom::to_f16(f).bits, h);
  }
  for (float f : random_vector(10000, 7, 100.0f)) EXPECT_EQ(loom::to_f16(f).bits, loom::detail::f32_to_f16_scalar(f));
}

TEST(DType, BF16) {
  EXPECT_EQ(loom::to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(loom::to_float(loom::bf16{0x4049}), 3.140625f);
  // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
  EXPECT_EQ(loom::to_bf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  EXPECT_EQ(loom::to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(loom::to_float(loom::to_bf16(std::nanf("")))));
}

// ---- element-wise ops -----------------------------------------------------------------------

TEST(Ops, SoftmaxStableAgainstDouble) {
  std::vector<float> x = random_vector(1000, 1, 30.0f);
  x[3] = 1000.0f;  // would overflow exp() without the max shift
  std::vector<float> y = x;
  loom::kernels::softmax(y);
  double mx = -1e300, sum = 0;
  for (float v : x) mx = std::max(mx, double(v));
  for (float v : x) sum += std::exp(double(v) - mx);
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], std::exp(double(x[i]) - mx) / sum, 1e-7);
}

TEST(Ops, ActivationsAgainstDefinitions) {
  for (double x = -8; x <= 8; x += 0.0625) {
    const double pi = 3.14159265358979323846;
    const double gelu_tanh = 0.5 * x * (1 + std::tanh(std::sqrt(2 / pi) * (x + 0.044715 * x * x * x)));
    const double gelu_erf = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    const double silu = x / (1 + std::exp(-x));
    EXPECT_NEAR(loom::kernels::gelu_tanh(float(x)), gelu_tanh, 1e-5 * (1 + std::abs(x)));
    EXPECT_NEAR(loom::kernels::gelu_erf(float(x)), gelu_erf, 1e-5 * (1 + std::abs(x)));
    EXPECT_NEAR(loom::kernels::silu(float(x)), silu, 1e-5 * (1 + std::abs(x)));
  }
  // The two GELUs differ (the tanh form is an approximation), by at most ~1e-3.
  EXPECT_GT(std::abs(loom::kernels::gelu_tanh(-3.0f) - loom::kernels::gelu_erf(-3.0f)), 1e-5);
}

TEST(Ops, ResidualAdd) {
  std::vector<float> y{1, 2, 3}, x{0.5f, -2, 10};
  loom::kernels::add(y, x);
  EXPECT_EQ(y, (std::vector<float>{1.5f, 0, 13}));
}

// ---- matmul -----------------------------------------------------------------------------------

struct StoredWeight {
  std::vector<std::byte> bytes;
  std::vector<double> values;  // the exact stored values, as doubles
  loom::TensorRef ref;
};

StoredWeight make_weight(loom::DType t, std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  StoredWeight w;
  const auto f = random_vector(std::size_t(rows * cols), seed);
  w.values.resize(f.size());
  w.bytes.resize(f.size() * loom::block_bytes(t));
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (t == loom::DType::f32) {
      std::memcpy(w.bytes.data() + 4 * i, &f[i], 4);
      w.values[i] = f[i];
    } else if (t == loom::DType::f16) {
      const auto h = loom::to_f16(f[i]);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
      w.values[i] = loom::detail::f16_to_f32_scalar(h.bits);
    } else {
      const auto b = loom::to_bf16(f[i]);
      std::memcpy(w.bytes.data() + 2 * i, &b, 2);
      w.values[i] = loom::to_float(b);
    }
  }
  w.ref = loom::TensorRef{t, loom::Shape{rows, cols}, w.bytes.data(), w.bytes.size()};
  return w;
}

class Matmul : public ::testing::TestWithParam<std::tuple<loom::DType, int, bool, int>> {};

TEST_P(Matmul, MatchesNaiveDouble) {
  const auto [dtype, n, in_out, threads] = GetParam();
  const std::int64_t in = 67, out = 131, ldx = in + 5, ldy = out + 3;  // odd sizes, strided rows
  const StoredWeight w = in_out ? make_weight(dtype, in, out, 3) : make_weight(dtype, out, in, 3);
  const auto x = random_vector(std::size_t(n * ldx), 4);
  std::vector<float> y(std::size_t(n * ldy), -7.0f), y_ref(y);
  loom::ThreadPool pool(threads);
  loom::kernels::matmul(x.data(), n, ldx, w.ref, in_out, y.data(), ldy, &pool);
  loom::kernels::matmul_reference(x.data(), n, ldx, w.ref, in_out, y_ref.data(), ldy);
  for (int t = 0; t < n; ++t) {
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (std::int64_t i = 0; i < in; ++i)
        acc += double(x[std::size_t(t * ldx + i)]) * w.values[std::size_t(in_out ? i * out + o : o * in + i)];
      EXPECT_NEAR(y[std::size_t(t * ldy + o)], acc, 1e-4) << "row " << t << " col " << o;
      EXPECT_NEAR(y_ref[std::size_t(t * ldy + o)], acc, 1e-5);
    }
    for (std::int64_t o = out; o < ldy; ++o) EXPECT_EQ(y[std::size_t(t * ldy + o)], -7.0f);  // padding untouched
  }
}

INSTANTIATE_TEST_SUITE_P(AllStoredTypes, Matmul,
                         ::testing::Combine(::testing::Values(loom::DType::f32, loom::DType::f16, loom::DType::bf16),
                                            ::testing::Values(1, 5), ::testing::Bool(), ::testing::Values(1, 3)));

TEST(Matmul, ResultDoesNotDependOnThreadCount) {
  const StoredWeight w = make_weight(loom::DType::f32, 300, 64, 5);
  const auto x = random_vector(64 * 7, 6);
  std::vector<float> y1(300 * 7), y2(300 * 7);
  loom::ThreadPool p1(1), p2(2);
  loom::kernels::matmul(x.data(), 7, 64, w.ref, false, y1.data(), 300, &p1);
  loom::kernels::matmul(x.data(), 7, 64, w.ref, false, y2.data(), 300, &p2);
  EXPECT_EQ(y1, y2);
}

TEST(Linear, AddsBias) {
  const StoredWeight w = make_weight(loom::DType::f32, 3, 2, 8);
  std::vector<float> b{1, 2, 3};
  loom::Linear l{w.ref, loom::TensorRef{loom::DType::f32, {3}, reinterpret_cast<const std::byte*>(b.data()), 12}};
  std::vector<float> x{0.5f, -1}, y(3);
  loom::nn::linear(x.data(), 1, 2, l, y.data(), 3);
  for (int o = 0; o < 3; ++o) EXPECT_NEAR(y[o], 0.5 * w.values[o * 2] - w.values[o * 2 + 1] + b[o], 1e-6);
}

// ---- thread pool ------------------------------------------------------------------------------

TEST(ThreadPool, CoversEveryIndexOnceAndRethrows) {
  loom::ThreadPool pool(3);
  for (std::int64_t n : {1, 2, 3, 7, 64, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    pool.parallel_for(n, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) hits[std::size_t(i)]++;
    }, 4);
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
  EXPECT_THROW(pool.parallel_for(10, [](std::int64_t b, std::int64_t, int) {
    if (b > 0) throw std::runtime_error("worker failed");
  }), std::runtime_error);
  // Still usable after an exception.
  std::atomic<int> sum{0};
  pool.parallel_for(100, [&](std::int64_t b, std::int64_t e, int) { sum += int(e - b); });
  EXPECT_EQ(sum.load(), 100);
  EXPECT_THROW(loom::ThreadPool(0), loom::Error);
}

// Many back-to-back calls with varying numbers of participating threads: no chunk is ever run
// twice or skipped (a late worker must not mistake one call's job for another's).
TEST(ThreadPool, RapidCallsWithVaryingParticipants) {
  loom::ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(8);
  std::mt19937 rng(3);
  for (int call = 0; call < 5000; ++call) {
    const std::int64_t n = 1 + std::int64_t(rng() % 7);
    pool.parallel_for(n, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) hits[std::size_t(i)].fetch_add(1, std::memory_order_relaxed);
    });
    for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[std::size_t(i)].exchange(0), 1) << "call " << call;
  }
}

}  // namespace
