// Output allocation for large elementwise ops.
#pragma once

#include <cstddef>

#include <ATen/ATen.h>

namespace qkernels::cpu {

// Like at::empty_like(x, contiguous), but a buffer of 32 MiB or more comes
// from a small cache of freed qkernels outputs of the same size.
//
// Trap: glibc serves such sizes with a fresh mmap every time, so every call
// pays a page fault per 4 KiB on first touch: ~20 ms for a 64 MB fake-quant
// output whose actual work takes ~3 ms. A training loop asks for the same
// sizes every step, so a cache (like PyTorch's CUDA caching allocator) makes
// that cost one-off. At most kMaxCachedBytes stay cached; empty_cache() frees them.
// `op` names the caller in the out-of-memory error.
at::Tensor empty_like_cached(const char* op, const at::Tensor& x);
void empty_cache();
size_t cached_bytes();

}  // namespace qkernels::cpu
