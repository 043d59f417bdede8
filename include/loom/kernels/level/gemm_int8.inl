// The prompt path's integer GEMM for quantized weights: y[n, m] = x[n, k] · Wᵀ with W's rows in
// their int8 form (quant/to_int8.inl) and x quantized to 8 bits per block of 32, multiplied with
// AVX-512 VNNI (`vpdpbusd`: 64 byte products summed into 16 int32 per instruction, four times
// the multiply-adds of an f32 FMA), or at AVX2 with vpmaddubsw (32 byte products in pairs,
// widened by vpmaddwd: twice an FMA's, see the AVX2 int8_tile). kernels/levels.hpp includes this
// file in every level's namespace; the reference level has no product (it keeps dequantizing to
// f32 for gemm_f32). No include guard.
//
// Activations (Int8Rows, made once per product by quantize_int8_rows): per block of 32 values a
// scale d = max|x| / 127 and int8 quants q = round(x / d); per weight sub-block −bias·Σq (it
// cancels the weights' bias below: 128 at AVX-512) and, for the offset types, d·Σq.
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

/// The bias of the panel's values at this level: AVX-512 stores every form plus 128 (vpdpbusd's
/// unsigned operand); AVX2 stores narrow forms plus their own bias, full-range ones as they are.
constexpr int int8_panel_bias(const Int8Form& form) {
#if LOOM_LEVEL == 2
  (void)form;
  return 128;
#else
  return form.bits < 8 ? form.bias : 0;
#endif
}

/// Rows of x → the Int8Rows arrays for weights of the given form (k a multiple of 32; rows past n
/// in the last tile are zero).
inline void quantize_int8_rows(const float* x, std::int64_t n, std::int64_t ldx, std::int64_t k, const Int8Form& form,
                               std::int8_t* q, float* d, std::int32_t* corr, float* sums) {
  constexpr int R = int8_row_tile;
  const int s = form.subblock, bias = int8_panel_bias(form);
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
        ct[b * R] = -bias * (s0 + s1), st[b * R] = db * float(s0 + s1);
      } else {
        ct[2 * b * R] = -bias * s0, st[2 * b * R] = db * float(s0);
        ct[(2 * b + 1) * R] = -bias * s1, st[(2 * b + 1) * R] = db * float(s1);
      }
    }
  }
}

#if LOOM_LEVEL >= 1

/// A 16-row group's int8 values q [16][k] and its scales and offsets [16][nsb], one per
/// sub-block of s columns, as int8_group_rows leaves them in pack_int8_group's scratch; and the
/// bytes of one sub-block of the packed panel.
struct Int8GroupRows {
  const std::int8_t* q;
  const float* scale;
  const float* offset;
  std::int64_t k, nsb;
  int s;
  std::size_t sb_bytes;
};

/// Rows [r0, r0 + rows) of w (rows <= 16) → their int8 values, scales and offsets in `scratch`
/// (int8_pack_scratch_bytes); the rows past `rows` are zero.
inline Int8GroupRows int8_group_rows(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8,
                                     const Int8Form& form, std::int8_t* scratch) {
  const int s = form.subblock;
  const std::int64_t k = w.cols(), nsb = k / s;
  std::int8_t* q = scratch;
  float* scale = reinterpret_cast<float*>(scratch + 16 * k);
  float* offset = scale + 16 * nsb;
  for (int r = 0; r < 16; ++r) {
    if (r < rows) {
      to_int8(w.row(r0 + r), k, q + r * k, scale + r * nsb, offset + r * nsb);
      if (!form.offsets) std::fill_n(offset + r * nsb, nsb, 0.0f);
    } else {
      std::memset(q + r * k, 0, std::size_t(k));
      std::fill_n(scale + r * nsb, nsb, 0.0f);
      std::fill_n(offset + r * nsb, nsb, 0.0f);
    }
  }
  return {q, scale, offset, k, nsb, s, int8_panel_subblock_bytes(s, form.offsets)};
}

#endif

#if LOOM_LEVEL == 2

