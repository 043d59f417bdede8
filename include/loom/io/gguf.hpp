// GGUF reader (versions 2 and 3): maps the file, validates the header, the metadata and every
// tensor info before anything is used, and exposes tensors as TensorRefs into the mapping.
//
// Layout (little-endian):
//   "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count
//   kv_count × { string key, uint32 value_type, value }
//     value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte), 8 string,
//     9 array { uint32 element_type, uint64 count, elements }, 10 u64, 11 i64, 12 f64
//     string: uint64 length + bytes (no NUL)
//   tensor_count × { string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml_type, uint64 offset }
//     ne[0] is the innermost (contiguous) dimension: the reverse of the PyTorch shape
//   padding to `general.alignment` (default 32), then the data section; tensor offsets are
//   relative to its start and multiples of the alignment.
//
// Every count, length, dimension and offset is checked against the bytes left in the file and
// against overflow before it is used, so a hostile file fails with Error(format, "gguf") naming
// the key or tensor instead of allocating or reading out of bounds.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <span>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/io/mapped_file.hpp"
#include "loom/limits.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

/// A GGUF metadata value type (the numbers are the file's).
enum class GgufType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};

constexpr std::string_view to_string(GgufType t) noexcept {
  switch (t) {
    case GgufType::u8: return "u8";
    case GgufType::i8: return "i8";
    case GgufType::u16: return "u16";
    case GgufType::i16: return "i16";
    case GgufType::u32: return "u32";
    case GgufType::i32: return "i32";
    case GgufType::f32: return "f32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::u64: return "u64";
    case GgufType::i64: return "i64";
    case GgufType::f64: return "f64";
  }
  return "unknown";
}

/// Bytes of one value of a fixed-size type (numbers and bool); 0 for string and array.
constexpr std::size_t gguf_fixed_size(GgufType t) noexcept {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    case GgufType::string: case GgufType::array: return 0;
  }
  return 0;
}

class GgufValue;

/// An array value: its element type and elements (possibly arrays themselves). Arrays of numbers
/// and bools keep their elements as stored in the file (`raw`, little-endian, one copy) instead of
/// one GgufValue each, so their memory is their size in the file; `at(i)` reads one.
struct GgufArray {
  GgufType element = GgufType::u8;
  std::vector<GgufValue> items;  ///< elements of string and array arrays
  std::vector<std::byte> raw;    ///< elements of fixed-size arrays (gguf_fixed_size(element) bytes each)

  /// The number of elements.
  std::size_t size() const;
  /// Element i (i < size()).
  GgufValue at(std::size_t i) const;
};

/// One metadata value. Typed getters convert between integer types when the value fits and
/// otherwise throw Error(format, "gguf") naming `name` (the key) and the expected/actual type.
class GgufValue {
 public:
  GgufValue() = default;
  GgufValue(GgufType t, std::uint64_t v) : type_(t), v_(v) {}
  GgufValue(GgufType t, std::int64_t v) : type_(t), v_(v) {}
  GgufValue(GgufType t, double v) : type_(t), v_(v) {}
  explicit GgufValue(bool v) : type_(GgufType::boolean), v_(v) {}
  explicit GgufValue(std::string v) : type_(GgufType::string), v_(std::move(v)) {}
  explicit GgufValue(GgufArray v)
      : type_(GgufType::array), v_(std::make_shared<const GgufArray>(std::move(v))) {}

