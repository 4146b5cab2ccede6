// The packed weight layout and the element kinds every ISA-specific kernel file shares.
//
// Trap: the ISA files are compiled with `#pragma GCC target(...)` so that one
// binary carries AVX-512, AVX2 and scalar code. They must not include torch or
// STL headers: an inline template instantiated there with AVX-512 enabled can
// be merged by the linker with the generic copy and then crash an older CPU.
// So kernels see raw pointers only; allocation and threading live in the
// generic translation units.
#pragma once

#include <cstdint>

namespace qkernels::cpu {

// Packed int8 weight layout (see DESIGN.md, "CPU packed weights"):
// columns are grouped by 16; group g holds [K4][16][4] bytes, i.e. for every
// 4-deep slice of K the 4 consecutive k of each of the 16 columns. Bytes are
// stored as w + 128 (w ^ 0x80) so they can be the unsigned operand of
// vpdpbusd; padding columns and padding k are stored as 128 (w = 0).
constexpr int64_t kGroupCols = 16;
constexpr int64_t kKStep = 4;
constexpr int64_t kGroupBytesPerK4 = kGroupCols * kKStep;  // 64
// The kernels walk each group's bytes in order and prefetch this far ahead: at decode
// sizes (1-8 rows) the hardware prefetchers alone left the weight stream at 55-75% of
// the DRAM rate on Zen 5; 32-64 lines ahead measured best (48 lines = 3 KiB). The VNNI
// GEMM prefetches only in tasks of <= 16 rows: beyond, its panel is reused from L2.
constexpr int64_t kPrefetchBytes = 48 * 64;

enum class OutKind : int { kInt32 = 0, kFloat32 = 1, kBFloat16 = 2, kFloat16 = 3 };
enum class InKind : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

}  // namespace qkernels::cpu
