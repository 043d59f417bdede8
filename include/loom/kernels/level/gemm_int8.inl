// The prompt path's integer GEMM for quantized weights: y[n, m] = x[n, k] · Wᵀ with W's rows in
// their int8 form (quant/to_int8.inl) and x quantized to 8 bits per block of 32, multiplied with
// AVX-512 VNNI (`vpdpbusd`: 64 byte products summed into 16 int32 per instruction, four times
// the multiply-adds of an f32 FMA), or at AVX2 with vpmaddubsw (32 byte products in pairs,
// widened by vpmaddwd: twice an FMA's, see the AVX2 int8_tile). kernels/levels.hpp includes this
// file in every level's namespace; the reference level has no product (it keeps dequantizing to
// f32 for gemm_f32). No include guard.
//
// Activations (Int8Rows, made once per product by quantize_int8_rows): per block of 32 values a
// scale d = max|x| / 127 and int8 quants q = round(x / d); per weight sub-block −128·Σq (it
// cancels the weights' bias below) and, for the offset types, d·Σq.
//
// Weights (the panel, packed per 16 rows by pack_int8_group from any quantized type): per
// sub-block of S = 16 or 32 columns, the 16 rows' int8 values plus 128 (unsigned bytes, as
// vpdpbusd's first operand must be) interleaved by 4 columns ([S/4][16 rows][4], one zmm per 4
// columns), then the rows' scales and, for types with mins, their offsets. One sub-block of a
// row tile is then S/4 vpdpbusd per activation row into 16 int32 lanes (one per weight row) that
// hold whole sub-block sums, so the float work (convert, scale, accumulate) is once per
// sub-block:
//
//   acc[t] += float(Σ_k (q_w + 128)·q_x − 128·Σ q_x) · (scale_w · d_x)  (+ offset_w · d_x·Σq_x)
//
// The register tile is C = 8 activation rows × 16 weight rows: 8 int32 and 8 f32 accumulators.
// Each 64-byte load of weights feeds 8 vpdpbusd; each activation dword is broadcast from memory
// by its vpdpbusd (an embedded broadcast: the signed operand may come from memory). Per sub-block of 32 and activation row: 8 vpdpbusd (512 multiply-adds) and 3
// float operations. The panel of a 128-row block (≈ 1.1 bytes per weight) stays in L2 while all
// of x passes over it; 8 rows of x are 8·k bytes (16 KiB at k = 2048) and stay in L1.

/// Rows of x → the Int8Rows arrays (k a multiple of 32, s = 16 or 32; rows past n in the last
/// tile are zero).
inline void quantize_int8_rows(const float* x, std::int64_t n, std::int64_t ldx, std::int64_t k, int s, std::int8_t* q,
                               float* d, std::int32_t* corr, float* sums) {
  constexpr int R = int8_row_tile;
  const std::int64_t nb = k / 32, nsb = k / s, padded = (n + R - 1) / R * R;
  for (std::int64_t t = 0; t < padded; ++t) {
    const std::int64_t tile = t / R, lane = t % R;
    std::int8_t* qt = q + tile * R * k + 4 * lane;
    float* dt = d + tile * R * nb + lane;
    std::int32_t* ct = corr + tile * R * nsb + lane;
    float* st = sums + tile * R * nsb + lane;
    if (t >= n) {
      for (std::int64_t g = 0; g < k / 4; ++g) std::memset(qt + g * 4 * R, 0, 4);
      for (std::int64_t b = 0; b < nb; ++b) dt[b * R] = 0.0f;
      for (std::int64_t j = 0; j < nsb; ++j) ct[j * R] = 0, st[j * R] = 0.0f;
      continue;
    }
    for (std::int64_t b = 0; b < nb; ++b) {
      const float* v = x + t * ldx + 32 * b;
      const float db = abs_max(v, 32) / 127.0f;
      const float id = db != 0.0f ? 1.0f / db : 0.0f;
      alignas(16) std::int8_t qs[32];
      const int s0 = quantize16(v, id, qs), s1 = quantize16(v + 16, id, qs + 16);
      for (int g = 0; g < 8; ++g) std::memcpy(qt + (8 * b + g) * 4 * R, qs + 4 * g, 4);
      dt[b * R] = db;
      if (s == 32) {
        ct[b * R] = -128 * (s0 + s1), st[b * R] = db * float(s0 + s1);
      } else {
        ct[2 * b * R] = -128 * s0, st[2 * b * R] = db * float(s0);
        ct[(2 * b + 1) * R] = -128 * s1, st[(2 * b + 1) * R] = db * float(s1);
      }
    }
  }
}

#if LOOM_LEVEL >= 1

