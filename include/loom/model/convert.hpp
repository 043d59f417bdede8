// Converting a model's matrices to another storage type in memory: quantize at load
// (f32/f16/bf16 → q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k or q6_k) or change
// precision (→ f16, bf16, f32). Norm scales and biases stay as they are. Matrices stored [in, out]
// (GPT-2 Conv1D) come out [out, in], the layout the quantized kernels read.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/quant.hpp"
#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"

namespace loom {

namespace detail {

/// Writes n f32 values as `type` at dst (n a multiple of the type's block size).
inline void store_row(DType type, const float* x, std::byte* dst, std::int64_t n) {
  switch (type) {
    case DType::f32:
      std::memcpy(dst, x, std::size_t(n) * 4);
      return;
    case DType::f16:
      for (std::int64_t i = 0; i < n; ++i) {
        const f16 h = to_f16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::bf16:
      for (std::int64_t i = 0; i < n; ++i) {
        const bf16 h = to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default:
      kernels::quantize_row(type, x, dst, n);  // Error(unsupported) for a type without a quantizer
      return;
  }
}

/// Whether convert_weights can store matrices as `type`: f32, f16, bf16 and the types with a
/// quantizer (kernels::quantize_row).
constexpr bool convertible_to(DType type) {
  switch (type) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::q8_0:
    case DType::q4_0:
    case DType::q4_1:
    case DType::q5_0:
    case DType::q5_1:
    case DType::iq4_nl:
    case DType::iq4_xs:
    case DType::q4_k:
    case DType::q5_k:
    case DType::q6_k: return true;
    default: return false;
  }
}

}  // namespace detail

/// The type a matrix with rows of `cols` elements gets when `type` is asked for: quantized types
/// need whole blocks per row. Rows that are not whole 256-weight super-blocks take llama.cpp's
/// quantizer's fallback when they are whole 32-weight blocks (IQ4_XS → IQ4_NL, Q4_K → Q5_0, Q5_K
/// → Q5_1, Q6_K → Q8_0); anything else is stored as f16 (as llama.cpp's converter does).
inline DType storage_type_for(DType type, std::int64_t cols) {
  if (cols % block_elems(type) == 0) return type;
  if (cols % qk4_0 == 0) {
    if (type == DType::iq4_xs) return DType::iq4_nl;
    if (type == DType::q4_k) return DType::q5_0;
    if (type == DType::q5_k) return DType::q5_1;
    if (type == DType::q6_k) return DType::q8_0;
  }
  return DType::f16;
}

/// A new [out, in] matrix of `type` holding the values of `w`; its buffer is added to `storage`.
inline TensorRef convert_matrix(const TensorRef& w, bool in_out, DType type,
                                std::vector<std::shared_ptr<const void>>& storage) {
  const std::int64_t out = in_out ? w.cols() : w.rows(), in = in_out ? w.rows() : w.cols();
  const DType t = storage_type_for(type, in);
  const std::uint64_t rb = *row_bytes(t, in);
  auto buf = std::make_shared<std::vector<std::byte>>(std::size_t(rb * std::uint64_t(out)));
  std::vector<float> row(static_cast<std::size_t>(in));
  if (in_out) {
    // Transpose once through f32 instead of gathering every column separately.
    std::vector<float> all(static_cast<std::size_t>(in * out));
    for (std::int64_t i = 0; i < in; ++i) kernels::row_to_f32(w, i, all.data() + i * out);
    for (std::int64_t o = 0; o < out; ++o) {
      for (std::int64_t i = 0; i < in; ++i) row[std::size_t(i)] = all[std::size_t(i * out + o)];
      detail::store_row(t, row.data(), buf->data() + std::size_t(o) * rb, in);
    }
  } else {
    for (std::int64_t o = 0; o < out; ++o) {
      kernels::row_to_f32(w, o, row.data());
      detail::store_row(t, row.data(), buf->data() + std::size_t(o) * rb, in);
    }
  }
  storage.push_back(buf);
  return TensorRef{t, Shape{out, in}, buf->data(), buf->size()};
}

/// Weights with every matrix (linear layers, token embedding, output) converted to `type`
/// (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k, q6_k) and stored
/// [out, in]. The result shares the small vectors with `w` and keeps `w`'s memory alive.
inline Weights convert_weights(const Weights& w, DType type) {
  if (!detail::convertible_to(type))
    fail(ErrorKind::unsupported, "convert", "cannot convert weights to ", to_string(type),
         " (supported: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q4_k, q5_k, q6_k)");
  Weights out = w;
  auto linear = [&](Linear& l) {
    if (l.empty()) return;
    l.weight = convert_matrix(l.weight, l.in_out, type, out.storage);
    l.in_out = false;
  };
  for (LayerWeights& l : out.layers)
    for (Linear* x : {&l.wqkv, &l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) linear(*x);
  const bool tied = w.output.weight.data == w.token_embedding.data;
  out.token_embedding = convert_matrix(w.token_embedding, false, type, out.storage);
  if (tied)
    out.output.weight = out.token_embedding;
  else
    linear(out.output);
  return out;
}

}  // namespace loom
