"""generate() with a static cache compiles the int8 model's forward (the quantizer says it
is compileable): one graph, no graph break, no recompile on the next call, and the eager
tokens."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from torch._dynamo.utils import counters  # noqa: E402
from transformers.generation.configuration_utils import CompileConfig  # noqa: E402

from qkernels.hf import QKernelsConfig  # noqa: E402
from tests.test_trainer import llama  # noqa: E402


@pytest.mark.parametrize("method", ["w8a8", "w8a16"])
def test_static_cache_generation_compiles_once_and_gives_the_eager_tokens(tmp_path, method):
    llama().save_pretrained(tmp_path / "float")
    model = transformers.LlamaForCausalLM.from_pretrained(
        tmp_path / "float", quantization_config=QKernelsConfig(method)
    ).eval()
    assert model.hf_quantizer.is_compileable
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=8, do_sample=False, cache_implementation="static")
    with torch.inference_mode():
        eager = model.generate(ids, disable_compile=True, **kw)
    config = CompileConfig(fullgraph=True, dynamic=False)
    config._compile_all_devices = True  # transformers compiles on GPUs only unless told
    torch._dynamo.reset()
    counters.clear()
    with torch.inference_mode():
        first = model.generate(ids, compile_config=config, **kw)
        graphs = counters["stats"]["unique_graphs"]
        second = model.generate(ids, compile_config=config, **kw)
    assert graphs >= 1 and not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == graphs  # no recompile after warm-up
    assert first.tolist() == eager.tolist() == second.tolist()