/// Rows [r0, r0 + rows) of w (rows <= 16) → one 16-row group of the panel at dst; the rows past
/// `rows` are zero. Every 64 bytes of the panel are one gather of the 16 rows' 4 values from
/// `scratch` (int8_group_rows), then biased by 128.
inline void pack_int8_group(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, const Int8Form& form,
                            std::byte* dst, std::int8_t* scratch) {
  const auto [q, scale, offset, k, nsb, s, sb_bytes] = int8_group_rows(w, r0, rows, to_int8, form, scratch);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i row_at = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(std::int32_t(k)));
  const __m512i scale_at = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(std::int32_t(nsb)));
  const __m512i bias = _mm512_set1_epi8(-128);
  for (std::int64_t j = 0; j < nsb; ++j) {
    std::byte* p = dst + std::size_t(j) * sb_bytes;
    for (int g = 0; g < s / 4; ++g)
      _mm512_storeu_si512(p + 64 * g, _mm512_xor_si512(_mm512_i32gather_epi32(row_at, q + j * s + 4 * g, 1), bias));
    _mm512_storeu_ps(reinterpret_cast<float*>(p + 16 * s), _mm512_i32gather_ps(scale_at, scale + j, 4));
    if (form.offsets)
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
void int8_group(const Int8Rows& x, const std::byte* panel, float* y, std::int64_t ldy, int rows, const Int8Form&) {
  std::int64_t t = 0;
  static_assert(int8_row_tile == 8);
  for (; t + 8 <= x.n; t += 8) int8_tile<8, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows);
  if (x.n - t >= 4) int8_tile<4, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows), t += 4;
  if (x.n - t >= 2) int8_tile<2, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows), t += 2;
  if (x.n - t >= 1) int8_tile<1, S, Offsets>(x, t, panel, y + t * ldy, ldy, rows);
}

#elif LOOM_LEVEL == 1

/// Rows [r0, r0 + rows) of w (rows <= 16) → one 16-row group of the panel at dst, the layout of
/// the AVX-512 level's. Narrow forms (bits < 8) are stored plus their bias, unsigned bytes as
/// vpmaddubsw's first operand takes them; the others as they are (signed), int8_tile below takes
/// their magnitudes and gives their signs to the activations.
inline void pack_int8_group(const TensorRef& w, std::int64_t r0, int rows, ToInt8Row to_int8, const Int8Form& form,
                            std::byte* dst, std::int8_t* scratch) {
  const auto [q, scale, offset, k, nsb, s, sb_bytes] = int8_group_rows(w, r0, rows, to_int8, form, scratch);
  // q + bias < 2^bits <= 128: still an int8
  const __m128i bias = _mm_set1_epi8(std::int8_t(form.bits < 8 ? form.bias : 0));
  for (std::int64_t j = 0; j < nsb; ++j) {
    std::byte* p = dst + std::size_t(j) * sb_bytes;
    // 4 rows × 4 groups of 4 values at a time: a 4 × 4 transpose of 32-bit lanes, each row's
    // 16 bytes loaded once (one 4-byte copy per row and group took 5 % of a prompt).
    for (int g0 = 0; g0 < s / 4; g0 += 4)
      for (int r = 0; r < 16; r += 4) {
        __m128i a[4];
        for (int i = 0; i < 4; ++i)
          a[i] = _mm_add_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + (r + i) * k + j * s + 4 * g0)), bias);
        const __m128i t0 = _mm_unpacklo_epi32(a[0], a[1]), t1 = _mm_unpacklo_epi32(a[2], a[3]);  // groups 0, 1
        const __m128i t2 = _mm_unpackhi_epi32(a[0], a[1]), t3 = _mm_unpackhi_epi32(a[2], a[3]);  // groups 2, 3
        const __m128i out[4] = {_mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1), _mm_unpacklo_epi64(t2, t3),
                                _mm_unpackhi_epi64(t2, t3)};
        for (int i = 0; i < 4; ++i) _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 64 * (g0 + i) + 4 * r), out[i]);
      }
    auto* sc = reinterpret_cast<float*>(p + 16 * s);
    for (int r = 0; r < 16; ++r) sc[r] = scale[r * nsb + j];
    if (form.offsets)
      for (int r = 0; r < 16; ++r) sc[16 + r] = offset[r * nsb + j];
  }
}

/// Groups of 4 columns whose vpmaddubsw results int8_tile adds in int16 before widening them, for
/// weights of `bits` bits (unsigned): a pair sum is at most 2 · (2^bits − 1) · 127, activations
/// lying in [−127, 127]. 8 groups for 4-bit weights, 4 for 5-bit, 2 for 6-bit.
constexpr int int16_groups(int bits) { return 32767 / (2 * 127 * ((1 << bits) - 1)); }

/// A tile row's two accumulators from y's `rows` <= 16 values (zeros for nullptr), and back. A
/// whole group (16) is two direct vector loads / stores: memcpy of a run-time length is a library
/// call, and loading a vector just written in pieces stalls its store forwarding (together 4 %
/// of a TinyLlama prompt on AMD Zen 3).
inline void acc_load(__m256 (&acc)[2], const float* y, int rows) {
  if (y != nullptr && rows == 16) {
    acc[0] = _mm256_loadu_ps(y);
    acc[1] = _mm256_loadu_ps(y + 8);
    return;
  }
  alignas(32) float in[16] = {};
  if (y != nullptr) std::memcpy(in, y, std::size_t(rows) * sizeof(float));
  acc[0] = _mm256_load_ps(in);
  acc[1] = _mm256_load_ps(in + 8);
}
inline void acc_store(const __m256 (&acc)[2], float* y, int rows) {
  if (rows == 16) {
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + 8, acc[1]);
    return;
  }
  alignas(32) float out[16];
  _mm256_store_ps(out, acc[0]);
  _mm256_store_ps(out + 8, acc[1]);
  std::memcpy(y, out, std::size_t(rows) * sizeof(float));
}

