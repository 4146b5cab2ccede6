"""LSTM family (lstm_w8a8, pack_lstm_weight) against qkernels.reference on every backend."""

import pytest
import torch
from backends import needs_triton, triton_ops

from qkernels import ops
from qkernels import reference as ref

# Kernel vs qkernels.reference (same quantization): float order and the kernel's exp
# approximation can move an h element across a rounding boundary, which then
# propagates; measured < 1e-4.
VS_REFERENCE = 2e-3


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def quantized_layer(inp, hidden, proj=0):
    w_ih, s_ih = ops.quantize_rowwise(torch.randn(4 * hidden, inp) / inp**0.5)
    w_hh, s_hh = ops.quantize_rowwise(torch.randn(4 * hidden, proj or hidden) / hidden**0.5)
    args = dict(
        w_ih=w_ih,
        w_ih_scale=s_ih,
        w_hh=w_hh,
        w_hh_scale=s_hh,
        b_ih=torch.randn(4 * hidden) * 0.1,
        b_hh=torch.randn(4 * hidden) * 0.1,
    )
    if proj:
        w_hr, s_hr = ops.quantize_rowwise(torch.randn(proj, hidden) / hidden**0.5)
        args.update(w_hr=w_hr, w_hr_scale=s_hr)
    return args


def positional(x, h0, c0, args, reverse=False, batch_sizes=None):
    """lstm_w8a8's arguments in schema order, for a backend call."""
    return (
        x,
        h0,
        c0,
        args["w_ih"],
        args["w_ih_scale"],
        args["w_hh"],
        args["w_hh_scale"],
        args["b_ih"],
        args["b_hh"],
        reverse,
        args.get("w_hr"),
        args.get("w_hr_scale"),
        batch_sizes,
    )


@pytest.mark.parametrize("with_batch_sizes", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "steps,batch,inp,hidden,proj",
    [(1, 1, 3, 5, 0), (7, 5, 33, 40, 0), (4, 17, 64, 100, 0), (5, 3, 20, 24, 7), (3, 2, 16, 16, 0)],
)
def test_op_matches_reference(backend, steps, batch, inp, hidden, proj, reverse, with_batch_sizes):
    backend.skip_if_slow(steps * batch * 4 * hidden * (inp + hidden), 1_000_000)
    args = quantized_layer(inp, hidden, proj)
    x = torch.randn(steps, batch, inp)
    h0, c0 = torch.randn(batch, proj or hidden) * 0.5, torch.randn(batch, hidden) * 0.5
    sizes = None  # a PackedSequence's: non-increasing, on the host
    if with_batch_sizes:
        sizes = torch.tensor(sorted((max(batch - i, 1) for i in range(steps)), reverse=True))
    call = positional(x, h0, c0, args, reverse, sizes)
    got = backend("lstm_w8a8", *call[:-1], host=(sizes,))
    expected = ref.lstm_w8a8(*call)
    # Triton computes the gates in fp32 like the reference; the AVX-512 CPU step uses
    # an exp approximation (~1e-7 relative), which rounding then propagates.
    tol = 1e-4 if backend.name in ("triton", "cuda") else VS_REFERENCE
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        assert rel(a, b) < tol


def test_op_packed_weights_and_batch_sizes(isa):
    args = quantized_layer(10, 20)
    x = torch.randn(6, 4, 10)
    h0, c0 = torch.zeros(4, 20), torch.zeros(4, 20)
    batch_sizes = torch.tensor([4, 4, 3, 2, 2, 1])
    expected = ref.lstm_w8a8(x, h0, c0, reverse=True, batch_sizes=batch_sizes, **args)
    packed = dict(
        args, w_ih=ops.pack_lstm_weight(args["w_ih"]), w_hh=ops.pack_lstm_weight(args["w_hh"])
    )
    got = ops.lstm_w8a8(x, h0, c0, reverse=True, batch_sizes=batch_sizes, **packed)
    for a, b in zip(got, expected, strict=True):
        assert rel(a, b) < VS_REFERENCE
    assert torch.equal(got[0][5, 1:], torch.zeros(3, 20))  # inactive rows stay zero