/// Rows [r0, r0 + rows) of w (rows <= 16) → their int8 values q [16][k], scales and offsets
/// [16][k / s] in `scratch` (int8_pack_scratch_bytes); the rows past `rows` are zero.
inline void int8_group_rows(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, int s, bool offsets,
                            std::int8_t* scratch) {
  const std::int64_t k = w.cols(), nsb = k / s;
  std::int8_t* q = scratch;
  float* scale = reinterpret_cast<float*>(scratch + 16 * k);
  float* offset = scale + 16 * nsb;
  for (int r = 0; r < 16; ++r) {
    if (r < rows) {
      to_int8(w.row(r0 + r), k, q + r * k, scale + r * nsb, offset + r * nsb);
      if (!offsets) std::fill_n(offset + r * nsb, nsb, 0.0f);
    } else {
      std::memset(q + r * k, 0, std::size_t(k));
      std::fill_n(scale + r * nsb, nsb, 0.0f);
      std::fill_n(offset + r * nsb, nsb, 0.0f);
    }
  }
}

#endif

#if LOOM_LEVEL == 2

/// Rows [r0, r0 + rows) of w (rows <= 16) → one 16-row group of the panel at dst; the rows past
/// `rows` are zero. Every 64 bytes of the panel are one gather of the 16 rows' 4 values from
/// `scratch` (int8_group_rows), then biased by 128.
inline void pack_int8_group(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, int s, bool offsets,
                            std::byte* dst, std::int8_t* scratch) {
  const std::int64_t k = w.cols(), nsb = k / s;
  const std::size_t sb_bytes = int8_panel_subblock_bytes(s, offsets);
  int8_group_rows(w, r0, rows, to_int8, s, offsets, scratch);
  const std::int8_t* q = scratch;
  const float* scale = reinterpret_cast<const float*>(scratch + 16 * k);
  const float* offset = scale + 16 * nsb;
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i row_at = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(std::int32_t(k)));
  const __m512i scale_at = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(std::int32_t(nsb)));
  const __m512i bias = _mm512_set1_epi8(-128);
  for (std::int64_t j = 0; j < nsb; ++j) {
    std::byte* p = dst + std::size_t(j) * sb_bytes;
    for (int g = 0; g < s / 4; ++g)
      _mm512_storeu_si512(p + 64 * g, _mm512_xor_si512(_mm512_i32gather_epi32(row_at, q + j * s + 4 * g, 1), bias));
    _mm512_storeu_ps(reinterpret_cast<float*>(p + 16 * s), _mm512_i32gather_ps(scale_at, scale + j, 4));
    if (offsets)
      _mm512_storeu_ps(reinterpret_cast<float*>(p + 16 * s + 64), _mm512_i32gather_ps(scale_at, offset + j, 4));
  }
}

/// acc + the 16 dot products of w's 4-byte groups (unsigned) with the 4 signed bytes at p, read
/// by the instruction's own broadcast (GCC and Clang do not fold _mm512_set1_epi32 into
/// vpdpbusd's memory operand; a separate broadcast per product costs a third of the loop).
inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const std::int8_t* p) {
  __asm__("vpdpbusd {%2%{1to16%}, %1, %0|%0, %1, %2%{1to16%}}"
          : "+v"(acc)
          : "v"(w), "m"(*reinterpret_cast<const std::int32_t*>(p)));
  return acc;
}

/// y[C rows, `rows` <= 16 columns] = C activation rows of x (from row t0) · one 16-row group.
template <int C, int S, bool Offsets>
void int8_tile(const Int8Rows& x, std::int64_t t0, const std::byte* panel, float* y, std::int64_t ldy, int rows) {
  const std::int64_t k = x.k, nsb = k / S;
  constexpr std::size_t sb_bytes = int8_panel_subblock_bytes(S, Offsets);
  // the rows' tile and first lane: every value of the C rows is one base pointer away
  constexpr int R = int8_row_tile;
  const std::int64_t tile = t0 / R, lane = t0 % R;
  const std::int8_t* xq = x.q + tile * R * k + 4 * lane;
  const float* xd = x.d + tile * R * (k / 32) + lane;
  const std::int32_t* xc = x.corr + tile * R * nsb + lane;
  const float* xs = x.sums + tile * R * nsb + lane;
  __m512 acc[C];
  LOOM_UNROLL
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < nsb; ++j) {
    const std::byte* p = panel + std::size_t(j) * sb_bytes;
    __m512i ai[C];
    LOOM_UNROLL
    for (int c = 0; c < C; ++c) ai[c] = _mm512_set1_epi32(xc[j * R + c]);
    const std::int64_t k0 = j * S;
    const std::int8_t* px = xq + k0 * R;  // the sub-block's values: [S / 4][R rows][4]
    LOOM_UNROLL
    for (int g = 0; g < S / 4; ++g) {
      const __m512i wv = _mm512_loadu_si512(p + 64 * g);
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) ai[c] = dpbusd_broadcast(ai[c], wv, px + (4 * R * g + 4 * c));
    }
    const __m512 sc = _mm512_loadu_ps(reinterpret_cast<const float*>(p + 16 * S));
    LOOM_UNROLL
    for (int c = 0; c < C; ++c)
      acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[c]), _mm512_mul_ps(sc, _mm512_set1_ps(xd[k0 / 32 * R + c])),
                               acc[c]);
    if constexpr (Offsets) {
      const __m512 off = _mm512_loadu_ps(reinterpret_cast<const float*>(p + 16 * S + 64));
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(off, _mm512_set1_ps(xs[j * R + c]), acc[c]);
    }
  }
  const __mmask16 m = __mmask16((1u << rows) - 1);
  LOOM_UNROLL
  for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(y + c * ldy, m, acc[c]);
}

