// Quantized blocks: quantize / dequantize against formulas written here from the ggml block
// specification, SIMD dot products against the scalar ones, and matmul with quantized weights
// against matmul_reference and a naive double product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <loom/dtype.hpp>
#include <loom/kernels/matmul.hpp>
#include <loom/kernels/ops.hpp>
#include <loom/kernels/quant.hpp>
#include <loom/kernels/thread_pool.hpp>
#include <random>
#include <vector>

#include "guarded_bytes.hpp"
#include "random.hpp"

namespace test_quant {

namespace {

using loom::DType;
using namespace loom::kernels;

using loom::test::random_vector;

float f16_value(float v) { return loom::to_float(loom::to_f16(v)); }

// ---- Q8_0 quantization --------------------------------------------------------------------------

TEST(Quant, Q8_0RoundTripFollowsTheSpec) {
  auto x = random_vector(32 * 64, 1, 3.0f);
  for (int j = 0; j < 32; ++j) x[32 * 5 + j] = 0.0f;  // an all-zero block: d = 0, q = 0
  x[32 * 7 + 3] = -1000.0f;                            // one outlier dominates its block
  std::vector<loom::block_q8_0> q(64);
  quantize_row_q8_0(x.data(), q.data(), std::int64_t(x.size()));
  std::vector<float> y(x.size());
  dequantize_row_q8_0(q.data(), y.data(), std::int64_t(x.size()));
  for (int b = 0; b < 64; ++b) {
    double amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(double(x[32 * b + j])));
    const float d = float(amax / 127.0);  // spec: d = max|x| / 127 (stored as f16)
    EXPECT_EQ(q[b].d.bits, loom::to_f16(d).bits) << "block " << b;
    for (int j = 0; j < 32; ++j) {
      const float id = d != 0 ? 1.0f / d : 0.0f;
      const int expected = int(std::round(x[32 * b + j] * id));  // round half away from zero
      ASSERT_EQ(q[b].qs[j], expected) << "block " << b << " element " << j;
      EXPECT_LE(std::abs(expected), 127);
      EXPECT_EQ(y[32 * b + j], f16_value(d) * float(expected));
      // Round trip error: half a step plus the f16 rounding of d.
      EXPECT_NEAR(y[32 * b + j], x[32 * b + j], 0.5 * d + 127 * std::fabs(f16_value(d) - d) + 1e-6);
    }
  }
}

// ---- the 32-weight nibble blocks: Q4_0, Q5_0 (5-bit), Q4_1 and Q5_1 (with a min) ------------------

/// The stored quant of element j of a 32-weight block, read as the layout describes: the low 4 bits
/// from byte j (low nibble) or j − 16 (high nibble), bit 4 from bit j of the little-endian qh.
template <typename Block>
int stored_quant(const Block& b, int j) {
  const int low = j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4);
  if constexpr (requires { b.qh; })
    return low | ((b.qh[j / 8] >> (j % 8)) & 1) << 4;
  else
    return low;
}

/// Q4_0 / Q5_0: the value of largest magnitude m maps to q = 0, i.e. d = m / −zero (zero = 8 or
/// 16), q = min(2·zero − 1, floor(x / d + zero + 0.5)).
template <typename Block>
void expect_symmetric_round_trip(DType t, int zero) {
  auto x = random_vector(32 * 64, std::uint32_t(zero), 2.0f);
  for (int j = 0; j < 32; ++j) x[32 * 9 + j] = 0.0f;
  x[32 * 3 + 30] = 7.5f;  // positive extreme: d < 0
  std::vector<Block> q(64);
  quantize_row(t, x.data(), reinterpret_cast<std::byte*>(q.data()), std::int64_t(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(t, reinterpret_cast<const std::byte*>(q.data()), y.data(), std::int64_t(x.size()));
  for (int b = 0; b < 64; ++b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[32 * b + j]) > amax) amax = std::fabs(x[32 * b + j]), max = x[32 * b + j];
    const float d = max / -float(zero);
    EXPECT_EQ(q[b].d.bits, loom::to_f16(d).bits);
    for (int j = 0; j < 32; ++j) {
      const float id = d != 0 ? 1.0f / d : 0.0f;
      const int expected = std::min(2 * zero - 1, int(std::floor(x[32 * b + j] * id + float(zero) + 0.5f)));
      ASSERT_EQ(stored_quant(q[b], j), expected) << to_string(t) << " block " << b << " element " << j;
      EXPECT_EQ(y[32 * b + j], f16_value(d) * float(expected - zero));
      // Half a step, or a whole step where +zero is clamped to zero − 1 (values opposite the extreme).
      const double step = expected == 2 * zero - 1 ? 1.0 : 0.5;
      EXPECT_NEAR(y[32 * b + j], x[32 * b + j], step * std::fabs(d) + zero * std::fabs(f16_value(d) - d) + 1e-6);
    }
  }
}

TEST(Quant, Q4_0AndQ5_0RoundTripsFollowTheSpec) {
  expect_symmetric_round_trip<loom::block_q4_0>(DType::q4_0, 8);
  expect_symmetric_round_trip<loom::block_q5_0>(DType::q5_0, 16);
}

