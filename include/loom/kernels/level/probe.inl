// The read-bandwidth probe's inner loop (machine.hpp), compiled once per kernel level so that it
// reads with the widest loads the CPU has, as the kernels it measures for do. kernels/levels.hpp
// includes this file in namespace loom::kernels::<level> (LOOM_LEVEL 0, 1 or 2). No include guard.

/// Σ of the 64-bit words of [p, p + n) (wrapping), plus its trailing n % 8 bytes, read as S
/// contiguous parts side by side, 256 bytes of each per step. The sum is exact so that tests can
/// check the reads; the probes use it to keep the loads alive.
template <int S>
std::uint64_t sum_streams(const std::byte* p, std::size_t n) {
  const std::size_t part = n / S / 256 * 256;  // bytes of each stream; the rest is read after them
  std::uint64_t total = 0;
#if LOOM_LEVEL == 2
  __m512i acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm512_setzero_si512();
  for (std::size_t i = 0; i < part; i += 256)
    for (int s = 0; s < S; ++s) {
      const std::byte* q = p + std::size_t(s) * part + i;
      const __m512i a = _mm512_add_epi64(_mm512_loadu_si512(q), _mm512_loadu_si512(q + 64));
      const __m512i b = _mm512_add_epi64(_mm512_loadu_si512(q + 128), _mm512_loadu_si512(q + 192));
      acc[s] = _mm512_add_epi64(acc[s], _mm512_add_epi64(a, b));
    }
  for (int s = 0; s < S; ++s) {
    alignas(64) std::uint64_t lanes[8];
    _mm512_store_si512(lanes, acc[s]);
    for (std::uint64_t l : lanes) total += l;
  }
#elif LOOM_LEVEL == 1
  __m256i acc[S];
  for (int s = 0; s < S; ++s) acc[s] = _mm256_setzero_si256();
  for (std::size_t i = 0; i < part; i += 256)
    for (int s = 0; s < S; ++s) {
      const auto* q = reinterpret_cast<const __m256i*>(p + std::size_t(s) * part + i);
      __m256i a = _mm256_add_epi64(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1));
      a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 2), _mm256_loadu_si256(q + 3)));
      a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 4), _mm256_loadu_si256(q + 5)));
      acc[s] = _mm256_add_epi64(acc[s], _mm256_add_epi64(a, _mm256_add_epi64(_mm256_loadu_si256(q + 6), _mm256_loadu_si256(q + 7))));
    }
  for (int s = 0; s < S; ++s) {
    alignas(32) std::uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[s]);
    for (std::uint64_t l : lanes) total += l;
  }
#else
  std::uint64_t acc[S][8] = {};
  for (std::size_t i = 0; i < part; i += 64)
    for (int s = 0; s < S; ++s) {
      std::uint64_t w[8];
      std::memcpy(w, p + std::size_t(s) * part + i, sizeof w);
      for (int k = 0; k < 8; ++k) acc[s][k] += w[k];
    }
  for (auto& a : acc)
    for (std::uint64_t l : a) total += l;
#endif
  std::size_t i = S * part;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, sizeof w);
    total += w;
  }
  for (; i < n; ++i) total += std::uint64_t(p[i]);
  return total;
}

/// sum_streams with S chosen at run time (1, 2, 4 or 8).
inline std::uint64_t sum_words_level(const std::byte* p, std::size_t n, int streams) {
  switch (streams) {
    case 1: return sum_streams<1>(p, n);
    case 2: return sum_streams<2>(p, n);
    case 4: return sum_streams<4>(p, n);
    default: return sum_streams<8>(p, n);
  }
}