  GgufType type() const { return type_; }
  bool is_integer() const { return std::holds_alternative<std::uint64_t>(v_) || std::holds_alternative<std::int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  /// "u32", or "array of string" for arrays.
  std::string type_name() const {
    if (type_ != GgufType::array) return std::string(to_string(type_));
    return "array of " + std::string(to_string(array_data().element));
  }

  std::uint64_t as_u64(std::string_view name = "value") const { return as_integer<std::uint64_t>(name, "u64"); }
  std::int64_t as_i64(std::string_view name = "value") const { return as_integer<std::int64_t>(name, "i64"); }
  std::uint32_t as_u32(std::string_view name = "value") const { return as_integer<std::uint32_t>(name, "u32"); }
  std::int32_t as_i32(std::string_view name = "value") const { return as_integer<std::int32_t>(name, "i32"); }
  /// f32 or f64 values (as double).
  double as_f64(std::string_view name = "value") const {
    if (const double* d = std::get_if<double>(&v_)) return *d;
    mismatch(name, "f32 or f64");
  }
  float as_f32(std::string_view name = "value") const { return float(as_f64(name)); }
  bool as_bool(std::string_view name = "value") const {
    if (const bool* b = std::get_if<bool>(&v_)) return *b;
    mismatch(name, "bool");
  }
  const std::string& as_string(std::string_view name = "value") const {
    if (const std::string* s = std::get_if<std::string>(&v_)) return *s;
    mismatch(name, "string");
  }
  const GgufArray& as_array(std::string_view name = "value") const {
    if (type_ != GgufType::array) mismatch(name, "array");
    return array_data();
  }
  /// Number of elements of an array value.
  std::size_t size(std::string_view name = "value") const { return as_array(name).size(); }

  /// An array of strings as a vector (every element must be a string).
  std::vector<std::string> as_strings(std::string_view name = "value") const {
    const GgufArray& a = as_array(name);
    if (a.element != GgufType::string) mismatch(name, "array of string");
    std::vector<std::string> out;
    out.reserve(a.items.size());
    for (const GgufValue& v : a.items) out.push_back(v.as_string(name));
    return out;
  }
  /// An array of f32/f64 values as floats.
  std::vector<float> as_f32s(std::string_view name = "value") const {
    const GgufArray& a = as_array(name);
    if (a.element != GgufType::f32 && a.element != GgufType::f64) mismatch(name, "array of f32");
    std::vector<float> out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) out.push_back(a.at(i).as_f32(name));
    return out;
  }
  /// An array of integers that fit int32.
  std::vector<std::int32_t> as_i32s(std::string_view name = "value") const {
    const GgufArray& a = as_array(name);
    std::vector<std::int32_t> out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      const GgufValue v = a.at(i);
      if (!v.is_integer()) mismatch(name, "array of integers");
      out.push_back(v.as_i32(name));
    }
    return out;
  }

 private:
  const GgufArray& array_data() const { return *std::get<std::shared_ptr<const GgufArray>>(v_); }

  [[noreturn]] void mismatch(std::string_view name, std::string_view expected) const {
    fail(ErrorKind::format, "gguf", "key '", name, "': expected ", expected, ", got ", type_name());
  }

  template <typename T>
  T as_integer(std::string_view name, std::string_view expected) const {
    if (const auto* u = std::get_if<std::uint64_t>(&v_)) {
      if (*u <= std::uint64_t(std::numeric_limits<T>::max())) return T(*u);
      fail(ErrorKind::format, "gguf", "key '", name, "': value ", *u, " does not fit ", expected);
    }
    if (const auto* i = std::get_if<std::int64_t>(&v_)) {
      if (std::is_unsigned_v<T> ? *i >= 0 && std::uint64_t(*i) <= std::uint64_t(std::numeric_limits<T>::max())
                                : *i >= std::int64_t(std::numeric_limits<T>::min()) &&
                                      *i <= std::int64_t(std::numeric_limits<T>::max()))
        return T(*i);
      fail(ErrorKind::format, "gguf", "key '", name, "': value ", *i, " does not fit ", expected);
    }
    mismatch(name, std::string(expected) + " (or another integer type)");
  }

  GgufType type_ = GgufType::u8;
  std::variant<std::monostate, std::uint64_t, std::int64_t, double, bool, std::string,
               std::shared_ptr<const GgufArray>>
      v_;
};

inline std::size_t GgufArray::size() const {
  const std::size_t w = gguf_fixed_size(element);
  return w ? raw.size() / w : items.size();
}

