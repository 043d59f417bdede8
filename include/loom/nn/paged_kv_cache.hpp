// PagedKVCache: one KV cache shared by many sequences, in pages.
//
// The cache is a pool of pages (KVCache(shape, KVPageCount)); each sequence owns a page table, the
// pages holding its positions in order (position p in page pages[p / P], slot p % P). Pages are
// taken from a free list as a sequence grows and given back when it shrinks or leaves, so
// sequences of any lengths share one memory budget without fragmentation (as vLLM's
// PagedAttention). fork() starts a sequence that shares every page of another, counting
// references; before a sequence writes into a page someone else also holds, it gets its own copy
// (copy on write). N samples of one prompt therefore store the prompt once: only the page it
// ends in is copied, by each fork that writes after it.
//
// Everything is allocated up front (pages, page tables of max_positions / P entries per
// sequence slot), so growing and shrinking sequences allocate nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "loom/dtype.hpp"
#include "loom/error.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/shapes.hpp"

namespace loom::nn {

class PagedKVCache {
 public:
  using SeqId = std::int32_t;

  /// A pool of `n.pages` pages of `n.page_positions` positions for up to `max_sequences`
  /// sequences of up to `n.max_positions` positions each.
  PagedKVCache(const KVCacheShape& shape, const KVPageCount& n, std::int32_t max_sequences, DType type = DType::f32)
      : cache_(shape, n, type), refs_(std::size_t(n.pages), 0) {
    if (max_sequences <= 0 || max_sequences > (1 << 20))
      fail(ErrorKind::invalid_argument, "kv_cache", "a paged cache needs 1 .. 2^20 sequences, got ", max_sequences);
    free_.reserve(std::size_t(n.pages));
    for (std::int32_t p = n.pages - 1; p >= 0; --p) free_.push_back(p);
    const std::size_t table = std::size_t((std::int64_t(n.max_positions) + n.page_positions - 1) / n.page_positions);
    seqs_.resize(std::size_t(max_sequences));
    for (Sequence& s : seqs_) s.pages.reserve(table);
  }

  /// Bytes a pool of `n` takes (before allocating it).
  static std::uint64_t bytes_needed(const KVCacheShape& shape, const KVPageCount& n, DType type = DType::f32) {
    const std::uint64_t page = KVCache::page_bytes(shape, n.page_positions, type);
    return n.pages > 0 && page > UINT64_MAX / std::uint64_t(n.pages) ? UINT64_MAX : page * std::uint64_t(std::max(n.pages, 0));
  }

  KVCache& cache() { return cache_; }
  const KVCache& cache() const { return cache_; }
  std::int32_t page_positions() const { return cache_.page_positions(); }
  /// Positions one sequence may hold.
  std::int32_t max_positions() const { return cache_.capacity(); }
  std::int32_t max_sequences() const { return std::int32_t(seqs_.size()); }
  std::int32_t total_pages() const { return cache_.n_pages(); }
  std::int32_t free_pages() const { return std::int32_t(free_.size()); }
  std::int32_t used_pages() const { return total_pages() - free_pages(); }
  /// Bytes of the pages in use (each shared page counted once).
  std::uint64_t used_bytes() const { return cache_.bytes() / std::uint64_t(total_pages()) * std::uint64_t(used_pages()); }

  /// A new, empty sequence. Throws Error(capacity) when every sequence slot is taken.
  SeqId add() {
    for (std::size_t i = 0; i < seqs_.size(); ++i)
      if (!seqs_[i].live) {
        seqs_[i].live = true;
        seqs_[i].size = 0;
        seqs_[i].pages.clear();
        return SeqId(i);
      }
    fail(ErrorKind::capacity, "kv_cache", "all ", seqs_.size(), " sequence slots are in use");
  }
  /// A new sequence holding the same positions as `src`, sharing its pages (copy on write).
  SeqId fork(SeqId src) {
    check(src);
    const SeqId id = add();
    Sequence& from = seqs_[std::size_t(src)];
    Sequence& to = seqs_[std::size_t(id)];
    to.size = from.size;
    to.pages.assign(from.pages.begin(), from.pages.begin() + std::ptrdiff_t(pages_for(from.size)));
    for (std::int32_t p : to.pages) ++refs_[std::size_t(p)];
    return id;
  }
  /// Ends sequence `id`, giving back the pages no other sequence holds.
  void remove(SeqId id) {
    check(id);
    release_from(seqs_[std::size_t(id)], 0);
    seqs_[std::size_t(id)].live = false;
  }
  /// Forgets positions p and later of sequence `id`.
  void rewind(SeqId id, std::int32_t p) {
    check(id);
    Sequence& s = seqs_[std::size_t(id)];
    if (p < 0 || p > s.size)
      fail(ErrorKind::invalid_argument, "kv_cache", "cannot rewind sequence ", id, " to ", p, ": it holds ", s.size,
           " positions");
    s.size = p;
    release_from(s, pages_for(p));
  }