/// Q4_1 / Q5_1: m = min x, d = (max x − m) / (2^bits − 1), q = round((x − m) / d) (half up).
template <typename Block>
void expect_min_round_trip(DType t, int bits) {
  const int top = (1 << bits) - 1;
  auto x = random_vector(32 * 64, std::uint32_t(bits), 2.0f);
  for (int j = 0; j < 32; ++j) x[32 * 9 + j] = 0.5f;  // a constant block: d = 0, q = 0, m = 0.5
  std::vector<Block> q(64);
  quantize_row(t, x.data(), reinterpret_cast<std::byte*>(q.data()), std::int64_t(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(t, reinterpret_cast<const std::byte*>(q.data()), y.data(), std::int64_t(x.size()));
  for (int b = 0; b < 64; ++b) {
    const float* v = x.data() + 32 * b;
    const float lo = *std::min_element(v, v + 32), hi = *std::max_element(v, v + 32);
    const float d = (hi - lo) / float(top);
    EXPECT_EQ(q[b].d.bits, loom::to_f16(d).bits);
    EXPECT_EQ(q[b].m.bits, loom::to_f16(lo).bits);
    for (int j = 0; j < 32; ++j) {
      const float id = d != 0 ? 1.0f / d : 0.0f;
      const int expected = std::min(top, int(std::floor((v[j] - lo) * id + 0.5f)));
      ASSERT_EQ(stored_quant(q[b], j), expected) << to_string(t) << " block " << b << " element " << j;
      EXPECT_FLOAT_EQ(y[32 * b + j], f16_value(d) * float(expected) + f16_value(lo));
      EXPECT_NEAR(y[32 * b + j], v[j], 0.5 * d + top * std::fabs(f16_value(d) - d) + std::fabs(f16_value(lo) - lo) + 1e-6);
    }
  }
}

TEST(Quant, Q4_1AndQ5_1RoundTripsFollowTheSpec) {
  expect_min_round_trip<loom::block_q4_1>(DType::q4_1, 4);
  expect_min_round_trip<loom::block_q5_1>(DType::q5_1, 5);
}

TEST(Quant, Q5_0HandSetBitsDequantize) {
  // qs[0] = 0x3A: weight 0 low bits 10, weight 16 low bits 3; qh = bit 16 only: weight 16 is 19.
  loom::block_q5_0 b{};
  b.d = loom::to_f16(0.5f);
  b.qs[0] = 0x3A;
  b.qh[2] = 0x01;
  float y[32];
  dequantize_row(DType::q5_0, reinterpret_cast<const std::byte*>(&b), y, 32);
  EXPECT_EQ(y[0], 0.5f * (10 - 16));
  EXPECT_EQ(y[16], 0.5f * (19 - 16));
  EXPECT_EQ(y[1], 0.5f * -16);
  EXPECT_EQ(y[17], 0.5f * -16);
}

TEST(Quant, QuantizersGiveDefinedBlocksForNonFiniteInput) {
  std::vector<float> x(32, 1.0f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[7] = std::numeric_limits<float>::infinity();
  for (DType t : {DType::q4_1, DType::q5_0, DType::q5_1, DType::iq4_nl}) {
    std::vector<std::byte> q(loom::block_bytes(t));
    quantize_row(t, x.data(), q.data(), 32);  // no undefined float → int conversion (UBSan)
    std::vector<float> y(32);
    dequantize_row(t, q.data(), y.data(), 32);
  }
  std::vector<float> xs(256, 1.0f);  // one sub-block with a NaN and an inf, one all NaN
  xs[3] = std::numeric_limits<float>::quiet_NaN();
  xs[40] = std::numeric_limits<float>::infinity();
  for (int i = 64; i < 96; ++i) xs[std::size_t(i)] = std::numeric_limits<float>::quiet_NaN();
  for (DType t : {DType::iq4_xs, DType::q4_k, DType::q5_k, DType::q6_k}) {  // the 256-weight ones likewise
    std::vector<std::byte> q(loom::block_bytes(t));
    quantize_row(t, xs.data(), q.data(), 256);
    std::vector<float> y(256);
    dequantize_row(t, q.data(), y.data(), 256);
  }
}

// The IQ4 quantizers' nearest table value: against the distance to every value (double; a tie
// goes to the larger), on a sweep across the table, its midpoints and beyond both ends.
TEST(Quant, IQ4NearestTableValue) {
  const int table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int i = -600; i <= 600; ++i) {
    const float v = float(i) * 0.25f;  // every midpoint (a multiple of 0.5) is on the sweep
    int best = 0;
    for (int k = 1; k < 16; ++k)
      if (std::fabs(double(v) - table[k]) <= std::fabs(double(v) - table[best])) best = k;
    ASSERT_EQ(loom::kernels::detail::iq4_nearest(v), best) << v;
  }
}

// Blocks whose values are a power-of-two scale times IQ4_NL's table values, one of them −127
// (the table's end, which the scale search maps the largest value to), come back exactly: the
// least-squares scale of the exact fit is the scale itself. For IQ4_XS the sub-block scales are
// multiples c·l of one c (l in −32..31, −32 in one sub-block, so that d = c).
TEST(Quant, IQ4QuantizersRecoverExactTableBlocks) {
  const int table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  std::mt19937 rng(15);
  for (int trial = 0; trial < 10; ++trial) {
    std::vector<float> x(256);
    const float c = std::ldexp(1.0f, -int(rng() % 10));
    int l[8];
    for (int j = 0; j < 8; ++j) {
      l[j] = j == int(rng() % 8) ? -32 : int(rng() % 63) - 31;  // never 0: a scale of 0 is no block
      if (l[j] == 0) l[j] = 5;
      for (int i = 0; i < 32; ++i) x[std::size_t(32 * j + i)] = c * float(l[j]) * float(table[rng() % 16]);
      x[std::size_t(32 * j + rng() % 32)] = c * float(l[j]) * -127.0f;
    }
    if (std::none_of(l, l + 8, [](int v) { return v == -32; })) {
      l[0] = -32;
      for (int i = 0; i < 32; ++i) x[std::size_t(i)] = c * -32.0f * float(table[rng() % 16]);
      x[5] = c * -32.0f * -127.0f;
    }
    std::vector<float> y(256);
    std::vector<loom::block_iq4_nl> nl(8);
    loom::kernels::quantize_row_iq4_nl(x.data(), nl.data(), 256);
    dequantize_row_iq4_nl(nl.data(), y.data(), 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)]) << "IQ4_NL trial " << trial << " " << i;
    loom::block_iq4_xs xs;
    loom::kernels::quantize_row_iq4_xs(x.data(), &xs, 256);
    EXPECT_EQ(loom::to_float(xs.d), c) << trial;
    dequantize_row_iq4_xs(&xs, y.data(), 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)]) << "IQ4_XS trial " << trial << " " << i;
  }
}

// Q4_K, Q5_K and Q6_K blocks built from their own formulas come back exactly: 6-bit scales and
// mins that are multiples of c (one of each 63, so that d = dmin = c) and quants spanning 0..15
// (0..31) in every sub-block (the range fit is then exact) for Q4_K (Q5_K); int8 scales that are
// multiples of c (one −128) and quants with a −32 in every sub-block for Q6_K.
TEST(Quant, KQuantizersRecoverExactBlocks) {
  std::mt19937 rng(17);
  for (int trial = 0; trial < 10; ++trial) {
    const float c = std::ldexp(1.0f, -int(rng() % 8) - 4);
    std::vector<float> x(256), y(256);
    int sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = 1 + int(rng() % 63);
      mn[j] = int(rng() % 64);
    }
    sc[rng() % 8] = 63;
    mn[rng() % 8] = 63;
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 32; ++i) {
        const int q = i == 0 ? 0 : i == 1 ? 15 : int(rng() % 16);
        x[std::size_t(32 * j + i)] = c * float(sc[j]) * float(q) - c * float(mn[j]);
      }
    loom::block_q4_k b4;
    loom::kernels::quantize_row_q4_k(x.data(), &b4, 256);
    dequantize_row_q4_k(&b4, y.data(), 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)]) << "Q4_K trial " << trial << " " << i;
    for (int j = 0; j < 8; ++j)  // Q5_K: quants 0..31, one 31 per sub-block
      for (int i = 0; i < 32; ++i) {
        const int q = i == 0 ? 0 : i == 1 ? 31 : int(rng() % 32);
        x[std::size_t(32 * j + i)] = c * float(sc[j]) * float(q) - c * float(mn[j]);
      }
    loom::block_q5_k b5;
    quantize_row(DType::q5_k, x.data(), reinterpret_cast<std::byte*>(&b5), 256);
    dequantize_row(DType::q5_k, reinterpret_cast<const std::byte*>(&b5), y.data(), 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)]) << "Q5_K trial " << trial << " " << i;
    int s6[16];
    for (int j = 0; j < 16; ++j) s6[j] = int(rng() % 255) - 127;
    s6[rng() % 16] = -128;
    for (int j = 0; j < 16; ++j) {
      if (s6[j] == 0) s6[j] = 3;
      for (int i = 0; i < 16; ++i) {
        const int q = i == 7 ? -32 : int(rng() % 64) - 32;
        x[std::size_t(16 * j + i)] = c * float(s6[j]) * float(q);
      }
    }
    loom::block_q6_k b6;
    loom::kernels::quantize_row_q6_k(x.data(), &b6, 256);
    dequantize_row_q6_k(&b6, y.data(), 256);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[std::size_t(i)], x[std::size_t(i)]) << "Q6_K trial " << trial << " " << i;
  }
}

// On normal data the non-uniform grid fits better than Q4_0's uniform one (the reason IQ4_NL
// exists), and IQ4_XS's 6-bit sub-block scales cost little against IQ4_NL's f16 ones.
TEST(Quant, QuantizersFitNormalData) {
  const std::int64_t n = 256 * 64;
  const auto x = random_vector(std::size_t(n), 16, 1.0f);
  auto rms_error = [&](DType t) {
    std::vector<std::byte> q(static_cast<std::size_t>(*loom::row_bytes(t, n)));
    quantize_row(t, x.data(), q.data(), n);
    std::vector<float> y(static_cast<std::size_t>(n));
    dequantize_row(t, q.data(), y.data(), n);
    double e = 0;
    for (std::int64_t i = 0; i < n; ++i) e += std::pow(double(y[std::size_t(i)]) - x[std::size_t(i)], 2);
    return std::sqrt(e / double(n));
  };
  const double q4_0 = rms_error(DType::q4_0), nl = rms_error(DType::iq4_nl), xs = rms_error(DType::iq4_xs);
  const double q4_k = rms_error(DType::q4_k), q5_k = rms_error(DType::q5_k), q6_k = rms_error(DType::q6_k);
  const double q5_0 = rms_error(DType::q5_0), q8_0 = rms_error(DType::q8_0);
  std::printf("  rms error: q4_0 %.4f, iq4_nl %.4f, iq4_xs %.4f, q4_k %.4f, q5_0 %.4f, q5_k %.4f, q6_k %.4f, q8_0 %.4f\n",
              q4_0, nl, xs, q4_k, q5_0, q5_k, q6_k, q8_0);
  EXPECT_LT(nl, 0.93 * q4_0);
  EXPECT_LT(xs, 0.93 * q4_0);
  EXPECT_LT(q4_k, 0.9 * q4_0);
  EXPECT_LT(q5_k, 0.87 * q5_0);
  EXPECT_LT(q6_k, 0.25 * q4_0);
}

