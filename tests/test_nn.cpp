// Transformer blocks against naive double-precision references and mathematical properties.
#include <gtest/gtest.h>

#include <cmath>
#include <loom/nn/attention.hpp>
#include <loom/nn/kv_cache.hpp>
#include <loom/nn/norm.hpp>
#include <loom/nn/position.hpp>
#include <numeric>
#include <random>
#include <vector>

#include "random.hpp"

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
    const loom::nn::Rope rope(rope_config(layout));
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
  const loom::nn::Rope inter(rope_config(loom::RopeLayout::interleaved));
  const loom::nn::Rope half(rope_config(loom::RopeLayout::half_split));
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
  const loom::nn::Rope rope(c);
  c.rope_scaling = {loom::RopeScalingKind::linear, 4.0f};
  const loom::nn::Rope scaled(c);
  const auto x = random_vector(8, 13);
  for (int pos : {0, 1, 9, 40}) {
    auto y = x;
    rope.apply(y.data(), 1, pos);
    for (int i = 0; i < 4; ++i) {
      const double angle = pos * std::pow(10000.0, -2.0 * i / 8);
      EXPECT_NEAR(y[2 * i], x[2 * i] * std::cos(angle) - x[2 * i + 1] * std::sin(angle), 1e-5);
      EXPECT_NEAR(y[2 * i + 1], x[2 * i] * std::sin(angle) + x[2 * i + 1] * std::cos(angle), 1e-5);
    }
    // Linear interpolation: position p with factor 4 rotates like position p/4 unscaled.
    auto s = x, r = x;
    scaled.apply(s.data(), 1, pos * 4);
    rope.apply(r.data(), 1, pos);
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(s[i], r[i], 1e-4);
  }
}

