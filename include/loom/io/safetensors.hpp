// Safetensors reader: maps a `.safetensors` file, validates its header completely before any use,
// and exposes every tensor as a TensorRef pointing into the mapping (zero copy).
//
// Format (https://huggingface.co/docs/safetensors): `uint64 N` (little-endian), N bytes of JSON,
// then the data section. The JSON is an object: an optional `"__metadata__"` object of strings and,
// for each tensor, `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}` with offsets
// relative to the data section (byte 8 + N) and `end` exclusive.
//
// Sharded checkpoints (`model.safetensors.index.json` with a `weight_map` of tensor name → shard
// file) are read through SafetensorsSet, which maps every shard once.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/io/json_text.hpp"
#include "loom/io/mapped_file.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

namespace detail {

/// Safetensors dtype name → loom DType for the supported ones.
inline std::optional<DType> safetensors_dtype(std::string_view s) {
  if (s == "F32") return DType::f32;
  if (s == "F16") return DType::f16;
  if (s == "BF16") return DType::bf16;
  if (s == "F64") return DType::f64;
  return std::nullopt;
}

/// Valid safetensors dtypes that loom does not read.
inline bool known_unsupported_safetensors_dtype(std::string_view s) {
  static constexpr std::array<std::string_view, 16> names = {
      "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "C64",
      "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"};
  return std::find(names.begin(), names.end(), s) != names.end();
}

/// The little-endian uint64 at the start of a safetensors file.
inline std::uint64_t safetensors_header_length(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::uint64_t(std::to_integer<std::uint8_t>(p[i]));
  return v;
}

}  // namespace detail

/// One mapped `.safetensors` file. Construction maps the file and validates the whole header
/// (sizes, JSON, dtypes, shapes, offsets, overlaps, duplicate names); afterwards every tensor is a
/// TensorRef into the mapping. A tensor whose data is misaligned for its element type is copied
/// once into an aligned buffer owned by this object, so kernels never read unaligned floats.
///
/// Errors: Error(io, "file") when the file cannot be opened; Error(format, "safetensors") for
/// malformed headers; Error(unsupported, "safetensors") for valid dtypes loom does not read
/// (I8, I32, BOOL, F8_*, ...) and ranks above 4. Messages name the file and the tensor.
class SafetensorsFile {
 public:
  using TensorMap = std::map<std::string, TensorRef, std::less<>>;
  using Metadata = std::map<std::string, std::string, std::less<>>;

  /// Largest header accepted (as the reference implementation: 100 MB).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  explicit SafetensorsFile(const std::filesystem::path& path) : file_(path) { parse(); }
  /// Reads an already opened file, or bytes in memory (`MappedFile::from_bytes`).
  explicit SafetensorsFile(MappedFile file) : file_(std::move(file)) { parse(); }

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// The file's path as given.
  const std::string& path() const { return file_.path(); }
  /// The mapping the in-place tensors point into.
  const MappedFile& mapping() const { return file_; }
  /// Every tensor, by name.
  const TensorMap& tensors() const { return tensors_; }
  /// The `__metadata__` entries (empty when absent).
  const Metadata& metadata() const { return metadata_; }
  /// Byte offset of the data section in the file (8 + header length).
  std::uint64_t data_offset() const { return data_offset_; }

