"""Tampered or incomplete int8 checkpoints are one clear error naming the file and the
key, through `from_pretrained` and `qkernels.load`, before the model is built: never
uninitialised memory, a float tensor truncated to int8 or an int8 scale cast to float."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import qkernels

transformers = pytest.importorskip("transformers")
from hf_models import tiny_bert  # noqa: E402

from qkernels.hf import QKernelsConfig  # noqa: E402

QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A w8a8 BERT in the native format, and the float model it came from."""
    root = tmp_path_factory.mktemp("tampered")
    float_model = tiny_bert()
    float_model.save_pretrained(root / "float")
    model = tiny_bert()
    qkernels.swap(model, "w8a8")
    qkernels.save(model, root / "int8")
    return root


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_tensors(d, edit):
    file = d / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def _edit_plan(d, edit):
    config = json.loads((d / "config.json").read_text())
    edit(config["quantization_config"]["modules"])
    (d / "config.json").write_text(json.dumps(config))


def _load_both(d):
    """Both loaders must refuse: yields the two errors' messages."""
    messages = []
    for load in (
        lambda: qkernels.load(d),
        lambda: transformers.BertForSequenceClassification.from_pretrained(d),
    ):
        with pytest.raises(ValueError) as e:
            load()
        messages.append(str(e.value))
    return messages


def _static(modules):
    modules[QUERY]["static_act"] = True


TAMPERING = {
    "missing weight_scale": (lambda t: t.pop(f"{QUERY}.weight_scale"), None, "holds no"),
    "missing int8 weight": (lambda t: t.pop(f"{QUERY}.weight"), None, "holds no"),
    "missing bias": (lambda t: t.pop(f"{QUERY}.bias"), None, "holds no"),
    "int8 weight_scale": (
        lambda t: t.update({f"{QUERY}.weight_scale": t[f"{QUERY}.weight_scale"].to(torch.int8)}),
        None,
        "must be floating point",
    ),
    "float weight": (
        lambda t: t.update({f"{QUERY}.weight": t[f"{QUERY}.weight"].float()}),
        None,
        "must be int8",
    ),
    "extra-shaped scale": (
        lambda t: t.update({f"{QUERY}.weight_scale": torch.ones(65)}),
        None,
        r"of shape \[64\], got F32 \[65\]",
    ),
    "extra tensor": (
        lambda t: t.update({f"{QUERY}.act_scale": torch.ones(1)}),
        None,
        "does not have",
    ),
    "static_act without act_scale": (None, _static, "holds no"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_int8_checkpoints_are_refused(saved, tmp_path, case):
    tensors, plan, message = TAMPERING[case]
    d = _copy(saved / "int8", tmp_path / "d")
    if tensors:
        _edit_tensors(d, tensors)
    if plan:
        _edit_plan(d, plan)
    for got in _load_both(d):
        assert "model.safetensors" in got and QUERY in got, got
        assert pytest.importorskip("re").search(message, got), got


def test_the_untampered_copy_loads(saved, tmp_path):
    d = _copy(saved / "int8", tmp_path / "d")
    model = qkernels.load(d)
    assert type(model.get_submodule(QUERY)).__name__ == "Int8Linear"


@pytest.mark.parametrize(
    "plan",
    [
        lambda m: m[QUERY].update(in_features="64"),
        lambda m: m[QUERY].update(in_features=-3),
        lambda m: m.update({QUERY: ["Int8Linear"]}),
        lambda m: m.update({"bert.no.such.module": m[QUERY]}),
        lambda m: m[QUERY].update(r=10**12, type="LoRAInt8Linear"),
    ],
    ids=["str dims", "negative dims", "entry not an object", "unknown module", "absurd rank"],
)
def test_tampered_plans_are_one_clear_error(saved, tmp_path, plan):
    d = _copy(saved / "int8", tmp_path / "d")
    _edit_plan(d, plan)
    for got in _load_both(d):
        assert "qkernels" in got and ("config.json" in got or "model.safetensors" in got), got


def test_quantize_on_load_refuses_a_float_checkpoint_missing_a_weight(saved, tmp_path):
    d = _copy(saved / "float", tmp_path / "d")
    _edit_tensors(d, lambda t: t.pop(f"{QUERY}.weight"))
    with pytest.raises(ValueError, match=rf"holds no '{QUERY}\.weight' to quantize"):
        transformers.BertForSequenceClassification.from_pretrained(
            d, quantization_config=QKernelsConfig("w8a8")
        )
    _edit_tensors(d, lambda t: t.update({f"{QUERY}.weight": torch.ones(64, 64, dtype=torch.int8)}))
    with pytest.raises(ValueError, match="must be floating point of shape"):
        transformers.BertForSequenceClassification.from_pretrained(
            d, quantization_config=QKernelsConfig("w8a8")
        )


def test_pickle_checkpoints_are_refused(saved, tmp_path):
    d = tmp_path / "bin"
    model = tiny_bert()
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")  # the pickle format
    with pytest.raises(ValueError, match="pickle"):
        qkernels.load(d)
    with pytest.raises(ValueError, match="pytorch_model.bin is not safetensors"):
        transformers.BertForSequenceClassification.from_pretrained(
            d, quantization_config=QKernelsConfig("w8a8")
        )


@pytest.mark.parametrize(
    "change,message",
    [
        ({"fuse_norms": "false"}, "fuse_norms must be true or false"),
        ({"embeddings": 1}, "embeddings must be true or false"),
        ({"modules": ["a"]}, "modules must be an object"),
        ({"modules_to_not_convert": "lm_head"}, "modules_to_not_convert must be a list"),
        ({"method": "int3"}, "method must be one of"),
        ({"act_bits": "8"}, r"act_bits must be an int in \[2, 8\]"),
    ],
)
def test_tampered_quantization_configs_are_refused(saved, tmp_path, change, message):
    d = _copy(saved / "int8", tmp_path / "d")
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"].update(change)
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        transformers.BertForSequenceClassification.from_pretrained(d)
