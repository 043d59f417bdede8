// Kernels against naive double-precision implementations written here from the definitions.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <tuple>
#include <limits>
#include <loom/dtype.hpp>
#include <loom/kernels/matmul.hpp>
#include <loom/kernels/ops.hpp>
#include <loom/kernels/attention_products.hpp>
#include <loom/kernels/thread_pool.hpp>
#include <loom/machine.hpp>
#include <loom/nn/linear.hpp>
#include <random>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

#include "guarded_bytes.hpp"
#include "random.hpp"

namespace test_kernels {

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
  // Far tails, tiny inputs and special values, through apply (the vectorized loop).
  std::vector<float> v{-100.0f, -30.0f, -1e-6f, 0.0f, 1e-6f, 30.0f, 100.0f, 1e30f,
                       std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> g = v, s = v;
  loom::kernels::apply(std::span<float>(g), loom::kernels::gelu_tanh);
  loom::kernels::apply(std::span<float>(s), loom::kernels::silu);
  for (std::size_t i = 0; i + 2 < v.size(); ++i) {
    const double x = v[i];
    const double pi = 3.14159265358979323846;
    const double gt = 0.5 * x * (1 + std::tanh(std::sqrt(2 / pi) * (x + 0.044715 * x * x * x)));
    EXPECT_NEAR(g[i], gt, 1e-6 * std::abs(x) + 1e-30) << x;
    EXPECT_NEAR(s[i], x / (1 + std::exp(-x)), 1e-6 * std::abs(x) + 1e-30) << x;
  }
  EXPECT_EQ(g[8], std::numeric_limits<float>::infinity());
  EXPECT_EQ(s[8], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(g[9]));
  EXPECT_TRUE(std::isnan(s[9]));
  // The two GELUs differ (the tanh form is an approximation), by at most ~1e-3.
  EXPECT_GT(std::abs(loom::kernels::gelu_tanh(-3.0f) - loom::kernels::gelu_erf(-3.0f)), 1e-5);
}

TEST(Ops, ResidualAdd) {
  std::vector<float> y{1, 2, 3}, x{0.5f, -2, 10};
  loom::kernels::add(y, x);
  EXPECT_EQ(y, (std::vector<float>{1.5f, 0, 13}));
}

TEST(Ops, ExpWithinTwoUlpAndSpecialValues) {
  using loom::kernels::detail::exp_nonpositive;
  double worst = 0;
  for (float x = 0.0f; x > -87.3f; x -= 0.000917f * (1.0f - x)) {  // ~5000 points, denser near 0
    const double e = std::exp(double(x));
    worst = std::max(worst, std::abs(exp_nonpositive(x) - e) / e);
  }
  EXPECT_LE(worst, std::ldexp(1.0, -22)) << "2 ulp";
  EXPECT_EQ(exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(exp_nonpositive(-INFINITY), 0.0f);
  EXPECT_EQ(exp_nonpositive(-100.0f), 0.0f);  // e^-100 is subnormal in f32: flushed to 0
  EXPECT_TRUE(std::isnan(exp_nonpositive(NAN)));
}

TEST(Ops, SoftmaxOfEveryLengthAgainstDouble) {
  for (std::size_t n : {1, 2, 15, 16, 17, 33, 100, 2048}) {
    const std::vector<float> x = random_vector(n, std::uint32_t(n), 4.0f);
    std::vector<float> y = x;
    loom::kernels::softmax(y);
    double mx = -1e300, sum = 0;
    for (float v : x) mx = std::max(mx, double(v));
    for (float v : x) sum += std::exp(double(v) - mx);
    for (std::size_t i = 0; i < n; ++i) {
      const double p = std::exp(double(x[i]) - mx) / sum;
      ASSERT_NEAR(y[i], p, 1e-6 * p + 1e-12) << "n " << n << " i " << i;
    }
  }
  std::vector<float> masked{0.5f, -INFINITY, 0.5f};
  loom::kernels::softmax(masked);
  EXPECT_EQ(masked, (std::vector<float>{0.5f, 0.0f, 0.5f}));
}

TEST(Ops, F32ToF16RowsRoundLikeTheScalarReference) {
  std::vector<float> x = random_vector(1000, 9, 300.0f);
  x[0] = 65520.0f;                           // rounds to +inf
  x[1] = 1.0f + std::ldexp(1.0f, -11);       // tie → even
  x[2] = std::ldexp(1.0f, -20);              // subnormal in f16
  x[3] = -0.0f;
  std::vector<loom::f16> h(x.size());
  for (std::size_t n : {std::size_t(3), std::size_t(13), x.size()}) {
    loom::kernels::f32_to_f16(x.data(), h.data(), std::int64_t(n));
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(h[i].bits, loom::detail::f32_to_f16_scalar(x[i])) << i;
  }
}

// ---- row products (attention's Q·Kᵀ and P·V) --------------------------------------------------

template <typename T>
std::vector<T> stored_rows(const std::vector<float>& f) {
  std::vector<T> out(f.size());
  for (std::size_t i = 0; i < f.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      out[i] = f[i];
    else
      out[i] = loom::to_f16(f[i]);
  }
  return out;
}

double as_double(float x) { return x; }
double as_double(loom::f16 x) { return loom::detail::f16_to_f32_scalar(x.bits); }

/// Every implementation of weighted_rows_add (the dispatched one and the portable one) against
/// double sums written here, within the worst-case float accumulation error: 1e-5 of the sum of
/// the terms' magnitudes (rows of up to 130 terms).
template <typename T>
void expect_weighted_rows_match(int na, int nb, int n) {
  SCOPED_TRACE(testing::Message() << "na " << na << " nb " << nb << " n " << n);
  const std::int64_t ldb = n + 5, ldw = nb + 2, ldc = n + 7;  // gaps between rows
  const std::uint32_t seed = std::uint32_t(na * 10000 + nb * 100 + n);
  const auto b = stored_rows<T>(random_vector(std::size_t(nb * ldb), seed + 1));
  const auto w = random_vector(std::size_t(na * ldw), seed + 2);
  const auto c0 = random_vector(std::size_t(na * ldc), seed + 3);
  using Add = void (*)(const float*, std::int64_t, int, const T*, std::int64_t, int, int, float*, std::int64_t);
  for (Add add :
       {Add(loom::kernels::weighted_rows_add<T>), Add(loom::kernels::scalar::weighted_rows_add_level<T>)}) {
    std::vector<float> c = c0;
    add(w.data(), ldw, na, b.data(), ldb, nb, n, c.data(), ldc);
    for (int i = 0; i < na; ++i) {
      for (int d = 0; d < n; ++d) {
        double ref = c0[i * ldc + d], mag = std::abs(ref);
        for (int j = 0; j < nb; ++j) {
          const double term = double(w[i * ldw + j]) * as_double(b[j * ldb + d]);
          ref += term;
          mag += std::abs(term);
        }
        ASSERT_NEAR(c[i * ldc + d], ref, 1e-5 * mag) << "c[" << i << "][" << d << "]";
      }
      for (std::int64_t d = n; d < ldc; ++d) ASSERT_EQ(c[i * ldc + d], c0[i * ldc + d]) << "wrote past row " << i;
    }
  }
}

TEST(RowProducts, WeightedRowsMatchDoubleForEveryBlockAndTailSize) {
  // Query blocks of 8/4/2/1 rows and their remainders; position counts around the tile size and
  // the 1024-row outer blocks; rows that are not whole vectors (masked tails), shorter than one,
  // and longer than the portable path's 64-column chunks.
  for (int na : {1, 2, 3, 7, 8, 13})
    for (int nb : {1, 2, 5, 16, 17, 130, 1030})
      for (int n : {1, 7, 16, 20, 32, 33, 64, 80, 128, 130}) {
        expect_weighted_rows_match<float>(na, nb, n);
        expect_weighted_rows_match<loom::f16>(na, nb, n);
      }
}

/// dot_tiles (dispatched and portable) against double sums, keys laid out in tiles by this test.
template <typename T>
void expect_tile_products_match(int na, int nt, int n) {
  SCOPED_TRACE(testing::Message() << "na " << na << " tiles " << nt << " n " << n);
  constexpr int tile = loom::kernels::key_tile;
  const std::int64_t lda = n + 3, nb = std::int64_t(nt) * tile, lds = nb + 1;
  const std::uint32_t seed = std::uint32_t(na * 10000 + nt * 100 + n);
  const auto a = random_vector(std::size_t(na * lda), seed);
  const auto keys = stored_rows<T>(random_vector(std::size_t(nb * n), seed + 1));  // key j: [j·n, j·n + n)
  std::vector<T> tiles(keys.size());
  for (std::int64_t j = 0; j < nb; ++j)
    for (int d = 0; d < n; ++d) tiles[std::size_t(j / tile * tile * n + d * tile + j % tile)] = keys[std::size_t(j * n + d)];
  using Dot = void (*)(const float*, std::int64_t, int, const T*, int, int, float*, std::int64_t);
  for (Dot dot : {Dot(loom::kernels::dot_tiles<T>), Dot(loom::kernels::scalar::dot_tiles_level<T>)}) {
    std::vector<float> s(std::size_t(na * lds), 123.0f);
    dot(a.data(), lda, na, tiles.data(), nt, n, s.data(), lds);
    for (int i = 0; i < na; ++i) {
      for (std::int64_t j = 0; j < nb; ++j) {
        double ref = 0, mag = 0;
        for (int d = 0; d < n; ++d) {
          const double term = double(a[i * lda + d]) * as_double(keys[std::size_t(j * n + d)]);
          ref += term;
          mag += std::abs(term);
        }
        ASSERT_NEAR(s[std::size_t(i * lds + j)], ref, 1e-5 * mag + 1e-30) << "s[" << i << "][" << j << "]";
      }
      ASSERT_EQ(s[std::size_t(i * lds + nb)], 123.0f) << "wrote past row " << i;
    }
  }
}

TEST(RowProducts, TileProductsMatchDoubleForEveryBlockAndTailSize) {
  // Query blocks of 8/4/2/1 rows and remainders; tile counts around the kernels' passes (fewer
  // tiles than parts, parts of equal length with and without a remainder) and their
  // 1024-position outer blocks; head sizes that are odd, short, and longer than the portable
  // path's chunks.
  for (int na : {1, 2, 3, 7, 8, 13})
    for (int nt : {1, 2, 3, 5, 8, 9, 17, 67})
      for (int n : {1, 7, 16, 20, 64, 80, 128, 130}) {
        expect_tile_products_match<float>(na, nt, n);
        expect_tile_products_match<loom::f16>(na, nt, n);
      }
}

TEST(RowProducts, EachTileScoreDoesNotDependOnHowQueriesAreGrouped) {
  // Grouped-query attention computes 8 (or 4, 2) query rows against a KV head's keys at once,
  // multi-head attention one: a score must come out bit-identical either way.
  for (int n : {32, 64, 100, 128}) {
    const int nt = 11, nb = nt * loom::kernels::key_tile;
    const auto a = random_vector(std::size_t(8 * n), 7u + std::uint32_t(n));
    const auto tiles = random_vector(std::size_t(nb * n), 8u + std::uint32_t(n));
    std::vector<float> together(std::size_t(8 * nb)), alone(static_cast<std::size_t>(nb));
    loom::kernels::dot_tiles(a.data(), n, 8, tiles.data(), nt, n, together.data(), nb);
    for (int rows : {1, 2, 4})
      for (int i = 0; i < 8; i += rows) {
        std::vector<float> part(std::size_t(rows * nb));
        loom::kernels::dot_tiles(a.data() + i * n, n, rows, tiles.data(), nt, n, part.data(), nb);
        for (int r = 0; r < rows; ++r)
          for (int j = 0; j < nb; ++j)
            ASSERT_EQ(part[std::size_t(r * nb + j)], together[std::size_t((i + r) * nb + j)]) << n << " " << i + r << " " << j;
      }
  }
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

// The f32 / f16 / bf16 products (fused decode dots, the [in, out] decode, the batched GEMM path)
// read only the matrix's own bytes: a matrix placed against an inaccessible page gives the
// results of the same bytes elsewhere, for row lengths around every vector and unroll size.
TEST(MatmulGuarded, ReadsNothingOutsideTheWeights) {
  for (loom::DType t : {loom::DType::f32, loom::DType::f16, loom::DType::bf16})
    for (std::int64_t in : {1, 3, 8, 16, 31, 33, 64, 100, 147, 1000})
      for (bool in_out : {false, true})
        for (std::int64_t rows : {1, 2, 20}) {
          SCOPED_TRACE(testing::Message() << loom::to_string(t) << " in " << in << (in_out ? " [in, out]" : "")
                                          << ", " << rows << " input rows");
          const std::int64_t out = 5;
          const StoredWeight w = in_out ? make_weight(t, in, out, 7) : make_weight(t, out, in, 7);
          loom::test::GuardedBytes guarded(w.bytes.size());
          for (bool at_end : {true, false}) {  // (each copy overwrites the other)
            const std::byte* p = at_end ? guarded.at_end(w.bytes) : guarded.at_start(w.bytes);
            const loom::TensorRef g{t, w.ref.shape, p, w.bytes.size()};
            const auto x = random_vector(std::size_t(rows * in), 8);
            std::vector<float> y1(std::size_t(rows * out)), y2(y1.size());
            loom::kernels::matmul(x.data(), rows, in, w.ref, in_out, y1.data(), out);
            loom::kernels::matmul(x.data(), rows, in, g, in_out, y2.data(), out);
            EXPECT_EQ(y1, y2);
          }
        }
}

class Matmul : public ::testing::TestWithParam<std::tuple<loom::DType, int, bool, int>> {};

TEST_P(Matmul, MatchesNaiveDouble) {
  const auto [dtype, n, in_out, threads] = GetParam();
  // Odd sizes, strided rows; in = 2·64 + 16 + 3 passes through every loop of the fused dots.
  const std::int64_t in = 147, out = 131, ldx = in + 5, ldy = out + 3;
  const StoredWeight w = in_out ? make_weight(dtype, in, out, 3) : make_weight(dtype, out, in, 3);
  const auto x = random_vector(std::size_t(n * ldx), 4);
  std::vector<float> y(std::size_t(n * ldy), -7.0f), y_ref(y);
  loom::kernels::ThreadPool pool(threads);
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
                                            ::testing::Values(1, 2, 5), ::testing::Bool(), ::testing::Values(1, 3)));

// Decode (n ≤ fused_dot_max_rows) with rows long enough for the long-row grouping (x over 16 KiB);
// out = 131 leaves remainder rows for every thread count.
class MatmulLongRows : public ::testing::TestWithParam<std::tuple<loom::DType, int, int>> {};

TEST_P(MatmulLongRows, MatchesNaiveDouble) {
  const auto [dtype, n, threads] = GetParam();
  const std::int64_t in = 4096 + 32 + 16 + 5, out = 131;
  const StoredWeight w = make_weight(dtype, out, in, 11);
  const auto x = random_vector(std::size_t(n * in), 12);
  std::vector<float> y(std::size_t(n * out));
  loom::kernels::ThreadPool pool(threads);
  loom::kernels::matmul(x.data(), n, in, w.ref, false, y.data(), out, &pool);
  for (int t = 0; t < n; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (std::int64_t i = 0; i < in; ++i) acc += double(x[std::size_t(t * in + i)]) * w.values[std::size_t(o * in + i)];
      EXPECT_NEAR(y[std::size_t(t * out + o)], acc, 1e-3) << "row " << t << " col " << o;
    }
}

INSTANTIATE_TEST_SUITE_P(AllStoredTypes, MatmulLongRows,
                         ::testing::Combine(::testing::Values(loom::DType::f32, loom::DType::f16, loom::DType::bf16),
                                            ::testing::Values(1, 2, 7), ::testing::Values(1, 2, 3)));

TEST(Matmul, InOutDecodeWithFewInputRowsAndShortOutputs) {
  // [in, out] decode sums fixed slabs of input rows: fewer rows than slabs leaves some empty;
  // outputs shorter than the two-vector step, or not whole vectors, take the tail loops.
  for (const loom::DType t : {loom::DType::f32, loom::DType::f16})
    for (const std::int64_t in : {1, 4, 7, 40})
      for (const std::int64_t out : {1, 17, 50}) {
        const StoredWeight w = make_weight(t, in, out, 21);
        const auto x = random_vector(std::size_t(2 * in), 22);
        std::vector<float> y(std::size_t(2 * out));
        loom::kernels::ThreadPool pool(2);
        loom::kernels::matmul(x.data(), 2, in, w.ref, true, y.data(), out, &pool);
        for (std::int64_t r = 0; r < 2; ++r)
          for (std::int64_t o = 0; o < out; ++o) {
            double acc = 0;
            for (std::int64_t i = 0; i < in; ++i) acc += double(x[std::size_t(r * in + i)]) * w.values[std::size_t(i * out + o)];
            EXPECT_NEAR(y[std::size_t(r * out + o)], acc, 1e-5) << loom::to_string(t) << " in " << in << " out " << out;
          }
      }
}

TEST(Matmul, DecodeDoesNotDependOnThreadCount) {
  // The fused decode kernels group rows differently per thread chunk, and [in, out] weights are
  // summed in slabs of input rows spread over the threads; every output must still be bit-identical.
  for (const bool in_out : {false, true})
    for (const std::int64_t in : {std::int64_t(300), std::int64_t(4200)})
      for (const loom::DType t : {loom::DType::f32, loom::DType::f16, loom::DType::bf16}) {
        const StoredWeight w = in_out ? make_weight(t, in, 301, 13) : make_weight(t, 301, in, 13);
        const auto x = random_vector(std::size_t(in), 14);
        std::vector<float> y1(301), y2(301), y3(301);
        loom::kernels::ThreadPool p1(1), p2(2), p3(3);
        loom::kernels::matmul(x.data(), 1, in, w.ref, in_out, y1.data(), 301, &p1);
        loom::kernels::matmul(x.data(), 1, in, w.ref, in_out, y2.data(), 301, &p2);
        loom::kernels::matmul(x.data(), 1, in, w.ref, in_out, y3.data(), 301, &p3);
        EXPECT_EQ(y1, y2) << loom::to_string(t) << " in " << in << " in_out " << in_out;
        EXPECT_EQ(y1, y3) << loom::to_string(t) << " in " << in << " in_out " << in_out;
      }
}

TEST(Matmul, DecodeBatchRowsEqualEachRowAlone) {
  // A batch of decoding sequences (2 ≤ n ≤ fused_dot_max_rows rows of x) shares each weight load
  // over several rows of x; every row's sums must still be bit-identical to that row decoded
  // alone, whatever n (groups of rows of x and their remainders), short and long rows.
  loom::kernels::ThreadPool pool(2);
  for (const std::int64_t in : {std::int64_t(300), std::int64_t(4200)})
    for (const loom::DType t : {loom::DType::f32, loom::DType::f16, loom::DType::bf16})
      for (const std::int64_t n : {std::int64_t(2), std::int64_t(3), std::int64_t(5), std::int64_t(7),
                                   loom::kernels::fused_dot_max_rows}) {
        const StoredWeight w = make_weight(t, 131, in, 41);
        const auto x = random_vector(std::size_t(n * in), 42);
        std::vector<float> batch(std::size_t(n * 131)), alone(131);
        loom::kernels::matmul(x.data(), n, in, w.ref, false, batch.data(), 131, &pool);
        for (std::int64_t r = 0; r < n; ++r) {
          loom::kernels::matmul(x.data() + r * in, 1, in, w.ref, false, alone.data(), 131, &pool);
          EXPECT_TRUE(std::equal(alone.begin(), alone.end(), batch.begin() + r * 131))
              << loom::to_string(t) << " in " << in << " n " << n << " row " << r;
        }
      }
}

TEST(Matmul, ResultDoesNotDependOnThreadCount) {
  const StoredWeight w = make_weight(loom::DType::f32, 300, 64, 5);
  const auto x = random_vector(64 * 7, 6);
  std::vector<float> y1(300 * 7), y2(300 * 7);
  loom::kernels::ThreadPool p1(1), p2(2);
  loom::kernels::matmul(x.data(), 7, 64, w.ref, false, y1.data(), 300, &p1);
  loom::kernels::matmul(x.data(), 7, 64, w.ref, false, y2.data(), 300, &p2);
  EXPECT_EQ(y1, y2);
}

TEST(Matmul, ProductsOfTheSameInputInOneCallEqualSeparateOnes) {
  // One parallel call for several weights (a layer's q, k, v): each output bit-identical to its
  // own matmul, for decode sizes and beyond; weights of different types take one call each.
  const std::int64_t in = 300;
  loom::kernels::ThreadPool p3(3);
  for (const std::int64_t n : {std::int64_t(1), loom::kernels::fused_dot_max_rows + 1})
    for (const loom::DType t : {loom::DType::f32, loom::DType::f16, loom::DType::bf16})
      for (const bool mixed : {false, true}) {
        const StoredWeight w[3] = {make_weight(t, 70, in, 31), make_weight(mixed ? loom::DType::f32 : t, 20, in, 32),
                                   make_weight(t, 65, in, 33)};
        const auto x = random_vector(std::size_t(n * in), 34);
        std::vector<float> fused[3], separate[3];
        loom::kernels::MatmulOutput products[3];
        for (int i = 0; i < 3; ++i) {
          fused[i].assign(std::size_t(n * w[i].ref.rows()), -1.0f);
          separate[i].assign(fused[i].size(), -2.0f);
          products[i] = {w[i].ref, fused[i].data(), w[i].ref.rows()};
          loom::kernels::matmul(x.data(), n, in, w[i].ref, false, separate[i].data(), w[i].ref.rows(), &p3);
        }
        loom::kernels::matmul_same_input(x.data(), n, in, products, &p3);
        for (int i = 0; i < 3; ++i)
          EXPECT_EQ(fused[i], separate[i]) << loom::to_string(t) << " weight " << i << " n " << n << " mixed " << mixed;
      }
}

TEST(Linear, SameInputLayersAddTheirBiases) {
  const StoredWeight wa = make_weight(loom::DType::f16, 5, 40, 41), wb = make_weight(loom::DType::f16, 3, 40, 42);
  const std::vector<float> ba{1, 2, 3, 4, 5};
  const loom::nn::Linear a{wa.ref, loom::TensorRef{loom::DType::f32, {5}, reinterpret_cast<const std::byte*>(ba.data()), 20}};
  const loom::nn::Linear b{wb.ref, {}};
  const auto x = random_vector(80, 43);
  std::vector<float> ya(10), yb(6), ra(10), rb(6);
  using View = loom::TensorView<float>;
  const loom::TensorView<const float> xv(x.data(), loom::Shape{2, 40});
  const loom::nn::LinearOutput outs[] = {{&a, View(ya.data(), {2, 5})}, {&b, View(yb.data(), {2, 3})}};
  loom::kernels::ThreadPool pool(2);
  loom::nn::linear_same_input(xv, outs, &pool);
  loom::nn::linear(xv, a, View(ra.data(), {2, 5}), &pool);
  loom::nn::linear(xv, b, View(rb.data(), {2, 3}), &pool);
  EXPECT_EQ(ya, ra);
  EXPECT_EQ(yb, rb);
  for (int t = 0; t < 2; ++t)
    for (int o = 0; o < 5; ++o) {
      double acc = ba[std::size_t(o)];
      for (int i = 0; i < 40; ++i) acc += double(x[std::size_t(t * 40 + i)]) * wa.values[std::size_t(o * 40 + i)];
      EXPECT_NEAR(ya[std::size_t(t * 5 + o)], acc, 1e-5);
    }
}

TEST(Linear, AddsBias) {
  const StoredWeight w = make_weight(loom::DType::f32, 3, 2, 8);
  std::vector<float> b{1, 2, 3};
  loom::nn::Linear l{w.ref, loom::TensorRef{loom::DType::f32, {3}, reinterpret_cast<const std::byte*>(b.data()), 12}};
  std::vector<float> x{0.5f, -1}, y(3);
  loom::nn::linear(loom::TensorView<const float>(x.data(), {1, 2}), l, loom::TensorView<float>(y.data(), {1, 3}));
  for (int o = 0; o < 3; ++o) EXPECT_NEAR(y[o], 0.5 * w.values[o * 2] - w.values[o * 2 + 1] + b[o], 1e-6);
}

// ---- thread pool ------------------------------------------------------------------------------

TEST(ThreadPool, CoversEveryIndexOnceAndRethrows) {
  loom::kernels::ThreadPool pool(3);
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
  EXPECT_THROW(loom::kernels::ThreadPool(0), loom::Error);
}

// A thread that stalls inside its first piece (a descheduled core) does not hold up the rest of
// its range: the others take it over. Every index still runs exactly once.
TEST(ThreadPool, OthersTakeOverTheRangeOfAStalledThread) {
  loom::kernels::ThreadPool pool(2);
  constexpr std::int64_t n = 64;
  std::vector<std::atomic<int>> hits(n);
  std::atomic<std::int64_t> by_caller{0};
  std::atomic<bool> stalled{false};
  pool.parallel_for(n, [&](std::int64_t b, std::int64_t e, int t) {
    if (t == 1 && !stalled.exchange(true)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (t == 0) by_caller += e - b;
    for (std::int64_t i = b; i < e; ++i) hits[std::size_t(i)]++;
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  // The worker's first piece is at most three quarters of its 32 indices (or nothing, if it
  // started late); with fixed ranges the caller would run exactly its own 32.
  EXPECT_GE(by_caller.load(), 40);
}

// Many back-to-back calls with varying numbers of participating threads: no chunk is ever run
// twice or skipped (a late worker must not mistake one call's job for another's).
TEST(ThreadPool, RapidCallsWithVaryingParticipants) {
  loom::kernels::ThreadPool pool(4);
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

// The bandwidth probe's reads: every stream count sums exactly the words and trailing bytes a
// plain loop sums (so no byte is skipped or read twice), for sizes around its 256-byte steps.
TEST(BandwidthProbe, ReadsEveryByteOnceForEveryStreamCount) {
  std::mt19937_64 rng(7);
  std::vector<std::byte> buf(8 * 256 * 3 + 4096);
  for (auto& b : buf) b = std::byte(rng());
  for (std::size_t n : {0, 1, 7, 8, 9, 255, 256, 257, 2047, 2048, 2061, 8 * 256 * 3 + 100, 8 * 256 * 3 + 4096}) {
    std::uint64_t expected = 0;
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, buf.data() + i, 8);
      expected += w;
    }
    for (; i < n; ++i) expected += std::uint64_t(buf[i]);
    for (int streams : loom::detail::probe_streams)
      EXPECT_EQ(loom::detail::sum_words(buf.data(), n, streams), expected) << n << " bytes, " << streams << " streams";
  }
  loom::kernels::ThreadPool pool(2);
  const loom::ByteRange range{buf.data(), buf.size()};
  EXPECT_GT(loom::measure_read_bandwidth(pool, {&range, 1}, 1), 0.0);
}

// ---- kernel levels (kernels/cpu.hpp) ---------------------------------------------------------------

TEST(CpuFeatures, LevelFollowsTheCpuAndLoomCpu) {
  const loom::CpuFeatures& f = loom::cpu_features();
  // The level in use is one the CPU runs; LOOM_CPU (when set, as ctest does for the scalar.* and
  // avx2.* runs) names it.
  EXPECT_TRUE(f.supports(f.level));
  const char* env = std::getenv("LOOM_CPU");
  if (env && *env) {
    EXPECT_EQ(loom::to_string(f.level), env);
    EXPECT_TRUE(f.forced);
  } else {
    EXPECT_EQ(f.level, f.best);
  }
  // The levels need what they say: AVX-512 implies AVX2, both need the OS to save the registers.
  if (f.supports(loom::KernelLevel::avx512)) {
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni && f.avx512vbmi && f.avx2);
  }
  if (f.supports(loom::KernelLevel::avx2)) {
    EXPECT_TRUE(f.avx2 && f.fma && f.f16c);
  }
  EXPECT_NE(f.summary().find(std::string(loom::to_string(f.level))), std::string::npos);
}

TEST(CpuFeatures, LoomCpuValuesAreCheckedAgainstTheCpu) {
  loom::CpuFeatures avx2_cpu;
  avx2_cpu.avx2 = avx2_cpu.fma = avx2_cpu.f16c = avx2_cpu.bmi2 = true;
  avx2_cpu.best = avx2_cpu.level = loom::KernelLevel::avx2;
  using loom::detail::with_requested_level;
  EXPECT_EQ(with_requested_level(avx2_cpu, nullptr).level, loom::KernelLevel::avx2);
  EXPECT_EQ(with_requested_level(avx2_cpu, "").level, loom::KernelLevel::avx2);
  const loom::CpuFeatures scalar = with_requested_level(avx2_cpu, "scalar");
  EXPECT_EQ(scalar.level, loom::KernelLevel::scalar);
  EXPECT_TRUE(scalar.forced);
  try {
    with_requested_level(avx2_cpu, "avx512");
    FAIL() << "a level the CPU lacks was accepted";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("LOOM_CPU"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("avx2 fma f16c bmi2"), std::string::npos) << e.what();
  }
  try {
    with_requested_level(avx2_cpu, "AVX2");
    FAIL() << "an unknown level was accepted";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("'AVX2'"), std::string::npos) << e.what();
  }
}

TEST(CpuFeatures, Bf16PromptsNeedTheCpuAndFollowLoomBf16) {
  loom::CpuFeatures cpu;
  cpu.avx2 = cpu.fma = cpu.f16c = cpu.bmi2 = true;
  cpu.avx512f = cpu.avx512bw = cpu.avx512cd = cpu.avx512dq = cpu.avx512vl = cpu.avx512vnni = cpu.avx512vbmi = true;
  cpu.best = cpu.level = loom::KernelLevel::avx512;
  using loom::detail::with_bf16_choice;
  EXPECT_FALSE(with_bf16_choice(cpu, nullptr).bf16_prompts);  // no AVX512_BF16
  EXPECT_FALSE(with_bf16_choice(cpu, "1").bf16_for_f16);
  cpu.avx512bf16 = true;
  EXPECT_TRUE(with_bf16_choice(cpu, nullptr).bf16_prompts);
  EXPECT_FALSE(with_bf16_choice(cpu, nullptr).bf16_for_f16);  // f16 weights stay exact by default
  EXPECT_TRUE(with_bf16_choice(cpu, "1").bf16_prompts);
  EXPECT_TRUE(with_bf16_choice(cpu, "1").bf16_for_f16);
  EXPECT_FALSE(with_bf16_choice(cpu, "0").bf16_prompts);
  EXPECT_FALSE(with_bf16_choice(cpu, "0").bf16_for_f16);
  cpu.level = loom::KernelLevel::avx2;  // LOOM_CPU=avx2: no bf16 kernels at that level
  EXPECT_FALSE(with_bf16_choice(cpu, "1").bf16_prompts);
  EXPECT_FALSE(with_bf16_choice(cpu, "1").bf16_for_f16);
  try {
    with_bf16_choice(cpu, "yes");
    FAIL() << "an unknown LOOM_BF16 value was accepted";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("LOOM_BF16"), std::string::npos) << e.what();
  }
}

/// C = A · Bᵀ in double, B's element (j, p) at b[j·ldb + p] or (k-major) b[p·ldb + j].
std::vector<double> gemm_double(const std::vector<float>& a, std::int64_t n, std::int64_t k, const std::vector<float>& b,
                                std::int64_t ldb, bool k_major, std::int64_t m) {
  std::vector<double> c(std::size_t(n * m));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) {
      double s = 0;
      for (std::int64_t p = 0; p < k; ++p)
        s += double(a[std::size_t(i * k + p)]) * double(b[std::size_t(k_major ? p * ldb + j : j * ldb + p)]);
      c[std::size_t(i * m + j)] = s;
    }
  return c;
}