  /// The tensor called `name`, or nullptr.
  const TensorRef* find(std::string_view name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  /// The tensor called `name`; throws Error(format, "safetensors") naming it and the file when absent.
  const TensorRef& at(std::string_view name) const {
    if (const TensorRef* t = find(name)) return *t;
    fail(ErrorKind::format, "safetensors", "'", path(), "': no tensor '", name, "'");
  }
  /// True when `t`'s bytes lie inside the mapping (false for tensors copied to fix alignment).
  bool in_place(const TensorRef& t) const {
    const std::byte* b = file_.data();
    return b && t.data >= b && t.data <= b + file_.size();
  }
  /// Number of tensors that had to be copied because their data was misaligned.
  std::size_t copied_tensors() const { return copies_.size(); }

 private:
  [[noreturn]] void bad(std::string_view tensor, const std::string& msg) const {
    fail(ErrorKind::format, "safetensors", "'", path(), "': tensor '", tensor, "': ", msg);
  }

  void parse() {
    using loom::detail::cat;
    using json = nlohmann::json;
    const std::uint64_t size = file_.size();
    if (size < 8)
      fail(ErrorKind::format, "safetensors", "'", path(), "': file is ", size,
           " bytes, too short for the 8-byte header length");
    const std::uint64_t n = detail::safetensors_header_length(file_.data());
    if (n > size - 8)
      fail(ErrorKind::format, "safetensors", "'", path(), "': header length ", n, " (", loom::detail::hex(n),
           ") extends past the end of the file (", size, " bytes)");
    if (n > max_header_bytes)
      fail(ErrorKind::format, "safetensors", "'", path(), "': header length ", n, " exceeds the limit of ",
           max_header_bytes, " bytes");
    data_offset_ = 8 + n;
    const std::uint64_t data_size = size - data_offset_;
    const auto header_bytes = file_.bytes(8, n, "safetensors", "JSON header");
    const std::string_view text(reinterpret_cast<const char*>(header_bytes.data()), header_bytes.size());
    const json header = detail::parse_json_unique_keys(text, "safetensors", path(), "header");
    if (!header.is_object())
      fail(ErrorKind::format, "safetensors", "'", path(), "': header is a JSON ", detail::json_type(header),
           ", expected an object");

    struct Range {
      std::uint64_t begin, end;
      const std::string* name;
    };
    std::vector<Range> ranges;
    std::vector<std::pair<std::string, std::pair<TensorRef, std::uint64_t>>> entries;  // ref + begin
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object())
          fail(ErrorKind::format, "safetensors", "'", path(), "': __metadata__ is a ", detail::json_type(entry),
               ", expected an object of strings");
        for (const auto& [k, v] : entry.items()) {
          if (!v.is_string())
            fail(ErrorKind::format, "safetensors", "'", path(), "': __metadata__ entry '", k, "' is a ",
                 detail::json_type(v), ", expected a string");
          metadata_.emplace(k, v.get<std::string>());
        }
        continue;
      }
      if (!entry.is_object()) bad(name, cat("entry is a ", detail::json_type(entry), ", expected an object"));

      // dtype
      const auto dt = entry.find("dtype");
      if (dt == entry.end()) bad(name, "missing 'dtype'");
      if (!dt->is_string()) bad(name, cat("'dtype' is a ", detail::json_type(*dt), ", expected a string"));
      const std::string dtype_name = dt->get<std::string>();
      const std::optional<DType> dtype = detail::safetensors_dtype(dtype_name);
      if (!dtype) {
        if (detail::known_unsupported_safetensors_dtype(dtype_name))
          fail(ErrorKind::unsupported, "safetensors", "'", path(), "': tensor '", name, "': dtype '", dtype_name,
               "' is not supported (loom reads F32, F16, BF16, F64)");
        bad(name, cat("unknown dtype '", dtype_name, "'"));
      }