TEST(Quant, RowLengthMustBeWholeBlocks) {
  std::vector<float> x(40), y(40);
  std::vector<loom::block_q8_0> q(2);
  EXPECT_THROW(quantize_row_q8_0(x.data(), q.data(), 40), loom::Error);
  EXPECT_THROW(loom::kernels::to_f32(DType::q8_0, reinterpret_cast<const std::byte*>(q.data()), y.data(), 40),
               loom::Error);
  EXPECT_THROW(dequantize_row(DType::q4_k, reinterpret_cast<const std::byte*>(q.data()), y.data(), 32), loom::Error);
}

// ---- k-quants: hand-built blocks ------------------------------------------------------------------

/// Packs eight 6-bit scales and mins the Q4_K way (written from the layout description).
void pack_q4_k_scales(const int sc[8], const int m[8], std::uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = std::uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = std::uint8_t((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    out[j + 8] = std::uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

TEST(Quant, Q4_KHandBuiltBlocksDequantizeBySpec) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_q4_k b{};
    int sc[8], m[8], q[256];
    for (int j = 0; j < 8; ++j) sc[j] = int(rng() % 64), m[j] = int(rng() % 64);
    if (trial == 0)
      for (int j = 0; j < 8; ++j) sc[j] = m[j] = 63;  // every bit set
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 16);
    pack_q4_k_scales(sc, m, b.scales);
    // qs byte 32k + l: weight 64k + l in the low nibble, 64k + 32 + l in the high nibble.
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) b.qs[32 * k + l] = std::uint8_t(q[64 * k + l] | (q[64 * k + 32 + l] << 4));
    b.d = loom::to_f16(0.0123f);
    b.dmin = loom::to_f16(0.0045f);
    float y[256];
    dequantize_row_q4_k(&b, y, 256);
    const float d = f16_value(0.0123f), dmin = f16_value(0.0045f);
    for (int e = 0; e < 256; ++e) {
      const int j = e / 32;  // sub-block of 32 weights
      EXPECT_FLOAT_EQ(y[e], d * float(sc[j]) * float(q[e]) - dmin * float(m[j])) << "weight " << e;
    }
    for (int j = 0; j < 8; ++j) {
      std::uint8_t s, mm;
      q4_k_scale_min(j, b.scales, s, mm);
      EXPECT_EQ(s, sc[j]);
      EXPECT_EQ(mm, m[j]);
    }
  }
}

/// Q6_K weight e: low 4 bits in ql, high 2 bits in qh, placed as the layout describes: within
/// each half of 128, group g = (e % 128) / 32 and index l = e % 32 use ql[64h + 32(g&1) + l]
/// (low nibble for g < 2, high for g ≥ 2) and bits 2g..2g+1 of qh[32h + l].
void pack_q6_k(const int q[256], loom::block_q6_k& b) {
  std::memset(b.ql, 0, sizeof b.ql);
  std::memset(b.qh, 0, sizeof b.qh);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, g = (e % 128) / 32, l = e % 32;
    std::uint8_t& lo = b.ql[64 * h + 32 * (g & 1) + l];
    lo = std::uint8_t(lo | ((q[e] & 15) << (g < 2 ? 0 : 4)));
    b.qh[32 * h + l] = std::uint8_t(b.qh[32 * h + l] | ((q[e] >> 4) << (2 * g)));
  }
}

TEST(Quant, Q5_KHandBuiltBlocksDequantizeBySpec) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_q5_k b{};
    int sc[8], m[8], q[256];
    for (int j = 0; j < 8; ++j) sc[j] = int(rng() % 64), m[j] = int(rng() % 64);
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 32);
    if (trial == 0)
      for (int e = 0; e < 256; ++e) q[e] = 31;  // every bit set
    pack_q4_k_scales(sc, m, b.scales);
    // As Q4_K for the low 4 bits; bit 4 of weight 64k + l is bit 2k of qh[l], of 64k + 32 + l bit 2k+1.
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 32; ++l) {
        b.qs[32 * k + l] = std::uint8_t((q[64 * k + l] & 15) | ((q[64 * k + 32 + l] & 15) << 4));
        b.qh[l] = std::uint8_t(b.qh[l] | (q[64 * k + l] >> 4) << (2 * k) | (q[64 * k + 32 + l] >> 4) << (2 * k + 1));
      }
    b.d = loom::to_f16(0.0123f);
    b.dmin = loom::to_f16(0.0045f);
    float y[256];
    dequantize_row(DType::q5_k, reinterpret_cast<const std::byte*>(&b), y, 256);
    const float d = f16_value(0.0123f), dmin = f16_value(0.0045f);
    for (int e = 0; e < 256; ++e) {
      const int j = e / 32;
      EXPECT_FLOAT_EQ(y[e], d * float(sc[j]) * float(q[e]) - dmin * float(m[j])) << "weight " << e;
    }
  }
}

/// Q2_K / Q3_K weight e = 128n + 32k + l (l < 32): its 2 low bits are bits 2k, 2k+1 of
/// qs[32n + l]; Q3_K's third bit is bit 4n + k of hmask[l] (set: value q, clear: q − 4).
void pack_2bit(const int q[256], std::uint8_t qs[64], std::uint8_t* hmask) {
  std::memset(qs, 0, 64);
  if (hmask) std::memset(hmask, 0, 32);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, k = e % 128 / 32, l = e % 32;
    qs[32 * n + l] = std::uint8_t(qs[32 * n + l] | (q[e] & 3) << (2 * k));
    if (hmask) hmask[l] = std::uint8_t(hmask[l] | (q[e] >> 2) << (4 * n + k));
  }
}

TEST(Quant, Q2_KHandBuiltBlocksDequantizeBySpec) {
  std::mt19937 rng(6);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_q2_k b{};
    int q[256], sc[16], m[16];
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 4);
    for (int j = 0; j < 16; ++j) sc[j] = int(rng() % 16), m[j] = int(rng() % 16);
    if (trial == 0)
      for (int j = 0; j < 16; ++j) sc[j] = m[j] = 15;
    pack_2bit(q, b.qs, nullptr);
    for (int j = 0; j < 16; ++j) b.scales[j] = std::uint8_t(sc[j] | m[j] << 4);  // scale low, min high
    b.d = loom::to_f16(0.021f);
    b.dmin = loom::to_f16(0.0037f);
    float y[256];
    dequantize_row(DType::q2_k, reinterpret_cast<const std::byte*>(&b), y, 256);
    const float d = f16_value(0.021f), dmin = f16_value(0.0037f);
    for (int e = 0; e < 256; ++e)
      EXPECT_FLOAT_EQ(y[e], d * float(sc[e / 16]) * float(q[e]) - dmin * float(m[e / 16])) << "weight " << e;
  }
}

TEST(Quant, Q3_KHandBuiltBlocksDequantizeBySpec) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_q3_k b{};
    int q[256], sc[16];  // q: the 3 stored bits (0..7), weight value q − 4; sc: 6-bit, used as sc − 32
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 8);
    for (int j = 0; j < 16; ++j) sc[j] = int(rng() % 64);
    if (trial == 0)
      for (int j = 0; j < 16; ++j) sc[j] = 63;
    pack_2bit(q, b.qs, b.hmask);
    // Scales: low 4 bits of scale j in byte j % 8 (low nibble for j < 8, high for j >= 8), top 2
    // bits in byte 8 + j % 4 at bit 2·(j / 4).
    for (int j = 0; j < 16; ++j) {
      b.scales[j % 8] = std::uint8_t(b.scales[j % 8] | (sc[j] & 15) << (j < 8 ? 0 : 4));
      b.scales[8 + j % 4] = std::uint8_t(b.scales[8 + j % 4] | (sc[j] >> 4) << (2 * (j / 4)));
    }
    b.d = loom::to_f16(-0.013f);
    float y[256];
    dequantize_row(DType::q3_k, reinterpret_cast<const std::byte*>(&b), y, 256);
    const float d = f16_value(-0.013f);
    for (int e = 0; e < 256; ++e)
      EXPECT_FLOAT_EQ(y[e], d * float(sc[e / 16] - 32) * float(q[e] - 4)) << "weight " << e;
  }
}

