// KVCache: the keys and values of every layer for up to `capacity` positions, allocated once.
// Per layer and KV head, the keys and the values of consecutive positions are contiguous, so
// attention streams them instead of picking one head's slice out of every position (3x slower
// at context 1536 when the cache is in DRAM, measured):
//   values: [capacity, head_dim], one row per position;
//   keys:   tiles of kernels::key_tile (16) positions, each stored transposed as
//           [head_dim, 16]: element d of 16 consecutive keys is one 64-byte vector, so a query's
//           scores against 16 keys build up lane by lane with no horizontal sums (for grouped-query
//           attention, which multiplies every key by 8 query rows, that is twice the speed).
// Capacity is rounded up to whole tiles. `size()` positions are valid; the model appends after
// them, and `rewind(p)` forgets everything from position p on.
//
// Pages: the storage is a number of pages of `page_positions()` positions each (a whole number of
// key tiles), each page holding those positions for every layer and KV head, in the layout above.
// A single-sequence cache, KVCache(shape, capacity), is one page: the layout described above. A
// paged cache, KVCache(shape, KVPageCount{...}), is a pool that many sequences share through page
// tables (nn::PagedKVCache keeps them): position p of a sequence lives in page pages[p / P] at
// slot p % P. Attention reads a sequence page by page (KVSegment), so sequences of different
// lengths share one memory budget and forks of one prompt share its pages.
//
// Elements are f32 (the default) or f16, chosen at construction: f16 halves the memory and the
// bytes attention reads per token, at the cost of rounding each key and value to 11 significant
// bits. Writers hand in f32 rows (`store`), readers get the stored type (`key_tiles<T>`,
// `values<T>`).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/huge_pages.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/attention_products.hpp"
#include "loom/nn/shapes.hpp"
#include "loom/tensor.hpp"

namespace loom::nn {

/// The size of a paged cache: `pages` pages of `page_positions` positions (a multiple of
/// kernels::key_tile), and the most positions one sequence may hold (its context size).
struct KVPageCount {
  std::int32_t pages = 0;
  std::int32_t page_positions = 64;
  std::int32_t max_positions = 0;
};

class KVCache {
 public:
  KVCache() = default;
  /// Preallocates room for `capacity` positions of a model of shape `c` (a Config converts to its
  /// KVCacheShape), stored as `type` (f32 or f16; Error(unsupported) for any other type).
  KVCache(const KVCacheShape& c, std::int32_t capacity, DType type = DType::f32)
      : KVCache(c, checked_capacity(capacity), 1, padded(capacity), false, type) {}
  /// A paged cache: `n.pages` pages that sequences share through page tables (PagedKVCache).
  KVCache(const KVCacheShape& c, const KVPageCount& n, DType type = DType::f32)
      : KVCache(c, checked_capacity(n.max_positions), checked_pages(n), n.page_positions, true, type) {}

  /// Bytes one stored key or value element takes: 4 for f32, 2 for f16. Throws Error(unsupported)
  /// naming the type for anything else.
  static std::size_t element_bytes(DType type) {
    if (type != DType::f32 && type != DType::f16)
      fail(ErrorKind::unsupported, "kv_cache", "KV cache type ", to_string(type), " is not supported (f32 or f16)");
    return block_bytes(type);
  }

  /// Bytes a cache of `capacity` positions of `type` for a model of shape `c` allocates, computed
  /// before allocating (saturates at UINT64_MAX instead of overflowing).
  static std::uint64_t bytes_needed(const KVCacheShape& c, std::int32_t capacity, DType type = DType::f32) {
    return page_bytes(c, padded(capacity), type);
  }
  /// Bytes one page of `page_positions` positions takes (saturating like bytes_needed).
  static std::uint64_t page_bytes(const KVCacheShape& c, std::int64_t page_positions, DType type = DType::f32) {
    const long double bytes = 2.0L * c.n_layers * (long double)page_positions * c.kv_dim() * element_bytes(type);
    return bytes >= 1.8e19L ? UINT64_MAX : std::uint64_t(bytes);
  }

