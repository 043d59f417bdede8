// Reproducible random inputs for tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace loom::test {

/// n values from a normal distribution with standard deviation `scale`, fixed by `seed`.
inline std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace loom::test
