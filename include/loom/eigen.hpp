// Eigen, included without the warnings of its own headers: with -march=native, Eigen 3.4's AVX /
// AVX-512 packet code has unused variables (-Wunused-variable), and an application that finds
// Eigen through pkg-config (-I, not -isystem) would see them at -Wall. loom's own code is not
// exempted: the pragmas cover only the included text.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif
#include <Eigen/Core>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
