// Transformer blocks against naive double-precision references and mathematical properties.
#include <gtest/gtest.h>

#include <cmath>
#include <loom/model/config.hpp>
#include <loom/nn/attention.hpp>
#include <loom/nn/kv_cache.hpp>
#include <loom/nn/norm.hpp>
#include <loom/nn/position.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "random.hpp"

namespace test_nn {

namespace {

using loom::test::random_vector;

// ---- norms ----------------------------------------------------------------------------------

TEST(Norm, RmsNormAgainstDouble) {
  const auto x = random_vector(97, 1, 3.0f), w = random_vector(97, 2);
  std::vector<float> y(97);
  loom::nn::rms_norm(x.data(), w.data(), 1e-5f, y.data(), 97);
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const double inv = 1.0 / std::sqrt(ss / 97 + 1e-5);
  for (int i = 0; i < 97; ++i) EXPECT_NEAR(y[i], x[i] * inv * w[i], 1e-5);
}

TEST(Norm, LayerNormAgainstDouble) {
  const auto x = random_vector(64, 3, 2.0f), w = random_vector(64, 4), b = random_vector(64, 5);
  std::vector<float> y(64);
  loom::nn::layer_norm(x.data(), w.data(), b.data(), 1e-5f, y.data(), 64);
  const double mean = std::accumulate(x.begin(), x.end(), 0.0) / 64;
  double var = 0;
  for (float v : x) var += (v - mean) * (v - mean);
  var /= 64;
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(y[i], (x[i] - mean) / std::sqrt(var + 1e-5) * w[i] + b[i], 1e-5);
}

// ---- positions --------------------------------------------------------------------------------

loom::Config rope_config(loom::RopeLayout layout, int head_dim = 16, int rope_dim = 0) {
  loom::Config c;
  c.head_dim = head_dim;
  c.rope_dim = rope_dim;
  c.rope_layout = layout;
  c.rope_theta = 10000.0f;
  return c;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

TEST(Rope, ScoreDependsOnlyOnPositionDifference) {
  for (auto layout : {loom::RopeLayout::interleaved, loom::RopeLayout::half_split}) {
    const loom::nn::Rope rope(rope_config(layout).rope_shape());
    const auto q = random_vector(16, 10), k = random_vector(16, 11);
    auto score = [&](int pq, int pk) {
      auto qq = q, kk = k;
      rope.apply(qq.data(), 1, pq);
      rope.apply(kk.data(), 1, pk);
      return dot(qq, kk);
    };
    for (int delta : {0, 1, 5, 37})
      for (int base : {0, 3, 100, 1000}) EXPECT_NEAR(score(base + delta, base), score(delta, 0), 1e-3);
    EXPECT_GT(std::abs(score(5, 0) - score(0, 0)), 1e-3);  // and it does depend on the difference
  }
}

TEST(Rope, LayoutsAgreeAfterPermutation) {
  // Interleaved pair (2i, 2i+1) is half-split pair (i, i + d/2): permute the vector accordingly.
  const int d = 16;
  const loom::nn::Rope inter(rope_config(loom::RopeLayout::interleaved).rope_shape());
  const loom::nn::Rope half(rope_config(loom::RopeLayout::half_split).rope_shape());
  const auto x = random_vector(d, 12);
  std::vector<float> xi(d);
  for (int i = 0; i < d / 2; ++i) {
    xi[2 * i] = x[i];
    xi[2 * i + 1] = x[i + d / 2];
  }
  auto xh = x;
  half.apply(xh.data(), 1, 7);
  inter.apply(xi.data(), 1, 7);
  for (int i = 0; i < d / 2; ++i) {
    EXPECT_NEAR(xi[2 * i], xh[i], 1e-6);
    EXPECT_NEAR(xi[2 * i + 1], xh[i + d / 2], 1e-6);
  }
}

TEST(Rope, MatchesRotationFormulaAndLinearScaling) {
  auto c = rope_config(loom::RopeLayout::interleaved, 8);
  const loom::nn::Rope rope(c.rope_shape());
  c.rope_scaling = {loom::RopeScalingKind::linear, 4.0f};
  const loom::nn::Rope scaled(c.rope_shape());
  const auto x = random_vector(8, 13);
  for (int pos : {0, 1, 9, 40}) {
    auto y = x;
    rope.apply(y.data(), 1, pos);
    for (int i = 0; i < 4; ++i) {
      const double angle = pos * std::pow(10000.0, -2.0 * i / 8);
      EXPECT_NEAR(y[2 * i], x[2 * i] * std::cos(angle) - x[2 * i + 1] * std::sin(angle), 1e-5);
      EXPECT_NEAR(y[2 * i + 1], x[2 * i] * std::sin(angle) + x[2 * i + 1] * std::cos(angle), 1e-5);
    }
    // nn::Linear interpolation: position p with factor 4 rotates like position p/4 unscaled.
    auto s = x, r = x;
    scaled.apply(s.data(), 1, pos * 4);
    rope.apply(r.data(), 1, pos);
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(s[i], r[i], 1e-4);
  }
}

TEST(Rope, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  auto c = rope_config(loom::RopeLayout::half_split, 128);
  c.rope_theta = 500000.0f;
  const loom::nn::Rope plain(c.rope_shape());
  c.rope_scaling = {loom::RopeScalingKind::llama3, 8.0f, 1.0f, 4.0f, 8192};
  const loom::nn::Rope scaled(c.rope_shape());
  const double pi = 3.14159265358979323846;
  for (std::size_t i = 0; i < plain.inv_freq().size(); ++i) {
    const double f = plain.inv_freq()[i], wavelen = 2 * pi / f;
    if (wavelen < 8192 / 4.0) {
      EXPECT_DOUBLE_EQ(scaled.inv_freq()[i], f);
    }
    if (wavelen > 8192 / 1.0) {
      EXPECT_NEAR(scaled.inv_freq()[i], f / 8, 1e-12);
    }
    if (wavelen >= 8192 / 4.0 && wavelen <= 8192) {  // smooth blend in between
      const double smooth = (8192 / wavelen - 1) / (4 - 1);
      EXPECT_NEAR(scaled.inv_freq()[i], (1 - smooth) * f / 8 + smooth * f, 1e-12);
    }
  }
}

TEST(Positions, SinusoidalMatchesFormula) {
  std::vector<float> pe(32);
  for (int pos : {0, 1, 17, 500}) {
    loom::nn::sinusoidal_embedding(pos, pe.data(), 32);
    for (int i = 0; i < 16; ++i) {
      const double angle = pos / std::pow(10000.0, 2.0 * i / 32);
      EXPECT_NEAR(pe[2 * i], std::sin(angle), 1e-6);
      EXPECT_NEAR(pe[2 * i + 1], std::cos(angle), 1e-6);
    }
  }
}

TEST(Positions, AlibiSlopesMatchPressEtAl) {
  // 8 heads: 2^-1, 2^-2, ..., 2^-8 (the paper's example).
  const auto s8 = loom::nn::alibi_slopes(8);
  for (int h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(s8[h], std::pow(2.0f, -(h + 1)));
  // 12 heads (not a power of 2): the 8-head slopes, then slopes 1,3,5,7 (0-based) of 16 heads:
  // 2^-0.5·k for k odd: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const auto s12 = loom::nn::alibi_slopes(12);
  ASSERT_EQ(s12.size(), 12u);
  for (int h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(s12[h], s8[h]);
  for (int k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(s12[8 + k], std::pow(2.0f, -(0.5f + k)));
}

// ---- attention --------------------------------------------------------------------------------

using loom::DType;

/// One layer of cached keys and values (random, stored in `type`) and query rows for them.
struct AttnCase {
  loom::Config c;
  loom::nn::KVCache kv;
  std::vector<float> k, v;  // [n, kv_heads*hd] as given to the cache (before any rounding)
  std::vector<float> q;     // [n, heads*hd]
};

AttnCase make_case(int heads, int kv_heads, int hd, int n, std::uint32_t seed, DType type = DType::f32) {
  AttnCase a;
  a.c.n_layers = 1;
  a.c.n_heads = heads;
  a.c.n_kv_heads = kv_heads;
  a.c.head_dim = hd;
  a.kv = loom::nn::KVCache(a.c, 64, type);
  a.kv.reserve_append(0, n);
  const int kvd = kv_heads * hd;
  a.k = random_vector(std::size_t(n * kvd), seed);
  a.v = random_vector(a.k.size(), seed + 1);
  for (int t = 0; t < n; ++t) a.kv.store(0, t, a.k.data() + t * kvd, a.v.data() + t * kvd);
  a.kv.commit(n);
  a.q = random_vector(std::size_t(n * heads * hd), seed + 2);
  return a;
}

/// Query rows [first, n) of the case at positions first .. n−1, against the cache.
std::vector<float> run_attention(const AttnCase& a, int n, int window = 0, const float* alibi = nullptr,
                                 int threads = 1, int first = 0) {
  const int qd = a.c.n_heads * a.c.head_dim;
  const loom::nn::AttentionShape s{a.c.n_heads, a.c.n_kv_heads, a.c.head_dim, window, alibi};
  std::vector<float> out(std::size_t((n - first) * qd), NAN);
  std::vector<float> scratch(std::size_t(threads * loom::nn::attention_scratch_floats(s, a.kv.capacity())));
  loom::kernels::ThreadPool pool(threads);
  const loom::TensorView<const float> q(a.q.data(), loom::Shape{n, qd});
  loom::nn::attention(s, q.rows(first, n), {a.kv, 0, first}, loom::TensorView<float>(out.data(), loom::Shape{n - first, qd}),
                      {scratch, &pool});
  return out;
}

/// The definition, one query head at a time, in double, from the keys and values as the cache
/// stores them: for f16, the given values rounded by loom::to_f16 (independently of the cache).
std::vector<double> naive_attention(const AttnCase& a, int n, DType type, int window, const float* alibi,
                                    int first = 0) {
  const int heads = a.c.n_heads, hd = a.c.head_dim, kvd = a.c.n_kv_heads * hd, group = heads / a.c.n_kv_heads;
  auto stored = [&](float x) { return type == DType::f16 ? double(loom::to_float(loom::to_f16(x))) : double(x); };
  std::vector<double> out;
  for (int t = first; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      const int g = h / group, lo = window ? std::max(0, t - window + 1) : 0;
      std::vector<double> w;
      double mx = -1e300;
      for (int j = lo; j <= t; ++j) {
        double s = 0;
        for (int d = 0; d < hd; ++d) s += double(a.q[(t * heads + h) * hd + d]) * stored(a.k[j * kvd + g * hd + d]);
        s = s / std::sqrt(double(hd)) + (alibi ? alibi[h] * double(j - t) : 0.0);
        w.push_back(s);
        mx = std::max(mx, s);
      }
      double sum = 0;
      for (double& s : w) sum += (s = std::exp(s - mx));
      for (int d = 0; d < hd; ++d) {
        double o = 0;
        for (int j = lo; j <= t; ++j) o += w[j - lo] / sum * stored(a.v[j * kvd + g * hd + d]);
        out.push_back(o);
      }
    }
  return out;
}

struct Heads {
  int heads, kv_heads, hd;
};
// MHA, GQA with a group of 3 (blocks of 2 + 1 query heads), a TinyLlama-like group of 8 with
// head_dim 64, MQA, and head dims that are not multiples of 16 (partial vectors).
const Heads kShapes[] = {{4, 4, 8}, {6, 2, 16}, {16, 2, 64}, {4, 1, 8}, {10, 1, 20}, {9, 3, 40}};

TEST(Attention, MatchesNaiveDoubleForEveryShapeWindowAlibiAndCacheType) {
  for (DType type : {DType::f32, DType::f16})
    for (const Heads& sh : kShapes) {
      const int n = 19;
      const AttnCase a = make_case(sh.heads, sh.kv_heads, sh.hd, n, 20 + sh.hd, type);
      const auto slopes = loom::nn::alibi_slopes(sh.heads);
      for (int window : {0, 5})
        for (bool alibi : {false, true})
          for (int first : {0, n - 1}) {  // a prompt of n rows, then one decoded row
            SCOPED_TRACE(testing::Message() << loom::to_string(type) << " heads " << sh.heads << "/" << sh.kv_heads
                                            << " hd " << sh.hd << " window " << window << " alibi " << alibi
                                            << " first " << first);
            const float* sl = alibi ? slopes.data() : nullptr;
            const auto out = run_attention(a, n, window, sl, 2, first);
            const auto ref = naive_attention(a, n, type, window, sl, first);
            ASSERT_EQ(out.size(), ref.size());
            for (std::size_t i = 0; i < ref.size(); ++i)
              ASSERT_NEAR(out[i], ref[i], 1e-5 * std::max(1.0, std::abs(ref[i]))) << "element " << i;
          }
    }
}

TEST(Attention, F16CacheIsCloseToF32Cache) {
  // The same keys and values cached as f16 change the output by about f16's rounding (2^-11
  // relative) of values of size ~1; a much larger difference would mean a conversion bug.
  const AttnCase a32 = make_case(16, 2, 64, 30, 50, DType::f32), a16 = make_case(16, 2, 64, 30, 50, DType::f16);
  const auto o32 = run_attention(a32, 30), o16 = run_attention(a16, 30);
  double worst = 0;
  for (std::size_t i = 0; i < o32.size(); ++i) worst = std::max(worst, double(std::abs(o32[i] - o16[i])));
  EXPECT_GT(worst, 0.0);
  EXPECT_LT(worst, 4e-3);
}

/// An MHA case whose KV head h holds what KV head h / (heads / kv_heads) of `gqa` holds.
AttnCase repeat_kv_heads(const AttnCase& gqa, DType type) {
  const int heads = gqa.c.n_heads, hd = gqa.c.head_dim, group = heads / gqa.c.n_kv_heads, n = gqa.kv.size();
  AttnCase mha;
  mha.c = gqa.c;
  mha.c.n_kv_heads = heads;
  mha.kv = loom::nn::KVCache(mha.c, 64, type);
  mha.kv.reserve_append(0, n);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h)
      for (int d = 0; d < hd; ++d) {
        const std::size_t from = std::size_t((t * gqa.c.n_kv_heads + h / group) * hd + d);
        mha.k.push_back(gqa.k[from]);
        mha.v.push_back(gqa.v[from]);
      }
  for (int t = 0; t < n; ++t) mha.kv.store(0, t, mha.k.data() + t * heads * hd, mha.v.data() + t * heads * hd);
  mha.kv.commit(n);
  mha.q = gqa.q;
  return mha;
}

TEST(Attention, GroupedQueryEqualsPerHeadAttentionWithRepeatedKV) {
  // Sharing a KV head must give exactly what each query head computes alone (group of 1) from a
  // copy of that KV head: GQA (group 3), TinyLlama's group of 8, and MQA.
  for (DType type : {DType::f32, DType::f16})
    for (const Heads& sh : {Heads{6, 2, 16}, Heads{16, 2, 64}, Heads{6, 1, 20}}) {
      const int n = 12;
      const AttnCase gqa = make_case(sh.heads, sh.kv_heads, sh.hd, n, 30, type);
      const AttnCase mha = repeat_kv_heads(gqa, type);
      const auto slopes = loom::nn::alibi_slopes(sh.heads);
      for (int window : {0, 4})
        for (const float* sl : {static_cast<const float*>(nullptr), slopes.data()})
          EXPECT_EQ(run_attention(gqa, n, window, sl), run_attention(mha, n, window, sl))
              << loom::to_string(type) << " heads " << sh.heads << "/" << sh.kv_heads << " window " << window;
    }
}

TEST(Attention, CausalAndThreadIndependent) {
  for (DType type : {DType::f32, DType::f16})
    for (const Heads& sh : {Heads{4, 4, 8}, Heads{16, 2, 64}}) {
      const int n = 8, kvd = sh.kv_heads * sh.hd, qd = sh.heads * sh.hd;
      AttnCase a = make_case(sh.heads, sh.kv_heads, sh.hd, n, 40, type);
      const auto before = run_attention(a, n, 0, nullptr, 1);
      EXPECT_EQ(before, run_attention(a, n, 0, nullptr, 2));
      EXPECT_EQ(before, run_attention(a, n, 0, nullptr, 3));
      // Changing the last position's key/value never changes earlier outputs.
      std::vector<float> k(a.k.end() - kvd, a.k.end()), v(a.v.end() - kvd, a.v.end());
      for (int i = 0; i < kvd; ++i) k[i] += 5.0f, v[i] -= 3.0f;
      a.kv.store(0, n - 1, k.data(), v.data());
      const auto after = run_attention(a, n);
      for (int i = 0; i < (n - 1) * qd; ++i) ASSERT_EQ(before[i], after[i]);
      bool last_changed = false;
      for (int i = (n - 1) * qd; i < n * qd; ++i) last_changed |= before[i] != after[i];
      EXPECT_TRUE(last_changed);
    }
}

TEST(Attention, RejectsShapesThatDoNotMatchTheCache) {
  const AttnCase a = make_case(4, 2, 8, 4, 60);
  std::vector<float> out(64), scratch(1024);
  const loom::nn::AttentionShape bad_heads{4, 3, 8, 0, nullptr}, bad_dim{4, 2, 4, 0, nullptr}, ok{4, 2, 8, 0, nullptr};
  const loom::TensorView<const float> q(a.q.data(), loom::Shape{1, 32});
  const loom::TensorView<float> o(out.data(), loom::Shape{1, 32});
  EXPECT_THROW(loom::nn::attention(bad_heads, q, {a.kv, 0, 0}, o, {scratch}), loom::Error);
  EXPECT_THROW(loom::nn::attention(bad_dim, q, {a.kv, 0, 0}, o, {scratch}), loom::Error);
  EXPECT_THROW(loom::nn::attention(ok, q, {a.kv, 0, 64}, o, {scratch}), loom::Error);  // position 64 is past the capacity
  EXPECT_THROW(loom::nn::attention(ok, q, {a.kv, 1, 0}, o, {scratch}), loom::Error);   // there is one layer
  EXPECT_THROW(loom::nn::attention(ok, q, {a.kv, 0, 0}, o, {std::span<float>(scratch).first(4)}), loom::Error);  // too little scratch
}

// ---- KV cache ---------------------------------------------------------------------------------

TEST(KVCache, CapacityRewindAndClear) {
  loom::Config c;
  c.n_layers = 2;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  loom::nn::KVCache kv(c, 8);
  EXPECT_EQ(kv.capacity(), 8);
  kv.reserve_append(0, 8);
  kv.commit(8);
  EXPECT_THROW(kv.reserve_append(8, 1), loom::Error);
  try {
    kv.reserve_append(6, 3);
    FAIL();
  } catch (const loom::Error& e) {
    EXPECT_EQ(e.kind(), loom::ErrorKind::capacity);
  }
  kv.rewind(5);
  EXPECT_EQ(kv.size(), 5);
  EXPECT_NO_THROW(kv.reserve_append(5, 3));
  EXPECT_THROW(kv.reserve_append(6, 1), loom::Error);  // a gap after the valid positions
  EXPECT_THROW(kv.rewind(6), loom::Error);
  kv.clear();
  EXPECT_EQ(kv.size(), 0);
  EXPECT_THROW(loom::nn::KVCache(c, 0), loom::Error);
  EXPECT_THROW(loom::nn::KVCache(c, -3), loom::Error);
  // Layers, K/V and heads do not overlap: per layer [K | V] × [kv heads, 16 positions (the capacity
  // 8 rounded up to a key tile), head_dim]; keys are one tile, transposed.
  const std::int64_t plane = 16 * c.head_dim;
  const float* k0 = kv.key_tiles<float>(0, 0, 0);
  EXPECT_EQ(kv.key_tiles<float>(0, 1, 0) - k0, plane);
  EXPECT_EQ(kv.values<float>(0, 0, 0) - k0, c.n_kv_heads * plane);
  EXPECT_EQ(kv.key_tiles<float>(1, 0, 0) - k0, 2 * c.n_kv_heads * plane);
  EXPECT_EQ(kv.values<float>(0, 0, 3) - kv.values<float>(0, 0, 0), 3 * c.head_dim);
  EXPECT_THROW(kv.key_tiles<float>(0, 0, 1), loom::Error);  // positions 16.. are not in the cache
  EXPECT_THROW(kv.key_tiles<float>(0, 0, -1), loom::Error);
}

TEST(KVCache, StoresF32ExactlyAndF16RoundedInHalfTheBytes) {
  loom::Config c;
  c.n_layers = 3;
  c.n_kv_heads = 2;
  c.head_dim = 12;  // kv_dim 24: a whole 8-wide conversion block and a remainder
  loom::nn::KVCache f32(c, 5), f16(c, 5, DType::f16);
  EXPECT_EQ(f32.type(), DType::f32);
  EXPECT_EQ(f16.type(), DType::f16);
  EXPECT_EQ(f32.bytes(), loom::nn::KVCache::bytes_needed(c, 5));
  EXPECT_EQ(f32.bytes(), 3u * 2 * 16 * 24 * 4);  // 5 positions take a whole key tile of 16
  EXPECT_EQ(f16.bytes(), loom::nn::KVCache::bytes_needed(c, 5, DType::f16));
  EXPECT_EQ(f16.bytes() * 2, f32.bytes());
  const auto k = random_vector(24, 70, 10.0f), v = random_vector(24, 71, 10.0f);
  for (loom::nn::KVCache* kv : {&f32, &f16}) {
    kv->reserve_append(0, 5);
    kv->store(2, 3, k.data(), v.data());
  }
  for (int i = 0; i < 24; ++i) {  // element i belongs to KV head i / 12
    const int h = i / 12, j = i % 12;
    EXPECT_EQ(f32.key<float>(2, h, 3, j), k[i]);
    EXPECT_EQ(f32.key_tiles<float>(2, h, 0)[16 * j + 3], k[i]);  // tile 0, element j of position 3
    EXPECT_EQ(f32.values<float>(2, h, 3)[j], v[i]);
    EXPECT_EQ(f16.key<loom::f16>(2, h, 3, j).bits, loom::detail::f32_to_f16_scalar(k[i]));
    EXPECT_EQ(f16.values<loom::f16>(2, h, 3)[j].bits, loom::detail::f32_to_f16_scalar(v[i]));
  }
  // Reading in another type than stored, or outside the cache, is refused.
  EXPECT_THROW(f16.key_tiles<float>(0, 0, 0), loom::Error);
  EXPECT_THROW(f32.values<loom::f16>(0, 0, 0), loom::Error);
  EXPECT_THROW(f32.key<float>(3, 0, 0, 0), loom::Error);
  EXPECT_THROW(f32.key<float>(0, 2, 0, 0), loom::Error);
  EXPECT_THROW(f32.key<float>(0, 0, 5, 0), loom::Error);
  EXPECT_THROW(f32.key<float>(0, 0, 0, 12), loom::Error);
  EXPECT_THROW(f32.values<float>(0, 0, 5), loom::Error);
  EXPECT_THROW(f32.store(0, -1, k.data(), v.data()), loom::Error);
}

TEST(KVCache, OtherTypesAreUnsupported) {
  loom::Config c;
  c.n_layers = 1;
  c.n_kv_heads = 1;
  c.head_dim = 32;
  for (DType t : {DType::bf16, DType::q8_0, DType::f64}) {
    try {
      loom::nn::KVCache kv(c, 4, t);
      FAIL() << loom::to_string(t);
    } catch (const loom::Error& e) {
      EXPECT_EQ(e.kind(), loom::ErrorKind::unsupported);
      EXPECT_NE(std::string(e.what()).find("KV cache type " + std::string(loom::to_string(t))), std::string::npos)
          << e.what();
    }
    EXPECT_THROW(loom::nn::KVCache::bytes_needed(c, 4, t), loom::Error);
  }
}

}  // namespace

}  // namespace test_nn