      // shape
      const auto sh = entry.find("shape");
      if (sh == entry.end()) bad(name, "missing 'shape'");
      if (!sh->is_array()) bad(name, cat("'shape' is a ", detail::json_type(*sh), ", expected an array"));
      std::vector<std::int64_t> dims;
      for (const json& d : *sh) {
        const std::optional<std::uint64_t> v = detail::json_non_negative(d);
        if (!v || *v > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          bad(name, cat("shape ", detail::json_brief(*sh), " holds ", detail::json_brief(d),
                        ", expected non-negative integers"));
        dims.push_back(std::int64_t(*v));
      }
      if (dims.size() > std::size_t(max_rank))
        fail(ErrorKind::unsupported, "safetensors", "'", path(), "': tensor '", name, "': shape ",
             detail::json_brief(*sh), " has rank ", dims.size(), "; loom supports at most ", max_rank);

      // data_offsets
      const auto off = entry.find("data_offsets");
      if (off == entry.end()) bad(name, "missing 'data_offsets'");
      if (!off->is_array() || off->size() != 2)
        bad(name, cat("'data_offsets' is ", detail::json_brief(*off), ", expected [begin, end]"));
      const std::optional<std::uint64_t> begin = detail::json_non_negative((*off)[0]), end = detail::json_non_negative((*off)[1]);
      if (!begin || !end)
        bad(name, cat("data_offsets ", detail::json_brief(*off), " must be non-negative integers"));
      const std::string offs = cat("data_offsets [", *begin, ", ", *end, "]");
      if (*begin > *end) bad(name, offs + ": begin is after end");
      if (*end > data_size)
        bad(name, cat(offs, " extend past the end of the data section (", data_size, " bytes at file offset ",
                      loom::detail::hex(data_offset_), ")"));

      // size = product(shape) * element size, overflow-checked
      std::uint64_t bytes = block_bytes(*dtype);
      bool overflow = false;
      for (std::int64_t d : dims) {
        if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / std::uint64_t(d)) overflow = true;
        bytes *= std::uint64_t(d);
        if (d == 0) overflow = false;  // a zero dimension makes the product 0 whatever came before
      }
      const Shape shape{std::span<const std::int64_t>(dims)};
      if (overflow) bad(name, cat("shape ", shape.str(), " of ", dtype_name, " overflows the byte count"));
      if (bytes != *end - *begin)
        bad(name, cat("shape ", shape.str(), " of ", dtype_name, " needs ", bytes, " bytes but ", offs, " hold ",
                      *end - *begin));

      TensorRef ref;
      ref.dtype = *dtype;
      ref.shape = shape;
      ref.nbytes = bytes;
      entries.emplace_back(name, std::make_pair(ref, *begin));
    }

    // Ranges must not overlap (zero-byte tensors occupy nothing).
    for (const auto& [name, rb] : entries)
      if (rb.first.nbytes > 0) ranges.push_back({rb.second, rb.second + rb.first.nbytes, &name});
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    for (std::size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].begin < ranges[i - 1].end)
        bad(*ranges[i].name, cat("data_offsets [", ranges[i].begin, ", ", ranges[i].end, "] overlap tensor '",
                                 *ranges[i - 1].name, "' [", ranges[i - 1].begin, ", ", ranges[i - 1].end, "]"));

    // Point into the mapping, or copy misaligned data into an aligned buffer.
    for (auto& [name, rb] : entries) {
      TensorRef ref = rb.first;
      const std::byte* p = file_.data() + data_offset_ + rb.second;
      const std::size_t align = block_bytes(ref.dtype);
      if (reinterpret_cast<std::uintptr_t>(p) % align != 0) {
        // operator new[] returns memory aligned for any fundamental type (≥ 8 bytes).
        auto buf = std::make_unique<std::byte[]>(std::size_t(std::max<std::uint64_t>(ref.nbytes, 1)));
        std::memcpy(buf.get(), p, std::size_t(ref.nbytes));
        p = buf.get();
        copies_.push_back(std::move(buf));
      }
      ref.data = p;
      tensors_.emplace(name, ref);
    }
  }

  MappedFile file_;
  std::uint64_t data_offset_ = 0;
  TensorMap tensors_;
  Metadata metadata_;
  std::vector<std::unique_ptr<std::byte[]>> copies_;  ///< aligned copies of misaligned tensors
};

/// The tensors of a checkpoint that may be split over several files: either one
/// `.safetensors` file, or the shards named by a `model.safetensors.index.json` (`weight_map`:
/// tensor name → shard file, relative to the index). Every shard is mapped once; every tensor must
/// be in exactly the shard the index names, and every tensor of a shard must be in the index.
class SafetensorsSet {
 public:
  struct Entry {
    TensorRef ref;
    std::size_t file = 0;  ///< index into files()
  };
  using TensorMap = std::map<std::string, Entry, std::less<>>;

