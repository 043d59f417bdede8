// Counts calls of the global operator new in a test binary (include from exactly one file of
// the binary), to check that hot paths allocate nothing. Not under AddressSanitizer, which owns
// operator new/delete; tests then skip (LOOM_TEST_COUNT_ALLOCATIONS == 0).
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define LOOM_TEST_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOOM_TEST_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef LOOM_TEST_COUNT_ALLOCATIONS
#define LOOM_TEST_COUNT_ALLOCATIONS 1
#endif

inline std::atomic<long> g_allocations{0};
#if LOOM_TEST_COUNT_ALLOCATIONS
// GCC 12 flags free() in a replaced operator delete as mismatched once both are inlined; the pair
// is consistent (malloc / free), so the warning is silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