/// All n rows of x times one 16-row group: tiles of 8 activation rows, then 4, 2, 1.
template <int S, bool Offsets>
void int8_group(const Int8Rows& x, const std::byte* panel, float* y, std::int64_t ldy, int rows) {
  std::int64_t t = 0;
  static_assert(int8_row_tile == 8);
  for (; t + 8 <= x.n; t += 8) int8_tile<8, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows);
  if (x.n - t >= 4) int8_tile<4, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows), t += 4;
  if (x.n - t >= 2) int8_tile<2, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows), t += 2;
  if (x.n - t >= 1) int8_tile<1, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows);
}

#elif LOOM_LEVEL == 1

/// Rows [r0, r0 + rows) of w (rows <= 16) → one 16-row group of the panel at dst, the layout of
/// the AVX-512 level's but with the values as they are (signed): vpmaddubsw takes the weights'
/// magnitudes and the activations with the weights' signs (int8_tile below).
inline void pack_int8_group(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, int s, bool offsets,
                            std::byte* dst, std::int8_t* scratch) {
  const std::int64_t k = w.cols(), nsb = k / s;
  const std::size_t sb_bytes = int8_panel_subblock_bytes(s, offsets);
  int8_group_rows(w, r0, rows, to_int8, s, offsets, scratch);
  const std::int8_t* q = scratch;
  const float* scale = reinterpret_cast<const float*>(scratch + 16 * k);
  const float* offset = scale + 16 * nsb;
  for (std::int64_t j = 0; j < nsb; ++j) {
    std::byte* p = dst + std::size_t(j) * sb_bytes;
    for (int g = 0; g < s / 4; ++g)
      for (int r = 0; r < 16; ++r) std::memcpy(p + 64 * g + 4 * r, q + r * k + j * s + 4 * g, 4);
    auto* sc = reinterpret_cast<float*>(p + 16 * s);
    for (int r = 0; r < 16; ++r) sc[r] = scale[r * nsb + j];
    if (offsets)
      for (int r = 0; r < 16; ++r) sc[16 + r] = offset[r * nsb + j];
  }
}

