// Scalar float <-> bf16/fp16 conversions with PyTorch's rounding (RNE, NaN kept).
// Header-only, no torch includes (see kernel_args.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "kernel_args.h"

namespace qkernels::cpu {

inline int32_t load_i32(const void* p) {  // unaligned 4-byte load without UB
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline OutKind out_kind_of(InKind k) {
  switch (k) {
    case InKind::kBFloat16: return OutKind::kBFloat16;
    case InKind::kFloat16: return OutKind::kFloat16;
    case InKind::kFloat32: break;
  }
  return OutKind::kFloat32;
}

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (f != f) return 0x7FC0;  // canonical quiet NaN, as c10::BFloat16
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

inline float fp16_to_float(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

inline uint16_t float_to_fp16(float f) {
  _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

inline float load_as_float(const void* base, InKind kind, int64_t i) {
  switch (kind) {
    case InKind::kFloat32: return static_cast<const float*>(base)[i];
    case InKind::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case InKind::kFloat16: return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.f;
}

inline void store_float(void* base, OutKind kind, int64_t i, float v) {
  switch (kind) {
    case OutKind::kFloat32: static_cast<float*>(base)[i] = v; break;
    case OutKind::kBFloat16: static_cast<uint16_t*>(base)[i] = float_to_bf16(v); break;
    case OutKind::kFloat16: static_cast<uint16_t*>(base)[i] = float_to_fp16(v); break;
    case OutKind::kInt32: break;  // int32 output never goes through floats
  }
}

// Packed weight byte for column n (within its group) and depth k.
inline int8_t packed_weight(const uint8_t* b, int64_t k4, int64_t n, int64_t k) {
  const int64_t g = n / kGroupCols, c = n % kGroupCols;
  const uint8_t u = b[(g * k4 + k / kKStep) * kGroupBytesPerK4 + c * kKStep + k % kKStep];
  return static_cast<int8_t>(u ^ 0x80);
}

}  // namespace qkernels::cpu