TEST(Gemm, EveryLevelMatchesDoublePrecision) {
  // Tile remainders in rows (1 .. 13 against 12- and 6-row tiles), columns (partial 16- and
  // 32-column panels) and depth (pieces of 256), both layouts of B.
  for (const auto& [n, k, m] : {std::tuple{1, 1, 1}, {13, 300, 45}, {12, 256, 32}, {7, 513, 17}, {25, 64, 100}}) {
    const auto a = random_vector(std::size_t(n * k), std::uint32_t(n * 7 + k));
    for (bool k_major : {false, true}) {
      const std::int64_t ldb = (k_major ? m : k) + 3;
      const auto b = random_vector(std::size_t((k_major ? k : m) * ldb), std::uint32_t(m * 11 + k));
      const auto ref = gemm_double(a, n, k, b, ldb, k_major, m);
      for (loom::KernelLevel l : loom::kernel_levels) {
        if (!loom::cpu_features().supports(l)) continue;
        const std::int64_t ldc = m + 5;
        std::vector<float> c(std::size_t(n * ldc), 77.0f);
        loom::kernels::level_kernels(l).gemm_f32(a.data(), k, n, k, b.data(), ldb, k_major, m, c.data(), ldc);
        for (std::int64_t i = 0; i < n; ++i) {
          for (std::int64_t j = 0; j < m; ++j)
            ASSERT_NEAR(c[std::size_t(i * ldc + j)], ref[std::size_t(i * m + j)], 2e-5 * std::sqrt(double(k)) + 1e-5)
                << to_string(l) << " n " << n << " k " << k << " m " << m << " (" << i << ", " << j << ")";
          for (std::int64_t j = m; j < ldc; ++j) ASSERT_EQ(c[std::size_t(i * ldc + j)], 77.0f) << "wrote past column m";
        }
      }
    }
  }
}

