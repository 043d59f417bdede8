// Quantized weight rows as plain int8 values with a scale (and for some types an offset) per
// sub-block: the form the prompt path's integer GEMM (kernels/level/gemm_int8.inl) multiplies.
// Every weight w of sub-block j of a row is exactly scale[j]·q + offset[j], q an int8: the same
// value the reference dequantization (quant/dequantize.hpp) gives, up to the order of its float
// operations. Sub-blocks are 32 weights, or 16 for Q2_K, Q3_K and Q6_K whose scales are per 16.
// kernels/levels.hpp includes this file in namespace loom::kernels::<level>, inside that level's
// target region, so the compiler vectorizes the loops for each level. No include guard.

/// Weights per sub-block of T's int8 form (16 or 32).
constexpr int int8_subblock_of(DType t) noexcept {
  return t == DType::q2_k || t == DType::q3_k || t == DType::q6_k ? 16 : 32;
}

/// Whether T's int8 form has an offset per sub-block (the types with mins).
constexpr bool int8_offsets_of(DType t) noexcept {
  return t == DType::q4_1 || t == DType::q5_1 || t == DType::q2_k || t == DType::q4_k || t == DType::q5_k;
}

/// T's int8 form (kernels/levels.hpp): the range of its values is that of its quants, signed
/// (zero point subtracted: Q4_0, Q5_0, Q3_K, Q6_K), unsigned (the types with mins), or all of
/// int8 (Q8_0, and IQ4_NL / IQ4_XS whose table spans −127 .. 113).
constexpr Int8Form int8_form_of(DType t) noexcept {
  Int8Form f{int8_subblock_of(t), int8_offsets_of(t), 128, 8};
  switch (t) {
    case DType::q2_k: f.bias = 0, f.bits = 2; break;
    case DType::q3_k: f.bias = 4, f.bits = 3; break;
    case DType::q4_0: f.bias = 8, f.bits = 4; break;
    case DType::q4_1: case DType::q4_k: f.bias = 0, f.bits = 4; break;
    case DType::q5_0: f.bias = 16, f.bits = 5; break;
    case DType::q5_1: case DType::q5_k: f.bias = 0, f.bits = 5; break;
    case DType::q6_k: f.bias = 32, f.bits = 6; break;
    default: break;
  }
  return f;
}

#if LOOM_LEVEL >= 1
/// The 32 nibbles of 16 bytes: low ones → lo, high ones → hi (SSE). The int8 rows are made for
/// every 128-row block of every prompt: per weight in scalar code they took a fifth of the AVX2
/// integer GEMM's time (Q4_0) and more than its multiplications for 5-bit types.
inline void int8_nibbles16(const std::uint8_t* qs, __m128i& lo, __m128i& hi) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m4 = _mm_set1_epi8(0x0f);
  lo = _mm_and_si128(bytes, m4);
  hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), m4);
}

/// 0x10 in each byte i of the result whose bit `bit` of h's byte i is set (the fifth bit of
/// 5-bit quants): `bit` given as the mask 1 << bit in every byte.
inline __m128i int8_fifth_bits(__m128i h, __m128i bit) {
  return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bit), bit), _mm_set1_epi8(0x10));
}
#endif

/// A row of n weights of type T → q[n], scale[n / S], offset[n / S] (offset only where
/// int8_offsets_of(T)), S = int8_subblock_of(T).
template <DType T>
void to_int8_row(const std::byte* src, std::int64_t n, std::int8_t* q, float* scale, float* offset) {
  using Block = block_of_t<T>;
  const auto* x = reinterpret_cast<const Block*>(src);
  if constexpr (T == DType::q8_0) {
    for (std::int64_t b = 0; b < n / qk8_0; ++b) {
      scale[b] = detail::f16f(x[b].d);
      std::memcpy(q + b * qk8_0, x[b].qs, qk8_0);
    }
  } else if constexpr (T == DType::iq4_xs) {
    for (std::int64_t b = 0; b < n / qk_k; ++b)
      for (int j = 0; j < 8; ++j) {
        scale[b * 8 + j] = detail::f16f(x[b].d) * float(iq4_xs_scale(x[b], j));
        const std::uint8_t* qs = x[b].qs + 16 * j;
        std::int8_t* o = q + b * qk_k + 32 * j;
#if LOOM_LEVEL >= 1
        __m128i lo, hi;
        int8_nibbles16(qs, lo, hi);
        const __m128i table = _mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_shuffle_epi8(table, lo));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 16), _mm_shuffle_epi8(table, hi));
        continue;
#endif
        for (int i = 0; i < 16; ++i) {
          o[i] = iq4_nl_values[qs[i] & 0x0f];
          o[i + 16] = iq4_nl_values[qs[i] >> 4];
        }
      }
  } else if constexpr (T == DType::q4_k || T == DType::q5_k) {
    for (std::int64_t b = 0; b < n / qk_k; ++b) {
      const float d = detail::f16f(x[b].d), dmin = detail::f16f(x[b].dmin);
      for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        q4_k_scale_min(j, x[b].scales, sc, m);
        scale[b * 8 + j] = d * float(sc);
        offset[b * 8 + j] = -dmin * float(m);
      }
      std::int8_t* o = q + b * qk_k;
#if LOOM_LEVEL >= 1
      for (int k = 0; k < 4; ++k)
        for (int half = 0; half < 2; ++half) {  // 16 of the chunk's 32 bytes: weights l and l + 32
          __m128i lo, hi;
          int8_nibbles16(x[b].qs + 32 * k + 16 * half, lo, hi);
          if constexpr (T == DType::q5_k) {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qh + 16 * half));
            lo = _mm_or_si128(lo, int8_fifth_bits(h, _mm_set1_epi8(std::int8_t(1 << (2 * k)))));
            hi = _mm_or_si128(hi, int8_fifth_bits(h, _mm_set1_epi8(std::int8_t(1 << (2 * k + 1)))));
          }
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 64 * k + 16 * half), lo);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 64 * k + 32 + 16 * half), hi);
        }
      continue;