TEST(Quant, IQ4_NLBlocksDequantizeThroughTheTable) {
  // ggml's kvalues_iq4nl, written out here.
  const int table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  loom::block_iq4_nl b{};
  for (int j = 0; j < 16; ++j) b.qs[j] = std::uint8_t(j | (15 - j) << 4);  // weight j: j, weight j + 16: 15 − j
  b.d = loom::to_f16(0.5f);
  float y[32];
  dequantize_row_iq4_nl(&b, y, 32);  // the reference; DequantizationEqualsTheReference checks the SIMD one
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * float(table[j])) << j;
    EXPECT_EQ(y[j + 16], 0.5f * float(table[15 - j])) << j;
  }
}

TEST(Quant, IQ4_XSHandBuiltBlocksDequantizeBySpec) {
  // ggml's kvalues_iq4nl, written out here; the 6-bit scales packed by hand from the layout.
  const int table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  std::mt19937 rng(13);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_iq4_xs b{};
    int ls[8], q[256];
    for (int j = 0; j < 8; ++j) {
      ls[j] = int(rng() % 64);
      b.scales_l[j / 2] = std::uint8_t(b.scales_l[j / 2] | (ls[j] & 15) << (4 * (j % 2)));
      b.scales_h = std::uint16_t(b.scales_h | (ls[j] >> 4) << (2 * j));
    }
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 16);
    for (int j = 0; j < 8; ++j)  // sub-block j: byte 16j + i holds weights 32j + i (low), 32j + 16 + i (high)
      for (int i = 0; i < 16; ++i) b.qs[16 * j + i] = std::uint8_t(q[32 * j + i] | q[32 * j + 16 + i] << 4);
    b.d = loom::to_f16(0.0125f);
    float y[256];
    dequantize_row_iq4_xs(&b, y, 256);  // the reference; DequantizationEqualsTheReference checks the SIMD one
    const float d = f16_value(0.0125f);
    for (int e = 0; e < 256; ++e)
      ASSERT_EQ(y[e], d * float(ls[e / 32] - 32) * float(table[q[e]])) << "weight " << e;
  }
}

TEST(Quant, Q6_KHandBuiltBlocksDequantizeBySpec) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 20; ++trial) {
    loom::block_q6_k b{};
    int q[256];
    for (int e = 0; e < 256; ++e) q[e] = int(rng() % 64);
    if (trial == 0) q[0] = 63, q[255] = 0, q[100] = 32;
    pack_q6_k(q, b);
    for (int j = 0; j < 16; ++j) b.scales[j] = std::int8_t(int(rng() % 256) - 128);
    b.d = loom::to_f16(-0.0071f);
    float y[256];
    dequantize_row_q6_k(&b, y, 256);
    const float d = f16_value(-0.0071f);
    for (int e = 0; e < 256; ++e) EXPECT_FLOAT_EQ(y[e], d * float(b.scales[e / 16]) * float(q[e] - 32)) << e;
  }
  // One hand-set byte pattern: ql[0] = 0xA5, qh[0] = 0b11100100 → weights 0, 32, 64, 96 of the
  // first half are (5 | 0<<4), (0 | 1<<4)... with ql[32] = 0 they are 5, 16, 10 | 2<<4 = 42, 48.
  loom::block_q6_k b{};
  b.ql[0] = 0xA5;
  b.qh[0] = 0xE4;
  b.d = loom::to_f16(1.0f);
  for (auto& s : b.scales) s = 1;
  float y[256];
  dequantize_row_q6_k(&b, y, 256);
  EXPECT_EQ(y[0], 5 - 32.0f);
  EXPECT_EQ(y[32], 16 - 32.0f);
  EXPECT_EQ(y[64], 42 - 32.0f);
  EXPECT_EQ(y[96], 48 - 32.0f);
  EXPECT_EQ(y[1], -32.0f);
}

// The dequantization the batched path runs (SIMD where compiled) gives the scalar reference's
// floats bit for bit: random quant bits, scales of every sign (and magnitude), several blocks.
template <typename Block>
void expect_dequantization_equals_reference(DType t, std::size_t count, unsigned seed,
                                            void (*reference)(const Block*, float*, std::int64_t)) {
  std::mt19937 rng(seed);
  std::vector<Block> blocks(count);
  std::vector<std::uint8_t> bits(sizeof(Block) * count);
  for (auto& v : bits) v = std::uint8_t(rng());
  std::memcpy(blocks.data(), bits.data(), bits.size());
  for (auto& b : blocks) {  // finite scales
    b.d = loom::to_f16(float(int(rng() % 2001) - 1000) * 1e-5f);
    if constexpr (requires { b.dmin; }) b.dmin = loom::to_f16(float(int(rng() % 2001) - 1000) * 1e-5f);
  }
  const std::int64_t n = block_elems(t) * std::int64_t(count);
  std::vector<float> expected(std::size_t(n), 0.0f), got(std::size_t(n), 1.0f);
  reference(blocks.data(), expected.data(), n);
  dequantize_row(t, reinterpret_cast<const std::byte*>(blocks.data()), got.data(), n);
  for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(got[std::size_t(i)], expected[std::size_t(i)]) << to_string(t) << " " << i;
}

TEST(Quant, DequantizationEqualsTheReference) {
  expect_dequantization_equals_reference<loom::block_q4_0>(DType::q4_0, 9, 8, dequantize_row_q4_0);
  expect_dequantization_equals_reference<loom::block_iq4_nl>(DType::iq4_nl, 9, 10, dequantize_row_iq4_nl);
  expect_dequantization_equals_reference<loom::block_iq4_xs>(DType::iq4_xs, 3, 14, dequantize_row_iq4_xs);
  expect_dequantization_equals_reference<loom::block_q2_k>(DType::q2_k, 5, 11, dequantize_row_q2_k);
  expect_dequantization_equals_reference<loom::block_q3_k>(DType::q3_k, 5, 12, dequantize_row_q3_k);
  expect_dequantization_equals_reference<loom::block_q6_k>(DType::q6_k, 5, 9, dequantize_row_q6_k);
}

// ---- activation quantization -------------------------------------------------------------------

TEST(Quant, ActivationsThatAreNotFiniteGiveDefinedQuants) {
  // A NaN is skipped by the block maximum and quantizes to -128; an infinity makes the scale
  // infinite, so every value of its block becomes 0 except the infinity (inf · 0 = NaN: -128).
  // The SIMD and scalar builds of this test expect the same bytes.
  std::vector<float> x(512, 0.5f);
  x[3] = std::nanf("");
  x[40] = INFINITY;
  std::vector<block_q8_grouped> a(1);
  quantize_row_q8_grouped(x.data(), a.data(), 512, false);
  EXPECT_EQ(a[0].d[0], 0.5f / 127.0f);
  EXPECT_EQ(a[0].qs[3], -128);
  EXPECT_EQ(a[0].qs[4], 127);
  EXPECT_EQ(a[0].sum[0], 31 * 127 - 128);
  EXPECT_EQ(a[0].qs[40], -128);
  EXPECT_EQ(a[0].qs[41], 0);
  EXPECT_EQ(a[0].sum[1], -128);
  std::vector<block_q8_k> k(2);
  quantize_row_q8_k(x.data(), k.data(), 512, false);
  EXPECT_EQ(k[0].qs[3], -128);
  EXPECT_EQ(k[0].qs[40], -128);
  EXPECT_EQ(k[0].qs[0], 0);
  EXPECT_EQ(k[1].qs[0], 127);
  EXPECT_EQ(k[0].bsums[0], -128);
}

TEST(Quant, ActivationOrderIsAPermutation) {
  for (bool halves : {false, true}) {
    std::vector<int> seen(512, 0);
    for (int j = 0; j < 16; ++j)
      for (int i = 0; i < 32; ++i) {
        const int o = loom::kernels::q8_grouped_offset(halves, j, i);
        ASSERT_TRUE(o >= 0 && o < 512) << j << " " << i;
        ++seen[std::size_t(o)];
      }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 512) << "halves " << halves;
  }
  {
    std::vector<int> seen(256, 0);
    for (int i = 0; i < 256; ++i) ++seen[std::size_t(loom::kernels::q8_k_offset(true, i))];
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 256);
  }
  // Q4_K's order: sub-blocks 0, 2, 1, 3 of each 128 values.
  EXPECT_EQ(loom::kernels::q8_k_offset(true, 32), 64);
  EXPECT_EQ(loom::kernels::q8_k_offset(true, 64), 32);
  EXPECT_EQ(loom::kernels::q8_k_offset(true, 128 + 96 + 5), 128 + 96 + 5);
  EXPECT_EQ(loom::kernels::q8_k_offset(false, 32), 32);
  // Q4_0's order: values 0-15 of four blocks side by side (one 64-byte load), then values 16-31.
  EXPECT_EQ(loom::kernels::q8_grouped_offset(true, 1, 0), 16);
  EXPECT_EQ(loom::kernels::q8_grouped_offset(true, 0, 16), 64);
  EXPECT_EQ(loom::kernels::q8_grouped_offset(true, 4, 0), 128);
  EXPECT_EQ(loom::kernels::q8_grouped_offset(false, 1, 0), 32);
}

