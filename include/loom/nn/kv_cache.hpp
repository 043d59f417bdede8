// KVCache: the keys and values of every layer for up to `capacity` positions, allocated once.
// Layout per layer: [capacity, kv_dim] for K and for V, so a position's keys are one contiguous
// row. `size()` positions are valid; the model appends after them, and `rewind(p)` forgets
// everything from position p on.
#pragma once

#include <cstdint>
#include <vector>

#include "loom/error.hpp"
#include "loom/model/config.hpp"

namespace loom {

class KVCache {
 public:
  KVCache() = default;
  /// Preallocates room for `capacity` positions of the model described by `c`.
  KVCache(const Config& c, std::int32_t capacity)
      : n_layers_(c.n_layers), kv_dim_(c.kv_dim()), capacity_(capacity) {
    if (capacity <= 0) fail(ErrorKind::invalid_argument, "kv_cache", "context size must be positive, got ", capacity);
    const std::uint64_t per_layer = std::uint64_t(capacity) * std::uint64_t(kv_dim_);
    const std::uint64_t total = per_layer * 2 * std::uint64_t(n_layers_);
    if (per_layer / std::uint64_t(capacity) != std::uint64_t(kv_dim_) || total > (std::uint64_t(1) << 40))
      fail(ErrorKind::capacity, "kv_cache", "a cache of ", capacity, " positions × ", kv_dim_, " × ", n_layers_,
           " layers is too large");
    data_.assign(std::size_t(total), 0.0f);
  }

  /// Bytes a cache of `capacity` positions for the model `c` allocates, computed before
  /// allocating (saturates at UINT64_MAX instead of overflowing).
  static std::uint64_t bytes_needed(const Config& c, std::int32_t capacity) {
    const long double bytes = 2.0L * c.n_layers * (long double)capacity * c.kv_dim() * sizeof(float);
    return bytes >= 1.8e19L ? UINT64_MAX : std::uint64_t(bytes);
  }

  std::int32_t size() const { return size_; }
  std::int32_t capacity() const { return capacity_; }
  std::int32_t kv_dim() const { return kv_dim_; }
  std::uint64_t bytes() const { return data_.size() * sizeof(float); }

  /// Pointer to the keys (values) of `layer` at position `pos`: kv_dim floats, then the next position.
  float* k(std::int32_t layer, std::int32_t pos) { return data_.data() + offset(layer, pos, 0); }
  float* v(std::int32_t layer, std::int32_t pos) { return data_.data() + offset(layer, pos, 1); }
  const float* k(std::int32_t layer, std::int32_t pos) const { return data_.data() + offset(layer, pos, 0); }
  const float* v(std::int32_t layer, std::int32_t pos) const { return data_.data() + offset(layer, pos, 1); }

  /// Makes room for positions [pos, pos + n): pos must not be past size() (earlier positions are
  /// overwritten, i.e. an implicit rewind). Throws Error(capacity) when pos + n > capacity.
  void reserve_append(std::int32_t pos, std::int32_t n) {
    if (pos < 0 || pos > size_)
      fail(ErrorKind::invalid_argument, "kv_cache", "position ", pos, " is not in [0, ", size_, "] (cache holds ",
           size_, " positions)");
    if (n < 0 || std::int64_t(pos) + n > capacity_)
      fail(ErrorKind::capacity, "kv_cache", "appending ", n, " positions at ", pos, " exceeds the context size ",
           capacity_);
  }
  /// Marks positions [0, new_size) as valid after they were written.
  void commit(std::int32_t new_size) { size_ = new_size; }

  /// Forgets positions p and later.
  void rewind(std::int32_t p) {
    if (p < 0 || p > size_)
      fail(ErrorKind::invalid_argument, "kv_cache", "cannot rewind to ", p, ": cache holds ", size_, " positions");
    size_ = p;
  }
  void clear() { size_ = 0; }

 private:
  std::size_t offset(std::int32_t layer, std::int32_t pos, int which) const {
    return (std::size_t(layer) * 2 + std::size_t(which)) * std::size_t(capacity_) * std::size_t(kv_dim_) +
           std::size_t(pos) * std::size_t(kv_dim_);
  }

  std::int32_t n_layers_ = 0;
  std::int32_t kv_dim_ = 0;
  std::int32_t capacity_ = 0;
  std::int32_t size_ = 0;
  std::vector<float> data_;
};

}  // namespace loom