def test_op_does_not_modify_inputs():
    args = quantized_layer(8, 16, proj=4)
    x, h0, c0 = torch.randn(3, 2, 8), torch.randn(2, 4), torch.randn(2, 16)
    h0_copy, c0_copy = h0.clone(), c0.clone()
    ops.lstm_w8a8(x, h0, c0, **args)
    assert torch.equal(h0, h0_copy) and torch.equal(c0, c0_copy)


def test_opcheck():
    args = quantized_layer(8, 16, proj=4)
    x, h0, c0 = torch.randn(3, 2, 8), torch.randn(2, 4), torch.randn(2, 16)
    torch.library.opcheck(
        torch.ops.qkernels.lstm_w8a8.default,
        (
            x,
            h0,
            c0,
            args["w_ih"],
            args["w_ih_scale"],
            args["w_hh"],
            args["w_hh_scale"],
            args["b_ih"],
            args["b_hh"],
            True,
            args["w_hr"],
            args["w_hr_scale"],
            torch.tensor([2, 2, 1]),
        ),
    )
    torch.library.opcheck(torch.ops.qkernels.pack_lstm_weight.default, (args["w_ih"],))


# ---- Triton only ----


@needs_triton
def test_bad_input_same_errors():
    w, s = ops.quantize_rowwise(torch.randn(32, 8))
    with pytest.raises(ValueError, match=r"qkernels\.lstm_w8a8: h0 must be float of shape"):
        triton_ops.lstm_w8a8(torch.randn(2, 3, 8), torch.zeros(2, 8), torch.zeros(3, 8), w, s, w, s)


def test_bad_input_raises_clear_error():
    args = quantized_layer(8, 16)
    with pytest.raises(
        ValueError,
        match=r"qkernels\.lstm_w8a8: h0 must be float of shape "
        r"\[batch, 16\] = \[2, 16\]",
    ):
        ops.lstm_w8a8(torch.randn(3, 2, 8), torch.zeros(3, 16), torch.zeros(2, 16), **args)
    with pytest.raises(ValueError, match=r"qkernels\.lstm_w8a8: w_ih must be int8 of shape"):
        ops.lstm_w8a8(torch.randn(3, 2, 9), torch.zeros(2, 16), torch.zeros(2, 16), **args)
    with pytest.raises(ValueError, match=r"batch_sizes must be non-increasing"):
        ops.lstm_w8a8(
            torch.randn(3, 2, 8),
            torch.zeros(2, 16),
            torch.zeros(2, 16),
            batch_sizes=torch.tensor([1, 2, 2]),
            **args,
        )
    with pytest.raises(ValueError, match=r"qkernels\.lstm_w8a8: c0 must be on cpu like the other"):
        ops.lstm_w8a8(
            torch.randn(3, 2, 8), torch.zeros(2, 16), torch.zeros(2, 16, device="meta"), **args
        )


def test_strided_batch_sizes_and_transposed_h0_equal_the_dense_call(isa):
    """A step-sliced or stride-0 batch_sizes and a transposed h0 (with a projection)
    give the same result as their contiguous copies."""
    args = quantized_layer(8, 16, proj=4)
    x, c0 = torch.randn(5, 3, 8), torch.randn(3, 16)
    h0 = torch.randn(4, 3).T  # [3, 4], transposed
    sizes = torch.tensor([3, 9, 3, 9, 2, 9, 2, 9, 1, 9])[::2]  # [3, 3, 2, 2, 1]
    dense = ops.lstm_w8a8(x, h0.contiguous(), c0, batch_sizes=sizes.contiguous(), **args)
    got = ops.lstm_w8a8(x, h0, c0, batch_sizes=sizes, **args)
    for a, b in zip(got, dense, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    same = torch.tensor([2]).expand(5)  # stride 0
    torch.testing.assert_close(
        ops.lstm_w8a8(x, h0, c0, batch_sizes=same, **args)[0],
        ops.lstm_w8a8(x, h0, c0, batch_sizes=same.contiguous(), **args)[0],
        rtol=0,
        atol=0,
    )