  std::int32_t size() const { return size_; }
  std::int32_t capacity() const { return capacity_; }
  std::int32_t kv_dim() const { return kv_dim_; }
  std::int32_t n_kv_heads() const { return n_heads_; }
  std::int32_t head_dim() const { return head_dim_; }
  std::int32_t n_layers() const { return n_layers_; }
  DType type() const { return type_; }
  std::uint64_t bytes() const { return data_.size(); }
  std::int32_t n_pages() const { return n_pages_; }
  std::int32_t page_positions() const { return std::int32_t(rows_); }
  /// The page table of a single-sequence cache ({0}); empty for a paged one.
  std::span<const std::int32_t> own_pages() const {
    return !paged_ ? std::span<const std::int32_t>(&first_page_, 1) : std::span<const std::int32_t>();
  }

  /// Writes rows k, v [n, kv_dim] at positions pos .. pos+n−1 of the sequence whose page table is
  /// `pages` (position p in page pages[p / page_positions()]), converted to type().
  void store(std::int32_t layer, std::span<const std::int32_t> pages, std::int32_t pos, TensorView<const float> k,
             TensorView<const float> v) {
    if (k.n_cols() != kv_dim_ || v.n_cols() != kv_dim_ || k.n_rows() != v.n_rows())
      fail(ErrorKind::invalid_argument, "kv_cache", "keys ", k.shape().str(), " and values ", v.shape().str(),
           " are not rows of ", kv_dim_);
    if (pos < 0 || std::int64_t(pos) + k.n_rows() > std::int64_t(pages.size()) * rows_ ||
        std::int64_t(pos) + k.n_rows() > capacity_)
      fail(ErrorKind::invalid_argument, "kv_cache", "positions [", pos, ", ", std::int64_t(pos) + k.n_rows(),
           ") are outside the ", pages.size(), " pages of the sequence (at most ", capacity_, " positions)");
    for (std::int64_t t = 0; t < k.n_rows(); ++t) {
      const std::int64_t p = pos + t;
      store_slot(layer, pages[std::size_t(p / rows_)], std::int32_t(p % rows_), k.row(t), v.row(t));
    }
  }
  /// The key tiles of KV head `head` of `layer` in page `page` (page_positions() / key_tile tiles).
  template <typename T>
  const T* page_keys(std::int32_t layer, std::int32_t head, std::int32_t page) const {
    check_type<T>();
    check_page(layer, head, page);
    return reinterpret_cast<const T*>(data_.data()) + plane(layer, head, 0, page);
  }
  /// The values of KV head `head` of `layer` in page `page`: head_dim elements per slot.
  template <typename T>
  const T* page_values(std::int32_t layer, std::int32_t head, std::int32_t page) const {
    check_type<T>();
    check_page(layer, head, page);
    return reinterpret_cast<const T*>(data_.data()) + plane(layer, head, 1, page);
  }
  /// Copies page `from` onto page `to` (every layer and head): copy-on-write of a shared page.
  void copy_page(std::int32_t from, std::int32_t to) {
    check_page(0, 0, from);
    check_page(0, 0, to);
    const std::size_t bytes = data_.size() / std::size_t(n_pages_);
    std::memmove(data_.data() + std::size_t(to) * bytes, data_.data() + std::size_t(from) * bytes, bytes);
  }

  /// Writes the keys and values of rows k, v [n, kv_dim] (head after head in each row; strided
  /// views such as the k and v columns of a fused projection) of `layer` at positions pos .. pos+n−1,
  /// converted to type(). The positions must have been made room for with reserve_append().
  void store(std::int32_t layer, std::int32_t pos, TensorView<const float> k, TensorView<const float> v) {
    if (k.n_cols() != kv_dim_ || v.n_cols() != kv_dim_ || k.n_rows() != v.n_rows())
      fail(ErrorKind::invalid_argument, "kv_cache", "keys ", k.shape().str(), " and values ", v.shape().str(),
           " are not rows of ", kv_dim_);
    for (std::int64_t t = 0; t < k.n_rows(); ++t) store(layer, pos + std::int32_t(t), k.row(t), v.row(t));
  }
  /// Writes the keys `k` and values `v` (kv_dim floats each: head after head) of `layer` at
  /// position `pos`, converted to type(). The position must have been made room for with
  /// reserve_append().
  void store(std::int32_t layer, std::int32_t pos, const float* k, const float* v) {
    check(layer, 0, pos);
    store_slot(layer, 0, pos, k, v);
  }

