"""Hugging Face native: quantize while loading, save_pretrained / from_pretrained round
trips, the format on disk, refusal without qkernels, and directories of the format before."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_TOL
from safetensors import safe_open
from safetensors.torch import load_file

import qkernels

transformers = pytest.importorskip("transformers")
from qkernels.hf import QKernelsConfig  # noqa: E402 - needs transformers
from qkernels.nn import Int8Embedding  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def gpt2():
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=64, vocab_size=100, n_positions=32, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel, transformers.AutoModelForCausalLM, config


def llama():
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.LlamaForCausalLM, transformers.AutoModelForCausalLM, config


def bert():
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=80,
        vocab_size=100, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    return (
        transformers.BertForSequenceClassification,
        transformers.AutoModelForSequenceClassification,
        config,
    )


ARCHS = {"gpt2": gpt2, "llama": llama, "bert": bert}


@pytest.fixture(scope="module")
def float_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("float")
    for name, arch in ARCHS.items():
        cls, _, config = arch()
        torch.manual_seed(0)
        cls(config).save_pretrained(root / name)
    return root


def out(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("method", ["w8a8", "w8a16"])
def test_quantize_on_load_round_trips_bit_identical(float_dirs, tmp_path, arch, method):
    """QKernelsConfig(method) equals swap(method, output_layer="w8a16") bit for bit (the
    default int8 output layer of a generating model; BERT's classifier stays float)."""
    cls, auto, _ = ARCHS[arch]()
    swapped = cls.from_pretrained(float_dirs / arch).eval()
    heads = ("lm_head", "classifier", "score")
    generating = swapped.get_output_embeddings() is not None
    report = qkernels.swap(
        swapped, method, exclude=heads, output_layer="w8a16" if generating else None
    )
    model = auto.from_pretrained(
        float_dirs / arch, quantization_config=QKernelsConfig(method)
    ).eval()
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    replaced = sorted(name for name, _, _ in report.replaced)
    assert sorted(n for n, k in kinds.items() if k == "Int8Linear") == replaced
    expected = out(swapped, IDS)
    torch.testing.assert_close(out(model, IDS), expected, rtol=0, atol=0)

    model.save_pretrained(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "qkernels"
    modules = config["quantization_config"]["modules"]
    assert sorted(n for n, spec in modules.items() if spec["type"] == "Int8Linear") == replaced
    if generating:
        assert modules["lm_head"]["mode"] == "w8a16" and not config["tie_word_embeddings"]
    fused = sorted(n for n, spec in modules.items() if spec["type"] == "FusedActivation")
    assert len(fused) == 2 and sorted(report.fused) == sorted(  # one MLP per layer
        n.rpartition(".")[0] + "." + modules[n]["into"] for n in fused
    )
    assert "qkernels" not in config
    with safe_open(tmp_path / "q" / "model.safetensors", "pt") as f:
        int8 = [k for k in f.keys() if f.get_slice(k).get_dtype() == "I8"]  # noqa: SIM118
        assert int8 and all(len(f.get_slice(k).get_shape()) == 1 for k in int8)
    for reloaded in (auto.from_pretrained(tmp_path / "q"), qkernels.load(tmp_path / "q")):
        torch.testing.assert_close(out(reloaded.eval(), IDS), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_embeddings_quantize_on_load_as_swap_does(float_dirs, tmp_path, arch):
    """QKernelsConfig(embeddings=True): the tables load as Int8Embedding, bit-identical to
    swap(..., embeddings=True, output_layer="w8a16"); an input embedding tied to the output
    layer (GPT-2's wte, which the saved file holds once for both) is quantized from the
    loaded table, as the head is; the saved model reloads."""
    cls, auto, _ = ARCHS[arch]()
    model = auto.from_pretrained(
        float_dirs / arch, quantization_config=QKernelsConfig("w8a8", embeddings=True)
    ).eval()
    swapped = cls.from_pretrained(float_dirs / arch).eval()
    heads = ["lm_head", "classifier", "score"]
    generating = swapped.get_output_embeddings() is not None
    output_layer = "w8a16" if generating else None
    qkernels.swap(swapped, "w8a8", exclude=heads, embeddings=True, output_layer=output_layer)

    def tables(m):
        kinds = {n: type(x).__name__ for n, x in m.named_modules()}
        return {n: k for n, k in kinds.items() if "Embedding" in k}

    assert tables(model) == tables(swapped) and "Int8Embedding" in tables(model).values()
    assert type(model.get_input_embeddings()) is Int8Embedding
    expected = out(swapped, IDS)
    torch.testing.assert_close(out(model, IDS), expected, rtol=0, atol=0)
    model.save_pretrained(tmp_path / "q")
    reloaded = auto.from_pretrained(tmp_path / "q").eval()
    assert tables(reloaded) == tables(model)
    torch.testing.assert_close(out(reloaded, IDS), expected, rtol=0, atol=0)


def test_act_bits_in_the_config_reaches_every_module_and_the_saved_model(float_dirs, tmp_path):
    _, auto, _ = llama()
    config = QKernelsConfig("w8a8", act_bits=7)
    model = auto.from_pretrained(float_dirs / "llama", quantization_config=config).eval()

    def bits(m):  # of the w8a8 Linears (the default output layer is w8a16)
        return {x.act_bits for x in m.modules() if getattr(x, "mode", None) == "w8a8"}

    assert bits(model) == {7}
    model.save_pretrained(tmp_path / "q")
    reloaded = qkernels.load(tmp_path / "q").eval()
    assert bits(reloaded) == {7}
    torch.testing.assert_close(out(reloaded, IDS), out(model, IDS), rtol=0, atol=0)
    with pytest.raises(ValueError, match="act_bits=7 needs mode='w8a8'"):
        QKernelsConfig("w8a16", act_bits=7)


@pytest.mark.parametrize("arch,tied", [("gpt2", True), ("llama", False), ("llama", True)])
@pytest.mark.parametrize("mode", ["w8a16", "w8a8", None])
def test_output_layer_on_load(float_dirs, tmp_path, arch, tied, mode):
    """QKernelsConfig(output_layer=...): a tied head (GPT-2's, a tied Llama's: the file
    holds the table once) is quantized from the loaded table, an untied one as it loads;
    both equal swap(..., output_layer=mode) bit for bit, the input table stays float, the
    config unties them, and the saved model reloads bit for bit. None keeps it float."""
    cls, auto, config = ARCHS[arch]()
    source = float_dirs / arch
    if tied != config.tie_word_embeddings:
        config.tie_word_embeddings = tied
        torch.manual_seed(0)
        cls(config).save_pretrained(source := tmp_path / "float")
    model = auto.from_pretrained(
        source, quantization_config=QKernelsConfig("w8a8", output_layer=mode)
    ).eval()
    swapped = cls.from_pretrained(source).eval()
    qkernels.swap(swapped, "w8a8", exclude=("lm_head",), output_layer=mode)
    assert type(model.get_input_embeddings()) is torch.nn.Embedding
    if mode is None:
        assert type(model.lm_head) is torch.nn.Linear
    else:
        assert type(model.lm_head) is qkernels.Int8Linear and model.lm_head.mode == mode
        assert not model.config.tie_word_embeddings
    expected = out(swapped, IDS)
    torch.testing.assert_close(out(model, IDS), expected, rtol=0, atol=0)
    model.save_pretrained(tmp_path / "q")
    for reloaded in (auto.from_pretrained(tmp_path / "q"), qkernels.load(tmp_path / "q")):
        assert type(reloaded.lm_head) is type(model.lm_head)
        torch.testing.assert_close(out(reloaded.eval(), IDS), expected, rtol=0, atol=0)


def test_output_layer_named_float_or_bad(float_dirs):
    _, auto, _ = llama()
    config = QKernelsConfig("w8a8", modules_to_not_convert=["lm_head"])
    model = auto.from_pretrained(float_dirs / "llama", quantization_config=config)
    assert type(model.lm_head) is torch.nn.Linear
    with pytest.raises(ValueError, match="output_layer must be one of"):
        QKernelsConfig("w8a8", output_layer="int4")


def test_modules_to_not_convert_stay_float(float_dirs):
    _, auto, _ = llama()
    config = QKernelsConfig("w8a8", modules_to_not_convert=["lm_head", "mlp.down_proj"])
    model = auto.from_pretrained(float_dirs / "llama", quantization_config=config)
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    assert kinds["lm_head"] == "Linear"
    assert kinds["model.layers.0.mlp.down_proj"] == "Linear"
    assert kinds["model.layers.1.self_attn.q_proj"] == "Int8Linear"


def test_qkernels_save_of_any_swap_loads_with_from_pretrained(float_dirs, tmp_path):
    """LoRA adapters on an int8 base (trained state included) and QAT converted to int8."""
    cls, auto, _ = bert()
    for method, extra in (("lora", {"r": 4, "alpha": 8}), ("qat", {})):
        model = cls.from_pretrained(float_dirs / "bert").eval()
        qkernels.swap(model, method, exclude=("classifier",), **extra)
        if method == "lora":
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, qkernels.LoRAInt8Linear):
                        m.lora_B.normal_()
        else:
            qkernels.convert(model)
        qkernels.save(model, tmp_path / method)
        reloaded = auto.from_pretrained(tmp_path / method).eval()
        torch.testing.assert_close(out(reloaded, IDS), out(model, IDS), rtol=0, atol=0)


def test_a_plain_save_pretrained_after_swap_writes_the_same_format(float_dirs, tmp_path):
    cls, auto, _ = gpt2()
    model = cls.from_pretrained(float_dirs / "gpt2").eval()
    qkernels.swap(model, "w8a8")
    model.save_pretrained(tmp_path / "p")
    torch.testing.assert_close(
        out(auto.from_pretrained(tmp_path / "p"), IDS), out(model, IDS), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    "arch,method",
    [  # one in `make test` (CI time), all three in `make test-slow`
        ("llama", "w8a8"),
        pytest.param("gpt2", "w8a8", marks=pytest.mark.slow),
        pytest.param("llama", "lowrank", marks=pytest.mark.slow),
    ],
)
def test_without_qkernels_transformers_refuses_the_directory(float_dirs, tmp_path, arch, method):
    """Never a wrong float model: Llama's int8 [N, K] weights would fit its float Linear
    exactly, GPT-2's square Conv1D weights too, and low-rank factors leave `weight` to a
    random initialisation; with qkernels the same directory loads bit-identically."""
    cls, auto, _ = ARCHS[arch]()
    model = cls.from_pretrained(float_dirs / arch).eval()
    qkernels.swap(model, method, **({"rank": 8} if method == "lowrank" else {}))
    qkernels.save(model, tmp_path / "q")
    reloaded = auto.from_pretrained(tmp_path / "q").eval()
    torch.testing.assert_close(out(reloaded, IDS), out(model, IDS), rtol=0, atol=0)
    code = (
        "import sys, transformers\n"
        f"transformers.AutoModelForCausalLM.from_pretrained({str(tmp_path / 'q')!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Unknown quantization type, got qkernels" in r.stderr
    assert "ignore_mismatched_sizes" in r.stderr


def test_directories_of_the_format_before_still_load_and_convert(tmp_path, saved_with_avx2):
    """Saved by the code of 2026-11-27 before this format (plan under "qkernels" in
    config.json): qkernels.load reads it; saving it again writes the native format."""
    source = FIXTURES / "saved_v0_1_lora" / "bert_lora_w8a8"
    assert "qkernels" in json.loads((source / "config.json").read_text())
    expected = load_file(FIXTURES / "saved_v0_1_lora" / "bert_lora_w8a8.expected.safetensors")
    model = qkernels.load(source)
    loaded = out(model, expected["input_ids"])
    torch.testing.assert_close(loaded, expected["logits"], **FIXTURE_TOL)
    qkernels.save(model, tmp_path / "new")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert "qkernels" not in config and config["quantization_config"]["quant_method"] == "qkernels"
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "new")
    got = out(reloaded.eval(), expected["input_ids"])
    torch.testing.assert_close(got, loaded, rtol=0, atol=0)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="method must be one of .*got 'int4'"):
        QKernelsConfig("int4")
    with pytest.raises(ValueError, match="unknown arguments \\['bits'\\]"):
        QKernelsConfig.from_dict({"quant_method": "qkernels", "bits": 4})


def test_import_qkernels_does_not_import_transformers():
    code = "import sys, qkernels; print('transformers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False", r.stderr


def test_quantize_on_load_never_holds_the_fp32_model(tmp_path):
    """Peak anonymous memory of from_pretrained(dtype=float32) of a bf16 checkpoint with
    QKernelsConfig (a child process) stays within the int8 model + one fp32 decoder
    block + 10%, below the fp32 model a load-then-quantize would hold. Mapped file pages
    are not counted: safetensors reads through mmap, and those clean page-cache pages are
    the kernel's to reclaim."""
    config = transformers.LlamaConfig(
        hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6,
        num_key_value_heads=6, vocab_size=2000, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "llama")
    script = Path(__file__).parent / "scripts" / "peak_load_memory.py"
    # glibc keeps freed blocks per thread arena (the loader reads with 4 threads): pin the
    # mmap threshold so the peak counts what the loader holds, not the allocator's cache.
    env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_THRESHOLD_="65536")
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "llama"), "w8a8"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    fp32_model = sum(p.numel() * 4 for p in transformers.LlamaForCausalLM(config).parameters())
    bound = 1.1 * (got["model_bytes"] + got["fp32_block_bytes"])
    assert bound < 0.6 * fp32_model  # so holding the fp32 model could not pass
    assert got["peak_over_baseline"] <= bound


# transformers first in `make test-slow` only (CI time: ~30 s per fresh process)
@pytest.mark.parametrize(
    "first", ["qkernels", pytest.param("transformers", marks=pytest.mark.slow)]
)
def test_import_order_does_not_matter(float_dirs, tmp_path, first):
    """`import qkernels` before transformers registers through the import hook, after it
    directly; either way from_pretrained reads the qkernels format."""
    cls, _, _ = llama()
    model = cls.from_pretrained(float_dirs / "llama")
    qkernels.swap(model, "w8a16")
    qkernels.save(model, tmp_path / "q")
    second = "transformers" if first == "qkernels" else "qkernels"
    code = (
        f"import {first}, {second}\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'q')!r})\n"
        "print(type(m.model.layers[0].mlp.up_proj).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "Int8Linear"