inline GgufValue GgufArray::at(std::size_t i) const {
  const std::byte* p = raw.data() + i * gguf_fixed_size(element);
  auto get = [p](auto v) {
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (element) {
    case GgufType::u8: return {element, std::uint64_t(get(std::uint8_t()))};
    case GgufType::i8: return {element, std::int64_t(get(std::int8_t()))};
    case GgufType::u16: return {element, std::uint64_t(get(std::uint16_t()))};
    case GgufType::i16: return {element, std::int64_t(get(std::int16_t()))};
    case GgufType::u32: return {element, std::uint64_t(get(std::uint32_t()))};
    case GgufType::i32: return {element, std::int64_t(get(std::int32_t()))};
    case GgufType::u64: return {element, get(std::uint64_t())};
    case GgufType::i64: return {element, get(std::int64_t())};
    case GgufType::f32: return {element, double(get(float()))};
    case GgufType::f64: return {element, get(double())};
    case GgufType::boolean: return GgufValue(get(std::uint8_t()) != 0);
    case GgufType::string:
    case GgufType::array: break;
  }
  return items[i];
}

/// One tensor of a GGUF file.
struct GgufTensorInfo {
  std::string name;
  std::uint32_t ggml_type = 0;  ///< the type number in the file
  std::uint64_t offset = 0;     ///< relative to the data section
  TensorRef ref;                ///< dtype, PyTorch-order shape, bytes in the mapping
};

/// The name of ggml type `t` ("Q5_K"), or nullptr for numbers ggml never used.
constexpr const char* ggml_type_name(std::uint32_t t) noexcept {
  constexpr const char* names[] = {
      "F32",     "F16",     "Q4_0",    "Q4_1",    "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0",   "Q5_1",
      "Q8_0",    "Q8_1",    "Q2_K",    "Q3_K",    "Q4_K",           "Q5_K",           "Q6_K",   "Q8_K",
      "IQ2_XXS", "IQ2_XS",  "IQ3_XXS", "IQ1_S",   "IQ4_NL",         "IQ3_S",          "IQ2_S",  "IQ4_XS",
      "I8",      "I16",     "I32",     "I64",     "F64",            "IQ1_M",          "BF16",   "Q4_0_4_4 (removed)",
      "Q4_0_4_8 (removed)", "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0", "IQ4_NL_4_4 (removed)",
      "IQ4_NL_4_8 (removed)", "IQ4_NL_8_8 (removed)", "MXFP4"};
  return t < std::size(names) ? names[t] : nullptr;
}

/// The loom DType of a ggml type number, when loom reads it (every row of dtype_table but f64,
/// which no kernel multiplies).
constexpr std::optional<DType> dtype_of_ggml(std::uint32_t t) noexcept {
  for (const DTypeInfo& row : dtype_table)
    if (row.ggml_type == t && row.type != DType::f64) return row.type;
  return std::nullopt;
}

/// The ggml type number of a DType.
constexpr std::uint32_t ggml_type_of(DType t) noexcept { return is_dtype(t) ? dtype_table[std::size_t(t)].ggml_type : 0; }

namespace gguf_detail {

/// Bounds-checked little-endian reader over the mapped bytes.
class Cursor {
 public:
  Cursor(const std::byte* data, std::uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  std::uint64_t pos() const { return pos_; }
  std::uint64_t remaining() const { return size_ - pos_; }

  /// Throws unless n more bytes are available; `what` names the field being read.
  void need(std::uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail(ErrorKind::format, "gguf", "'", path_, "': ", what, ": needs ", n, " bytes at offset ",
           loom::detail::hex(pos_), " but the file ends at ", loom::detail::hex(size_));
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::byte> read_bytes(std::uint64_t n, const std::string& what) {
    need(n, what);
    const std::span<const std::byte> b(data_ + pos_, std::size_t(n));
    pos_ += n;
    return b;
  }
  std::string read_string(const std::string& what) {
    const auto len = read<std::uint64_t>(what + " (string length)");
    need(len, what + " (string of " + std::to_string(len) + " bytes)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), std::size_t(len));
    pos_ += len;
    return s;
  }

 private:
  const std::byte* data_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  const std::string& path_;
};

/// Smallest encoded size of one value of type t (for checking array counts before allocating).
constexpr std::uint64_t min_value_bytes(GgufType t) {
  switch (t) {
    case GgufType::u8:
    case GgufType::i8:
    case GgufType::boolean: return 1;
    case GgufType::u16:
    case GgufType::i16: return 2;
    case GgufType::u32:
    case GgufType::i32:
    case GgufType::f32: return 4;
    case GgufType::string:
    case GgufType::u64:
    case GgufType::i64:
    case GgufType::f64: return 8;
    case GgufType::array: return 12;
  }
  return 1;
}

inline constexpr int max_array_depth = 8;

inline bool valid_type(std::uint32_t t) { return t <= 12; }

inline GgufValue read_value(Cursor& c, GgufType type, const std::string& key, const std::string& path, int depth) {
  switch (type) {
    case GgufType::u8: return {type, std::uint64_t(c.read<std::uint8_t>("key '" + key + "'"))};
    case GgufType::i8: return {type, std::int64_t(c.read<std::int8_t>("key '" + key + "'"))};
    case GgufType::u16: return {type, std::uint64_t(c.read<std::uint16_t>("key '" + key + "'"))};
    case GgufType::i16: return {type, std::int64_t(c.read<std::int16_t>("key '" + key + "'"))};
    case GgufType::u32: return {type, std::uint64_t(c.read<std::uint32_t>("key '" + key + "'"))};
    case GgufType::i32: return {type, std::int64_t(c.read<std::int32_t>("key '" + key + "'"))};
    case GgufType::u64: return {type, c.read<std::uint64_t>("key '" + key + "'")};
    case GgufType::i64: return {type, c.read<std::int64_t>("key '" + key + "'")};
    case GgufType::f32: return {type, double(c.read<float>("key '" + key + "'"))};
    case GgufType::f64: return {type, c.read<double>("key '" + key + "'")};
    case GgufType::boolean: {
      const auto b = c.read<std::uint8_t>("key '" + key + "'");
      if (b > 1) fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "': bool value ", int(b), " is not 0 or 1");
      return GgufValue(b == 1);
    }
    case GgufType::string: return GgufValue(c.read_string("key '" + key + "'"));
    case GgufType::array: {
      if (depth >= max_array_depth)
        fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "': arrays nested more than ", max_array_depth,
             " deep");
      const auto et = c.read<std::uint32_t>("key '" + key + "' (array element type)");
      if (!valid_type(et))
        fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "': unknown array element type ", et);
      const auto count = c.read<std::uint64_t>("key '" + key + "' (array length)");
      const GgufType elem = GgufType(et);
      // Every element takes at least min_value_bytes: reject impossible counts before allocating.
      if (count > c.remaining() / min_value_bytes(elem))
        fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "': array of ", count, " ", to_string(elem),
             " elements cannot fit in the ", c.remaining(), " bytes left in the file");
      if (count > limits::gguf_array_elements)
        fail(ErrorKind::capacity, "gguf", "'", path, "': key '", key, "': array of ", count,
             " elements exceeds the limit of ", limits::gguf_array_elements);
      GgufArray a;
      a.element = elem;
      if (const std::size_t w = gguf_fixed_size(elem)) {  // numbers and bools: one copy of the bytes
        const std::span<const std::byte> b = c.read_bytes(count * w, "key '" + key + "'");
        if (elem == GgufType::boolean)
          for (std::size_t i = 0; i < b.size(); ++i)
            if (std::to_integer<int>(b[i]) > 1)
              fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "'[", i, "]: bool value ",
                   std::to_integer<int>(b[i]), " is not 0 or 1");
        a.raw.assign(b.begin(), b.end());
      } else {
        a.items.reserve(std::size_t(count));
        for (std::uint64_t i = 0; i < count; ++i) a.items.push_back(read_value(c, elem, key, path, depth + 1));
      }
      return GgufValue(std::move(a));
    }
  }
  fail(ErrorKind::format, "gguf", "'", path, "': key '", key, "': unknown value type ", std::uint32_t(type));
}

}  // namespace gguf_detail

