// Ampere (sm_80; also runs on sm_86/sm_89) int8 GEMM: CUTLASS 2.x tensor-op GEMM (IMMA
// mma.sync, multistage cp.async mainloop) with the dequant epilogue as an epilogue
// visitor tree. Included by int8_gemm_sm80_<out>.cu, one out type per unit.
#pragma once

#include <utility>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/gemm/device/gemm_universal.h"
// The visitor headers rely on what gemm_universal.h brings in: keep this order.
#include "cutlass/epilogue/threadblock/fusion/visitors.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/default_gemm_universal_with_visitor.h"

#include "int8_gemm_cutlass.h"

namespace qkernels::cuda::sm80 {

using namespace cute;
namespace evt = cutlass::epilogue::threadblock;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// Device code only for the sm_8x pass: Hopper runs the sm90 kernels.
// CUTLASS 2.x kernels are entered through the static invoke() (cutlass::Kernel2).
template <class Kernel>
struct OnlySm8x : Kernel {
  CUTLASS_DEVICE static void invoke(typename Kernel::Params const& params,
                                    typename Kernel::SharedStorage& shared_storage) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && __CUDA_ARCH__ < 900
    Kernel::invoke(params, shared_storage);
#endif
  }
};

template <class Out, class ThreadMap>
struct Epilogues {
  using RowStride = Stride<_0, _1, int32_t>;
  using ColStride = Stride<_1, _0, int32_t>;
  using DStride = Stride<int64_t, _1, int64_t>;
  using Store = evt::VisitorAuxStore<ThreadMap, Out, kRound, DStride>;
  // out = (float(acc) * a_scale[m]) * b_scale[n] + bias[n], rounded to Out.
  using Dequant = evt::Sm80EVT<
      Store,
      evt::Sm80EVT<
          evt::VisitorCompute<cutlass::plus, Out, float, kRound>,
          evt::Sm80EVT<evt::VisitorCompute<cutlass::multiplies, float, float, kRound>,
                       evt::Sm80EVT<evt::VisitorCompute<cutlass::multiplies, float, float, kRound>,
                                    evt::VisitorAccFetch,
                                    evt::VisitorColBroadcast<ThreadMap, float, ColStride>>,
                       evt::VisitorRowBroadcast<ThreadMap, float, RowStride>>,
          evt::VisitorRowBroadcast<ThreadMap, float, RowStride>>>;
  // int_mm: the int32 accumulator as it is.
  using Int32 = evt::Sm80EVT<Store, evt::VisitorAccFetch>;
};

template <class Out, class TBShape, class WarpShape, int Stages>
struct Int8Gemm {
  static constexpr bool kInt32 = std::is_same_v<Out, int32_t>;
  static constexpr int kAlignD = 16 / sizeof(Out);
  static constexpr int kEpilogueStages = 1;
  using ThreadMap =
      evt::OutputTileThreadLayout<TBShape, WarpShape, Out, kAlignD, kEpilogueStages>;
  using E = Epilogues<Out, ThreadMap>;
  using Fusion = std::conditional_t<kInt32, typename E::Int32, typename E::Dequant>;