// f16 and bf16 weights multiplied in place (gemm_half: each value converted as B is packed) give
// bit for bit the product of their f32 conversion by gemm_f32, at every level that has one, for
// both layouts, a block of weights from j0, and sizes around the 8 × 8 transposes, the panels
// and the 256-deep pieces.
TEST(Gemm, HalfWeightsEqualTheF32ProductOfTheirConversion) {
  for (const loom::DType t : {loom::DType::f16, loom::DType::bf16})
    for (const auto& [n, k, m] : {std::tuple{1, 1, 1}, {13, 300, 45}, {7, 523, 17}, {6, 64, 100}, {3, 9, 33}})
      for (bool in_out : {false, true}) {
        const std::int64_t total = m + 11, j0 = 11;  // the product's m weights start at j0
        const StoredWeight w = in_out ? make_weight(t, k, total, std::uint32_t(k + m)) : make_weight(t, total, k, std::uint32_t(k + m));
        const auto a = random_vector(std::size_t(n * k), std::uint32_t(n + 5 * k));
        const std::vector<float> converted(w.values.begin(), w.values.end());  // exact: f16 / bf16 values
        const float* b = converted.data() + (in_out ? j0 : j0 * k);
        const std::int64_t ldb = in_out ? total : k, ldc = m + 2;
        for (loom::KernelLevel l : loom::kernel_levels) {
          const auto& lk = loom::kernels::level_kernels(l);
          if (!loom::cpu_features().supports(l) || lk.gemm_half == nullptr) continue;
          SCOPED_TRACE(testing::Message() << to_string(l) << " " << loom::to_string(t) << (in_out ? " [in, out]" : "")
                                          << " n " << n << " k " << k << " m " << m);
          std::vector<float> c(std::size_t(n * ldc), 77.0f), c_f32(c);
          lk.gemm_half(a.data(), k, n, k, w.ref, in_out, j0, m, c.data(), ldc);
          lk.gemm_f32(a.data(), k, n, k, b, ldb, in_out, m, c_f32.data(), ldc);
          ASSERT_EQ(c, c_f32);
        }
      }
}