/// A memory-mapped, fully validated GGUF file (v2 or v3). Tensors view the mapping; keep the
/// GgufFile alive while they are used.
class GgufFile {
 public:
  /// Maps and parses `path`. Throws Error(io) when it cannot be opened, Error(format, "gguf") for
  /// malformed content (naming the key or tensor), Error(unsupported) for GGUF v1, big-endian
  /// files or tensor types loom does not read.
  explicit GgufFile(const std::filesystem::path& path) : file_(path) { parse(); }

  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  GgufFile(GgufFile&&) = default;
  GgufFile& operator=(GgufFile&&) = default;

  const std::string& path() const { return file_.path(); }
  const MappedFile& file() const { return file_; }
  std::uint32_t version() const { return version_; }
  std::uint64_t tensor_count() const { return tensors_.size(); }
  std::uint64_t kv_count() const { return keys_.size(); }
  /// `general.alignment`, or 32.
  std::uint64_t alignment() const { return alignment_; }
  /// File offset of the data section.
  std::uint64_t data_offset() const { return data_offset_; }

  /// Metadata keys in file order.
  const std::vector<std::string>& keys() const { return keys_; }
  bool contains(std::string_view key) const { return kv_.find(key) != kv_.end(); }
  /// The value of `key`, or nullptr.
  const GgufValue* find(std::string_view key) const {
    const auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  }
  /// The value of `key`; throws Error(format) naming the key when it is absent.
  const GgufValue& at(std::string_view key) const {
    if (const GgufValue* v = find(key)) return *v;
    fail(ErrorKind::format, "gguf", "'", path(), "': missing key '", key, "'");
  }

