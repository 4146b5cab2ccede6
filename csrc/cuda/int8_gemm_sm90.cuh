// Hopper (sm_90a) int8 GEMM: CUTLASS 3.x collectives, TMA loads, warp-specialized
// WGMMA mainloop, and the dequant epilogue as an epilogue visitor tree (EVT).
// Included by int8_gemm_sm90_<out>.cu, one out type per unit so the build parallelises.
#pragma once

#include <utility>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

#include "int8_gemm_cutlass.h"

namespace qkernels::cuda::sm90 {

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// Device code only where it can run: the sm_80 pass of a unit compiles an empty body
// (less build time, and a launch on the wrong arch is refused by the dispatcher).
template <class Kernel>
struct OnlySm90 : Kernel {
  template <class... Args>
  CUTLASS_DEVICE void operator()(Args&&... args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    Kernel::operator()(std::forward<Args>(args)...);
#endif
  }
};

// out = (float(acc) * a_scale[m]) * b_scale[n] + bias[n], rounded to Out.
template <class TileShape, class Out>
using DequantEpilogue = fusion::Sm90EVT<
    fusion::Sm90Compute<cutlass::plus, Out, float, kRound>,
    fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
                    fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
                                    fusion::Sm90AccFetch,
                                    fusion::Sm90ColBroadcast<0, TileShape, float>>,
                    fusion::Sm90RowBroadcast<0, TileShape, float>>,
    fusion::Sm90RowBroadcast<0, TileShape, float>>;

// int_mm: the int32 accumulator as it is.
using Int32Epilogue = fusion::Sm90EVT<
    fusion::Sm90Compute<cutlass::epilogue::thread::Identity, int32_t, int32_t, kRound>,
    fusion::Sm90AccFetch>;

template <class Out, class TileShape, class ClusterShape, class KernelSchedule,
          class EpilogueSchedule>
struct Int8Gemm {
  static constexpr bool kInt32 = std::is_same_v<Out, int32_t>;
  static constexpr int kAlignD = 16 / sizeof(Out);
  using Fusion = std::conditional_t<kInt32, Int32Epilogue, DequantEpilogue<TileShape, Out>>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, void,
      cutlass::layout::RowMajor, kAlignD, Out, cutlass::layout::RowMajor, kAlignD,
      EpilogueSchedule, Fusion>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor,
      kAlignK, int8_t, cutlass::layout::ColumnMajor, kAlignK, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = OnlySm90<
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const Int8GemmArgs& p) {
    using StrideA = typename Gemm::GemmKernel::StrideA;
    using StrideB = typename Gemm::GemmKernel::StrideB;
    using StrideD = typename Gemm::GemmKernel::StrideD;
    // Every operand is row-major over its last dimension: (row stride, 1, batch stride).
    StrideA stride_a{int64_t(p.k), _1{}, int64_t(p.m) * p.k};
    StrideB stride_b{int64_t(p.k), _1{}, int64_t(p.n) * p.k};
    StrideD stride_d{int64_t(p.n), _1{}, int64_t(p.m) * p.n};
    typename Fusion::Arguments thread{};
    if constexpr (!kInt32) {
      thread = {
          {                                  // (acc * a_scale) * b_scale
           {{}, {p.a_scale}, {}},            //   acc * a_scale[m]
           {p.b_scale},                      //   b_scale[n]
           {}},
          {p.bias},                          // bias[n]; null adds 0
          {}};
    }
    cutlass::KernelHardwareInfo hw{0, p.sm_count};
    return {cutlass::gemm::GemmUniversalMode::kGemm,
            {p.m, p.n, p.k, 1},
            {p.a, stride_a, p.b, stride_b},
            {thread, nullptr, stride_d, static_cast<Out*>(p.out), stride_d},
            hw};
  }

  static size_t workspace(const Int8GemmArgs& p) {
    return Gemm::get_workspace_size(arguments(p));
  }

  static size_t smem_bytes() { return sizeof(typename Kernel::SharedStorage); }

  static const char* run(const Int8GemmArgs& p) {
    Gemm gemm;
    auto args = arguments(p);
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
      return "CUTLASS sm90 int8 GEMM cannot implement this problem";
    }
    if (gemm.initialize(args, p.workspace, p.stream) != cutlass::Status::kSuccess) {
      return "CUTLASS sm90 int8 GEMM failed to initialize";
    }
    if (gemm.run(p.stream) != cutlass::Status::kSuccess) {
      return "CUTLASS sm90 int8 GEMM launch failed";
    }
    return nullptr;
  }
};

using cutlass::epilogue::TmaWarpSpecialized;
using cutlass::epilogue::TmaWarpSpecializedCooperative;
using cutlass::gemm::KernelTmaWarpSpecialized;
using cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using cutlass::gemm::KernelTmaWarpSpecializedPingpong;

// The tile per M bucket (heuristic until measured on an H100: benchmarks/results).
// WGMMA tiles are at least 64 rows; decode and small M share the narrow 64x64 tile so
// that more CTAs stream the weight.
template <class Out>
using DecodeGemm = Int8Gemm<Out, Shape<_64, _64, _256>, Shape<_1, _1, _1>,
                            KernelTmaWarpSpecialized, TmaWarpSpecialized>;
template <class Out>
using MediumGemm = Int8Gemm<Out, Shape<_64, _128, _256>, Shape<_1, _1, _1>,
                            KernelTmaWarpSpecializedPingpong, TmaWarpSpecialized>;
template <class Out>
using LargeGemm = Int8Gemm<Out, Shape<_128, _128, _128>, Shape<_2, _1, _1>,
                           KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative>;

template <class Out, class Fn>
auto with_tile(Tile tile, Fn&& fn) {
#ifdef QK_REDUCED_TILES  // CI's reduced build: one tile (the large one) serves every bucket
  (void)tile;
  return fn(LargeGemm<Out>{});
#else
  switch (tile) {
    case Tile::kDecode:
    case Tile::kSmall:
      return fn(DecodeGemm<Out>{});
    case Tile::kMedium:
      return fn(MediumGemm<Out>{});
    default:
      return fn(LargeGemm<Out>{});
  }
#endif
}

}  // namespace qkernels::cuda::sm90

// Defines int8_gemm_sm90_<name>[_workspace] for output element type `Out`.
#define QK_DEFINE_INT8_GEMM_SM90(name, Out)                                              \
  namespace qkernels::cuda {                                                            \
  size_t int8_gemm_sm90_##name##_workspace(const Int8GemmArgs& args, Tile tile) {       \
    return sm90::with_tile<Out>(tile, [&](auto g) { return decltype(g)::workspace(args); }); \
  }                                                                                     \
  const char* int8_gemm_sm90_##name(const Int8GemmArgs& args, Tile tile) {              \
    return sm90::with_tile<Out>(tile, [&](auto g) { return decltype(g)::run(args); });  \
  }                                                                                     \
  size_t int8_gemm_sm90_##name##_smem(Tile tile) {                                      \
    return sm90::with_tile<Out>(tile, [&](auto g) { return decltype(g)::smem_bytes(); }); \
  }                                                                                     \
  }
