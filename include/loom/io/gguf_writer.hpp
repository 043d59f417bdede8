// GgufWriter: writes GGUF v3 files (metadata of every value type, tensors of the supported
// types, `general.alignment` honoured), the inverse of GgufFile.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/io/gguf.hpp"
#include "loom/tensor.hpp"

namespace loom::io {

class GgufWriter {
 public:
  /// `alignment`: data alignment (a power of two); written as general.alignment when not 32.
  explicit GgufWriter(std::uint32_t alignment = 32) : alignment_(alignment) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
      fail(ErrorKind::invalid_argument, "gguf", "alignment ", alignment, " is not a power of two");
    if (alignment != 32) add_u32("general.alignment", alignment);
  }

  void add_u8(const std::string& k, std::uint8_t v) { scalar(k, GgufType::u8, v); }
  void add_i8(const std::string& k, std::int8_t v) { scalar(k, GgufType::i8, v); }
  void add_u16(const std::string& k, std::uint16_t v) { scalar(k, GgufType::u16, v); }
  void add_i16(const std::string& k, std::int16_t v) { scalar(k, GgufType::i16, v); }
  void add_u32(const std::string& k, std::uint32_t v) { scalar(k, GgufType::u32, v); }
  void add_i32(const std::string& k, std::int32_t v) { scalar(k, GgufType::i32, v); }
  void add_u64(const std::string& k, std::uint64_t v) { scalar(k, GgufType::u64, v); }
  void add_i64(const std::string& k, std::int64_t v) { scalar(k, GgufType::i64, v); }
  void add_f32(const std::string& k, float v) { scalar(k, GgufType::f32, v); }
  void add_f64(const std::string& k, double v) { scalar(k, GgufType::f64, v); }
  void add_bool(const std::string& k, bool v) { scalar(k, GgufType::boolean, std::uint8_t(v ? 1 : 0)); }
  void add_string(const std::string& k, const std::string& v) {
    key(k, GgufType::string);
    str(v);
  }
  void add_strings(const std::string& k, const std::vector<std::string>& v) {
    array_header(k, GgufType::string, v.size());
    for (const auto& s : v) str(s);
  }
  void add_f32s(const std::string& k, const std::vector<float>& v) { array(k, GgufType::f32, v); }
  void add_i32s(const std::string& k, const std::vector<std::int32_t>& v) { array(k, GgufType::i32, v); }

  /// Adds a tensor of `shape` (PyTorch order, outermost first) whose bytes are `data` (moved in).
  void add_tensor(const std::string& name, DType type, const Shape& shape, std::vector<std::byte> data) {
    if (!tensor_names_.insert(name).second) fail(ErrorKind::invalid_argument, "gguf", "duplicate tensor '", name, "'");
    const auto rb = row_bytes(type, shape.rank ? shape[shape.rank - 1] : 1);
    if (!rb || *rb * std::uint64_t(shape.rank ? shape.numel() / std::max<std::int64_t>(shape[shape.rank - 1], 1) : 1) !=
                   data.size())
      fail(ErrorKind::invalid_argument, "gguf", "tensor '", name, "': ", data.size(), " bytes do not hold ",
           shape.str(), " of ", to_string(type));
    tensors_.push_back({name, type, shape, std::move(data)});
  }

  /// Writes the file. Throws Error(io) naming the path when it cannot be written.
  void write(const std::filesystem::path& path) const {
    std::vector<std::byte> out;
    put(out, std::uint32_t(0x46554747));  // "GGUF"
    put(out, std::uint32_t(3));
    put(out, std::uint64_t(tensors_.size()));
    put(out, n_kv_);
    out.insert(out.end(), kv_.begin(), kv_.end());
    std::uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
      put_str(out, t.name);
      put(out, std::uint32_t(t.shape.rank));
      for (int i = t.shape.rank - 1; i >= 0; --i) put(out, std::uint64_t(t.shape[i]));  // innermost first
      put(out, ggml_type_of(t.type));
      put(out, offset);
      offset = align(offset + t.data.size());
    }
    out.resize(std::size_t(align(out.size())));
    for (const Tensor& t : tensors_) {
      out.insert(out.end(), t.data.begin(), t.data.end());
      out.resize(std::size_t(align(out.size())));
    }
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));
    if (!f) fail(ErrorKind::io, "gguf", "cannot write '", path.string(), "'");
  }

 private:
  struct Tensor {
    std::string name;
    DType type;
    Shape shape;
    std::vector<std::byte> data;
  };

  template <typename T>
  static void put(std::vector<std::byte>& out, T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    out.insert(out.end(), p, p + sizeof v);
  }
  static void put_str(std::vector<std::byte>& out, const std::string& s) {
    put(out, std::uint64_t(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
  }
  std::uint64_t align(std::uint64_t x) const { return (x + alignment_ - 1) / alignment_ * alignment_; }

  void key(const std::string& k, GgufType t) {
    if (!keys_.insert(k).second) fail(ErrorKind::invalid_argument, "gguf", "duplicate key '", k, "'");
    put_str(kv_, k);
    put(kv_, std::uint32_t(t));
    ++n_kv_;
  }
  void str(const std::string& s) { put_str(kv_, s); }
  template <typename T>
  void scalar(const std::string& k, GgufType t, T v) {
    key(k, t);
    put(kv_, v);
  }
  void array_header(const std::string& k, GgufType element, std::size_t n) {
    key(k, GgufType::array);
    put(kv_, std::uint32_t(element));
    put(kv_, std::uint64_t(n));
  }
  template <typename T>
  void array(const std::string& k, GgufType element, const std::vector<T>& v) {
    array_header(k, element, v.size());
    for (const T& x : v) put(kv_, x);
  }

  std::uint32_t alignment_;
  std::vector<std::byte> kv_;
  std::uint64_t n_kv_ = 0;
  std::set<std::string> keys_, tensor_names_;
  std::vector<Tensor> tensors_;
};

}  // namespace loom::io