TEST(Quant, ActivationBlocks) {
  auto x = random_vector(512, 5, 2.0f);
  for (bool halves : {false, true}) {
    // 480 values: one group of 16 blocks of 32 would hold 512, so the last block must be zero.
    std::vector<block_q8_grouped> a(1);
    std::memset(static_cast<void*>(a.data()), 0x5a, sizeof(block_q8_grouped));
    quantize_row_q8_grouped(x.data(), a.data(), 480, halves);
    auto q = [&](int b, int j) { return a[0].qs[loom::kernels::q8_grouped_offset(halves, b, j)]; };
    for (int b = 0; b < 16; ++b) {
      if (b == 15) {
        EXPECT_EQ(a[0].d[b], 0.0f);
        EXPECT_EQ(a[0].sum[b], 0);
        for (int j = 0; j < 32; ++j) EXPECT_EQ(q(b, j), 0);
        continue;
      }
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
      EXPECT_EQ(a[0].d[b], amax / 127.0f);
      int sum = 0;
      const float id = 1.0f / a[0].d[b];
      for (int j = 0; j < 32; ++j) {
        sum += q(b, j);
        EXPECT_NEAR(a[0].d[b] * q(b, j), x[32 * b + j], 0.5001 * a[0].d[b]);
        EXPECT_EQ(q(b, j), int(std::nearbyint(x[32 * b + j] * id))) << "rounding, block " << b << " value " << j;
      }
      EXPECT_EQ(a[0].sum[b], sum);
    }
  }
  for (bool q4_k : {false, true}) {
    std::vector<block_q8_k> k(2);
    quantize_row_q8_k(x.data(), k.data(), 512, q4_k);
    for (int b = 0; b < 2; ++b)
      for (int g = 0; g < 16; ++g) {
        int s = 0;
        for (int j = 16 * g; j < 16 * g + 16; ++j) {
          const int q = k[b].qs[loom::kernels::q8_k_offset(q4_k, j)];
          s += q;
          EXPECT_NEAR(k[b].d * q, x[256 * b + j], 0.5001 * k[b].d);
        }
        EXPECT_EQ(k[b].bsums[g], s);
      }
  }
}

// ---- dot products ---------------------------------------------------------------------------------

/// Random weights of type t for n values: q8_0 / q4_0 via the quantizer, k-quants as random bytes
/// with reasonable scales (unit scales when `unit`, so every dot product is an exact integer).
std::vector<std::byte> random_weights(DType t, std::int64_t rows, std::int64_t n, std::uint32_t seed, bool unit) {
  std::mt19937 rng(seed);
  const std::size_t bytes = std::size_t(*loom::row_bytes(t, n)) * std::size_t(rows);
  std::vector<std::byte> w(bytes);
  for (auto& b : w) b = std::byte(rng() & 0xff);
  const std::int64_t nb = rows * n / loom::block_elems(t);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  for (std::int64_t i = 0; i < nb; ++i) {
    std::byte* blk = w.data() + std::size_t(i) * loom::block_bytes(t);
    auto set = [&](loom::f16* p, float v) { *p = loom::to_f16(unit ? 1.0f : v); };
    switch (t) {
      case DType::q8_0: set(&reinterpret_cast<loom::block_q8_0*>(blk)->d, scale(rng)); break;
      case DType::q4_0: set(&reinterpret_cast<loom::block_q4_0*>(blk)->d, scale(rng)); break;
      case DType::q5_0: set(&reinterpret_cast<loom::block_q5_0*>(blk)->d, scale(rng)); break;
      case DType::iq4_nl: set(&reinterpret_cast<loom::block_iq4_nl*>(blk)->d, scale(rng) * 0.1f); break;
      case DType::iq4_xs: set(&reinterpret_cast<loom::block_iq4_xs*>(blk)->d, scale(rng) * 0.01f); break;
      case DType::q2_k:
        set(&reinterpret_cast<loom::block_q2_k*>(blk)->d, scale(rng) * 0.1f);
        set(&reinterpret_cast<loom::block_q2_k*>(blk)->dmin, scale(rng) * 0.1f);
        break;
      case DType::q3_k: set(&reinterpret_cast<loom::block_q3_k*>(blk)->d, scale(rng) * 0.1f); break;
      case DType::q4_1:
        set(&reinterpret_cast<loom::block_q4_1*>(blk)->d, scale(rng));
        set(&reinterpret_cast<loom::block_q4_1*>(blk)->m, -scale(rng));
        break;
      case DType::q5_1:
        set(&reinterpret_cast<loom::block_q5_1*>(blk)->d, scale(rng));
        set(&reinterpret_cast<loom::block_q5_1*>(blk)->m, -scale(rng));
        break;
      case DType::q4_k:
        set(&reinterpret_cast<loom::block_q4_k*>(blk)->d, scale(rng) * 0.1f);
        set(&reinterpret_cast<loom::block_q4_k*>(blk)->dmin, scale(rng) * 0.1f);
        break;
      case DType::q5_k:
        set(&reinterpret_cast<loom::block_q5_k*>(blk)->d, scale(rng) * 0.1f);
        set(&reinterpret_cast<loom::block_q5_k*>(blk)->dmin, scale(rng) * 0.1f);
        break;
      case DType::q6_k: set(&reinterpret_cast<loom::block_q6_k*>(blk)->d, scale(rng) * 0.1f); break;
      default: break;
    }
  }
  return w;
}

/// Activations for weight type t; with `unit` the blocks are random integers with scale 1.
std::vector<std::byte> random_activation(DType t, std::int64_t n, std::uint32_t seed, bool unit) {
  std::vector<std::byte> a(activation_bytes(t, n));
  auto x = random_vector(std::size_t(n), seed, 1.0f);
  if (unit) {
    std::mt19937 rng(seed);
    for (auto& v : x) v = float(int(rng() % 255) - 127);  // integers in [−127, 127]
    for (std::int64_t i = 0; i < n; i += loom::kernels::q8_grouped_activations(t) ? 32 : 256) x[std::size_t(i)] = 127;
  }
  quantize_activation(t, x.data(), a.data(), n);
  return a;
}

class QuantDot : public ::testing::TestWithParam<DType> {};

using DotFn = float (*)(std::int64_t, const std::byte*, const std::byte*);

/// The dot product of t at every kernel level this CPU runs (from the type traits table), scalar
/// first; the same list whatever LOOM_CPU says.
std::vector<std::pair<const char*, DotFn>> implementations(DType t) {
  std::vector<std::pair<const char*, DotFn>> v;
  for (loom::KernelLevel l : loom::kernel_levels)
    if (loom::cpu_features().supports(l))
      v.push_back({loom::to_string(l).data(), loom::kernels::kernels_for(t, l).dot});
  return v;
}

/// Double-precision Σ w·x from the dequantized weights and activations.
double dot_double(DType t, std::int64_t n, const std::byte* w, const std::byte* act) {
  std::vector<float> wf(static_cast<std::size_t>(n)), xf(static_cast<std::size_t>(n));
  dequantize_row(t, w, wf.data(), n);
  if (loom::kernels::q8_grouped_activations(t)) {
    const auto* a = reinterpret_cast<const block_q8_grouped*>(act);
    for (std::int64_t i = 0; i < n; ++i) {
      const block_q8_grouped& g = a[i / 512];
      const int j = int(i / 32 % 16);
      xf[std::size_t(i)] = g.d[j] * float(g.qs[loom::kernels::q8_grouped_offset(nibble_halves(t), j, int(i % 32))]);
    }
  } else {
    const auto* a = reinterpret_cast<const block_q8_k*>(act);
    for (std::int64_t i = 0; i < n; ++i)
      xf[std::size_t(i)] =
          a[i / 256].d *
          float(a[i / 256].qs[loom::kernels::q8_k_offset(t == DType::q4_k || t == DType::q5_k, int(i % 256))]);
  }
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += double(wf[std::size_t(i)]) * xf[std::size_t(i)];
  return s;
}