  using Kernel = OnlySm8x<typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      int8_t, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignK,
      int8_t, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignK,
      Out, cutlass::layout::RowMajor, kAlignD, int32_t, float,
      cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80, TBShape, WarpShape,
      cutlass::gemm::GemmShape<16, 8, 32>, Fusion,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, Stages,
      cutlass::arch::OpMultiplyAddSaturate, kEpilogueStages>::GemmKernel>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const Int8GemmArgs& p) {
    typename E::DStride d_stride{int64_t(p.n), _1{}, int64_t(p.m) * p.n};
    typename Fusion::Arguments callbacks{};
    if constexpr (kInt32) {
      callbacks = {{}, {static_cast<Out*>(p.out), d_stride}};
    } else {
      typename E::RowStride row{_0{}, _1{}, p.n};
      typename E::ColStride col{_1{}, _0{}, p.m};
      callbacks = {
          {                                          // + bias
           {                                         //   (acc * a_scale) * b_scale
            {{}, {p.a_scale, 0.0f, col}, {}},        //     acc * a_scale[m]
            {p.b_scale, 0.0f, row},                  //     b_scale[n]
            {}},
           {p.bias, 0.0f, row},                      //   bias[n]; null adds 0
           {}},
          {static_cast<Out*>(p.out), d_stride}};     // store
    }
    cutlass::gemm::GemmCoord problem{p.m, p.n, p.k};
    return typename Gemm::Arguments(cutlass::gemm::GemmUniversalMode::kGemm, problem,
                                    /*batch_count=*/1, callbacks, p.a, p.b, nullptr, nullptr,
                                    int64_t(p.m) * p.k, int64_t(p.n) * p.k, 0, 0,
                                    /*lda=*/int64_t(p.k), /*ldb=*/int64_t(p.k), int64_t(0),
                                    int64_t(0));
  }

  static size_t workspace(const Int8GemmArgs& p) {
    return Gemm::get_workspace_size(arguments(p));
  }

  static size_t smem_bytes() { return sizeof(typename Kernel::SharedStorage); }

  static const char* run(const Int8GemmArgs& p) {
    Gemm gemm;
    auto args = arguments(p);
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
      return "CUTLASS sm80 int8 GEMM cannot implement this problem";
    }
    if (gemm.initialize(args, p.workspace, p.stream) != cutlass::Status::kSuccess) {
      return "CUTLASS sm80 int8 GEMM failed to initialize";
    }
    if (gemm.run(p.stream) != cutlass::Status::kSuccess) {
      return "CUTLASS sm80 int8 GEMM launch failed";
    }
    return nullptr;
  }
};

using cutlass::gemm::GemmShape;

// The tile per M bucket (heuristic until measured on an A100/H100: benchmarks/results).
template <class Out>
using DecodeGemm = Int8Gemm<Out, GemmShape<16, 128, 128>, GemmShape<16, 32, 128>, 5>;
template <class Out>
using SmallGemm = Int8Gemm<Out, GemmShape<64, 128, 64>, GemmShape<32, 64, 64>, 5>;
template <class Out>
using MediumGemm = Int8Gemm<Out, GemmShape<128, 128, 64>, GemmShape<64, 64, 64>, 5>;
template <class Out>
using LargeGemm = Int8Gemm<Out, GemmShape<256, 128, 64>, GemmShape<64, 64, 64>, 3>;

template <class Out, class Fn>
auto with_tile(Tile tile, Fn&& fn) {
#ifdef QK_REDUCED_TILES  // CI's reduced build: one tile (the large one) serves every bucket
  (void)tile;
  return fn(LargeGemm<Out>{});
#else
  switch (tile) {
    case Tile::kDecode:
      return fn(DecodeGemm<Out>{});
    case Tile::kSmall:
      return fn(SmallGemm<Out>{});
    case Tile::kMedium:
      return fn(MediumGemm<Out>{});
    default:
      return fn(LargeGemm<Out>{});
  }
#endif
}

}  // namespace qkernels::cuda::sm80

// Defines int8_gemm_sm80_<name>[_workspace] for output element type `Out`.
#define QK_DEFINE_INT8_GEMM_SM80(name, Out)                                              \
  namespace qkernels::cuda {                                                            \
  size_t int8_gemm_sm80_##name##_workspace(const Int8GemmArgs& args, Tile tile) {       \
    return sm80::with_tile<Out>(tile, [&](auto g) { return decltype(g)::workspace(args); }); \
  }                                                                                     \
  const char* int8_gemm_sm80_##name(const Int8GemmArgs& args, Tile tile) {              \
    return sm80::with_tile<Out>(tile, [&](auto g) { return decltype(g)::run(args); });  \
  }                                                                                     \
  size_t int8_gemm_sm80_##name##_smem(Tile tile) {                                      \
    return sm80::with_tile<Out>(tile, [&](auto g) { return decltype(g)::smem_bytes(); }); \
  }                                                                                     \
  }