  /// Typed lookup: T is one of std::uint32_t, std::int32_t, std::uint64_t, std::int64_t, float,
  /// double, bool, std::string. Throws Error(format) naming the key when absent or of another type.
  template <typename T>
  T get(std::string_view key) const {
    return convert<T>(at(key), key);
  }
  /// Typed lookup that returns nullopt when the key is absent (but throws on a type mismatch).
  template <typename T>
  std::optional<T> get_optional(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    return convert<T>(*v, key);
  }

  /// Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  /// The tensor called `name`, or nullptr.
  const GgufTensorInfo* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

 private:
  template <typename T>
  T convert(const GgufValue& v, std::string_view key) const {
    try {
      if constexpr (std::is_same_v<T, std::uint32_t>) return v.as_u32(key);
      else if constexpr (std::is_same_v<T, std::int32_t>) return v.as_i32(key);
      else if constexpr (std::is_same_v<T, std::uint64_t>) return v.as_u64(key);
      else if constexpr (std::is_same_v<T, std::int64_t>) return v.as_i64(key);
      else if constexpr (std::is_same_v<T, float>) return v.as_f32(key);
      else if constexpr (std::is_same_v<T, double>) return v.as_f64(key);
      else if constexpr (std::is_same_v<T, bool>) return v.as_bool(key);
      else if constexpr (std::is_same_v<T, std::string>) return v.as_string(key);
      else static_assert(sizeof(T) == 0, "unsupported GGUF value type");
    } catch (const Error& e) {
      // Add the file name to the value's message.
      std::string msg = e.what();
      const std::string prefix = "[loom.format.gguf] ";
      if (msg.starts_with(prefix)) msg.erase(0, prefix.size());
      fail(e.kind(), "gguf", "'", path(), "': ", msg);
    }
  }

  [[noreturn]] void bad(const std::string& what) const { fail(ErrorKind::format, "gguf", "'", path(), "': ", what); }