TEST_P(QuantDot, SimdEqualsScalarExactlyOnIntegerData) {
  const DType t = GetParam();
  const auto impls = implementations(t);
  std::printf("  %s: %zu implementations (dispatch uses %s)\n", std::string(to_string(t)).c_str(), impls.size(),
              std::string(quant_simd_name()).c_str());
  // Partial groups of 16 blocks, odd block counts (pair tails), one block, whole groups.
  for (std::int64_t n : {256, 512, 2048, 256 * 7, 32, 64, 96, 576, 736, 768}) {
    if (n % loom::block_elems(t) != 0) continue;
    const auto w = random_weights(t, 1, n, std::uint32_t(n), true);
    const auto a = random_activation(t, n, std::uint32_t(n) + 1, true);
    // With unit scales every value is an integer below 2^24: any order of summation is exact.
    const float ref = impls[0].second(n, w.data(), a.data());
    EXPECT_EQ(double(ref), dot_double(t, n, w.data(), a.data())) << "n = " << n;
    for (const auto& [name, fn] : impls) EXPECT_EQ(fn(n, w.data(), a.data()), ref) << name << ", n = " << n;
    EXPECT_EQ(dot_quantized(t, n, w.data(), a.data()), ref);
  }
}

TEST_P(QuantDot, SimdMatchesScalarOnRandomData) {
  const DType t = GetParam();
  const auto impls = implementations(t);
  for (std::uint32_t seed = 0; seed < 20; ++seed) {
    const std::int64_t n = 256 * (1 + seed % 9);
    const auto w = random_weights(t, 1, n, seed, false);
    const auto a = random_activation(t, n, seed + 100, false);
    const double exact = dot_double(t, n, w.data(), a.data());
    // Scale of the terms, for a relative tolerance.
    std::vector<float> wf(static_cast<std::size_t>(n));
    dequantize_row(t, w.data(), wf.data(), n);
    double mag = 0;
    for (float v : wf) mag += std::fabs(v);
    for (const auto& [name, fn] : impls)
      EXPECT_NEAR(fn(n, w.data(), a.data()), exact, 1e-5 * mag * 4 + 1e-6) << name << ", seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(AllQuantTypes, QuantDot, ::testing::Values(DType::q8_0, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::iq4_nl,
                                           DType::iq4_xs, DType::q2_k, DType::q3_k, DType::q4_k, DType::q5_k, DType::q6_k),
                         [](const auto& info) { return std::string(loom::to_string(info.param)); });

// ---- matmul with quantized weights --------------------------------------------------------------

class QuantMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(QuantMatmul, MatchesReferenceAndNaiveDouble) {
  const DType t = GetParam();
  const std::int64_t in = 512, out = 150;  // out not a multiple of 64: a partial last block
  const auto wbytes = random_weights(t, out, in, 7, false);
  const loom::TensorRef w{t, loom::Shape{out, in}, wbytes.data(), wbytes.size()};
  std::vector<float> wf(std::size_t(out * in));
  loom::kernels::to_f32(t, wbytes.data(), wf.data(), out * in);
  loom::kernels::ThreadPool pool(2);
  const std::int64_t limit = loom::kernels::quant_dot_max_rows(t);
  for (std::int64_t n : {std::int64_t(1), std::int64_t(3), limit, limit + 1}) {  // integer path, then GEMM
    const std::int64_t ldx = in + 5, ldy = out + 3;
    const auto x = random_vector(std::size_t(n * ldx), std::uint32_t(n));
    std::vector<float> y(std::size_t(n * ldy), -7.0f), yr(y.size(), -7.0f);
    loom::kernels::matmul(x.data(), n, ldx, w, false, y.data(), ldy, &pool);
    loom::kernels::matmul_reference(x.data(), n, ldx, w, false, yr.data(), ldy);
    double max_err = 0;
    for (std::int64_t r = 0; r < n; ++r) {
      // The integer paths quantize x per block: each value moves by at most half a step. The
      // decode dots use the type's activation blocks, the integer GEMM blocks of 32.
      const bool int8_gemm = n > limit && loom::kernels::detail::int8_gemm(t);
      const bool int_path = n <= limit || int8_gemm;
      const std::int64_t ab = int8_gemm || loom::kernels::q8_grouped_activations(t) ? 32 : 256;
      for (std::int64_t o = 0; o < out; ++o) {
        double exact = 0, bound = 0;
        for (std::int64_t b = 0; b < in; b += ab) {
          double amax = 0;
          for (std::int64_t i = b; i < b + ab; ++i) amax = std::max(amax, std::fabs(double(x[std::size_t(r * ldx + i)])));
          for (std::int64_t i = b; i < b + ab; ++i) {
            const double wv = wf[std::size_t(o * in + i)], xv = x[std::size_t(r * ldx + i)];
            exact += wv * xv;
            bound += std::fabs(wv) * ((int_path ? amax / 127.0 * 0.5 : 0.0) + 1e-5 * std::fabs(xv));
          }
        }
        const float got = y[std::size_t(r * ldy + o)];
        EXPECT_NEAR(got, exact, bound + 1e-6) << "n " << n << " row " << r << " out " << o;
        EXPECT_NEAR(yr[std::size_t(r * ldy + o)], exact, 1e-5 * bound + 1e-5);
        max_err = std::max(max_err, std::fabs(got - exact));
      }
      for (std::int64_t o = out; o < ldy; ++o) EXPECT_EQ(y[std::size_t(r * ldy + o)], -7.0f);  // padding untouched
    }
    std::printf("  %s n=%lld: max |matmul − exact| = %.3g\n", std::string(to_string(t)).c_str(), (long long)n, max_err);
  }
}