/// One activation row's step of the AVX2 tile for narrow weights, 4 columns of 16 rows (w0: rows
/// 0–7, w1: rows 8–15, 4 unsigned bytes each): x's 4 bytes broadcast, and the byte-pair products
/// added to the int16 sums, h0 += vpmaddubsw(w0, x), h1 += vpmaddubsw(w1, x). Written as asm
/// because GCC 12 compiles the intrinsics with each weight vector loaded twice and a register
/// copy of every sum per step (21 instructions per 128 multiply-adds where 12 do): a TinyLlama
/// Q4_0 prompt went from 42–48 to 55–66 % of the int8 peak (docs/performance-notes.md).
inline void maddubs_step(__m256i& h0, __m256i& h1, __m256i w0, __m256i w1, const std::int8_t* x) {
  __m256i xv, t;
  __asm__(
      "{vpbroadcastd %[x], %[xv]|vpbroadcastd %[xv], %[x]}\n\t"
      "{vpmaddubsw %[xv], %[w0], %[t]|vpmaddubsw %[t], %[w0], %[xv]}\n\t"
      "{vpaddw %[t], %[h0], %[h0]|vpaddw %[h0], %[h0], %[t]}\n\t"
      "{vpmaddubsw %[xv], %[w1], %[t]|vpmaddubsw %[t], %[w1], %[xv]}\n\t"
      "{vpaddw %[t], %[h1], %[h1]|vpaddw %[h1], %[h1], %[t]}"
      : [h0] "+x"(h0), [h1] "+x"(h1), [xv] "=&x"(xv), [t] "=&x"(t)
      : [w0] "x"(w0), [w1] "x"(w1), [x] "m"(*reinterpret_cast<const std::int32_t*>(x)));
}

/// y[C rows, `rows` <= 16 columns] = C activation rows of x (from row t0) · one 16-row group.
/// Without VNNI the byte products are vpmaddubsw's: unsigned × signed bytes, pairs summed into
/// saturating int16. Narrow weights (bits < 8, stored plus their bias: unsigned) go in as they
/// are, and the products of Run groups of 4 columns are added in int16 (int16_groups: no sum can
/// saturate), then widened by one vpmaddwd with ones; the bias comes back out through the
/// activations' sums (corr = −bias·Σx). Per 4 columns, 16 weight rows and activation
/// row of 4-bit weights: 2 vpmaddubsw, 2 vpaddw, and a quarter of 2 vpmaddwd + 2 vpaddd, for 64
/// multiply-adds. Full-range weights (Q8_0, IQ4) take |w| and x with w's sign (vpsignb), whose
/// pair sums stay within int16 (2 · 128 · 127 = 32512), widened at every group: 2 vpsignb, 2
/// vpmaddubsw, 2 vpmaddwd, 2 vpaddd. The tile is C = 2 activation rows × 16 weight rows (two ymm
/// of 8); it covers sub-blocks [j0, j1), adding to y unless `first`.
template <int C, int S, bool Offsets, int Run>
void int8_tile(const Int8Rows& x, std::int64_t t0, const std::byte* panel, float* y, std::int64_t ldy, int rows,
               std::int64_t j0, std::int64_t j1, bool first) {
  constexpr bool Narrow = Run > 0;
  const std::int64_t k = x.k, nsb = k / S;
  constexpr std::size_t sb_bytes = int8_panel_subblock_bytes(S, Offsets);
  constexpr int R = int8_row_tile;
  const std::int64_t tile = t0 / R, lane = t0 % R;
  const std::int8_t* xq = x.q + tile * R * k + 4 * lane;
  const float* xd = x.d + tile * R * (k / 32) + lane;
  const std::int32_t* xc = x.corr + tile * R * nsb + lane;
  const float* xs = x.sums + tile * R * nsb + lane;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[C][2];
  LOOM_UNROLL
  for (int c = 0; c < C; ++c) acc_load(acc[c], first ? nullptr : y + c * ldy, rows);
  for (std::int64_t j = j0; j < j1; ++j) {
    const std::byte* p = panel + std::size_t(j) * sb_bytes;
    const std::int64_t k0 = j * S;
    const std::int8_t* px = xq + k0 * R;  // the sub-block's values: [S / 4][R rows][4]
    __m256i ai[C][2];
    if constexpr (Narrow) {
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) ai[c][0] = ai[c][1] = _mm256_setzero_si256();
      LOOM_NO_UNROLL
      for (int g0 = 0; g0 < S / 4; g0 += Run) {
        __m256i h[C][2];
        LOOM_UNROLL
        for (int c = 0; c < C; ++c) h[c][0] = h[c][1] = _mm256_setzero_si256();
        LOOM_NO_UNROLL
        for (int g = g0; g < g0 + Run; ++g) {
          const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * g));
          const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * g + 32));
          LOOM_UNROLL
          for (int c = 0; c < C; ++c) maddubs_step(h[c][0], h[c][1], w0, w1, px + 4 * R * g + 4 * c);
        }
        LOOM_UNROLL
        for (int c = 0; c < C; ++c) {
          ai[c][0] = _mm256_add_epi32(ai[c][0], _mm256_madd_epi16(h[c][0], ones));
          ai[c][1] = _mm256_add_epi32(ai[c][1], _mm256_madd_epi16(h[c][1], ones));
        }
      }
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) {
        const __m256i corr = _mm256_set1_epi32(xc[j * R + c]);  // −bias·Σx
        ai[c][0] = _mm256_add_epi32(ai[c][0], corr);
        ai[c][1] = _mm256_add_epi32(ai[c][1], corr);
      }
    } else {
      LOOM_UNROLL
      for (int c = 0; c < C; ++c) ai[c][0] = ai[c][1] = _mm256_setzero_si256();
      LOOM_NO_UNROLL
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
  for (int c = 0; c < C; ++c) acc_store(acc[c], y + c * ldy, rows);
}

