"""Traces the GEMM-family ops as AOTAutograd does (functionalization + fake tensors)
and prints, per op and device, the Triton kernels in the graph and the qkernels ops
left whole, as JSON. Run without TRITON_INTERPRET: interpreted kernels cannot be
captured. Fake CUDA tensors need no GPU."""

import json

import torch
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._subclasses.fake_tensor import FakeTensorMode
from torch._subclasses.functional_tensor import dispatch_functionalize
from torch.fx.experimental.proxy_tensor import make_fx

import qkernels
from qkernels.triton._configs import arch_of, m_bucket, w8a8_quantize_in_prologue


def graph_contents(gm) -> dict:
    kernels, ops = [], []
    for node in gm.graph.nodes:
        if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
            kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
            while type(kernel).__name__ == "Autotuner":
                kernel = kernel.fn
            kernels.append(kernel.__name__)
        elif "qkernels" in str(node.target):
            ops.append(str(node.target))
    return {"kernels": kernels, "ops": ops, "matmuls": matmuls(gm)}


def trace(fn, *args) -> dict:
    return graph_contents(make_fx(dispatch_functionalize(fn), tracing_mode="fake")(*args))


def traces(device: str) -> dict:
    with FakeTensorMode():
        x = torch.empty(5, 64, device=device, dtype=torch.bfloat16)
        g = torch.empty(5, 32, device=device, dtype=torch.bfloat16)
        wq = torch.empty(32, 64, device=device, dtype=torch.int8)
        ws = torch.empty(32, device=device)
        a = torch.empty(8, 64, device=device, dtype=torch.bfloat16)
        b = torch.empty(32, 8, device=device, dtype=torch.bfloat16)
    o = qkernels.ops
    return {
        "linear_w8a8": trace(o.linear_w8a8, x, wq, ws),
        "linear_w8a16": trace(o.linear_w8a16, x, wq, ws),
        "lowrank_mm": trace(o.lowrank_mm, x, a, b),
        "lowrank_mm_backward": trace(torch.ops.qkernels.lowrank_mm_backward, g, x, a, b),
    }


def torch_backend_traces() -> dict:
    """The low-rank ops on CUDA with set_backend("torch"): their matmuls, no kernels."""
    qkernels.set_backend("torch", ["lowrank_mm", "lowrank_mm_backward"])
    out = {}
    for op, contents in traces("cuda").items():
        if op.startswith("lowrank"):
            out[op] = contents
    return out


def matmuls(gm) -> int:
    return sum(str(n.target).startswith(("aten.mm", "aten.addmm")) for n in gm.graph.nodes)


if __name__ == "__main__":
    # Triton explicitly: with a GPU present, "auto" would pick the C++ / torch backends
    qkernels.set_backend("triton")
    graphs = {device: traces(device) for device in ("cuda", "cpu")}
    graphs["cuda, torch backend"] = torch_backend_traces()
    # linear_w8a8's quantization strategy follows the GPU here (none: quantize on load)
    with FakeTensorMode():
        arch = arch_of(torch.empty(0, device="cuda"))
    graphs["w8a8 quantizes on load"] = w8a8_quantize_in_prologue(arch, m_bucket(5))
    print(json.dumps(graphs))