  /// The keys of KV head `head` of `layer` from tile `tile` (positions 16·tile ..) on, as stored:
  /// tiles of kernels::key_tile positions, each [head_dim, key_tile], one after the other (the
  /// layout kernels::dot_tiles reads). T is the element type (float for f32, f16 for f16); asking
  /// for another type throws Error(invalid_argument).
  template <typename T>
  const T* key_tiles(std::int32_t layer, std::int32_t head, std::int32_t tile) const {
    check_type<T>();
    if (tile < 0 || std::int64_t(tile) * kernels::key_tile >= capacity_)
      fail(ErrorKind::invalid_argument, "kv_cache", "key tile ", tile, " is outside a cache of ", capacity_, " positions");
    check(layer, head, 0);
    return reinterpret_cast<const T*>(data_.data()) + key_index(layer, head, tile * kernels::key_tile);
  }
  /// Element d of the key of KV head `head` of `layer` at position `pos`, as stored.
  template <typename T>
  T key(std::int32_t layer, std::int32_t head, std::int32_t pos, std::int32_t d) const {
    check_type<T>();
    check(layer, head, pos);
    if (d < 0 || d >= head_dim_)
      fail(ErrorKind::invalid_argument, "kv_cache", "element ", d, " is outside a head of ", head_dim_);
    return reinterpret_cast<const T*>(data_.data())[key_index(layer, head, pos) + std::size_t(d) * kernels::key_tile];
  }
  /// The values of KV head `head` of `layer` from position `pos` on, as stored: head_dim elements
  /// per position, positions one after the other.
  template <typename T>
  const T* values(std::int32_t layer, std::int32_t head, std::int32_t pos) const {
    check_type<T>();
    check(layer, head, pos);
    return reinterpret_cast<const T*>(data_.data()) + value_index(layer, head, pos);
  }

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
  KVCache(const KVCacheShape& c, std::int32_t capacity, std::int32_t n_pages, std::int64_t page_positions, bool paged,
          DType type)
      : n_layers_(c.n_layers), n_heads_(c.n_kv_heads), head_dim_(c.head_dim), kv_dim_(c.kv_dim()),
        capacity_(capacity), rows_(page_positions), n_pages_(n_pages), paged_(paged), type_(type) {
    if (n_layers_ <= 0 || n_heads_ <= 0 || head_dim_ <= 0)
      fail(ErrorKind::invalid_argument, "kv_cache", "a cache needs layers, KV heads and a head size, got ", n_layers_,
           " × ", n_heads_, " × ", head_dim_);
    const std::uint64_t page = page_bytes(c, rows_, type);
    if (page == UINT64_MAX || page > (std::uint64_t(1) << 40) / std::uint64_t(n_pages))
      fail(ErrorKind::capacity, "kv_cache", "a cache of ", n_pages, " × ", rows_, " positions × ", kv_dim_, " × ",
           n_layers_, " layers is too large");
    data_ = HugePageBuffer(std::size_t(page) * std::size_t(n_pages));
  }
  static std::int32_t checked_capacity(std::int32_t capacity) {
    if (capacity <= 0) fail(ErrorKind::invalid_argument, "kv_cache", "context size must be positive, got ", capacity);
    return capacity;
  }
  static std::int32_t checked_pages(const KVPageCount& n) {
    if (n.pages <= 0 || n.page_positions <= 0 || n.page_positions % kernels::key_tile != 0 || n.page_positions > (1 << 20))
      fail(ErrorKind::invalid_argument, "kv_cache", "a paged cache needs pages > 0 of a positive multiple of ",
           kernels::key_tile, " positions (at most 2^20), got ", n.pages, " pages of ", n.page_positions);
    return n.pages;
  }
  void check_page(std::int32_t layer, std::int32_t head, std::int32_t page) const {
    if (layer < 0 || layer >= n_layers_ || head < 0 || head >= n_heads_ || page < 0 || page >= n_pages_)
      fail(ErrorKind::invalid_argument, "kv_cache", "layer ", layer, ", KV head ", head, ", page ", page,
           " is outside the cache (", n_layers_, " layers × ", n_heads_, " KV heads × ", n_pages_, " pages)");
  }
  /// Writes the key and value rows (kv_dim floats: head after head) at `slot` of `page`.
  void store_slot(std::int32_t layer, std::int32_t page, std::int32_t slot, const float* k, const float* v) {
    check_page(layer, 0, page);
    for (std::int32_t h = 0; h < n_heads_; ++h) {
      const float* kh = k + std::int64_t(h) * head_dim_;
      const float* vh = v + std::int64_t(h) * head_dim_;
      if (type_ == DType::f16)
        store_head<f16>(layer, h, page, slot, kh, vh);
      else
        store_head<float>(layer, h, page, slot, kh, vh);
    }
  }
  void check(std::int32_t layer, std::int32_t head, std::int32_t pos) const {
    if (paged_)
      fail(ErrorKind::invalid_argument, "kv_cache", "a paged cache is read and written by page (page_keys, page_values, ",
           "store with a page table), not by position");
    if (layer < 0 || layer >= n_layers_ || head < 0 || head >= n_heads_ || pos < 0 || pos >= capacity_)
      fail(ErrorKind::invalid_argument, "kv_cache", "layer ", layer, ", KV head ", head, ", position ", pos,
           " is outside the cache (", n_layers_, " layers × ", n_heads_, " KV heads × ", capacity_, " positions)");
  }
  template <typename T>
  void check_type() const {
    if (dtype_of_v<T> != type_)
      fail(ErrorKind::invalid_argument, "kv_cache", "the cache holds ", to_string(type_), ", not ",
           to_string(dtype_of_v<T>));
  }
  /// Positions rounded up to whole key tiles.
  static std::int64_t padded(std::int32_t capacity) { return kernels::key_tiles_for(capacity) * kernels::key_tile; }
  /// First element of the K (which = 0) or V (1) plane of KV head `head` of `layer` in `page`:
  /// pages one after the other, and in each the planes of every layer, K before V, head by head.
  std::size_t plane(std::int32_t layer, std::int32_t head, int which, std::int32_t page = 0) const {
    const std::size_t planes = std::size_t(n_layers_) * 2 * std::size_t(n_heads_);
    const std::size_t p = std::size_t(page) * planes +
                          (std::size_t(layer) * 2 + std::size_t(which)) * std::size_t(n_heads_) + std::size_t(head);
    return p * std::size_t(rows_) * std::size_t(head_dim_);
  }
  /// Element index of element 0 of the key at `pos` of `page`: its tile, then the position within it.
  std::size_t key_index(std::int32_t layer, std::int32_t head, std::int32_t pos, std::int32_t page = 0) const {
    const std::size_t tile = std::size_t(pos / kernels::key_tile), in_tile = std::size_t(pos % kernels::key_tile);
    return plane(layer, head, 0, page) + tile * kernels::key_tile * std::size_t(head_dim_) + in_tile;
  }
  std::size_t value_index(std::int32_t layer, std::int32_t head, std::int32_t pos, std::int32_t page = 0) const {
    return plane(layer, head, 1, page) + std::size_t(pos) * std::size_t(head_dim_);
  }
  /// Writes one head's key (scattered into its tile: element d at key_tile·d) and value row.
  template <typename T>
  void store_head(std::int32_t layer, std::int32_t head, std::int32_t page, std::int32_t slot, const float* k,
                  const float* v) {
    T* base = reinterpret_cast<T*>(data_.data());
    T* key = base + key_index(layer, head, slot, page);
    T* value = base + value_index(layer, head, slot, page);
    if constexpr (std::is_same_v<T, f16>) {
      for (std::int32_t d = 0; d < head_dim_; ++d) key[std::size_t(d) * kernels::key_tile] = to_f16(k[d]);
      kernels::f32_to_f16(v, value, head_dim_);
    } else {
      for (std::int32_t d = 0; d < head_dim_; ++d) key[std::size_t(d) * kernels::key_tile] = k[d];
      std::copy_n(v, head_dim_, value);
    }
  }

  std::int32_t n_layers_ = 0;
  std::int32_t n_heads_ = 0;  ///< KV heads
  std::int32_t head_dim_ = 0;
  std::int32_t kv_dim_ = 0;
  std::int32_t capacity_ = 0;
  std::int64_t rows_ = 0;  ///< positions per page and head (one page: capacity rounded up to whole key tiles)
  std::int32_t n_pages_ = 0;
  bool paged_ = false;     ///< made as a pool of pages (no own_pages())
  std::int32_t first_page_ = 0;  ///< own_pages() of a single-sequence cache
  std::int32_t size_ = 0;
  DType type_ = DType::f32;
  HugePageBuffer data_;  // zero-filled, 2 MiB-aligned: attention streams it every token
};

}  // namespace loom::nn
