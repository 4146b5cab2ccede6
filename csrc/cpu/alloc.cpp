#include "alloc.h"

#include <cstdlib>
#include <map>
#include <mutex>

namespace qkernels::cpu {

namespace {

constexpr size_t kMinBytes = size_t{32} << 20;
constexpr size_t kMaxCachedBytes = size_t{1} << 30;
constexpr size_t kAlign = 64;

struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;  // size -> block
  size_t bytes = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: deleters may run at exit
  return *c;
}

struct Block {
  void* ptr;
  size_t size;
};

void release(void* ctx) {
  auto* block = static_cast<Block*>(ctx);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.bytes + block->size <= kMaxCachedBytes) {
      c.free_blocks.emplace(block->size, block->ptr);
      c.bytes += block->size;
      delete block;
      return;
    }
  }
  std::free(block->ptr);
  delete block;
}

}  // namespace

at::Tensor empty_like_cached(const char* op, const at::Tensor& x) {
  const size_t bytes = static_cast<size_t>(x.numel()) * x.element_size();
  if (bytes < kMinBytes) return at::empty_like(x, at::MemoryFormat::Contiguous);
  const size_t size = (bytes + kAlign - 1) / kAlign * kAlign;
  void* ptr = nullptr;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    auto it = c.free_blocks.find(size);
    if (it != c.free_blocks.end()) {
      ptr = it->second;
      c.free_blocks.erase(it);
      c.bytes -= size;
    }
  }
  if (ptr == nullptr) ptr = std::aligned_alloc(kAlign, size);
  TORCH_CHECK(ptr != nullptr, "qkernels.", op, ": out of memory allocating the ", size,
              "-byte output");
  auto* block = new Block{ptr, size};
  at::DataPtr data(ptr, block, &release, at::Device(at::kCPU));
  at::Storage storage(at::Storage::use_byte_size_t(), size, std::move(data),
                      /*allocator=*/nullptr, /*resizable=*/false);
  return at::empty({0}, x.options().memory_format(at::MemoryFormat::Contiguous))
      .set_(storage, 0, x.sizes(), at::empty(x.sizes(), at::kMeta).strides());
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto& [size, ptr] : c.free_blocks) std::free(ptr);
  c.free_blocks.clear();
  c.bytes = 0;
}

size_t cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.bytes;
}

}  // namespace qkernels::cpu