  void parse() {
    const std::string& p = path();
    gguf_detail::Cursor c(file_.data(), file_.size(), p);
    if (file_.size() < 4 || std::memcmp(file_.data(), "GGUF", 4) != 0) {
      std::string got;  // the first bytes, as hex
      for (std::size_t i = 0; i < std::min<std::size_t>(4, file_.size()); ++i) {
        if (i) got += ' ';
        got += loom::detail::hex(std::uint8_t(file_.data()[i]));
      }
      bad("not a GGUF file: the first bytes are [" + got + "], expected the magic 'GGUF'");
    }
    c.read<std::uint32_t>("magic");
    version_ = c.read<std::uint32_t>("header (version)");
    if (version_ == 1)
      fail(ErrorKind::unsupported, "gguf", "'", p, "': GGUF version 1 is not supported (only 2 and 3)");
    if ((version_ & 0xffff) == 0 && (version_ >> 16) != 0)
      fail(ErrorKind::unsupported, "gguf", "'", p, "': version field ", loom::detail::hex(version_),
           " looks like a big-endian GGUF, which is not supported");
    if (version_ != 2 && version_ != 3)
      fail(version_ > 3 ? ErrorKind::unsupported : ErrorKind::format, "gguf", "'", p, "': GGUF version ", version_,
           " is not supported (only 2 and 3)");
    const auto n_tensors = c.read<std::uint64_t>("header (tensor_count)");
    const auto n_kv = c.read<std::uint64_t>("header (kv_count)");
    // Minimal encodings: a key-value pair takes ≥ 13 bytes, a tensor info ≥ 24 bytes.
    if (n_kv > c.remaining() / 13)
      bad(loom::detail::cat("kv_count ", n_kv, " cannot fit in the ", c.remaining(), " bytes after the header"));
    if (n_tensors > c.remaining() / 24)
      bad(loom::detail::cat("tensor_count ", n_tensors, " cannot fit in the ", c.remaining(), " bytes after the header"));

    // Metadata.
    keys_.reserve(std::size_t(n_kv));
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      std::string key = c.read_string(loom::detail::cat("key ", i, " of ", n_kv));
      const auto type = c.read<std::uint32_t>("key '" + key + "' (value type)");
      if (!gguf_detail::valid_type(type)) bad(loom::detail::cat("key '", key, "': unknown value type ", type));
      GgufValue v = gguf_detail::read_value(c, GgufType(type), key, p, 0);
      if (kv_.contains(key)) bad("duplicate key '" + key + "'");
      keys_.push_back(key);
      kv_.emplace(std::move(key), std::move(v));
    }
    if (const GgufValue* a = find("general.alignment")) {
      if (!a->is_integer()) bad("key 'general.alignment': expected u32, got " + a->type_name());
      const std::uint64_t al = a->as_u64("general.alignment");
      if (al == 0 || !std::has_single_bit(al) || al > (std::uint64_t(1) << 30))
        bad(loom::detail::cat("key 'general.alignment': ", al, " is not a power of two in [1, 2^30]"));
      alignment_ = al;
    }