// The integer GEMM (AVX-512 and AVX2 levels) against double precision on the same quantized activations:
// per block of 32, d = max|x| / 127 and q = round-to-nearest-even(x · (1 / d)) in f32 as the spec
// says, times the reference dequantization of the weights. Only the order of the float sums may
// differ, so the bound is relative to Σ |d·q·w|. Sizes cross the 8-row tiles, the 16-row weight
// groups and the 128-row blocks.
TEST_P(QuantMatmul, IntegerGemmEqualsDoubleOnQuantizedActivations) {
  const DType t = GetParam();
  if (!loom::kernels::detail::int8_gemm(t)) GTEST_SKIP() << "no integer GEMM at this kernel level";
  const std::int64_t in = 512, out = 291;
  const auto wbytes = random_weights(t, out, in, 31, false);
  const loom::TensorRef w{t, loom::Shape{out, in}, wbytes.data(), wbytes.size()};
  std::vector<float> wf(std::size_t(out * in));
  loom::kernels::to_f32(t, wbytes.data(), wf.data(), out * in);
  loom::kernels::ThreadPool pool(2);
  const std::int64_t limit = loom::kernels::quant_dot_max_rows(t);  // up to it, the decode dots
  for (std::int64_t n : {limit + 1, limit + 38, limit + 126}) {
    const std::int64_t ldx = in + 3, ldy = out + 1;
    auto x = random_vector(std::size_t(n * ldx), std::uint32_t(n) + 5);
    x[0] = 0.0f;  // a zero block
    for (std::int64_t i = 0; i < 32; ++i) x[std::size_t(i)] = 0.0f;
    std::vector<float> y(std::size_t(n * ldy), -7.0f);
    loom::kernels::matmul(x.data(), n, ldx, w, false, y.data(), ldy, &pool);
    for (std::int64_t r = 0; r < n; ++r) {
      std::vector<double> xq(static_cast<std::size_t>(in));
      for (std::int64_t b = 0; b < in; b += 32) {
        float amax = 0;
        for (std::int64_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[std::size_t(r * ldx + i)]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (std::int64_t i = b; i < b + 32; ++i)
          xq[std::size_t(i)] = double(d) * double(std::nearbyint(x[std::size_t(r * ldx + i)] * id));
      }
      for (std::int64_t o = 0; o < out; ++o) {
        double exact = 0, scale = 0;
        for (std::int64_t i = 0; i < in; ++i) {
          exact += xq[std::size_t(i)] * double(wf[std::size_t(o * in + i)]);
          scale += std::fabs(xq[std::size_t(i)] * double(wf[std::size_t(o * in + i)]));
        }
        ASSERT_NEAR(y[std::size_t(r * ldy + o)], exact, 2e-6 * scale + 1e-7) << "n " << n << " row " << r << " out " << o;
      }
      EXPECT_EQ(y[std::size_t(r * ldy + out)], -7.0f);  // padding untouched
    }
  }
}

// ---- the integer GEMM at the edges of each int8 form ----------------------------------------------

// Every form's extreme values (all weights at the top or the bottom of their range, activations at
// ±127) make the AVX2 kernel's 16-bit sums as large as they get: any overflow or saturation would
// show as an error of thousands. Forms: every quantized type's, and every width with and without a
// zero point. Checked against exact sums in double, at the level in use.
Int8Form extreme_form;  // read by extreme_int8_row (a ToInt8Row is a plain function pointer)

void extreme_int8_row(const std::byte* src, std::int64_t n, std::int8_t* q, float* scale, float* offset) {
  const int row = int(*reinterpret_cast<const std::int32_t*>(src));
  const int lo = -extreme_form.bias, hi = (1 << extreme_form.bits) - 1 - extreme_form.bias;
  for (std::int64_t i = 0; i < n; ++i) {
    const int pick = row % 4 == 0 ? hi : row % 4 == 1 ? lo : row % 4 == 2 ? (i % 2 ? hi : lo) : (i / 2 % 2 ? lo : hi);
    q[i] = std::int8_t(pick);
  }
  const std::int64_t s = extreme_form.subblock;
  for (std::int64_t j = 0; j < n / s; ++j) {
    scale[j] = 0.5f + 0.25f * float((row + j) % 3);
    if (extreme_form.offsets) offset[j] = -0.125f * float((row + j) % 5);
  }
}

TEST(IntegerGemm, ExtremeValuesOfEveryFormAreExact) {
  const LevelKernels& lk = level_kernels();
  if (!lk.gemm_int8) GTEST_SKIP() << "no integer GEMM at this kernel level";
  std::vector<Int8Form> forms;
  for (const DType t : {DType::q8_0, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::iq4_nl, DType::iq4_xs,
                        DType::q2_k, DType::q3_k, DType::q4_k, DType::q5_k, DType::q6_k})
    forms.push_back(kernels_for(t).int8);
  for (int bits = 2; bits <= 7; ++bits)
    for (const int s : {16, 32})
      for (const bool offsets : {false, true}) {
        forms.push_back({s, offsets, 0, bits});
        forms.push_back({s, offsets, 1 << (bits - 1), bits});
      }
  const std::int64_t k = 512, rows = 19, n = 5;
  // the weights: an f32 tensor [rows, k] whose rows start with their number, which is all
  // extreme_int8_row reads (pack_int8_group hands it w.row(r) and k = w.cols())
  std::vector<std::int32_t> row_ids(std::size_t(rows * k));
  for (std::int64_t r = 0; r < rows; ++r) row_ids[std::size_t(r * k)] = std::int32_t(r);
  std::vector<float> x(std::size_t(n * k));
  std::mt19937 rng(11);
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t i = 0; i < k; ++i)
      x[std::size_t(t * k + i)] = t == 0 ? 1.0f : t == 1 ? -1.0f : t == 2 ? (i % 2 ? 1.0f : -1.0f)
                                  : t == 3 ? (i % 3 ? -1.0f : 1.0f) : float(int(rng() % 255) - 127);
  for (const Int8Form& form : forms) {
    SCOPED_TRACE(::testing::Message() << "form: sub-block " << form.subblock << ", offsets " << form.offsets << ", bias "
                                      << form.bias << ", bits " << form.bits);
    extreme_form = form;
    const loom::TensorRef w{DType::f32, loom::Shape{rows, k}, reinterpret_cast<const std::byte*>(row_ids.data()),
                            row_ids.size() * 4};
    const std::int64_t padded = (n + int8_row_tile - 1) / int8_row_tile * int8_row_tile, nsb = k / form.subblock;
    std::vector<std::int8_t> q(std::size_t(padded * k));
    std::vector<float> d(std::size_t(padded * k / 32)), sums(std::size_t(padded * nsb));
    std::vector<std::int32_t> corr(std::size_t(padded * nsb));
    lk.quantize_int8_rows(x.data(), n, k, k, form, q.data(), d.data(), corr.data(), sums.data());
    const std::size_t group_bytes = int8_panel_group_bytes(k, form.subblock, form.offsets);
    std::vector<std::byte> panel(group_bytes * std::size_t((rows + 15) / 16));
    std::vector<std::int8_t> scratch(int8_pack_scratch_bytes(k));
    for (std::int64_t g = 0; g < rows; g += 16)
      lk.pack_int8_group(w, g, int(std::min<std::int64_t>(16, rows - g)), &extreme_int8_row, form,
                         panel.data() + std::size_t(g / 16) * group_bytes, scratch.data());
    std::vector<float> y(std::size_t(n * rows));
    lk.gemm_int8({q.data(), d.data(), corr.data(), sums.data(), n, k}, panel.data(), rows, form, y.data(), rows);
    std::vector<std::int8_t> wq(static_cast<std::size_t>(k));
    std::vector<float> sc(static_cast<std::size_t>(nsb)), off(static_cast<std::size_t>(nsb), 0.0f);
    for (std::int64_t r = 0; r < rows; ++r) {
      extreme_int8_row(w.row(r), k, wq.data(), sc.data(), off.data());
      for (std::int64_t t = 0; t < n; ++t) {
        double exact = 0, size = 0;
        for (std::int64_t i = 0; i < k; ++i) {
          const float* v = &x[std::size_t(t * k + i / 32 * 32)];
          float amax = 0;
          for (int e = 0; e < 32; ++e) amax = std::max(amax, std::fabs(v[e]));
          const float dx = amax / 127.0f;
          const double xq = double(dx) * std::nearbyint(x[std::size_t(t * k + i)] * (1.0f / dx));
          const double wv = double(sc[std::size_t(i / form.subblock)]) * wq[std::size_t(i)] +
                            (form.offsets ? double(off[std::size_t(i / form.subblock)]) : 0.0);
          exact += xq * wv;
          size += std::fabs(xq * wv);
        }
        ASSERT_NEAR(y[std::size_t(t * rows + r)], exact, 1e-6 * size + 1e-6) << "activation row " << t << ", weight row " << r;
      }
    }
  }
}

// The int8 form of every row (what the integer GEMM multiplies) is the dequantized row: scale·q
// (+ offset) equals dequantize_row's value, at every kernel level this CPU runs; and every q lies
// in the form's range.
TEST_P(QuantMatmul, Int8RowsEqualTheDequantization) {
  const DType t = GetParam();
  const std::int64_t in = 1024, out = 7;
  const auto wbytes = random_weights(t, out, in, 23, false);
  const std::size_t rb = std::size_t(*loom::row_bytes(t, in));
  std::vector<float> ref(static_cast<std::size_t>(in));
  std::vector<std::int8_t> q(static_cast<std::size_t>(in));
  for (loom::KernelLevel l : loom::kernel_levels) {
    if (!loom::cpu_features().supports(l)) continue;
    const LevelTypeKernels& k = kernels_for(t, l);
    if (k.to_int8 == nullptr) continue;
    const Int8Form f = k.int8;
    std::vector<float> scale(std::size_t(in / f.subblock)), offset(std::size_t(in / f.subblock), 0.0f);
    for (std::int64_t r = 0; r < out; ++r) {
      const std::byte* row = wbytes.data() + std::size_t(r) * rb;
      dequantize_row(t, row, ref.data(), in);
      k.to_int8(row, in, q.data(), scale.data(), offset.data());
      for (std::int64_t i = 0; i < in; ++i) {
        const std::size_t j = std::size_t(i / f.subblock);
        ASSERT_GE(q[std::size_t(i)] + f.bias, 0) << loom::to_string(l) << " row " << r << " weight " << i;
        ASSERT_LT(q[std::size_t(i)] + f.bias, 1 << f.bits) << loom::to_string(l) << " row " << r << " weight " << i;
        const double v = double(scale[j]) * q[std::size_t(i)] + (f.offsets ? double(offset[j]) : 0.0);
        ASSERT_NEAR(v, ref[std::size_t(i)], 1e-6 * std::fabs(ref[std::size_t(i)]) + 1e-6 * std::fabs(scale[j]) + 1e-30)
            << loom::to_string(l) << " row " << r << " weight " << i;
      }
    }
  }
}