// The bf16 GEMM (AVX-512 with AVX512_BF16) against double precision on operands rounded to bf16
// (round to nearest even) as the kernel rounds them: only the order of the f32 sums may differ.
// Weights f16 and bf16, stored [out, in] and [in, out]; sizes cross the 12-row tiles, the
// 32-column panels, the 512-deep pieces and the 128-row blocks of the threads.
TEST(Gemm, Bf16ProductsEqualDoubleOnBf16RoundedOperands) {
  if (!loom::cpu_features().bf16_prompts) GTEST_SKIP() << "no bf16 GEMM here (level or CPU, or LOOM_BF16=0)";
  // f16 weights take the bf16 products only with LOOM_BF16=1: the kernel itself is called here.
  const auto& lk = loom::kernels::level_kernels();
  auto bf = [](float v) { return double(loom::to_float(loom::to_bf16(v))); };
  loom::kernels::ThreadPool pool(2);
  for (const auto& [n, k, m] : {std::tuple{13, 1100, 300}, {3, 64, 17}, {29, 514, 129}}) {
    const auto x = random_vector(std::size_t(n * k), std::uint32_t(n + k));
    for (loom::DType t : {loom::DType::f16, loom::DType::bf16})
      for (bool in_out : {false, true}) {
        const auto wv = random_vector(std::size_t(k * m), std::uint32_t(m));
        std::vector<std::uint16_t> bits(wv.size());
        std::vector<double> wd(wv.size());  // the stored weights, then rounded to bf16
        for (std::size_t i = 0; i < wv.size(); ++i) {
          bits[i] = t == loom::DType::f16 ? loom::to_f16(wv[i]).bits : loom::to_bf16(wv[i]).bits;
          const float stored = t == loom::DType::f16 ? loom::to_float(loom::f16{bits[i]}) : loom::to_float(loom::bf16{bits[i]});
          wd[i] = bf(stored);
        }
        const loom::TensorRef w{t, in_out ? loom::Shape{k, m} : loom::Shape{m, k},
                                reinterpret_cast<const std::byte*>(bits.data()), bits.size() * 2};
        const std::int64_t ldy = m + 2;
        std::vector<float> y(std::size_t(n * ldy), 77.0f);
        if (t == loom::DType::bf16) {  // through matmul: the threads' blocks
          loom::kernels::matmul(x.data(), n, k, w, in_out, y.data(), ldy, &pool);
        } else {
          std::vector<std::uint32_t> a(std::size_t(n * k / 2));
          lk.rows_to_bf16(x.data(), n, k, k, a.data());
          lk.gemm_bf16(a.data(), k / 2, n, k, w, in_out, 0, m, y.data(), ldy);
        }
        for (std::int64_t i = 0; i < n; ++i) {
          for (std::int64_t j = 0; j < m; ++j) {
            double exact = 0, scale = 0;
            for (std::int64_t p = 0; p < k; ++p) {
              const double prod = bf(x[std::size_t(i * k + p)]) * wd[std::size_t(in_out ? p * m + j : j * k + p)];
              exact += prod, scale += std::fabs(prod);
            }
            ASSERT_NEAR(y[std::size_t(i * ldy + j)], exact, 1e-6 * scale + 1e-7)
                << to_string(t) << (in_out ? " [in, out]" : " [out, in]") << " n " << n << " k " << k << " m " << m;
          }
          ASSERT_EQ(y[std::size_t(i * ldy + m)], 77.0f) << "wrote past column m";
        }
      }
  }
}

