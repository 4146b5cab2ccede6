#include "op_registry.h"

#include <map>

#include <c10/util/Exception.h>

namespace qkernels::cpu {
namespace {

// Function-local static: registration runs during static initialisation of other
// translation units, in an order C++ does not define.
std::map<std::string, KernelNameFn>& registry() {
  static std::map<std::string, KernelNameFn> r;
  return r;
}

}  // namespace

void record_cpu_kernel(const char* op, KernelNameFn kernel) { registry()[op] = kernel; }

std::string cpu_kernel_name(const std::string& op) {
  const auto it = registry().find(op);
  TORCH_CHECK_VALUE(it != registry().end(), "qkernels: no C++ CPU kernel for op '", op, "'");
  return it->second(selected_isa(op.c_str()));
}

std::vector<std::string> cpu_ops() {
  std::vector<std::string> out;
  for (const auto& [op, _] : registry()) out.push_back(op);
  return out;
}

}  // namespace qkernels::cpu
