"""Memory given back after quantize-on-load: the float pages read from the file, the
allocator's free heap (qkernels._memory)."""

import sys

import pytest
import torch

from qkernels._memory import release_file_pages, trim_heap

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise")


def rss_file() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssFile in /proc/self/status")


def mapped_tensor(path, n: int) -> torch.Tensor:
    """A float32 tensor read through a private file mapping, as safetensors does."""
    data = torch.randn(n, generator=torch.Generator().manual_seed(0))
    path.write_bytes(data.numpy().tobytes())
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=n * 4)
    return torch.tensor([], dtype=torch.float32).set_(storage), data


@linux
def test_release_drops_the_pages_of_a_mapped_tensor_and_keeps_its_values(tmp_path):
    n = 4 << 20  # 16 MiB
    t, expected = mapped_tensor(tmp_path / "w.bin", n)
    assert torch.equal(t, expected)  # every page read: resident
    before = rss_file()
    released = release_file_pages(t)
    assert released >= n * 4 - 2 * 4096 and released % 4096 == 0
    assert before - rss_file() >= 0.9 * released
    assert torch.equal(t, expected)  # faulted back in from the file, unchanged


@linux
def test_release_leaves_a_slice_partial_pages_and_anonymous_memory_alone(tmp_path):
    t, expected = mapped_tensor(tmp_path / "w.bin", 1 << 16)
    # 100 floats inside one page: no whole page is the slice's own
    assert release_file_pages(t[10:110]) == 0
    assert release_file_pages(t[::2]) == 0  # not contiguous
    anon = torch.randn(1 << 20)
    copy = anon.clone()
    assert release_file_pages(anon) == 0
    assert torch.equal(anon, copy)  # MADV_DONTNEED here would have zeroed it
    assert release_file_pages(torch.empty(0)) == 0
    assert torch.equal(t, expected)


def test_trim_heap_is_harmless():
    x = torch.randn(1000)
    trim_heap()
    assert torch.isfinite(x).all()


@linux
def test_quantize_on_load_does_not_keep_the_float_linear_pages(tmp_path):
    """from_pretrained(..., QKernelsConfig) reads every fp32 Linear weight once; the
    pages it read must not stay in the process (the embeddings, still float, keep the
    file mapped)."""
    transformers = pytest.importorskip("transformers")
    from qkernels.hf import QKernelsConfig

    config = transformers.BertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    linear_bytes = sum(
        m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    model.save_pretrained(tmp_path / "bert")
    del model
    cls, cfg = transformers.BertModel, QKernelsConfig("w8a8")
    cls.from_pretrained(tmp_path / "bert", quantization_config=cfg)  # warm: code, libraries
    before = rss_file()
    loaded = cls.from_pretrained(tmp_path / "bert", quantization_config=cfg)
    grown = rss_file() - before
    assert grown < 0.25 * linear_bytes, (grown, linear_bytes)
    assert loaded.encoder.layer[0].intermediate.dense.weight.dtype == torch.uint8  # packed


@linux
def test_keep_freed_memory_stops_the_page_faults_of_repeated_allocations():
    """In a child process (the setting is process-wide): 40 MiB tensors allocated, touched
    and freed in a loop fault their pages in every time under glibc's defaults (above 32
    MiB they are always mmapped), and not at all once freed memory is kept."""
    import subprocess

    child = """
import resource, sys, torch
from qkernels import keep_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(10 << 20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
default = faults()
assert keep_freed_memory()
faults()
print(default, faults())
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    default, kept = map(int, out.stdout.split()[-2:])
    assert default > 20 * 5000  # 10240 pages of 4 KiB per tensor, every time
    assert kept < 100
