// Quantized blocks: the layouts of ggml's weight blocks (dtype.hpp has their structs), the
// 8-bit activation blocks the dot products read, and helpers every quant file shares.
//
// Block layouts (see dtype.hpp for the structs):
//   Q8_0  32 weights: w = d·q,            q int8
//   Q4_0  32 weights: w = d·(q − 8),      q 4-bit; byte j holds weight j (low nibble), j+16 (high)
//   Q4_1  32 weights: w = d·q + m,        q 4-bit as Q4_0
//   Q5_0  32 weights: w = d·(q − 16),     q 5-bit: low 4 bits as Q4_0, bit 4 of weight j = bit j of qh
//   Q5_1  32 weights: w = d·q + m,        q 5-bit as Q5_0
//   IQ4_NL 32 weights: w = d·v[q],        q 4-bit as Q4_0, v = iq4_nl_values
//   IQ4_XS 256 weights: 8 sub-blocks of 32 laid out as IQ4_NL's: w = d·(ls_j − 32)·v[q], ls_j 6-bit
//   Q2_K 256 weights: 16 sub-blocks of 16: w = d·sc_j·q − dmin·m_j, q 2-bit, sc_j / m_j 4-bit;
//         bits 2k, 2k+1 of qs[32n+l] are weight 128n+32k+l
//   Q3_K 256 weights: 16 sub-blocks of 16: w = d·(sc_j − 32)·(q − 4·(1 − h)), q as Q2_K, h = bit
//         4n+k of hmask[l] for the same weight, sc_j 6-bit packed in 12 bytes
//   Q4_K 256 weights: 8 sub-blocks of 32: w = d·sc_j·q − dmin·m_j, q 4-bit, sc_j / m_j 6-bit
//         packed in 12 bytes; qs byte 32k+l holds weight 64k+l (low) and 64k+32+l (high)
//   Q5_K 256 weights: Q4_K plus bit 4 of the quants in qh: bits 2k / 2k+1 of qh[l] are those of
//         weights 64k+l / 64k+32+l
//   Q6_K 256 weights: 16 sub-blocks of 16: w = d·sc_j·(q − 32), q 6-bit = 4 low bits in ql,
//         2 high bits in qh; sc_j int8
//
// Activations are quantized per weight type: the 32-weight blocks and IQ4_XS (whose sub-blocks
// are 32-weight blocks) use `block_q8_grouped` (groups of 16 blocks of 32 values, an f32 scale and the
// sum of the quants per block), the k-quants use `block_q8_k` (256 values, one f32 scale, sums of
// every 16) so that a whole super-block is one integer sum.
//
// Names: `block32_*` helpers work on any of the 32-weight blocks (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
// and IQ4_XS's 32-weight sub-blocks); `block_q8_grouped` is the grouped activation format above.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <type_traits>

#include "loom/dtype.hpp"
#include "loom/error.hpp"

