// llama2.c `tokenizer.bin` → loom::Tokenizer, with the semantics of llama2.c's run.c.
//
// Format (little-endian): int32 max_token_length, then for each of vocab_size ids:
// float32 score, int32 len, len bytes of the piece (no NUL). Pieces hold real spaces (not ▁).
//
// run.c semantics reproduced:
//   * encode: optional BOS (id 1); a dummy-prefix " " when the text is non-empty; every character
//     looked up in the vocabulary, missing ones become byte tokens with id = byte + 3; then the
//     adjacent pair whose concatenation is a piece with the highest score is merged, repeatedly.
//   * decode: the leading space of the piece right after BOS is dropped; `<0xXX>` pieces give the
//     raw byte.
//   * ids 1 and 2 are BOS and EOS.
// Differences from run.c: control tokens (ids 1, 2) decode to "" unless render_special; a merge
// never produces a control/byte token; invalid UTF-8 in the input is split into single bytes
// (run.c glues stray continuation bytes onto the previous character before byte fallback).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "loom/error.hpp"
#include "loom/io/mapped_file.hpp"
#include "loom/tokenizer/tokenizer.hpp"

namespace loom::io {

/// Builds the tokenizer from the bytes of a tokenizer.bin. `source` names it in errors.
/// Throws Error(format, "llama2c") for truncated data, negative or oversized lengths, or fewer
/// entries than `vocab_size`; Error(invalid_argument) for vocab_size <= 0.
inline Tokenizer load_llama2c_tokenizer_bytes(std::span<const std::byte> data, std::int32_t vocab_size,
                                              const std::string& source = "<memory>") {
  auto bad = [&](const auto&... parts) { fail(ErrorKind::format, "llama2c", "'", source, "': ", parts...); };
  if (vocab_size <= 0)
    fail(ErrorKind::invalid_argument, "llama2c", "'", source, "': vocab_size must be positive, got ", vocab_size);
  std::size_t off = 0;
  auto read_i32 = [&](const char* what, std::int32_t id) {
    if (data.size() - off < 4) bad("truncated: ", what, id >= 0 ? loom::detail::cat(" of token ", id) : "", " at offset ", off, " (file has ", data.size(), " bytes)");
    std::int32_t v;
    std::memcpy(&v, data.data() + off, 4);
    off += 4;
    return v;
  };
  const std::int32_t max_len = read_i32("max_token_length", -1);
  if (max_len < 0) bad("max_token_length is negative (", max_len, ")");
  // Every entry needs at least 8 bytes: reject an impossible vocab_size before allocating.
  if (std::uint64_t(vocab_size) * 8 > data.size() - off)
    bad("holds fewer than ", vocab_size, " entries (", data.size(), " bytes)");

  TokenizerSpec spec;
  spec.source = source;
  spec.pieces.resize(std::size_t(vocab_size));
  spec.scores.resize(std::size_t(vocab_size));
  spec.types.assign(std::size_t(vocab_size), TokenType::normal);
  for (std::int32_t id = 0; id < vocab_size; ++id) {
    const std::int32_t score_bits = read_i32("score", id);
    float score;
    std::memcpy(&score, &score_bits, 4);
    if (!std::isfinite(score)) bad("token ", id, ": score is not finite");
    const std::int32_t len = read_i32("length", id);
    if (len < 0) bad("token ", id, ": negative length ", len);
    if (len > max_len) bad("token ", id, ": length ", len, " exceeds max_token_length ", max_len);
    if (data.size() - off < std::size_t(len))
      bad("truncated: token ", id, " needs ", len, " bytes at offset ", off, " but the file has ", data.size(), " bytes");
    spec.pieces[std::size_t(id)].assign(reinterpret_cast<const char*>(data.data() + off), std::size_t(len));
    spec.scores[std::size_t(id)] = score;
    off += std::size_t(len);
    if (loom::detail::parse_byte_piece(spec.pieces[std::size_t(id)]) >= 0) spec.types[std::size_t(id)] = TokenType::byte;
  }

  spec.merge_mode = MergeMode::scores;
  spec.normalizers.push_back({NormalizerStep::Kind::prepend, " ", {}});  // the dummy prefix
  if (vocab_size > 2) {
    spec.bos_id = 1;
    spec.eos_id = 2;
    spec.types[1] = spec.types[2] = TokenType::control;
    spec.prefix_ids = {1};
  }
  if (vocab_size >= 3 + 256) {  // run.c's byte fallback: id = byte + 3
    spec.byte_fallback = true;
    spec.byte_fallback_ids.resize(256);
    for (int b = 0; b < 256; ++b) spec.byte_fallback_ids[std::size_t(b)] = b + 3;
  }
  spec.decoder.byte_tokens = true;
  spec.decoder.strip = StripSpace::after_bos;
  return Tokenizer(std::move(spec));
}

/// The number of entries when `data` is a whole llama2.c tokenizer.bin — a plausible
/// max_token_length, then entries with a finite score and a length in [0, max_token_length] that
/// end exactly at the end of the data — else 0. Used to recognize the format by content.
inline std::int32_t llama2c_tokenizer_entries(std::span<const std::byte> data) {
  if (data.size() < 12) return 0;
  std::int32_t max_len;
  std::memcpy(&max_len, data.data(), 4);
  if (max_len <= 0 || max_len > (1 << 16)) return 0;
  std::size_t off = 4;
  std::int32_t n = 0;
  while (off < data.size()) {
    if (data.size() - off < 8 || n == INT32_MAX) return 0;
    float score;
    std::int32_t len;
    std::memcpy(&score, data.data() + off, 4);
    std::memcpy(&len, data.data() + off + 4, 4);
    if (!std::isfinite(score) || len < 0 || len > max_len || data.size() - off - 8 < std::size_t(len)) return 0;
    off += 8 + std::size_t(len);
    ++n;
  }
  return n;
}

/// Loads a llama2.c tokenizer.bin holding `vocab_size` entries (the model header's vocab size).
inline Tokenizer load_llama2c_tokenizer(const std::filesystem::path& path, std::int32_t vocab_size) {
  const MappedFile file(path);
  return load_llama2c_tokenizer_bytes(file.bytes(), vocab_size, file.path());
}

}  // namespace loom::io
