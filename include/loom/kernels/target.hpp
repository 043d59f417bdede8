// Compiling code for an instruction set the includer's flags do not enable.
//
// loom's kernels exist once per kernel level (kernels/cpu.hpp): the portable code, and x86-64
// versions for AVX2 (with FMA and F16C) and AVX-512. Each SIMD version is compiled between
// LOOM_TARGET_AVX2_BEGIN / LOOM_TARGET_AVX512_BEGIN and LOOM_TARGET_END, which give every
// function defined there (templates and lambdas included) the target attribute of its level, the
// way the compilers' own intrinsics headers are written. An application that includes loom with
// plain `-O2` therefore gets the same AVX-512 code as `-march=native`; which level runs is chosen
// once at run time from CPUID (kernels/cpu.hpp, kernels/levels.hpp). Nothing compiled in a region
// may run before that choice: the regions are only reached through the level tables.
//
// With GCC the regions are also compiled at -O3 whatever the includer's level: at -O2 GCC 12 does
// not unroll the kernels' fixed-count loops over register tiles, so their accumulator arrays went
// through memory and an -O2 application decoded at half the speed of loom's own -O3 build (Clang
// unrolls them at -O2; it has no per-function optimization level to raise). Only code inside the
// regions gets -O3; the rest of loom keeps the includer's flags.
//
// The regions also silence -Wmaybe-uninitialized / -Wuninitialized: GCC 12 reports its own
// intrinsics' deliberately undefined operands (`__m256 __Y = __Y;` in _mm256_undefined_ps) at
// every inlined use.
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
/// 1 where loom compiles its x86-64 SIMD levels (x86-64 with GCC or Clang), else 0.
#define LOOM_X86 1
#else
#define LOOM_X86 0
#endif

/// The features of each level, as target attribute strings. AVX-512 means F, BW, CD, DQ, VL with
/// VNNI and VBMI (Intel Ice Lake and later, AMD Zen 4 and later); a CPU with an older AVX-512 runs
/// the AVX2 level.
#define LOOM_TARGET_AVX2_FEATURES "avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"
#define LOOM_TARGET_AVX512_FEATURES \
  LOOM_TARGET_AVX2_FEATURES ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512vnni,avx512vbmi"

#if defined(__clang__)
#define LOOM_TARGET_BEGIN_(features)                                                                        \
  _Pragma("clang diagnostic push") _Pragma(LOOM_TARGET_STR_(clang attribute push(                          \
      __attribute__((target(features))), apply_to = function)))
#define LOOM_TARGET_END _Pragma("clang attribute pop") _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define LOOM_TARGET_BEGIN_(features)                                                      \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") _Pragma("GCC push_options") \
          _Pragma(LOOM_TARGET_STR_(GCC target(features))) _Pragma("GCC optimize(\"O3\")")
#define LOOM_TARGET_END _Pragma("GCC pop_options") _Pragma("GCC diagnostic pop")
#else
#define LOOM_TARGET_BEGIN_(features)
#define LOOM_TARGET_END
#endif
#define LOOM_TARGET_STR_(x) #x

#define LOOM_TARGET_AVX2_BEGIN LOOM_TARGET_BEGIN_(LOOM_TARGET_AVX2_FEATURES)
#define LOOM_TARGET_AVX512_BEGIN LOOM_TARGET_BEGIN_(LOOM_TARGET_AVX512_FEATURES)