namespace loom::kernels {

/// Activations quantized to int8 for the 32-weight blocks, 16 blocks of 32 values (512 values)
/// per group, laid out for the SIMD dot products: the 512 quants (in the order q8_grouped_offset
/// gives), then the 16 scales, then the 16 sums of quants (for the Q4_0 / Q5_0 and signed-byte
/// offsets and the mins of Q4_1 / Q5_1). Value i of block j: x ≈ d[j]·qs[q8_grouped_offset(halves, j,
/// i)]. A row's last group may be partial; its unused blocks are all zero.
struct block_q8_grouped {
  std::int8_t qs[16 * qk8_0];
  float d[16];
  std::int32_t sum[16];
};
/// 256 activations quantized to int8 with one scale: value i ≈ d·qs[q8_k_offset(q4_k, i)];
/// bsums[j] = the sum of the quants of values 16j .. 16j+15.
struct block_q8_k {
  float d;
  std::int8_t qs[qk_k];
  std::int16_t bsums[qk_k / 16];
};
static_assert(sizeof(block_q8_grouped) == 640);
inline constexpr std::int64_t q8_grouped_blocks = 16;  ///< blocks per block_q8_grouped

/// Where value i (0..31) of block j (0..15) sits among a block_q8_grouped's 512 quants. For Q8_0
/// weights (`halves` false) each block's 32 values are in order, so one 64-byte load meets two
/// weight blocks. Q4_0 byte i holds weights i (low nibble) and i + 16 (high nibble), so for Q4_0
/// (`halves` true) every four blocks store their first 16 values, then their last 16: one
/// 64-byte load meets the low nibbles of four weight blocks, the next one their high nibbles.
constexpr int q8_grouped_offset(bool halves, int j, int i) noexcept {
  return halves ? 128 * (j / 4) + 64 * (i / 16) + 16 * (j % 4) + i % 16 : qk8_0 * j + i;
}
static_assert(sizeof(block_q8_k) == 292);

/// Whether activations for weight type w are stored in q8_grouped_offset's `halves` order: the types
/// whose 32-weight blocks hold two weights per byte (Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS).
constexpr bool nibble_halves(DType w) noexcept {
  return w == DType::q4_0 || w == DType::q4_1 || w == DType::q5_0 || w == DType::q5_1 || w == DType::iq4_nl ||
         w == DType::iq4_xs;
}

/// Whether the dot products of weight type w read block_q8_grouped activations (Q8_0 and the nibble
/// types above); the other k-quants read block_q8_k.
constexpr bool q8_grouped_activations(DType w) noexcept { return w == DType::q8_0 || nibble_halves(w); }

/// Where value i (0..255) sits among a block_q8_k's quants. Q2_K, Q3_K and Q6_K (`q4_k` false)
/// read them in order. A Q4_K (and Q5_K) super-block stores sub-blocks 4h, 4h+1, 4h+2, 4h+3 of 32
/// weights (h = 0, 1) in 64 bytes whose low nibbles are sub-blocks 4h and 4h+2 and high nibbles
/// 4h+1 and 4h+3, so for Q4_K / Q5_K (`q4_k` true) each 128 values store their sub-blocks in the
/// order 0, 2, 1, 3: one 64-byte load meets the low nibbles, the next the high nibbles.
constexpr int q8_k_offset(bool q4_k, int i) noexcept {
  if (!q4_k) return i;
  const int s = i % 128 / 32;  // sub-block within the 128; 0, 2, 1, 3 → positions 0, 1, 2, 3
  return i - i % 128 + 32 * (s == 1 ? 2 : s == 2 ? 1 : s) + i % 32;
}

/// The 8-bit activation blocks a quantized weight type's dot product reads.
enum class ActivationFormat : std::uint8_t { none, q8_grouped, q8_k };

/// block_q8_grouped for Q8_0, the 32-weight nibble types and IQ4_XS; block_q8_k for the other k-quants.
constexpr ActivationFormat activation_format_of(DType w) noexcept {
  if (!is_quantized(w)) return ActivationFormat::none;
  return q8_grouped_activations(w) ? ActivationFormat::q8_grouped : ActivationFormat::q8_k;
}

/// Bytes of quantized activations a row of n values needs for a weight of type w.
constexpr std::size_t activation_bytes(DType w, std::int64_t n) noexcept {
  switch (activation_format_of(w)) {
    case ActivationFormat::q8_grouped: return std::size_t((n / qk8_0 + q8_grouped_blocks - 1) / q8_grouped_blocks) * sizeof(block_q8_grouped);
    case ActivationFormat::q8_k: return std::size_t(n / qk_k) * sizeof(block_q8_k);
    default: return 0;
  }
}

namespace detail {

inline float f16f(f16 h) { return to_float(h); }

inline void check_multiple(std::int64_t n, std::int64_t block, const char* what) {
  if (n < 0 || n % block != 0)
    fail(ErrorKind::invalid_argument, "kernels", what, ": row length ", n, " is not a multiple of ", block);
}

/// How far ahead of the block being multiplied the dot products ask for their row's bytes.
/// Hardware prefetchers alone leave a core short of misses in flight on some machines
/// (measurements: docs/performance-notes.md, "Software prefetch distance").
inline constexpr std::size_t quant_prefetch_distance = 2048;

/// Prefetches the cache lines of [p + distance, p + distance + bytes) into L1 (one request per
/// 64 bytes); every kernel that streams rows ahead of the hardware prefetcher uses it. A
/// prefetch never faults, so the lines may lie past the row's end; the address is formed as an
/// integer, not by pointer arithmetic beyond the object.
inline void prefetch_ahead(const void* p, std::size_t bytes, std::size_t distance = quant_prefetch_distance) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) + distance;
#if defined(__GNUC__) || defined(__clang__)
  for (std::size_t o = 0; o < bytes; o += 64) __builtin_prefetch(reinterpret_cast<const void*>(a + o), 0, 3);
#else
  (void)a, (void)bytes;
#endif
}

/// A dot product's version for several rows of activations, where one exists (`rows` > 1):
/// run<N>(n, w, a, out) sets out[t] to what Dot(n, w, a[t]) returns, bit for bit, for N ≤ rows,
/// reading each weight block once for the N rows (a batch of decoding sequences).
template <auto Dot>
struct MultiRowDot {
  static constexpr int rows = 1;
};

}  // namespace detail

// ---- Q4_K scale unpacking ------------------------------------------------------------------

/// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block. Bytes 0-3 hold the low 6
/// bits of scales 0-3, bytes 4-7 the low 6 bits of mins 0-3; bytes 8-11 hold the low 4 bits of
/// scale / min 4-7 (low / high nibble), whose top 2 bits are the top bits of bytes 0-3 / 4-7.
inline void q4_k_scale_min(int j, const std::uint8_t* s, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = std::uint8_t((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    m = std::uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

/// All eight scales (low 8 bytes) and mins (high 8 bytes) of a Q4_K super-block at once, with
/// 32-bit word operations equivalent to q4_k_scale_min (bytes j of the results are sub-block j's).
inline void q4_k_scales_mins(const std::uint8_t* s, std::uint64_t& scales, std::uint64_t& mins) {
  std::uint32_t u[3];
  std::memcpy(u, s, 12);
  scales = std::uint64_t(u[0] & 0x3f3f3f3fu) |
           std::uint64_t((u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u)) << 32;
  mins = std::uint64_t(u[1] & 0x3f3f3f3fu) |
         std::uint64_t(((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u)) << 32;
}


}  // namespace loom::kernels