/// All n rows of x times one 16-row group, in tiles of 2 activation rows (then 1), by chunks of
/// 512 columns: a chunk of the group's panel (9 KiB) stays in L1 while every tile passes over it
/// (a whole panel, 36 KiB at k = 2048, does not).
template <int S, bool Offsets, int Run>
void int8_group_of(const Int8Rows& x, const std::byte* panel, float* y, std::int64_t ldy, int rows) {
  constexpr std::int64_t chunk = 512 / S;
  const std::int64_t nsb = x.k / S;
  for (std::int64_t j0 = 0; j0 < nsb; j0 += chunk) {
    const std::int64_t j1 = std::min(nsb, j0 + chunk);
    std::int64_t t = 0;
    for (; t + 2 <= x.n; t += 2)
      int8_tile<2, S, Offsets, Run>(x, t, panel, y + t * ldy, ldy, rows, j0, j1, j0 == 0);
    if (t < x.n) int8_tile<1, S, Offsets, Run>(x, t, panel, y + t * ldy, ldy, rows, j0, j1, j0 == 0);
  }
}

/// int8_group_of for the form: Run groups of 4 columns added in int16, a power of two up to
/// int16_groups and the sub-block's S / 4 (0: full-range weights).
template <int S, bool Offsets>
void int8_group(const Int8Rows& x, const std::byte* panel, float* y, std::int64_t ldy, int rows, const Int8Form& form) {
  const int run = form.bits < 8 ? std::min(S / 4, int16_groups(form.bits)) : 0;
  if (run >= S / 4)
    int8_group_of<S, Offsets, S / 4>(x, panel, y, ldy, rows);
  else if (run >= 4)
    int8_group_of<S, Offsets, 4>(x, panel, y, ldy, rows);
  else if (run >= 2)
    int8_group_of<S, Offsets, 2>(x, panel, y, ldy, rows);
  else if (run >= 1)
    int8_group_of<S, Offsets, 1>(x, panel, y, ldy, rows);
  else
    int8_group_of<S, Offsets, 0>(x, panel, y, ldy, rows);
}

#endif

#if LOOM_LEVEL >= 1

/// y[n, rows] (row stride ldy) = x · (the panel's rows)ᵀ, the panel holding ⌈rows / 16⌉ groups of
/// weights of the given form.
inline void gemm_int8(const Int8Rows& x, const std::byte* panel, std::int64_t rows, const Int8Form& form, float* y,
                      std::int64_t ldy) {
  const std::size_t group_bytes = int8_panel_group_bytes(x.k, form.subblock, form.offsets);
  for (std::int64_t r0 = 0; r0 < rows; r0 += 16) {
    const int r = int(std::min<std::int64_t>(16, rows - r0));
    const std::byte* p = panel + std::size_t(r0 / 16) * group_bytes;
    if (form.subblock == 32)
      form.offsets ? int8_group<32, true>(x, p, y + r0, ldy, r, form) : int8_group<32, false>(x, p, y + r0, ldy, r, form);
    else
      form.offsets ? int8_group<16, true>(x, p, y + r0, ldy, r, form) : int8_group<16, false>(x, p, y + r0, ldy, r, form);
  }
}

#endif
