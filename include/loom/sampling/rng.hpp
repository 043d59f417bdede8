// loom::Rng — a small seeded random number generator whose output is the same on every platform.
//
// The generator is xoshiro256** (Blackman & Vigna, 2018), its 256-bit state filled from the 64-bit
// seed by splitmix64, as its authors recommend. Uniform reals are built from the top bits of one
// 64-bit output (53 bits for a double, 24 for a float), so they are exact multiples of 2^-53 / 2^-24
// in [0, 1) and do not depend on the standard library (std::uniform_real_distribution does).
#pragma once

#include <cstdint>
#include <random>

namespace loom {

/// The seed value that asks for a random seed (drawn from std::random_device), as llama.cpp's
/// LLAMA_DEFAULT_SEED. Any other value is used as given.
inline constexpr std::uint64_t default_seed = 0xFFFFFFFFu;

}  // namespace loom

/// Macro spelling of loom::default_seed, for code written against llama.cpp's LLAMA_DEFAULT_SEED.
#ifndef LOOM_DEFAULT_SEED
#define LOOM_DEFAULT_SEED (::loom::default_seed)
#endif

namespace loom {

namespace detail {

/// One step of splitmix64: advances `state` and returns the next output.
constexpr std::uint64_t splitmix64_next(std::uint64_t& state) noexcept {
  state += 0x9E3779B97F4A7C15ull;
  std::uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

constexpr std::uint64_t rotl64(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

}  // namespace detail

/// A seeded xoshiro256** generator. Same seed ⇒ same sequence, on every platform and compiler.
/// Satisfies std::uniform_random_bit_generator, but prefer uniform() / uniform_float() over the
/// standard distributions, whose output is implementation-defined.
class Rng {
 public:
  using result_type = std::uint64_t;

  /// Seeds with `seed` (used as given: default_seed is NOT special here; see resolve_seed()).
  explicit constexpr Rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

  /// Restarts the sequence of `seed`.
  constexpr void reseed(std::uint64_t seed) noexcept {
    std::uint64_t sm = seed;
    for (auto& word : s_) word = detail::splitmix64_next(sm);
    // splitmix64 is a bijection of its counter, so four consecutive outputs are never all zero.
  }

  /// The next 64 random bits.
  constexpr std::uint64_t next() noexcept {
    const std::uint64_t result = detail::rotl64(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = detail::rotl64(s_[3], 45);
    return result;
  }
  constexpr std::uint64_t operator()() noexcept { return next(); }
  static constexpr std::uint64_t min() noexcept { return 0; }
  static constexpr std::uint64_t max() noexcept { return ~std::uint64_t{0}; }

  /// A uniform double in [0, 1): the top 53 bits of next() times 2^-53.
  constexpr double uniform() noexcept { return double(next() >> 11) * 0x1.0p-53; }

  /// A uniform float in [0, 1): the top 24 bits of next() times 2^-24.
  constexpr float uniform_float() noexcept { return float(next() >> 40) * 0x1.0p-24f; }

  /// The seed that a "seed" parameter stands for: a fresh random one for default_seed (from
  /// std::random_device), else the value itself.
  static std::uint64_t resolve_seed(std::uint64_t seed) {
    if (seed != default_seed) return seed;
    std::random_device rd;
    const std::uint64_t hi = rd();
    const std::uint64_t lo = rd();
    return (hi << 32) ^ lo;
  }

 private:
  std::uint64_t s_[4]{};
};

}  // namespace loom
