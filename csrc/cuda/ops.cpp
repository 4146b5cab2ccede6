// The torch-facing side of the CUDA C++ kernels (compiled by the host compiler): argument
// checks, allocation, the arch and tile choice, and the pybind entry points that
// qkernels/cuda_kernels.py calls. Python validates shapes first (the ops' fake kernels)
// and routes shapes these kernels do not take to Triton; the checks here are the last
// line, so a direct call with bad input is a clear error, never a bad launch.
#include <map>
#include <mutex>
#include <string>
#include <vector>

// c10/cuda only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers that a bare
// toolkit (nvcc + runtime) does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <pybind11/stl.h>

#include "int8_gemm_cutlass.h"
#include "kernels.h"

#define QK_CHECK(cond, op, ...) TORCH_CHECK_VALUE(cond, "qkernels.", op, " (cuda): ", __VA_ARGS__)

namespace qkernels::cuda {
namespace {

using GemmFn = const char* (*)(const Int8GemmArgs&, Tile);
using WorkspaceFn = size_t (*)(const Int8GemmArgs&, Tile);
using SmemFn = size_t (*)(Tile);

struct GemmUnit {
  const char* arch;  // "sm80" / "sm90"
  OutType out;
  GemmFn run;
  WorkspaceFn workspace;
  SmemFn smem;
};

// The instantiation units this build compiled (setup.py defines QK_HAVE_<unit> for each;
// a reduced build, as CI's, has fewer: the other out types go to Triton).
#define QK_UNIT(arch, name, out) {#arch, OutType::out, int8_gemm_##arch##_##name, \
                                  int8_gemm_##arch##_##name##_workspace,   \
                                  int8_gemm_##arch##_##name##_smem},
const std::vector<GemmUnit>& gemm_units() {
  static const std::vector<GemmUnit> units = {
#ifdef QK_HAVE_INT8_GEMM_SM80_I32
      QK_UNIT(sm80, i32, kInt32)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM80_F32
      QK_UNIT(sm80, f32, kFloat32)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM80_BF16
      QK_UNIT(sm80, bf16, kBFloat16)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM80_F16
      QK_UNIT(sm80, f16, kFloat16)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM90_I32
      QK_UNIT(sm90, i32, kInt32)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM90_F32
      QK_UNIT(sm90, f32, kFloat32)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM90_BF16
      QK_UNIT(sm90, bf16, kBFloat16)
#endif
#ifdef QK_HAVE_INT8_GEMM_SM90_F16
      QK_UNIT(sm90, f16, kFloat16)
#endif
  };
  return units;
}
#undef QK_UNIT

const char* out_name(OutType t) {
  switch (t) {
    case OutType::kInt32: return "int32";
    case OutType::kFloat32: return "float32";
    case OutType::kBFloat16: return "bfloat16";
    case OutType::kFloat16: return "float16";
  }
  return "?";
}

OutType out_type(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kInt: return OutType::kInt32;
    case at::kFloat: return OutType::kFloat32;
    case at::kBFloat16: return OutType::kBFloat16;
    case at::kHalf: return OutType::kFloat16;
    default: QK_CHECK(false, op, "out_dtype must be float32, bfloat16 or float16, got ", t);
  }
  return OutType::kFloat32;
}

// "sm80" for compute capability 8.x (the sm_80 cubin runs on 8.6/8.9), "sm90" for 9.0;
// "" where no CUDA C++ GEMM runs.
std::string gemm_arch(int major, int minor) {
  if (major == 8) return "sm80";
  if (major == 9 && minor == 0) return "sm90";
  return "";
}

const GemmUnit* find_unit(const std::string& arch, OutType out) {
  for (const auto& u : gemm_units()) {
    if (arch == u.arch && u.out == out) return &u;
  }
  return nullptr;
}

// The current device's properties, queried once per device.
const cudaDeviceProp& device_props(int device) {
  static std::map<int, cudaDeviceProp> cache;
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) {
    cudaDeviceProp props{};
    C10_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
    it = cache.emplace(device, props).first;
  }
  return it->second;
}