TEST(Rope, Llama3ScalingKeepsHighAndDividesLowFrequencies) {
  auto c = rope_config(loom::RopeLayout::half_split, 128);
  c.rope_theta = 500000.0f;
  const loom::nn::Rope plain(c);
  c.rope_scaling = {loom::RopeScalingKind::llama3, 8.0f, 1.0f, 4.0f, 8192};
  const loom::nn::Rope scaled(c);
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

struct AttnCase {
  loom::Config c;
  loom::KVCache kv;
  std::vector<float> q;  // [n, heads*hd]
};

AttnCase make_case(int heads, int kv_heads, int hd, int n, std::uint32_t seed) {
  AttnCase a;
  a.c.n_layers = 1;
  a.c.n_heads = heads;
  a.c.n_kv_heads = kv_heads;
  a.c.head_dim = hd;
  a.kv = loom::KVCache(a.c, 64);
  a.kv.reserve_append(0, n);
  const auto k = random_vector(std::size_t(n * kv_heads * hd), seed), v = random_vector(k.size(), seed + 1);
  for (int t = 0; t < n; ++t) {
    std::copy_n(k.data() + t * kv_heads * hd, kv_heads * hd, a.kv.k(0, t));
    std::copy_n(v.data() + t * kv_heads * hd, kv_heads * hd, a.kv.v(0, t));
  }
  a.kv.commit(n);
  a.q = random_vector(std::size_t(n * heads * hd), seed + 2);
  return a;
}

std::vector<float> run_attention(const AttnCase& a, int n, int window = 0, const float* alibi = nullptr,
                                 int threads = 1) {
  const int qd = a.c.n_heads * a.c.head_dim;
  std::vector<float> out(std::size_t(n * qd)), scores(std::size_t(threads * 64));
  loom::ThreadPool pool(threads);
  const loom::nn::AttentionShape s{a.c.n_heads, a.c.n_kv_heads, a.c.head_dim, window, alibi};
  loom::nn::attention(a.q.data(), qd, n, 0, a.kv, 0, s, out.data(), qd, scores.data(), &pool);
  return out;
}

TEST(Attention, MatchesNaiveDoubleWithWindowAndAlibi) {
  const int heads = 4, kvh = 2, hd = 8, n = 9;
  AttnCase a = make_case(heads, kvh, hd, n, 20);
  const auto slopes = loom::nn::alibi_slopes(heads);
  for (int window : {0, 3}) {
    for (bool alibi : {false, true}) {
      const auto out = run_attention(a, n, window, alibi ? slopes.data() : nullptr, 2);
      for (int t = 0; t < n; ++t)
        for (int h = 0; h < heads; ++h) {
          const int g = h / (heads / kvh);
          std::vector<double> w;
          const int lo = window ? std::max(0, t - window + 1) : 0;
          double mx = -1e300;
          for (int j = lo; j <= t; ++j) {
            double s = 0;
            for (int d = 0; d < hd; ++d) s += double(a.q[(t * heads + h) * hd + d]) * a.kv.k(0, j)[g * hd + d];
            s = s / std::sqrt(double(hd)) + (alibi ? slopes[h] * double(j - t) : 0.0);
            w.push_back(s);
            mx = std::max(mx, s);
          }
          double sum = 0;
          for (double& s : w) sum += (s = std::exp(s - mx));
          for (int d = 0; d < hd; ++d) {
            double o = 0;
            for (int j = lo; j <= t; ++j) o += w[j - lo] / sum * a.kv.v(0, j)[g * hd + d];
            EXPECT_NEAR(out[(t * heads + h) * hd + d], o, 1e-5);
          }
        }
    }
  }
}

TEST(Attention, GroupedQueryEqualsMultiHeadWithRepeatedKV) {
  const int heads = 6, kvh = 2, hd = 4, n = 5;
  AttnCase gqa = make_case(heads, kvh, hd, n, 30);
  AttnCase mha;
  mha.c = gqa.c;
  mha.c.n_kv_heads = heads;
  mha.kv = loom::KVCache(mha.c, 64);
  mha.kv.reserve_append(0, n);
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h) {
      std::copy_n(gqa.kv.k(0, t) + (h / 3) * hd, hd, mha.kv.k(0, t) + h * hd);
      std::copy_n(gqa.kv.v(0, t) + (h / 3) * hd, hd, mha.kv.v(0, t) + h * hd);
    }
  mha.kv.commit(n);
  mha.q = gqa.q;
  EXPECT_EQ(run_attention(gqa, n), run_attention(mha, n));
  // Multi-query (one KV head) too.
  AttnCase mqa = make_case(heads, 1, hd, n, 31);
  EXPECT_EQ(run_attention(mqa, n).size(), std::size_t(n * heads * hd));
}

TEST(Attention, CausalAndThreadIndependent) {
  const int heads = 4, hd = 8, n = 8;
  AttnCase a = make_case(heads, 4, hd, n, 40);
  const auto before = run_attention(a, n, 0, nullptr, 1);
  EXPECT_EQ(before, run_attention(a, n, 0, nullptr, 3));
  // Changing the last position's key/value never changes earlier outputs.
  for (int i = 0; i < heads * hd; ++i) a.kv.k(0, n - 1)[i] += 5.0f, a.kv.v(0, n - 1)[i] -= 3.0f;
  const auto after = run_attention(a, n);
  for (int i = 0; i < (n - 1) * heads * hd; ++i) EXPECT_EQ(before[i], after[i]);
  bool last_changed = false;
  for (int i = (n - 1) * heads * hd; i < n * heads * hd; ++i) last_changed |= before[i] != after[i];
  EXPECT_TRUE(last_changed);
}

// ---- KV cache ---------------------------------------------------------------------------------

TEST(KVCache, CapacityRewindAndClear) {
  loom::Config c;
  c.n_layers = 2;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  loom::KVCache kv(c, 8);
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
  EXPECT_THROW(loom::KVCache(c, 0), loom::Error);
  EXPECT_THROW(loom::KVCache(c, -3), loom::Error);
  // Layers and K/V do not overlap.
  EXPECT_EQ(kv.v(0, 0) - kv.k(0, 0), 8 * 8);
  EXPECT_EQ(kv.k(1, 0) - kv.k(0, 0), 2 * 8 * 8);
}

}  // namespace