    // Tensor infos.
    tensors_.reserve(std::size_t(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.name = c.read_string(loom::detail::cat("tensor info ", i, " of ", n_tensors, " (name)"));
      const std::string what = "tensor '" + t.name + "'";
      const auto n_dims = c.read<std::uint32_t>(what + " (n_dims)");
      if (n_dims == 0 || n_dims > std::uint32_t(max_rank))
        bad(loom::detail::cat(what, ": n_dims ", n_dims, " is outside [1, ", max_rank, "]"));
      std::int64_t dims[max_rank] = {};
      std::int64_t numel = 1;
      bool overflow = false;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto ne = c.read<std::uint64_t>(what + " (dimensions)");
        if (ne > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
          bad(loom::detail::cat(what, ": dimension ", d, " = ", ne, " is too large"));
        dims[n_dims - 1 - d] = std::int64_t(ne);  // ne[0] innermost → last in PyTorch order
        overflow = overflow || __builtin_mul_overflow(numel, std::int64_t(ne), &numel);
      }
      t.ggml_type = c.read<std::uint32_t>(what + " (type)");
      t.offset = c.read<std::uint64_t>(what + " (offset)");
      std::string dims_str = "{";
      for (std::uint32_t d = 0; d < n_dims; ++d) dims_str += (d ? ", " : "") + std::to_string(dims[n_dims - 1 - d]);
      dims_str += "}";
      if (overflow) bad(what + ": the element count of dimensions " + dims_str + " overflows");
      const std::optional<DType> dt = dtype_of_ggml(t.ggml_type);
      if (!dt) {
        if (const char* name = ggml_type_name(t.ggml_type))
          fail(ErrorKind::unsupported, "gguf", "'", p, "': ", what, ": ggml type ", name, " (", t.ggml_type,
               ") is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q2_K, Q3_K, Q4_K, Q5_K,"
               " Q6_K)");
        bad(loom::detail::cat(what, ": unknown ggml type ", t.ggml_type));
      }
      const std::int64_t inner = dims[n_dims - 1];
      const std::optional<std::uint64_t> rb = row_bytes(*dt, inner);
      if (!rb)
        bad(loom::detail::cat(what, ": innermost dimension ", inner, " is not a multiple of the ", to_string(*dt),
                              " block size ", block_elems(*dt)));
      const std::uint64_t rows = inner == 0 ? 0 : std::uint64_t(numel / inner);
      if (rows != 0 && *rb > std::numeric_limits<std::uint64_t>::max() / rows)
        bad(what + ": the byte size of dimensions " + dims_str + " overflows");
      t.ref.dtype = *dt;
      t.ref.shape = Shape(std::span<const std::int64_t>(dims, n_dims));
      t.ref.nbytes = *rb * rows;
      if (tensor_index_.contains(t.name)) bad("duplicate tensor '" + t.name + "'");
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }

    // Data section: the next multiple of the alignment after the infos.
    const std::uint64_t end_of_infos = c.pos();
    data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;  // no overflow: pos ≤ file size
    for (GgufTensorInfo& t : tensors_) {
      const std::string what = "tensor '" + t.name + "'";
      if (t.offset % alignment_ != 0)
        bad(loom::detail::cat(what, ": data offset ", loom::detail::hex(t.offset), " is not a multiple of the alignment ",
                              alignment_));
      const std::uint64_t size = file_.size();
      const bool wraps = t.offset > std::numeric_limits<std::uint64_t>::max() - data_offset_ ||
                         data_offset_ + t.offset > std::numeric_limits<std::uint64_t>::max() - t.ref.nbytes;
      const std::uint64_t begin = data_offset_ + t.offset;
      if (wraps || begin + t.ref.nbytes > size)
        bad(loom::detail::cat(what, ": data [", wraps ? std::string("overflow") : loom::detail::hex(begin), ", ",
                              wraps ? std::string("overflow") : loom::detail::hex(begin + t.ref.nbytes),
                              ") extends past the end of the file (", loom::detail::hex(size), " bytes)"));
      t.ref.data = file_.data() + begin;
    }
    // No two tensors may share bytes (as for safetensors): sort the extents and compare neighbours.
    std::vector<const GgufTensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const GgufTensorInfo& t : tensors_)
      if (t.ref.nbytes > 0) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      const GgufTensorInfo& a = *by_offset[i - 1];
      const GgufTensorInfo& b = *by_offset[i];
      if (b.offset < a.offset + a.ref.nbytes)
        bad(loom::detail::cat("tensor '", b.name, "': data [", loom::detail::hex(b.offset), ", ",
                              loom::detail::hex(b.offset + b.ref.nbytes), ") overlaps tensor '", a.name, "' [",
                              loom::detail::hex(a.offset), ", ", loom::detail::hex(a.offset + a.ref.nbytes), ")"));
    }
  }

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue, std::less<>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

}  // namespace loom::io
