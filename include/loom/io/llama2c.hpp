// llama2.c checkpoints (Karpathy's run.c "legacy" format), memory-mapped and used in place.
//
// Layout: 7 × int32 header `dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len`
// (a negative vocab_size means a separate classifier matrix at the end), then float32 arrays:
// token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
// wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
// w3 [L, hidden, dim], rms_final [dim], freq_cis_real and freq_cis_imag [seq_len, head_size/2]
// (unused), then wcls [vocab, dim] when not shared.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "loom/error.hpp"
#include "loom/io/mapped_file.hpp"
#include "loom/model/config.hpp"
#include "loom/model/weights.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

/// The 7-int32 llama2.c header.
struct Llama2cHeader {
  std::int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

struct Llama2cModel {
  Config config;
  Weights weights;
};

/// True when the first bytes look like a llama2.c legacy checkpoint header (plausible positive
/// sizes); used for format detection, which never relies on the file extension.
inline bool looks_like_llama2c(std::span<const std::byte> head) {
  if (head.size() < 28) return false;
  std::int32_t h[7];
  std::memcpy(h, head.data(), 28);
  for (int i : {0, 1, 2, 3, 4, 6})
    if (h[i] <= 0 || h[i] > (1 << 24)) return false;
  return h[5] != 0 && h[5] > -(1 << 24) && h[5] < (1 << 24) && h[3] % h[4] == 0 && h[0] % h[3] == 0;
}

/// Reads a llama2.c checkpoint from `file` (a mapping, or bytes in memory via
/// MappedFile::from_bytes) and returns its config and weight views into it (zero copy). Throws
/// Error(format, "llama2c") naming the file and the field for any inconsistent header or size.
inline Llama2cModel load_llama2c(std::shared_ptr<const MappedFile> file) {
  const std::string name = file->path();
  if (file->size() < sizeof(Llama2cHeader))
    fail(ErrorKind::format, "llama2c", "'", name, "': file has ", file->size(), " bytes, fewer than the 28-byte header");
  Llama2cHeader h;
  std::memcpy(&h, file->data(), sizeof h);
  if (std::memcmp(file->data(), "ak42", 4) == 0 || std::memcmp(file->data(), "24ka", 4) == 0)
    fail(ErrorKind::unsupported, "llama2c", "'", name, "': versioned llama2.c export (magic 'ak42') is not supported; "
         "export with --version 0 (legacy)");
  auto check = [&](std::int64_t v, const char* field) {
    if (v <= 0 || v > (std::int64_t(1) << 24))
      fail(ErrorKind::format, "llama2c", "'", name, "': header field ", field, " = ", v, " is out of range");
  };
  check(h.dim, "dim");
  check(h.hidden_dim, "hidden_dim");
  check(h.n_layers, "n_layers");
  check(h.n_heads, "n_heads");
  check(h.n_kv_heads, "n_kv_heads");
  check(h.seq_len, "seq_len");
  if (h.vocab_size == 0 || h.vocab_size == INT32_MIN)
    fail(ErrorKind::format, "llama2c", "'", name, "': header field vocab_size = ", h.vocab_size, " is out of range");
  const bool shared = h.vocab_size > 0;
  const std::int64_t vocab = shared ? h.vocab_size : -std::int64_t(h.vocab_size);
  check(vocab, "vocab_size");
  if (h.dim % h.n_heads != 0)
    fail(ErrorKind::format, "llama2c", "'", name, "': dim ", h.dim, " is not a multiple of n_heads ", h.n_heads);
  if (h.n_heads % h.n_kv_heads != 0)
    fail(ErrorKind::format, "llama2c", "'", name, "': n_heads ", h.n_heads, " is not a multiple of n_kv_heads ",
         h.n_kv_heads);

  Config c;
  c.architecture = "llama2c";
  c.vocab_size = std::int32_t(vocab);
  c.dim = h.dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.ffn_dim = h.hidden_dim;
  c.max_seq_len = h.seq_len;
  c.norm = NormKind::rms_norm;
  c.norm_eps = 1e-5f;
  c.position = PositionKind::rope;
  c.rope_layout = RopeLayout::interleaved;
  c.rope_theta = 10000.0f;
  c.activation = Activation::silu;
  c.gated_ffn = true;
  c.tied_embeddings = shared;
  c.validate("llama2c");

  // Walk the arrays in file order; every size is a product of values < 2^24 with at most
  // three factors per array and a layer count < 2^24, so 64-bit arithmetic cannot overflow.
  const std::int64_t L = h.n_layers, d = h.dim, kv = c.kv_dim(), f = h.hidden_dim;
  std::uint64_t offset = sizeof(Llama2cHeader);
  auto take = [&](Shape shape, const char* what) {
    const std::uint64_t bytes = std::uint64_t(shape.numel()) * 4;
    const auto span = file->bytes(offset, bytes, "llama2c", what);
    offset += bytes;
    return TensorRef{DType::f32, shape, span.data(), bytes};
  };
  auto per_layer = [](const TensorRef& all, std::int64_t l) {
    Shape s;
    s.rank = all.shape.rank - 1;
    for (int i = 0; i < s.rank; ++i) s.dims[std::size_t(i)] = all.shape[i + 1];
    const std::uint64_t bytes = std::uint64_t(s.numel()) * 4;
    return TensorRef{DType::f32, s, all.data + std::size_t(l) * bytes, bytes};
  };

  Weights w;
  w.token_embedding = take({vocab, d}, "token_embedding_table");
  const TensorRef rms_att = take({L, d}, "rms_att_weight");
  const TensorRef wq = take({L, d, d}, "wq");
  const TensorRef wk = take({L, kv, d}, "wk");
  const TensorRef wv = take({L, kv, d}, "wv");
  const TensorRef wo = take({L, d, d}, "wo");
  const TensorRef rms_ffn = take({L, d}, "rms_ffn_weight");
  const TensorRef w1 = take({L, f, d}, "w1");
  const TensorRef w2 = take({L, d, f}, "w2");
  const TensorRef w3 = take({L, f, d}, "w3");
  w.final_norm.weight = take({d}, "rms_final_weight");
  take({h.seq_len, c.head_dim / 2}, "freq_cis_real");
  take({h.seq_len, c.head_dim / 2}, "freq_cis_imag");
  w.output.weight = shared ? w.token_embedding : take({vocab, d}, "wcls");
  if (offset != file->size())
    fail(ErrorKind::format, "llama2c", "'", name, "': the header describes ", offset, " bytes but the file has ",
         file->size(), " (", file->size() - offset, " bytes left over): wrong header or not a llama2.c checkpoint");

  for (std::int64_t l = 0; l < L; ++l) {
    LayerWeights lw;
    lw.attn_norm.weight = per_layer(rms_att, l);
    lw.wq.weight = per_layer(wq, l);
    lw.wk.weight = per_layer(wk, l);
    lw.wv.weight = per_layer(wv, l);
    lw.wo.weight = per_layer(wo, l);
    lw.ffn_norm.weight = per_layer(rms_ffn, l);
    lw.w_gate.weight = per_layer(w1, l);
    lw.w_down.weight = per_layer(w2, l);
    lw.w_up.weight = per_layer(w3, l);
    w.layers.push_back(lw);
  }
  w.storage.push_back(file);
  return {std::move(c), std::move(w)};
}

/// Maps the llama2.c checkpoint at `path`; see load_llama2c(std::shared_ptr<const MappedFile>).
inline Llama2cModel load_llama2c(const std::filesystem::path& path) {
  return load_llama2c(std::make_shared<const MappedFile>(path));
}

}  // namespace loom::io
