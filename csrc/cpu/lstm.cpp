// CPU lstm_w8a8: one LSTM layer/direction over a whole sequence, the time loop
// in C++. The input projection of all steps is one int8 GEMM; each recurrent
// step quantizes h per row, runs the int8 GEMM with w_hh and applies the gates
// and the cell update in the GEMM's epilogue (fused on AVX-512 VNNI).
#include "lstm.h"

#include <vector>

#include "checks.h"
#include "int8_gemm.h"
#include "int8_gemm_driver.h"
#include "lstm_kernels.h"
#include "op_registry.h"

namespace qkernels::cpu {
namespace {

constexpr const char* kOp = "lstm_w8a8";

// [4H] in gate order (i, f, g, o) -> [4 * H16] gate-interleaved per 16 units,
// zero in the padding: the order of the packed LSTM weights.
at::Tensor interleave_gates(const at::Tensor& v, int64_t h) {
  const int64_t h16 = round_up(h, 16);
  at::Tensor g = v.to(at::kFloat).contiguous().view({4, h});
  g = at::constant_pad_nd(g, {0, h16 - h}, 0);
  return g.view({4, h16 / 16, 16}).permute({1, 0, 2}).reshape({4 * h16}).contiguous();
}

// Rows of an int8 [4H, K] gate weight in the interleaved order, packed.
at::Tensor pack_interleaved(const at::Tensor& w, int64_t h) {
  const int64_t h16 = round_up(h, 16), k = w.size(1);
  at::Tensor g = at::constant_pad_nd(w.contiguous().view({4, h, k}), {0, 0, 0, h16 - h}, 0);
  g = g.view({4, h16 / 16, 16, k}).permute({1, 0, 2, 3}).reshape({4 * h16, k});
  return pack_int8_weight(g);
}

at::Tensor lstm_weight(const char* name, const at::Tensor& w, int64_t h, int64_t k) {
  QK_CHECK_CPU(kOp, name, w);
  if (w.scalar_type() == at::kChar) {
    QK_CHECK(w.dim() == 2 && w.size(0) == 4 * h && w.size(1) == k, kOp, name,
             " must be int8 of shape [4 * hidden, ", k, "] = [", 4 * h, ", ", k, "], got ",
             describe(w));
    return pack_interleaved(w, h);
  }
  const int64_t rows = 4 * round_up(h, 16), cols = round_up(k, kKStep);
  QK_CHECK(w.scalar_type() == at::kByte && w.dim() == 2 && w.size(0) == rows && w.size(1) == cols,
           kOp, name, " must be int8 [", 4 * h, ", ", k,
           "] or from qkernels.ops.pack_lstm_weight (uint8 [", rows, ", ", cols, "]), got ",
           describe(w));
  return w.contiguous();
}

void check_vector(const char* name, const at::Tensor& t, int64_t n, bool need_float32) {
  QK_CHECK_CPU(kOp, name, t);
  const bool dtype_ok = need_float32 ? t.scalar_type() == at::kFloat
                                     : at::isFloatingType(t.scalar_type());
  QK_CHECK(dtype_ok && t.dim() == 1 && t.size(0) == n, kOp, name, " must be ",
           need_float32 ? "float32" : "a float tensor", " of shape [", n, "], got ",
           describe(t));
}

}  // namespace

at::Tensor pack_lstm_weight(const at::Tensor& w) {
  QK_CHECK_CPU("pack_lstm_weight", "w", w);
  QK_CHECK(w.scalar_type() == at::kChar && w.dim() == 2 && w.size(0) % 4 == 0,
           "pack_lstm_weight", "w must be int8 of shape [4 * hidden, K], got ", describe(w));
  return pack_interleaved(w, w.size(0) / 4);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_w8a8(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_ih_scale, const at::Tensor& w_hh, const at::Tensor& w_hh_scale,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh, bool reverse,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_hr_scale,
    const std::optional<at::Tensor>& batch_sizes) {
  // ---- arguments ----
  QK_CHECK_CPU(kOp, "x", x);
  QK_CHECK(x.dim() == 3 && at::isFloatingType(x.scalar_type()) &&
               x.scalar_type() != at::kDouble,
           kOp, "x must be float32/bfloat16/float16 of shape [T, B, input_size], got ",
           describe(x));
  const int64_t steps = x.size(0), batch = x.size(1), in = x.size(2);
  QK_CHECK_CPU(kOp, "w_ih_scale", w_ih_scale);
  QK_CHECK(w_ih_scale.dim() == 1 && w_ih_scale.size(0) % 4 == 0, kOp,
           "w_ih_scale must be float32 of shape [4 * hidden], got ", describe(w_ih_scale));
  const int64_t h = w_ih_scale.size(0) / 4, h16 = round_up(h, 16);
  const bool proj = w_hr.has_value();
  QK_CHECK(proj == w_hr_scale.has_value(), kOp, "w_hr and w_hr_scale must be given together");
  const int64_t out = proj ? w_hr_scale->numel() : h;  // size of h_t
  check_vector("w_ih_scale", w_ih_scale, 4 * h, true);
  check_vector("w_hh_scale", w_hh_scale, 4 * h, true);
  if (b_ih) check_vector("b_ih", *b_ih, 4 * h, false);
  if (b_hh) check_vector("b_hh", *b_hh, 4 * h, false);
  for (const auto& [name, t, cols] : {std::tuple<const char*, const at::Tensor&, int64_t>{
                                          "h0", h0, out},
                                      {"c0", c0, h}}) {
    QK_CHECK_CPU(kOp, name, t);
    QK_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == cols &&
                 at::isFloatingType(t.scalar_type()),
             kOp, name, " must be float of shape [batch, ", cols, "] = [", batch, ", ", cols,
             "], got ", describe(t));
  }
  const at::Tensor wih = lstm_weight("w_ih", w_ih, h, in);
  const at::Tensor whh = lstm_weight("w_hh", w_hh, h, out);
  at::Tensor whr, whr_scale;
  if (proj) {
    check_vector("w_hr_scale", *w_hr_scale, out, true);
    QK_CHECK_CPU(kOp, "w_hr", *w_hr);
    const bool plain = w_hr->scalar_type() == at::kChar && w_hr->dim() == 2 &&
                       w_hr->size(0) == out && w_hr->size(1) == h;
    const bool packed = w_hr->scalar_type() == at::kByte && w_hr->dim() == 2 &&
                        w_hr->size(0) == round_up(out, 16) && w_hr->size(1) == round_up(h, 4);
    QK_CHECK(plain || packed, kOp, "w_hr must be int8 of shape [proj_size, hidden] = [", out,
             ", ", h, "] or its packed form, got ", describe(*w_hr));
    whr = plain ? pack_int8_weight(*w_hr) : w_hr->contiguous();
    whr_scale = *w_hr_scale;
  }
  std::vector<int64_t> active(steps, batch);
  if (batch_sizes) {
    QK_CHECK(batch_sizes->dim() == 1 && batch_sizes->size(0) == steps &&
                 batch_sizes->scalar_type() == at::kLong && batch_sizes->device().is_cpu(),
             kOp, "batch_sizes must be int64 of shape [T] = [", steps, "] on cpu, got ",
             describe(*batch_sizes));
    // contiguous(): a strided or expanded (stride-0) view is read through data_ptr.
    const at::Tensor bs_dense = batch_sizes->contiguous();
    const int64_t* bs = bs_dense.data_ptr<int64_t>();
    for (int64_t t = 0; t < steps; ++t) {
      QK_CHECK(bs[t] >= 0 && bs[t] <= batch && (t == 0 || bs[t] <= bs[t - 1]), kOp,
               "batch_sizes must be non-increasing and within [0, batch], got ", bs[t],
               " at step ", t);
      active[t] = bs[t];
    }
  }
  const Isa isa = selected_isa(kOp);
  const LstmKernels& kernels = lstm_kernels(isa);

  // ---- input projection of every step, both biases folded in ----
  at::Tensor bias = at::zeros({4 * h}, x.options().dtype(at::kFloat));
  if (b_ih) bias += b_ih->to(at::kFloat);
  if (b_hh) bias += b_hh->to(at::kFloat);
  const at::Tensor x2d = x.contiguous().view({steps * batch, in});
  QuantizedRows xq = quantize_rows(kOp, x2d, wih.size(1) + kRowPadBytes, 127, isa);
  const at::Tensor gx = gemm_dequant(kOp, xq, wih, 4 * h16, xq.scale, interleave_gates(w_ih_scale, h),
                                     interleave_gates(bias, h), at::kFloat, isa);

  // ---- recurrent state and per-step buffers (allocated once) ----
  at::Tensor c = at::zeros({batch, h16}, x.options().dtype(at::kFloat));
  c.slice(1, 0, h).copy_(c0);
  at::Tensor hid = at::zeros({batch, h16}, c.options());  // pre-projection hidden
  // What the next step reads. A copy: the op must never write into its h0 argument.
  // Dense row-major [batch, out]: `to(copy=true)` alone keeps a transposed h0's strides.
  at::Tensor hprev = proj ? h0.to(at::kFloat).clone(at::MemoryFormat::Contiguous) : hid;
  if (!proj) hid.slice(1, 0, h).copy_(h0);
  const int64_t hprev_ld = proj ? out : h16;
  const int64_t kp = whh.size(1);
  // The fused step sums the recurrent K in one int32 pass (an H this large would need
  // 4 * H * H bytes of w_hh: 64 GiB).
  QK_CHECK(kp <= kMaxExactK, kOp, "the recurrent size (hidden or proj size) must be at most ",
           kMaxExactK, " so that int32 sums cannot overflow, got ", kp);
  at::Tensor q = at::zeros({batch, kp + kRowPadBytes}, x.options().dtype(at::kChar));
  at::Tensor q_scale = at::empty({batch}, c.options());
  at::Tensor q_sum = at::empty({batch}, x.options().dtype(at::kInt));
  at::Tensor acc;  // int32 step GEMM for the non-fused path
  if (!kernels.fused_step) acc = at::empty({batch, 4 * h16}, x.options().dtype(at::kInt));
  const at::Tensor whh_scale = interleave_gates(w_hh_scale, h);
  at::Tensor y = at::zeros({steps, batch, out}, x.options());

  LstmStepArgs p{};
  p.gemm = Int8GemmArgs{q.data_ptr<int8_t>(), q.size(1), q_sum.data_ptr<int32_t>(),
                        whh.data_ptr<uint8_t>(), kp / kKStep, kp * kGroupCols, 4 * h16,
                        q_scale.data_ptr<float>(),
                        whh_scale.data_ptr<float>(), nullptr, nullptr, 0, OutKind::kInt32,
                        LoraEpilogue{}, range_of_qmax(127)};  // the step quantizes at 127
  p.c = c.data_ptr<float>();
  p.h = hid.data_ptr<float>();
  p.hidden = h;
  p.ld_state = h16;
  const int64_t blocks = h16 / 16;

  for (int64_t s = 0; s < steps; ++s) {
    const int64_t t = reverse ? steps - 1 - s : s;
    const int64_t rows = active[t];
    if (rows == 0) continue;
    QuantizeArgs qa{hprev.data_ptr<float>(), hprev_ld, InKind::kFloat32, out, 127,
                    q.data_ptr<int8_t>(), q.size(1), q_scale.data_ptr<float>(),
                    q_sum.data_ptr<int32_t>()};
    quantize_rows_into(qa, rows, isa);
    p.gx = gx.data_ptr<float>() + t * batch * 4 * h16;
    if (kernels.fused_step) {
      parallel_tiles(rows, blocks, kp, kRowBlock,
                     [&](int64_t m0, int64_t m1, int64_t b0, int64_t b1) {
                       kernels.fused_step(p, m0, m1, b0, b1);
                     });
    } else {
      Int8GemmArgs g = p.gemm;
      g.out = acc.data_ptr();
      g.ldo = 4 * h16;
      run_int8_gemm(g, rows, 4 * blocks, isa);
      at::parallel_for(0, rows, 1, [&](int64_t m0, int64_t m1) {
        kernels.epilogue(p, acc.data_ptr<int32_t>(), m0, m1, 0, blocks);
      });
    }
    at::Tensor h_t = hid.slice(0, 0, rows).slice(1, 0, h);
    if (proj) {
      h_t = linear_w8a8(h_t, whr, whr_scale, std::nullopt);
      hprev.slice(0, 0, rows).copy_(h_t);
    }
    y[t].slice(0, 0, rows).copy_(h_t);
  }
  const at::Tensor h_n = (proj ? hprev : hid.slice(1, 0, h)).to(x.scalar_type()).contiguous();
  return {y, h_n, c.slice(1, 0, h).to(x.scalar_type()).contiguous()};
}

const LstmKernels& lstm_kernels(Isa isa) {
  static const LstmKernels kFused{"avx512_vnni (fused step)", avx512_lstm_step_block,
                                  scalar_lstm_epilogue};
  static const LstmKernels kAvx2{"avx2 gemm + scalar gates", nullptr, scalar_lstm_epilogue};
  static const LstmKernels kScalar{"scalar", nullptr, scalar_lstm_epilogue};
  return isa == Isa::kAvx512Vnni ? kFused : isa == Isa::kAvx2 ? kAvx2 : kScalar;
}

namespace {

const char* portable(Isa) { return "portable"; }
const char* lstm_kernel(Isa isa) { return lstm_kernels(isa).name; }

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "pack_lstm_weight", pack_lstm_weight, portable);
  register_cpu_op(m, "lstm_w8a8", lstm_w8a8, lstm_kernel);
}

}  // namespace qkernels::cpu