  bool live(SeqId id) const { return id >= 0 && std::size_t(id) < seqs_.size() && seqs_[std::size_t(id)].live; }
  std::int32_t size(SeqId id) const {
    check(id);
    return seqs_[std::size_t(id)].size;
  }
  /// The page table of sequence `id`: at least the pages holding its size() positions.
  std::span<const std::int32_t> pages(SeqId id) const {
    check(id);
    return seqs_[std::size_t(id)].pages;
  }

  /// Pages that appending n positions to sequence `id` would take from the free list (new pages,
  /// plus the copy of a shared page it would write into).
  std::int32_t pages_to_append(SeqId id, std::int32_t n) const {
    check(id);
    const Sequence& s = seqs_[std::size_t(id)];
    if (n <= 0) return 0;
    const std::size_t first = std::size_t(s.size / page_positions()), last = pages_for(std::int64_t(s.size) + n);
    std::int32_t need = 0;
    for (std::size_t i = first; i < last; ++i)
      if (i >= s.pages.size() || refs_[std::size_t(s.pages[i])] > 1) ++need;
    return need;
  }

  /// Makes room for positions [size, size + n) of sequence `id`: takes pages from the free list,
  /// and copies a page it shares into one of its own before writing there. Throws
  /// Error(capacity) when the sequence would exceed max_positions() or the pool has too few free
  /// pages (then nothing changes).
  void reserve_append(SeqId id, std::int32_t n) {
    check(id);
    Sequence& s = seqs_[std::size_t(id)];
    if (n < 0 || std::int64_t(s.size) + n > max_positions())
      fail(ErrorKind::capacity, "kv_cache", "appending ", n, " positions to sequence ", id, " of ", s.size,
           " exceeds the context size ", max_positions());
    const std::int32_t need = pages_to_append(id, n);
    if (need > free_pages())
      fail(ErrorKind::capacity, "kv_cache", "appending ", n, " positions to sequence ", id, " needs ", need,
           " free pages of ", page_positions(), " positions; ", free_pages(), " of ", total_pages(), " are free");
    if (n == 0) return;
    const std::size_t first = std::size_t(s.size / page_positions()), last = pages_for(std::int64_t(s.size) + n);
    for (std::size_t i = first; i < last; ++i) {
      if (i >= s.pages.size()) {
        s.pages.push_back(take());
      } else if (refs_[std::size_t(s.pages[i])] > 1) {
        const std::int32_t copy = take();
        if (i * std::size_t(page_positions()) < std::size_t(s.size)) cache_.copy_page(s.pages[i], copy);
        --refs_[std::size_t(s.pages[i])];
        s.pages[i] = copy;
      }
    }
  }
  /// Marks positions [0, new_size) of sequence `id` as written (after reserve_append and the
  /// forward pass that filled them).
  void commit(SeqId id, std::int32_t new_size) {
    check(id);
    Sequence& s = seqs_[std::size_t(id)];
    if (new_size < 0 || pages_for(new_size) > s.pages.size())
      fail(ErrorKind::invalid_argument, "kv_cache", "sequence ", id, " has no room for ", new_size, " positions");
    s.size = new_size;
  }

 private:
  struct Sequence {
    bool live = false;
    std::int32_t size = 0;
    std::vector<std::int32_t> pages;
  };

  std::size_t pages_for(std::int64_t positions) const {
    return std::size_t((positions + page_positions() - 1) / page_positions());
  }
  void check(SeqId id) const {
    if (!live(id)) fail(ErrorKind::invalid_argument, "kv_cache", "sequence ", id, " does not exist");
  }
  std::int32_t take() {
    const std::int32_t p = free_.back();
    free_.pop_back();
    refs_[std::size_t(p)] = 1;
    return p;
  }
  /// Drops the sequence's pages from index `keep` on.
  void release_from(Sequence& s, std::size_t keep) {
    while (s.pages.size() > keep) {
      const std::int32_t p = s.pages.back();
      s.pages.pop_back();
      if (--refs_[std::size_t(p)] == 0) free_.push_back(p);
    }
  }

  KVCache cache_;
  std::vector<std::int32_t> refs_;  ///< per page: how many sequences hold it
  std::vector<std::int32_t> free_;  ///< pages nobody holds
  std::vector<Sequence> seqs_;
};

}  // namespace loom::nn