TEST_P(QuantMatmul, ResultDoesNotDependOnThreadCount) {
  const DType t = GetParam();
  const std::int64_t in = 768, out = 200;
  const auto wbytes = random_weights(t, out, in, 9, false);
  const loom::TensorRef w{t, loom::Shape{out, in}, wbytes.data(), wbytes.size()};
  loom::kernels::ThreadPool p1(1), p3(3);
  const std::int64_t limit = loom::kernels::quant_dot_max_rows(t);
  for (std::int64_t n : {std::int64_t(1), limit, limit + 1}) {
    const auto x = random_vector(std::size_t(n * in), 11);
    std::vector<float> a(std::size_t(n * out)), b(a.size()), c(a.size());
    loom::kernels::matmul(x.data(), n, in, w, false, a.data(), out, &p1);
    loom::kernels::matmul(x.data(), n, in, w, false, b.data(), out, &p3);
    loom::kernels::matmul(x.data(), n, in, w, false, c.data(), out, nullptr);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "n = " << n;
    EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * 4), 0) << "n = " << n;
  }
}

TEST_P(QuantMatmul, DecodeBatchRowsEqualEachRowAlone) {
  // A batch of decoding sequences (rows of x up to the decode limit) may read each weight block
  // once for several rows of x (MultiRowDot); each row must still get exactly what it gets alone.
  // 736 = 23 blocks of 32: a tail after the four-block steps.
  const DType t = GetParam();
  loom::kernels::ThreadPool pool(2);
  const std::int64_t limit = loom::kernels::quant_dot_max_rows(t);
  for (const std::int64_t in : {std::int64_t(768), std::int64_t(736)}) {
    if (in % loom::block_elems(t) != 0) continue;
    const std::int64_t out = 70;
    const auto wbytes = random_weights(t, out, in, 19, false);
    const loom::TensorRef w{t, loom::Shape{out, in}, wbytes.data(), wbytes.size()};
    for (const std::int64_t n : {2, 3, 4, 5, 7, 9}) {
      if (n > limit) continue;
      const auto x = random_vector(std::size_t(n * in), 20);
      std::vector<float> batch(std::size_t(n * out)), alone(static_cast<std::size_t>(out));
      loom::kernels::matmul(x.data(), n, in, w, false, batch.data(), out, &pool);
      for (std::int64_t r = 0; r < n; ++r) {
        loom::kernels::matmul(x.data() + r * in, 1, in, w, false, alone.data(), out, &pool);
        EXPECT_EQ(std::memcmp(alone.data(), batch.data() + r * out, alone.size() * 4), 0)
            << "in " << in << " n " << n << " row " << r;
      }
    }
  }
}

TEST_P(QuantMatmul, ProductsOfTheSameInputInOneCallEqualSeparateOnes) {
  // matmul_same_input quantizes x once and splits the outputs of all weights over the threads:
  // every output must be bit-identical to a matmul of its own, at decode sizes (shared) and
  // beyond quant_dot_max_rows (one matmul each).
  const DType t = GetParam();
  const std::int64_t in = 768, outs[3] = {96, 32, 50};
  std::vector<std::byte> bytes[3];
  loom::kernels::MatmulOutput products[3];
  std::vector<float> fused[3], separate[3];
  const std::int64_t limit = loom::kernels::quant_dot_max_rows(t);
  loom::kernels::ThreadPool p2(2), p3(3);
  for (std::int64_t n : {std::int64_t(1), limit, limit + 1})
    for (loom::kernels::ThreadPool* pool : {static_cast<loom::kernels::ThreadPool*>(nullptr), &p2, &p3}) {
      const auto x = random_vector(std::size_t(n * in), 17);
      for (int i = 0; i < 3; ++i) {
        bytes[i] = random_weights(t, outs[i], in, 20 + std::uint32_t(i), false);
        fused[i].assign(std::size_t(n * outs[i]), -1.0f);
        separate[i].assign(fused[i].size(), -2.0f);
        products[i] = {loom::TensorRef{t, loom::Shape{outs[i], in}, bytes[i].data(), bytes[i].size()}, fused[i].data(),
                       outs[i]};
        loom::kernels::matmul(x.data(), n, in, products[i].w, false, separate[i].data(), outs[i], pool);
      }
      loom::kernels::matmul_same_input(x.data(), n, in, products, pool);
      for (int i = 0; i < 3; ++i)
        EXPECT_EQ(std::memcmp(fused[i].data(), separate[i].data(), fused[i].size() * 4), 0)
            << "weight " << i << ", n = " << n << ", threads " << (pool ? pool->size() : 0);
    }
}

TEST_P(QuantMatmul, InOutLayoutIsUnsupported) {
  const DType t = GetParam();
  const auto wbytes = random_weights(t, 4, 256, 1, false);
  const loom::TensorRef w{t, loom::Shape{4, 256}, wbytes.data(), wbytes.size()};
  std::vector<float> x(4), y(256);
  try {
    loom::kernels::matmul(x.data(), 1, 4, w, true, y.data(), 256);
    FAIL() << "expected an error";
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find(std::string(to_string(t))), std::string::npos) << e.what();
  }
}

TEST_P(QuantMatmul, EmbeddingRowLookupDequantizes) {
  const DType t = GetParam();
  const auto wbytes = random_weights(t, 6, 512, 3, false);
  const loom::TensorRef w{t, loom::Shape{6, 512}, wbytes.data(), wbytes.size()};
  std::vector<float> all(6 * 512), row(512);
  dequantize_row(t, wbytes.data(), all.data(), 6 * 512);
  loom::kernels::row_to_f32(w, 4, row.data());
  for (int i = 0; i < 512; ++i) EXPECT_EQ(row[std::size_t(i)], all[std::size_t(4 * 512 + i)]);
}

// Every dot product, the dequantization and both matmul paths read only the weights' own bytes:
// matrices placed against an inaccessible page give the results of the same bytes elsewhere.
TEST_P(QuantMatmul, ReadsNothingOutsideTheWeights) {
  const DType t = GetParam();
  const std::int64_t block = loom::block_elems(t);
  for (std::int64_t n : {block, 2 * block, 512 + block, std::int64_t(1024), 1024 + 2 * block}) {
    SCOPED_TRACE(testing::Message() << "row of " << n);
    const auto row = random_weights(t, 1, n, std::uint32_t(n), false);
    const auto a = random_activation(t, n, 5, false);
    loom::test::GuardedBytes guarded(row.size());
    for (const auto& [name, fn] : implementations(t)) {
      const float expected = fn(n, row.data(), a.data());
      EXPECT_EQ(fn(n, guarded.at_end(row), a.data()), expected) << name;
      EXPECT_EQ(fn(n, guarded.at_start(row), a.data()), expected) << name;
    }
    std::vector<float> expected(static_cast<std::size_t>(n)), got(static_cast<std::size_t>(n));
    dequantize_row(t, row.data(), expected.data(), n);
    dequantize_row(t, guarded.at_end(row), got.data(), n);
    EXPECT_EQ(got, expected);
    // A matrix of 3 rows: decoding (one input row) and the batched path (dequantized blocks).
    const auto m = random_weights(t, 3, n, 9, false);
    loom::test::GuardedBytes guarded_m(m.size());
    const loom::TensorRef w{t, loom::Shape{3, n}, m.data(), m.size()},
        wg{t, loom::Shape{3, n}, guarded_m.at_end(m), m.size()};
    for (std::int64_t rows : {std::int64_t(1), loom::kernels::quant_dot_max_rows(t) + 1}) {
      const auto x = random_vector(std::size_t(rows * n), 21, 1.0f);
      std::vector<float> y1(std::size_t(rows * 3)), y2(y1.size());
      loom::kernels::matmul(x.data(), rows, n, w, false, y1.data(), 3);
      loom::kernels::matmul(x.data(), rows, n, wg, false, y2.data(), 3);
      EXPECT_EQ(y1, y2) << rows << " input rows";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllQuantTypes, QuantMatmul,
                         ::testing::Values(DType::q8_0, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::iq4_nl,
                                           DType::iq4_xs, DType::q2_k, DType::q3_k, DType::q4_k, DType::q5_k, DType::q6_k),
                         [](const auto& info) { return std::string(loom::to_string(info.param)); });

}  // namespace

}  // namespace test_quant
