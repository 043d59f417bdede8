// Random quantized weights for the benchmarks, for the types loom has no quantizer for (the
// k-quants, IQ4_NL and IQ4_XS): random bytes, then every f16 scale of each block set to `scale`
// so that the weights stay small and finite.
#pragma once

#include <cstddef>
#include <cstring>
#include <loom/dtype.hpp>

namespace loom::bench {

/// Fills `bytes` bytes of blocks of type t at p: `random_byte()` for every byte, then the f16
/// scales (d, and dmin where the type has one) set to `scale`.
template <typename RandomByte>
void random_blocks(DType t, std::byte* p, std::size_t bytes, float scale, RandomByte&& random_byte) {
  for (std::size_t i = 0; i < bytes; ++i) p[i] = std::byte(random_byte());
  const std::size_t bb = block_bytes(t);
  std::size_t d_at = 0, dmin_at = 0;  // byte offsets in a block (dmin_at 0: no dmin)
  switch (t) {
    case DType::q4_k: dmin_at = offsetof(block_q4_k, dmin); break;
    case DType::q5_k: dmin_at = offsetof(block_q5_k, dmin); break;
    case DType::q2_k: d_at = offsetof(block_q2_k, d), dmin_at = offsetof(block_q2_k, dmin); break;
    case DType::q3_k: d_at = offsetof(block_q3_k, d); break;
    case DType::q6_k: d_at = offsetof(block_q6_k, d); break;
    default: break;  // the 32-weight blocks: d first
  }
  const f16 d = to_f16(scale);
  for (std::size_t b = 0; b + bb <= bytes; b += bb) {
    std::memcpy(p + b + d_at, &d, sizeof d);
    if (dmin_at) std::memcpy(p + b + dmin_at, &d, sizeof d);
  }
}

}  // namespace loom::bench