TEST(KernelLevels, ElementWiseKernelsAgreeAcrossLevels) {
  auto x = random_vector(1000, 5, 8.0f);
  for (loom::KernelLevel l : loom::kernel_levels) {
    if (!loom::cpu_features().supports(l)) continue;
    const auto& k = loom::kernels::level_kernels(l);
    auto s = x;
    k.silu(s.data(), std::int64_t(s.size()));
    auto sm = x;
    k.softmax(sm.data(), std::int64_t(sm.size()));
    double total = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(s[i], double(x[i]) / (1.0 + std::exp(-double(x[i]))), 1e-6 * (1 + std::fabs(x[i]))) << to_string(l);
      total += sm[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5) << to_string(l);
  }
}

// Each level's activation loops (vectorized at AVX2 and above, the last n mod 8 values in a
// padded vector) against the definitions in double, at lengths around the vector width; and a
// value does not depend on where it sits in the row (batch rows and a single row must agree).
TEST(KernelLevels, ActivationLoopsMatchTheDefinitionsAtEveryLengthAndPosition) {
  const double pi = 3.14159265358979323846;
  auto silu = [](double x) { return x / (1 + std::exp(-x)); };
  auto gelu = [&](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / pi) * (x + 0.044715 * x * x * x))); };
  const auto x = random_vector(1003, 17, 12.0f);
  for (loom::KernelLevel l : loom::kernel_levels) {
    if (!loom::cpu_features().supports(l)) continue;
    const auto& k = loom::kernels::level_kernels(l);
    std::vector<float> alone_s(x.size()), alone_g(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      float v = x[i], w = x[i];
      k.silu(&v, 1);
      k.gelu_tanh(&w, 1);
      alone_s[i] = v, alone_g[i] = w;
    }
    for (std::size_t n : {1, 7, 8, 9, 15, 16, 17, 1003}) {
      for (std::size_t offset : {std::size_t(0), std::size_t(3)}) {
        if (offset + n > x.size()) continue;
        std::vector<float> s(x.begin() + std::ptrdiff_t(offset), x.begin() + std::ptrdiff_t(offset + n)), g = s;
        k.silu(s.data(), std::int64_t(n));
        k.gelu_tanh(g.data(), std::int64_t(n));
        for (std::size_t i = 0; i < n; ++i) {
          const double xi = x[offset + i];
          ASSERT_NEAR(s[i], silu(xi), 1e-6 * (1 + std::fabs(xi))) << to_string(l) << " n " << n << " i " << i;
          ASSERT_NEAR(g[i], gelu(xi), 1e-6 * (1 + std::fabs(xi))) << to_string(l) << " n " << n << " i " << i;
          ASSERT_EQ(s[i], alone_s[offset + i]) << to_string(l) << ": silu depends on the position";
          ASSERT_EQ(g[i], alone_g[offset + i]) << to_string(l) << ": gelu_tanh depends on the position";
        }
      }
    }
  }
}

}  // namespace test_kernels