Tile tile_for(int64_t m) {
  if (m <= 16) return Tile::kDecode;
  if (m <= 64) return Tile::kSmall;
  if (m <= 256) return Tile::kMedium;
  return Tile::kLarge;
}

void check_int8_matrix(const at::Tensor& t, const char* op, const char* name) {
  QK_CHECK(t.is_cuda() && t.scalar_type() == at::kChar && t.dim() == 2 && t.is_contiguous(), op,
           name, " must be a contiguous int8 CUDA matrix, got ", t.scalar_type(), " ",
           t.sizes(), t.is_cuda() ? "" : " on the cpu");
}

void check_vector(const c10::optional<at::Tensor>& t, int64_t n, const at::Tensor& like,
                  const char* op, const char* name) {
  if (!t) return;
  QK_CHECK(t->device() == like.device() && t->scalar_type() == at::kFloat && t->dim() == 1 &&
               t->numel() == n && t->is_contiguous(),
           op, name, " must be a contiguous float32 vector of ", n, " on ", like.device(),
           ", got ", t->scalar_type(), " ", t->sizes(), " on ", t->device());
}

DType float_dtype(const at::Tensor& x, const char* op) {
  switch (x.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    default: QK_CHECK(false, op, "x must be float32, bfloat16 or float16, got ", x.scalar_type());
  }
  return DType::kFloat32;
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

// a [M, K] int8 @ b [N, K]^T with the dequant epilogue (scales given) or int32 out.
at::Tensor int8_gemm(const at::Tensor& a, const at::Tensor& b,
                     const c10::optional<at::Tensor>& a_scale,
                     const c10::optional<at::Tensor>& b_scale,
                     const c10::optional<at::Tensor>& bias, at::ScalarType out_dtype,
                     int64_t tile) {
  const char* op = "int8_gemm";
  check_int8_matrix(a, op, "a");
  check_int8_matrix(b, op, "b");
  const int64_t m = a.size(0), k = a.size(1), n = b.size(0);
  QK_CHECK(b.device() == a.device() && b.size(1) == k, op, "b must be [N, ", k, "] on ",
           a.device(), ", got ", b.sizes(), " on ", b.device());
  QK_CHECK(k > 0 && k % kAlignK == 0 && n % kAlignN == 0, op, "K must be a positive multiple of ",
           kAlignK, " and N a multiple of ", kAlignN, " (other shapes run on Triton), got K=", k,
           " N=", n);
  const OutType out = out_type(out_dtype, op);
  const bool dequant = out != OutType::kInt32;
  QK_CHECK(dequant == (a_scale.has_value() && b_scale.has_value()), op,
           "a_scale and b_scale are given exactly when out_dtype is a float type");
  QK_CHECK(dequant || !bias, op, "bias needs a float out_dtype");
  check_vector(a_scale, m, a, op, "a_scale");
  check_vector(b_scale, n, a, op, "b_scale");
  check_vector(bias, n, a, op, "bias");
  QK_CHECK(tile >= -1 && tile < kNumTiles, op, "tile must be -1 (by M) or 0..", kNumTiles - 1,
           ", got ", tile);

  const c10::cuda::CUDAGuard guard(a.device());
  const cudaDeviceProp* props = &device_props(a.get_device());
  const std::string arch = gemm_arch(props->major, props->minor);
  QK_CHECK(!arch.empty(), op, "no CUDA C++ int8 GEMM for sm_", props->major, props->minor,
           " (built for sm_80 and sm_90a); use the triton backend");
  const GemmUnit* unit = find_unit(arch, out);
  QK_CHECK(unit != nullptr, op, "this build has no ", arch, " kernel with ", out_name(out),
           " output (a reduced build; QKERNELS_CUDA_KERNELS=all builds every one)");

  auto result = at::empty({m, n}, a.options().dtype(out_dtype));
  if (m == 0 || n == 0) return result;
  Int8GemmArgs args;
  args.a = a.data_ptr<int8_t>();
  args.b = b.data_ptr<int8_t>();
  args.a_scale = dequant ? a_scale->data_ptr<float>() : nullptr;
  args.b_scale = dequant ? b_scale->data_ptr<float>() : nullptr;
  args.bias = bias ? bias->data_ptr<float>() : nullptr;
  args.out = result.data_ptr();
  args.m = static_cast<int>(m);
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  args.stream = c10::cuda::getCurrentCUDAStream();
  args.sm_count = props->multiProcessorCount;
  const Tile t = tile < 0 ? tile_for(m) : static_cast<Tile>(tile);
  at::Tensor workspace;
  if (const size_t bytes = unit->workspace(args, t)) {
    workspace = at::empty({static_cast<int64_t>(bytes)}, a.options().dtype(at::kByte));
    args.workspace = workspace.data_ptr();
  }
  const char* error = unit->run(args, t);
  QK_CHECK(error == nullptr, op, error ? error : "", " (M=", m, " N=", n, " K=", k, ")");
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return result;
}

std::tuple<at::Tensor, at::Tensor> quantize_rowwise(const at::Tensor& x, int64_t bits) {
  const char* op = "quantize_rowwise";
  QK_CHECK(x.is_cuda() && x.dim() == 2 && x.is_contiguous(), op,
           "x must be a contiguous CUDA matrix, got ", x.sizes());
  QK_CHECK(bits >= 2 && bits <= 8, op, "bits must be in [2, 8], got ", bits);
  const DType dtype = float_dtype(x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0), k = x.size(1);
  auto q = at::empty({rows, k}, x.options().dtype(at::kChar));
  auto scale = at::ones({rows}, x.options().dtype(at::kFloat));
  if (rows == 0 || k == 0) {
    q.zero_();
    return {q, scale};
  }
  const int vec = quantize_rows_vector_width(dtype);
  const bool vectorized = k % vec == 0 && aligned16(x);
  quantize_rows(x.data_ptr(), dtype, q.data_ptr<int8_t>(), scale.data_ptr<float>(), rows, k,
                static_cast<int>(bits), vectorized, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {q, scale};
}

// x [M, K] float @ (wq [N, K] int8 * w_scale[n])^T + bias: the decode kernel for
// M <= 16, else the weight dequantized once into x's dtype and a cuBLAS GEMM.
at::Tensor linear_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                        const c10::optional<at::Tensor>& bias) {
  const char* op = "linear_w8a16";
  const DType dtype = float_dtype(x, op);
  QK_CHECK(x.is_cuda() && x.dim() == 2 && x.is_contiguous() && aligned16(x), op,
           "x must be a contiguous, 16-byte aligned CUDA matrix, got ", x.sizes());
  check_int8_matrix(wq, op, "wq");
  const int64_t m = x.size(0), k = x.size(1), n = wq.size(0);
  QK_CHECK(wq.device() == x.device() && wq.size(1) == k && aligned16(wq), op,
           "wq must be an aligned int8 [N, ", k, "] on ", x.device(), ", got ", wq.sizes());
  QK_CHECK(k > 0 && k % 16 == 0, op, "K must be a positive multiple of 16 (other shapes run "
           "on Triton), got K=", k);
  check_vector(c10::optional<at::Tensor>(w_scale), n, x, op, "w_scale");
  check_vector(bias, n, x, op, "bias");
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (m == 0 || n == 0) return at::empty({m, n}, x.options());
  if (m <= kW8A16DecodeMaxM) {
    auto out = at::empty({m, n}, x.options());
    w8a16_decode(x.data_ptr(), dtype, wq.data_ptr<int8_t>(), w_scale.data_ptr<float>(),
                 bias ? bias->data_ptr<float>() : nullptr, out.data_ptr(), int(m), int(n),
                 int(k), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
  auto w = at::empty({n, k}, x.options());
  dequantize_weight(wq.data_ptr<int8_t>(), w_scale.data_ptr<float>(), w.data_ptr(), dtype, n, k,
                    device_props(x.get_device()).multiProcessorCount, stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (bias) return at::addmm(bias->to(x.scalar_type()), x, w.t());
  return at::mm(x, w.t());
}

FakeQuantLayout fake_quant_layout(const at::Tensor& x, int64_t seg_len, int64_t n_params,
                                  bool along, bool zp_in_round, int64_t qmin, int64_t qmax) {
  FakeQuantLayout l;
  l.numel = x.numel();
  l.seg_len = seg_len;
  l.n_params = n_params;
  l.along = along;
  l.zp_in_round = zp_in_round;
  l.qmin = static_cast<float>(qmin);
  l.qmax = static_cast<float>(qmax);
  return l;
}

// The params of a fake-quant layout: float32 CUDA vectors of n_params (seg_len when along).
void check_params(const at::Tensor& x, int64_t seg_len, int64_t n_params, bool along,
                  std::initializer_list<std::pair<const char*, const at::Tensor*>> params) {
  const char* op = "fake_quant";
  QK_CHECK(x.is_cuda() && x.is_contiguous(), op, "x must be a contiguous CUDA tensor");
  QK_CHECK(seg_len >= 1 && n_params >= 1 && (!along || seg_len == n_params), op,
           "bad layout seg_len=", seg_len, " n_params=", n_params, " along=", along);
  for (const auto& [name, t] : params) {
    check_vector(c10::optional<at::Tensor>(*t), n_params, x, op, name);
  }
}

void check_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  QK_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type() &&
               grad.device() == x.device() && grad.is_contiguous(),
           op, "grad must be contiguous and match x, got ", grad.sizes());
}

at::Tensor fake_quant_forward_op(const at::Tensor& x, const at::Tensor& scale,
                                 const at::Tensor& inv, const at::Tensor& zp, int64_t seg_len,
                                 int64_t n_params, bool along, bool zp_in_round, int64_t qmin,
                                 int64_t qmax) {
  const DType dtype = float_dtype(x, "fake_quant");
  check_params(x, seg_len, n_params, along, {{"scale", &scale}, {"inv", &inv}, {"zp", &zp}});
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);
  if (x.numel() == 0) return y;
  fake_quant_forward(x.data_ptr(), y.data_ptr(), dtype, scale.data_ptr<float>(),
                     inv.data_ptr<float>(), zp.data_ptr<float>(),
                     fake_quant_layout(x, seg_len, n_params, along, zp_in_round, qmin, qmax),
                     device_props(x.get_device()).multiProcessorCount,
                     c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

at::Tensor fake_quant_backward_op(const at::Tensor& grad, const at::Tensor& x,
                                  const at::Tensor& inv, const at::Tensor& zp, int64_t seg_len,
                                  int64_t n_params, bool along, bool zp_in_round, int64_t qmin,
                                  int64_t qmax) {
  const DType dtype = float_dtype(x, "fake_quant_backward");
  check_params(x, seg_len, n_params, along, {{"inv", &inv}, {"zp", &zp}});
  check_grad(grad, x, "fake_quant_backward");
  const c10::cuda::CUDAGuard guard(x.device());
  auto dx = at::empty_like(x);
  if (x.numel() == 0) return dx;
  fake_quant_backward(grad.data_ptr(), x.data_ptr(), dx.data_ptr(), dtype, inv.data_ptr<float>(),
                      zp.data_ptr<float>(),
                      fake_quant_layout(x, seg_len, n_params, along, zp_in_round, qmin, qmax),
                      device_props(x.get_device()).multiProcessorCount,
                      c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

// (dx, dscale, dzero_point) of the LSQ backward; the gradients in float64 (Python casts).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_lsq_backward_op(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale, const at::Tensor& inv,
    const at::Tensor& zp, int64_t seg_len, int64_t n_params, bool along, int64_t qmin,
    int64_t qmax, double grad_factor) {
  const char* op = "fake_quant_lsq_backward";
  const DType dtype = float_dtype(x, op);
  check_params(x, seg_len, n_params, along, {{"scale", &scale}, {"inv", &inv}, {"zp", &zp}});
  check_grad(grad, x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  auto dx = at::empty_like(x);
  const auto f64 = x.options().dtype(at::kDouble);
  if (x.numel() == 0) return {dx, at::zeros({n_params}, f64), at::zeros({n_params}, f64)};
  const FakeQuantLayout l = fake_quant_layout(x, seg_len, n_params, along, true, qmin, qmax);
  auto partials = at::zeros({2, lsq_partial_rows(l), n_params}, f64);
  fake_quant_lsq_backward(grad.data_ptr(), x.data_ptr(), dx.data_ptr(), dtype,
                          scale.data_ptr<float>(), inv.data_ptr<float>(), zp.data_ptr<float>(),
                          static_cast<float>(grad_factor), l, partials.data_ptr<double>(),
                          device_props(x.get_device()).multiProcessorCount,
                          c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto sums = partials.sum(1);
  return {dx, sums[0], sums[1]};
}

// What this build holds: "sm80:bfloat16", ... (qkernels info, the backend table).
std::vector<std::string> gemm_kernels() {
  std::vector<std::string> names;
  for (const auto& u : gemm_units()) names.push_back(std::string(u.arch) + ":" + out_name(u.out));
  return names;
}

// Shared memory per (kernel, tile): {"sm90:bfloat16": [bytes per tile], ...}.
std::map<std::string, std::vector<int64_t>> gemm_smem() {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& u : gemm_units()) {
    auto& bytes = out[std::string(u.arch) + ":" + out_name(u.out)];
    for (int t = 0; t < kNumTiles; ++t) bytes.push_back(static_cast<int64_t>(u.smem(Tile(t))));
  }
  return out;
}

// Ops with a CUDA C++ kernel in this build.
std::vector<std::string> cuda_ops() {
  std::vector<std::string> ops = {"quantize_rowwise", "linear_w8a16", "fake_quant",
                                  "fake_quant_backward", "fake_quant_group",
                                  "fake_quant_group_backward", "fake_quant_lsq",
                                  "fake_quant_lsq_backward"};
  if (!gemm_units().empty()) ops.insert(ops.end(), {"int_mm", "int8_mm", "linear_w8a8"});
  return ops;
}

void bind(pybind11::module_& m) {
  m.def("cuda_ops", &cuda_ops, "ops with a CUDA C++ kernel in this build");
  m.def("cuda_gemm_kernels", &gemm_kernels, "the compiled CUTLASS int8 GEMMs, arch:out dtype");
  m.def("cuda_gemm_smem", &gemm_smem, "shared memory bytes per compiled GEMM and tile");
  m.def("cuda_int8_gemm", &int8_gemm, "CUTLASS int8 GEMM (see csrc/cuda/int8_gemm_cutlass.h)",
        pybind11::arg("a"), pybind11::arg("b"), pybind11::arg("a_scale"),
        pybind11::arg("b_scale"), pybind11::arg("bias"), pybind11::arg("out_dtype"),
        pybind11::arg("tile") = -1);
  m.def("cuda_quantize_rowwise", &quantize_rowwise, "per-row int8 quantization on CUDA");
  m.def("cuda_linear_w8a16", &linear_w8a16, "int8-weight linear on CUDA (see w8a16.cu)");
  m.def("cuda_fake_quant_forward", &fake_quant_forward_op, "fake-quant forward (fake_quant.cu)");
  m.def("cuda_fake_quant_backward", &fake_quant_backward_op, "fake-quant STE backward");
  m.def("cuda_fake_quant_lsq_backward", &fake_quant_lsq_backward_op,
        "LSQ backward: dx and float64 scale / zero-point gradients");
}

}  // namespace qkernels::cuda
