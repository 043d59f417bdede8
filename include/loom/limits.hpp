// loom's limits on outside input, as data in one place (docs/errors.md lists them).
//
// Every bound here protects a process from a hostile or broken file: each is far above what any
// real model, tokenizer or prompt needs, and each is checked BEFORE the work or the allocation it
// bounds, so exceeding one is an Error naming the file, the field and the limit — never a stack
// overflow, a runaway allocation or a hang.
#pragma once

#include <cstdint>

namespace loom::limits {

/// Nesting depth of JSON arrays and objects (config.json, tokenizer.json, tokenizer_config.json,
/// a safetensors header or index). Checked by a scan of the text before it is parsed, so no
/// recursive step (building, copying, printing a value for a message) ever sees a deeper value.
/// Real files nest fewer than 10 levels.
inline constexpr int json_depth = 128;

/// Size of a JSON text loom reads whole (tokenizer.json, config.json, tokenizer_config.json).
/// The largest real tokenizer.json files are ~35 MB.
inline constexpr std::uint64_t json_file_bytes = std::uint64_t(256) << 20;

/// `Sequence` normalizers / pre-tokenizers / post-processors nested inside each other.
inline constexpr int tokenizer_nesting = 8;
/// Normalizer, pre-tokenizer or post-processor steps in one tokenizer.json (after flattening).
inline constexpr int tokenizer_steps = 64;
/// Normalization may make a text at most this many times longer (plus what Prepend steps add):
/// the product over the Replace steps of max(1, len(content) / len(pattern)).
inline constexpr double normalizer_growth = 64;

/// Elements of one GGUF metadata array (the largest vocabularies have ~260k tokens and merges).
inline constexpr std::uint64_t gguf_array_elements = std::uint64_t(1) << 24;

/// Bytes of a prompt or text file (`generate -f`, `perplexity -f`).
inline constexpr std::uint64_t text_file_bytes = std::uint64_t(16) << 20;

}  // namespace loom::limits