/// The arithmetic peak probe (machine.hpp): `steps` steps of 12 independent multiply-add chains
/// in registers, of the kind `a` at this level's widest vectors; returns the multiply-adds done,
/// or 0 where the level has no such instruction. f32: FMA (16 / 8 / 1 per instruction); int8:
/// vpdpbusd at AVX-512 (64 byte products per instruction), at AVX2 vpmaddubsw + vpmaddwd +
/// vpaddd (32 per three instructions), as the integer GEMMs; bf16:
/// vdpbf16ps (32; AVX-512 on CPUs with AVX512_BF16, as the bf16 GEMM). The operands
/// pass through an empty asm statement so that the compiler cannot fold the chains.
/// One step of a chain: x·m + b (f32), or x + the byte dot products of u and v (int8). Plain
/// overloads, not lambdas: a lambda's conversion to a function pointer would pass vectors
/// outside the target region (GCC's -Wpsabi).
inline float peak_step(float x, float m, float b) { return std::fma(x, m, b); }
#if LOOM_LEVEL == 1
inline __m256 peak_step(__m256 x, __m256 m, __m256 b) { return _mm256_fmadd_ps(x, m, b); }
inline __m256i peak_step(__m256i x, __m256i u, __m256i v) {
  return _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), _mm256_set1_epi16(1)));
}
#elif LOOM_LEVEL == 2
inline __m512 peak_step(__m512 x, __m512 m, __m512 b) { return _mm512_fmadd_ps(x, m, b); }
inline __m512i peak_step(__m512i x, __m512i u, __m512i v) { return _mm512_dpbusd_epi32(x, u, v); }

/// bf16 chains: vdpbf16ps, 32 multiply-adds per instruction (compiled for AVX512_BF16, run only
/// where the CPU has it).
__attribute__((target("avx512bf16"))) inline double peak_bf16(std::int64_t steps) {
  constexpr int chains = 12;
  __m512 acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = _mm512_set1_ps(1.0f);
  __m512i a = _mm512_set1_epi16(0x3f80), b = _mm512_set1_epi16(0x3a83);  // bf16 1.0, ~0.001
  __asm__ volatile("" : "+v"(a), "+v"(b));
  for (std::int64_t s = 0; s < steps; ++s) {
    LOOM_UNROLL
    for (int c = 0; c < chains; ++c)
      acc[c] = _mm512_dpbf16_ps(acc[c], reinterpret_cast<const __m512bh&>(a), reinterpret_cast<const __m512bh&>(b));
  }
  float sink = 0;
  for (int c = 0; c < chains; ++c) sink += _mm512_reduce_add_ps(acc[c]);
  volatile float keep = sink;
  (void)keep;
  return double(steps) * chains * 32;
}
#endif

template <typename V>
double peak_chains(V init, V m, V b, std::int64_t steps, double per_instruction) {
  constexpr int chains = 12;
  V acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = init;
#if defined(__GNUC__) || defined(__clang__)
  __asm__ volatile("" : "+m"(m), "+m"(b));
#endif
  for (std::int64_t s = 0; s < steps; ++s) {
    LOOM_UNROLL
    for (int c = 0; c < chains; ++c) acc[c] = peak_step(acc[c], m, b);
  }
  unsigned char sink = 0;
  for (int c = 0; c < chains; ++c) {
    unsigned char bytes[sizeof(V)];
    std::memcpy(bytes, &acc[c], sizeof(V));
    for (unsigned char x : bytes) sink = static_cast<unsigned char>(sink ^ x);
  }
  volatile unsigned char keep = sink;
  (void)keep;
  return double(steps) * chains * per_instruction;
}

inline double peak_multiply_adds(Arithmetic a, std::int64_t steps) {
  if (a == Arithmetic::f32) {
#if LOOM_LEVEL == 2
    return peak_chains(_mm512_set1_ps(1.0f), _mm512_set1_ps(0.999f), _mm512_set1_ps(1e-3f), steps, 16);
#elif LOOM_LEVEL == 1
    return peak_chains(_mm256_set1_ps(1.0f), _mm256_set1_ps(0.999f), _mm256_set1_ps(1e-3f), steps, 8);
#else
    return peak_chains(1.0f, 0.999f, 1e-3f, steps, 1);
#endif
  }
#if LOOM_LEVEL == 1
  if (a == Arithmetic::int8)
    return peak_chains(_mm256_set1_epi32(1), _mm256_set1_epi8(3), _mm256_set1_epi8(-2), steps, 32);
#elif LOOM_LEVEL == 2
  if (a == Arithmetic::int8)
    return peak_chains(_mm512_set1_epi32(1), _mm512_set1_epi8(3), _mm512_set1_epi8(-2), steps, 64);
  if (a == Arithmetic::bf16 && cpu_features().avx512bf16) return peak_bf16(steps);
#endif
  return 0;
}
