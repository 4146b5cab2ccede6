// Compile-time loop unrolling for register-tiled microkernels.
//
// Trap: with plain `for (int i = 0; i < MR; ++i)` over an accumulator array,
// GCC 12 keeps a memory copy of the array and stores every accumulator on
// every k step, about halving the kernel's speed. Indices that are constants
// from the start let it keep the tile in registers.
//
// Include this after the file's `#pragma GCC target` (so the lambdas it calls
// can inline) and only from the ISA files; it defines internal-linkage code.
#pragma once

#include <utility>

namespace qkernels::cpu {
namespace {

template <typename F, int... Is>
__attribute__((always_inline)) inline void unroll_impl(F&& f, std::integer_sequence<int, Is...>) {
  (f(std::integral_constant<int, Is>{}), ...);
}

// Calls f(std::integral_constant<int, 0>{}) ... f(std::integral_constant<int, N - 1>{}).
template <int N, typename F>
__attribute__((always_inline)) inline void unroll(F&& f) {
  unroll_impl(f, std::make_integer_sequence<int, N>{});
}

}  // namespace
}  // namespace qkernels::cpu