  /// `path` is a `.safetensors` file, an `*.index.json` file, or a directory holding
  /// `model.safetensors.index.json` (preferred) or `model.safetensors`.
  explicit SafetensorsSet(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      if (fs::exists(path / "model.safetensors.index.json", ec))
        open_index(path / "model.safetensors.index.json");
      else if (fs::exists(path / "model.safetensors", ec))
        open_single(path / "model.safetensors");
      else
        fail(ErrorKind::io, "safetensors", "'", path.string(),
             "': no model.safetensors or model.safetensors.index.json in this directory");
    } else if (path.string().ends_with(".json")) {
      open_index(path);
    } else {
      open_single(path);
    }
  }

  /// The mapped files (shards in file-name order).
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
  /// Every tensor of every file, by name.
  const TensorMap& tensors() const { return tensors_; }
  /// The index file, or the single file, this set was opened from (for messages).
  const std::string& source() const { return source_; }

  /// The tensor called `name`, or nullptr.
  const TensorRef* find(std::string_view name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second.ref;
  }
  /// The path of the file holding `name` (empty when absent).
  std::string file_of(std::string_view name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? std::string() : files_[it->second.file]->path();
  }

 private:
  void open_single(const std::filesystem::path& p) {
    source_ = p.string();
    files_.push_back(std::make_shared<const SafetensorsFile>(p));
    for (const auto& [name, ref] : files_.back()->tensors()) tensors_.emplace(name, Entry{ref, 0});
  }

  void open_index(const std::filesystem::path& index) {
    namespace fs = std::filesystem;
    source_ = index.string();
    const MappedFile text_file(index);
    const std::string_view text(reinterpret_cast<const char*>(text_file.data()), text_file.size());
    const nlohmann::json j = detail::parse_json_unique_keys(text, "safetensors", source_, "index");
    auto bad = [&](const std::string& msg) { fail(ErrorKind::format, "safetensors", "'", source_, "': ", msg); };
    if (!j.is_object()) bad("index is a JSON " + detail::json_type(j) + ", expected an object");
    const auto wm = j.find("weight_map");
    if (wm == j.end()) bad("missing 'weight_map'");
    if (!wm->is_object()) bad("'weight_map' is a " + detail::json_type(*wm) + ", expected an object");
    if (wm->empty()) bad("'weight_map' is empty");

    std::map<std::string, std::size_t, std::less<>> shard_index;  // shard file name → files_ index
    std::vector<std::pair<std::string, std::string>> wanted;       // tensor → shard file name
    for (const auto& [name, shard] : wm->items()) {
      if (!shard.is_string())
        bad("weight_map: tensor '" + name + "' maps to a " + detail::json_type(shard) + ", expected a file name");
      const std::string s = shard.get<std::string>();
      const fs::path rel(s);
      bool escapes = s.empty() || rel.is_absolute();
      for (const auto& part : rel)
        if (part == "..") escapes = true;
      if (escapes) bad("weight_map: tensor '" + name + "': shard '" + s + "' is not a file name beside the index");
      shard_index.emplace(s, 0);
      wanted.emplace_back(name, s);
    }
    // Map every shard once, in file-name order.
    for (auto& [s, fi] : shard_index) {
      fi = files_.size();
      files_.push_back(std::make_shared<const SafetensorsFile>(index.parent_path() / fs::path(s)));
    }
    for (const auto& [name, s] : wanted) {
      const std::size_t fi = shard_index.find(s)->second;
      const TensorRef* ref = files_[fi]->find(name);
      if (!ref)
        bad("weight_map: tensor '" + name + "' is mapped to '" + files_[fi]->path() + "', which does not contain it");
      tensors_.emplace(name, Entry{*ref, fi});
    }
    for (std::size_t fi = 0; fi < files_.size(); ++fi)
      for (const auto& [name, ref] : files_[fi]->tensors()) {
        auto it = tensors_.find(name);
        if (it == tensors_.end())
          fail(ErrorKind::format, "safetensors", "'", files_[fi]->path(), "': tensor '", name,
               "' is not listed in the index '", source_, "'");
        if (it->second.file != fi)
          fail(ErrorKind::format, "safetensors", "'", files_[fi]->path(), "': tensor '", name,
               "' is also in '", files_[it->second.file]->path(), "' (the shard the index names)");
      }
  }

  std::string source_;
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  TensorMap tensors_;
};

}  // namespace loom::io