/// y[C rows, `rows` <= 16 columns] = C activation rows of x (from row t0) · one 16-row group.
/// Without VNNI the byte products are vpmaddubsw's (unsigned × signed bytes, pairs summed into
/// saturating int16): it multiplies |w| by x with w's sign (vpsignb), whose pair sums stay within
/// int16 (2 · 128 · 127 = 32512), then vpmaddwd by ones widens them into int32. Per 4 columns
/// and activation row: 2 vpsignb, 2 vpmaddubsw, 2 vpmaddwd, 2 vpaddd for 64 multiply-adds. The
/// tile is C = 2 activation rows × 16 weight rows (two ymm of 8): 4 int32 and 4 f32
/// accumulators, the weights and their magnitudes take the rest of the 16 registers. It covers
/// sub-blocks [j0, j1), adding to y unless `first`.
template <int C, int S, bool Offsets>
void int8_tile(const Int8Rows& x, std::int64_t t0, const std::byte* panel, float* y, std::int64_t ldy, int rows,
               std::int64_t j0, std::int64_t j1, bool first) {
  const std::int64_t k = x.k, nsb = k / S;
  constexpr std::size_t sb_bytes = int8_panel_subblock_bytes(S, Offsets);
  constexpr int R = int8_row_tile;
  const std::int64_t tile = t0 / R, lane = t0 % R;
  const std::int8_t* xq = x.q + tile * R * k + 4 * lane;
  const float* xd = x.d + tile * R * (k / 32) + lane;
  const float* xs = x.sums + tile * R * nsb + lane;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[C][2];
  LOOM_UNROLL
  for (int c = 0; c < C; ++c) {
    alignas(32) float in[16] = {};
    if (!first) std::memcpy(in, y + c * ldy, std::size_t(rows) * sizeof(float));
    acc[c][0] = _mm256_load_ps(in);
    acc[c][1] = _mm256_load_ps(in + 8);
  }
  for (std::int64_t j = j0; j < j1; ++j) {
    const std::byte* p = panel + std::size_t(j) * sb_bytes;
    __m256i ai[C][2];
    LOOM_UNROLL
    for (int c = 0; c < C; ++c) ai[c][0] = ai[c][1] = _mm256_setzero_si256();
    const std::int64_t k0 = j * S;
    const std::int8_t* px = xq + k0 * R;  // the sub-block's values: [S / 4][R rows][4]
    LOOM_NO_UNROLL  // unrolled, GCC 12 computes every step's operands first and spills them
    for (int g = 0; g < S / 4; ++g) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * g));
      const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * g + 32));
      const __m256i a0 = _mm256_abs_epi8(w0), a1 = _mm256_abs_epi8(w1);
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) {
        std::int32_t v;
        std::memcpy(&v, px + 4 * R * g + 4 * c, 4);
        const __m256i xv = _mm256_set1_epi32(v);
        ai[c][0] = _mm256_add_epi32(ai[c][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(xv, w0)), ones));
        ai[c][1] = _mm256_add_epi32(ai[c][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(xv, w1)), ones));
      }
    }
    const auto* sc = reinterpret_cast<const float*>(p + 16 * S);
    const __m256 sc0 = _mm256_loadu_ps(sc), sc1 = _mm256_loadu_ps(sc + 8);
    LOOM_UNROLL
    for (int c = 0; c < C; ++c) {
      const __m256 d = _mm256_set1_ps(xd[k0 / 32 * R + c]);
      acc[c][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[c][0]), _mm256_mul_ps(sc0, d), acc[c][0]);
      acc[c][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ai[c][1]), _mm256_mul_ps(sc1, d), acc[c][1]);
    }
    if constexpr (Offsets) {
      const __m256 off0 = _mm256_loadu_ps(sc + 16), off1 = _mm256_loadu_ps(sc + 24);
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) {
        const __m256 sum = _mm256_set1_ps(xs[j * R + c]);
        acc[c][0] = _mm256_fmadd_ps(off0, sum, acc[c][0]);
        acc[c][1] = _mm256_fmadd_ps(off1, sum, acc[c][1]);
      }
    }
  }
  LOOM_UNROLL
  for (int c = 0; c < C; ++c) {
    alignas(32) float out[16];
    _mm256_store_ps(out, acc[c][0]);
    _mm256_store_ps(out + 8, acc[c][1]);
    std::memcpy(y + c * ldy, out, std::size_t(rows) * sizeof(float));
  }
}

/// All n rows of x times one 16-row group, in tiles of 2 activation rows (then 1), by chunks of
/// 512 columns: a chunk of the group's panel (9 KiB) stays in L1 while every tile passes over it
/// (a whole panel, 36 KiB at k = 2048, does not).
template <int S, bool Offsets>
void int8_group(const Int8Rows& x, const std::byte* panel, float* y, std::int64_t ldy, int rows) {
  constexpr std::int64_t chunk = 512 / S;
  const std::int64_t nsb = x.k / S;
  for (std::int64_t j0 = 0; j0 < nsb; j0 += chunk) {
    const std::int64_t j1 = std::min(nsb, j0 + chunk);
    std::int64_t t = 0;
    for (; t + 2 <= x.n; t += 2) int8_tile<2, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows, j0, j1, j0 == 0);
    if (t < x.n) int8_tile<1, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows, j0, j1, j0 == 0);
  }
}

#endif

#if LOOM_LEVEL >= 1

/// y[n, rows] (row stride ldy) = x · (the panel's rows)ᵀ, the panel holding ⌈rows / 16⌉ groups of
/// sub-blocks of s columns (offsets when `offsets`).
inline void gemm_int8(const Int8Rows& x, const std::byte* panel, std::int64_t rows, int s, bool offsets, float* y,
                      std::int64_t ldy) {
  const std::size_t group_bytes = int8_panel_group_bytes(x.k, s, offsets);
  for (std::int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int r = int(std::min<std::int64_t>(16, rows - r0));
    const std::byte* p = panel + std::size_t(r0 / 16) * group_bytes;
    if (s == 32)
      offsets ? int8_group<32, true>(x, p, y + r0, ldy, r) : int8_group<32, false>(x, p, y + r0, ldy, r);
    else
      offsets ? int8_group<16, true>(x, p, y + r0, ldy, r) : int8_group<16, false>(x, p, y + r0, ldy, r);
  }
}

#endif