#endif
      for (int k = 0; k < 4; ++k)
        for (int l = 0; l < 32; ++l) {
          int lo, hi;
          q4_k_quant_pair(x[b], k, l, lo, hi);
          o[64 * k + l] = std::int8_t(lo);
          o[64 * k + 32 + l] = std::int8_t(hi);
        }
    }
  } else if constexpr (T == DType::q6_k) {
    for (std::int64_t b = 0; b < n / qk_k; ++b) {
      const float d = detail::f16f(x[b].d);
      for (int j = 0; j < 16; ++j) scale[b * 16 + j] = d * float(x[b].scales[j]);
      std::int8_t* o = q + b * qk_k;
      for (int h = 0; h < 2; ++h)  // halves of 128: ql 64 bytes (two nibbles), qh 32 bytes (four pairs)
        for (int l = 0; l < 32; ++l) {
          const std::uint8_t ql0 = x[b].ql[64 * h + l], ql1 = x[b].ql[64 * h + 32 + l], qh = x[b].qh[32 * h + l];
          o[128 * h + l] = std::int8_t(((ql0 & 0x0f) | (qh & 3) << 4) - 32);
          o[128 * h + 32 + l] = std::int8_t(((ql1 & 0x0f) | (qh >> 2 & 3) << 4) - 32);
          o[128 * h + 64 + l] = std::int8_t(((ql0 >> 4) | (qh >> 4 & 3) << 4) - 32);
          o[128 * h + 96 + l] = std::int8_t(((ql1 >> 4) | (qh >> 6 & 3) << 4) - 32);
        }
    }
  } else if constexpr (T == DType::q2_k || T == DType::q3_k) {
    for (std::int64_t b = 0; b < n / qk_k; ++b) {
      const float d = detail::f16f(x[b].d);
      for (int j = 0; j < 16; ++j) {  // sub-block j: weights 16j .. 16j+15
        const std::uint8_t* qs = x[b].qs + 32 * (j / 8) + 16 * (j % 2);
        const int shift = 2 * (j % 8 / 2);
        std::int8_t* o = q + b * qk_k + 16 * j;
        if constexpr (T == DType::q2_k) {
          scale[b * 16 + j] = d * float(x[b].scales[j] & 0x0f);
          offset[b * 16 + j] = -detail::f16f(x[b].dmin) * float(x[b].scales[j] >> 4);
          for (int l = 0; l < 16; ++l) o[l] = std::int8_t(qs[l] >> shift & 3);
        } else {
          scale[b * 16 + j] = d * float(q3_k_scale(x[b].scales, j) - 32);
          const std::uint8_t* hm = x[b].hmask + 16 * (j % 2);
          const int bit = j / 8 * 4 + j % 8 / 2;
          for (int l = 0; l < 16; ++l) o[l] = std::int8_t((qs[l] >> shift & 3) - (hm[l] >> bit & 1 ? 0 : 4));
        }
      }
    }
  } else {  // the 32-weight nibble blocks: Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL
    for (std::int64_t b = 0; b < n / qk4_0; ++b) {
      scale[b] = detail::f16f(x[b].d);
      if constexpr (block_with_min<Block>) offset[b] = detail::f16f(x[b].m);
      // The two nibbles of byte j are weights j and j + 16 (block32_quant); bit j of qh is the
      // fifth bit of weight j.
#if LOOM_LEVEL >= 1
      {
        __m128i lo, hi;
        int8_nibbles16(x[b].qs, lo, hi);
        if constexpr (block_with_high_bits<Block>) {
          std::int32_t qh;
          std::memcpy(&qh, x[b].qh, 4);
          const __m128i h = _mm_cvtsi32_si128(qh);
          const __m128i bit = _mm_set1_epi64x(std::int64_t(0x8040201008040201));
          const __m128i hl = _mm_shuffle_epi8(h, _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
          const __m128i hh = _mm_shuffle_epi8(h, _mm_set_epi8(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2));
          lo = _mm_or_si128(lo, int8_fifth_bits(hl, bit));
          hi = _mm_or_si128(hi, int8_fifth_bits(hh, bit));
        }
        if constexpr (block_with_table<Block>) {
          const __m128i table = _mm_load_si128(reinterpret_cast<const __m128i*>(iq4_nl_values));
          lo = _mm_shuffle_epi8(table, lo), hi = _mm_shuffle_epi8(table, hi);
        } else {
          const __m128i zero = _mm_set1_epi8(std::int8_t(block32_zero<Block>));
          lo = _mm_sub_epi8(lo, zero), hi = _mm_sub_epi8(hi, zero);
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * qk4_0), lo);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * qk4_0 + 16), hi);
        continue;
      }
#endif
      std::int8_t* o = q + b * qk4_0;
      for (int j = 0; j < qk4_0; ++j) o[j] = std::int8_t(block32_value(x[b], j));
    }
  }
}
