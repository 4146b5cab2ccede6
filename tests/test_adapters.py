"""PEFT-format adapters: qkernels -> PEFT and PEFT -> qkernels, both directions on BERT
(nn.Linear) and GPT-2 (Conv1D), and the errors for a bad adapter directory."""

import copy
import json

import pytest
import torch

import qkernels
from qkernels.nn import Int8Linear, LoRAInt8Linear

transformers = pytest.importorskip("transformers")
from hf_models import tiny_bert, tiny_gpt2  # noqa: E402

peft = pytest.importorskip("peft")

# Outputs of an int8 base vs the float base PEFT runs on: the base's quantization error.
BASE_REL_ERR = 5e-2


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def randomize_adapters(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def test_qkernels_adapters_load_in_peft(tmp_path):
    float_model = tiny_bert()
    model = copy.deepcopy(float_model)
    qkernels.swap(
        model,
        "lora",
        r=4,
        alpha=8,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
    )
    randomize_adapters(model)
    with torch.no_grad():
        model.classifier.weight.add_(0.1)
    qkernels.save_adapters(model, tmp_path, task_type="SEQ_CLS")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["modules_to_save"] == ["classifier"]
    peft_model = peft.PeftModel.from_pretrained(float_model, tmp_path).eval()
    ids = torch.randint(0, 100, (3, 11))
    with torch.no_grad():
        ours, theirs = model(ids).logits, peft_model(ids).logits
    assert rel(ours, theirs) < BASE_REL_ERR
    q = peft_model.base_model.model.bert.encoder.layer[1].attention.self.query
    mine = model.bert.encoder.layer[1].attention.self.query
    torch.testing.assert_close(q.lora_B["default"].weight, mine.lora_B, rtol=0, atol=0)
    assert q.scaling["default"] == mine.scaling


def test_peft_adapters_load_onto_an_int8_base(tmp_path):
    float_model = tiny_bert()
    peft_model = peft.get_peft_model(
        copy.deepcopy(float_model),
        peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"]),
    ).eval()
    randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path)
    model = copy.deepcopy(float_model)
    qkernels.swap(model, "w8a8", exclude=["classifier"])  # an int8 model first
    names = qkernels.load_adapters(model, tmp_path)
    assert len(names) == 2 * 6 + 1  # per layer q, k, v and 3 "dense"; the pooler's dense
    module = model.get_submodule(names[0])
    assert isinstance(module, LoRAInt8Linear) and module.scaling == 2.0
    ids = torch.randint(0, 100, (3, 11))
    with torch.no_grad():
        assert rel(model(ids).logits, peft_model(ids).logits) < BASE_REL_ERR
    # The int8 base kept its own int8 weights (not re-quantized from anything).
    assert type(model.classifier) is torch.nn.Linear


def test_round_trip_is_exact_and_float_targets_get_quantized(tmp_path):
    model = tiny_gpt2()
    qkernels.swap(model, "lora", r=2, alpha=4, base="w8a16", target_modules=["c_attn"])
    randomize_adapters(model)
    qkernels.save_adapters(model, tmp_path)
    fresh = tiny_gpt2()
    qkernels.load_adapters(fresh, tmp_path, base="w8a16")
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits, rtol=0, atol=0)
    # And PEFT reads the Conv1D adapters of GPT-2 (fan_in_fan_out is its business).
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        peft_model = peft.PeftModel.from_pretrained(tiny_gpt2(), tmp_path).eval()
    with torch.no_grad():
        assert rel(model(ids).logits, peft_model(ids).logits) < BASE_REL_ERR


def test_existing_int8_module_is_adapted_in_place(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    model[0] = Int8Linear.from_float(model[0])
    lora = copy.deepcopy(model)
    lora[0] = LoRAInt8Linear.from_int8(lora[0], r=2)
    randomize_adapters(lora)
    qkernels.save_adapters(lora, tmp_path)
    qkernels.load_adapters(model, tmp_path)
    torch.testing.assert_close(model[0].int8_weight(), lora[0].int8_weight(), rtol=0, atol=0)
    x = torch.randn(4, 16)
    torch.testing.assert_close(model(x), lora(x), rtol=0, atol=0)


def test_bad_adapter_directories(tmp_path):
    with pytest.raises(ValueError, match="has no LoRAInt8Linear adapters"):
        qkernels.save_adapters(tiny_bert(), tmp_path / "none")
    model = tiny_bert()
    qkernels.swap(model, "lora", r=4, target_modules=["query"])
    good = qkernels.save_adapters(model, tmp_path / "good")
    with pytest.raises(FileNotFoundError, match="adapter_config.json does not exist"):
        qkernels.load_adapters(tiny_bert(), tmp_path)
    config = json.loads((good / "adapter_config.json").read_text())
    (good / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora=true is not supported"):
        qkernels.load_adapters(tiny_bert(), good)
    (good / "adapter_config.json").write_text(json.dumps({**config, "r": 3}))
    with pytest.raises(ValueError, match="adapter shapes lora_A \\[4, 64\\]"):
        qkernels.load_adapters(tiny_bert(), good)
    (good / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json is not valid JSON"):
        qkernels.load_adapters(tiny_bert(), good)
    (good / "adapter_config.json").write_text(json.dumps(config))
    (good / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="adapter_model.safetensors is not a readable"):
        qkernels.load_adapters(tiny_bert(), good)
    # An adapter for a model with another layout: a clear error naming the module.
    qkernels.save_adapters(model, tmp_path / "other")
    with pytest.raises(ValueError, match="the model has no module 'bert.encoder.layer.0"):
        qkernels.load_adapters(tiny_gpt2(), tmp_path / "other")


def _state(model) -> dict:
    """Every module's type and every tensor of `model`: what a failed load must not change."""
    types = {n: type(m) for n, m in model.named_modules()}
    return {"types": types, **{k: v.clone() for k, v in model.state_dict().items()}}


def _unchanged(model, before) -> None:
    after = _state(model)
    assert after["types"] == before["types"]
    assert after.keys() == before.keys()
    for k in before:
        if k != "types":
            torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)


@pytest.fixture
def adapter_dir(tmp_path):
    model = tiny_bert()
    qkernels.swap(model, "lora", r=4, target_modules=["query", "value"])
    randomize_adapters(model)
    return qkernels.save_adapters(model, tmp_path / "a")


HOSTILE_CONFIGS = {
    "repetition bomb": ({"rank_pattern": {"(?:x{65535}){65535}": 2}}, "multiply past 1000"),
    "nested repetitions": ({"alpha_pattern": {"((a{20}){20}){20}": 2.0}}, "multiply past"),
    "huge count": ({"rank_pattern": {"a{4294967295}": 2}}, "multiply past"),
    "long key": ({"rank_pattern": {"a" * 300: 2}}, "at most 256"),
    "NaN alpha": ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),
    "infinite alpha": ({"lora_alpha": float("inf")}, "lora_alpha must be a finite number"),
    "bool alpha": ({"lora_alpha": True}, "lora_alpha must be a finite number"),
    "string use_rslora": ({"use_rslora": "false"}, "use_rslora must be true or false"),
    "float r": ({"r": 4.0}, "r must be an int >= 1"),
    "absurd r": ({"r": 10**12}, r"do not fit the module with r=1000000000000"),
    "bad dropout": ({"lora_dropout": 2}, r"lora_dropout must be a number in \[0, 1\)"),
    "NaN alpha_pattern": ({"alpha_pattern": {"query": float("nan")}}, "must be a finite number"),
    "bad rank_pattern value": ({"rank_pattern": {"query": "4"}}, "must be an int >= 1"),
    "bad regex": ({"rank_pattern": {"(": 4}}, "is not a regular expression"),
    "rank_pattern not an object": ({"rank_pattern": [4]}, "rank_pattern must be an object"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_hostile_adapter_configs_are_refused_quickly_leaving_the_model_untouched(adapter_dir, case):
    import time

    change, message = HOSTILE_CONFIGS[case]
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    (adapter_dir / "adapter_config.json").write_text(json.dumps({**config, **change}))
    model = tiny_bert()
    qkernels.swap(model, "w8a8", exclude=["classifier"])
    before = _state(model)
    start = time.monotonic()
    with pytest.raises(ValueError, match=message):
        qkernels.load_adapters(model, adapter_dir)
    assert time.monotonic() - start < 3  # the pattern budget is 1 s, the rest is loading
    _unchanged(model, before)


def test_a_load_failing_half_way_leaves_the_model_untouched(adapter_dir):
    """The last layer's adapter has the wrong shape: the ones before it are not applied."""
    from safetensors.torch import load_file, save_file

    file = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(file)
    last = sorted(k for k in tensors if "lora_B" in k)[-1]
    tensors[last] = torch.zeros(tensors[last].shape[0] + 1, tensors[last].shape[1])
    save_file(tensors, file, metadata={"format": "pt"})
    for make in (lambda m: m, lambda m: qkernels.swap(m, "w8a8", exclude=["classifier"])):
        model = tiny_bert()
        make(model)
        before = _state(model)
        with pytest.raises(ValueError, match="do not fit the module"):
            qkernels.load_adapters(model, adapter_dir)
        _unchanged(model, before)


def test_non_finite_or_integer_adapter_tensors_are_refused(adapter_dir):
    from safetensors.torch import load_file, save_file

    file = adapter_dir / "adapter_model.safetensors"
    good = load_file(file)
    key = sorted(k for k in good if "lora_A" in k)[0]
    for bad, message in (
        (torch.full_like(good[key], float("nan")), "NaN or infinite"),
        (good[key].to(torch.int32), "must be floating point"),
    ):
        save_file({**good, key: bad}, file, metadata={"format": "pt"})
        model = tiny_bert()
        before = _state(model)
        with pytest.raises(ValueError, match=message):
            qkernels.load_adapters(model, adapter_dir)
        _unchanged(model, before)


def test_rank_and_alpha_patterns_follow_peft(tmp_path):
    """PEFT's rule: a pattern key matches the end of the module name after a dot."""
    peft_model = peft.get_peft_model(
        tiny_bert(),
        peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["query", "value"],
            rank_pattern={"layer.1.attention.self.query": 2},
            alpha_pattern={"value": 3},
        ),
    ).eval()
    randomize_adapters(peft_model)
    peft_model.save_pretrained(tmp_path)
    model = tiny_bert()
    qkernels.load_adapters(model, tmp_path)
    layers = model.bert.encoder.layer
    assert layers[1].attention.self.query.r == 2 and layers[0].attention.self.query.r == 4
    assert layers[0].attention.self.value.alpha == 3 and layers[0].attention.self.query.alpha == 8
    ids = torch.randint(0, 100, (3, 11))
    with torch.no_grad():
        assert rel(model(ids).logits, peft_model(ids).logits) < BASE_REL_ERR


@pytest.mark.parametrize("key", ["(.*.*.*.*)*Z", "(a|a|.)*(b|.*)*Z", "(?:.*.*.*.*)*(.)\\3{9}"])
def test_backtracking_patterns_load_within_the_budget(adapter_dir, key):
    """Keys that backtrack for hours with Python's re: bounded by the pattern budget
    (the regex package needs far less here); they match nothing, so r and alpha stay."""
    import time

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    change = {"rank_pattern": {key: 2}, "alpha_pattern": {key: 3.0}}
    (adapter_dir / "adapter_config.json").write_text(json.dumps({**config, **change}))
    model = tiny_bert()
    start = time.monotonic()
    names = qkernels.load_adapters(model, adapter_dir)
    assert time.monotonic() - start < 2
    assert all(model.get_submodule(n).r == 4 for n in names)


def test_a_load_past_the_pattern_budget_is_refused(adapter_dir, monkeypatch):
    from qkernels import adapters

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["rank_pattern"] = {"query": 2}
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))
    monkeypatch.setattr(adapters, "PATTERN_BUDGET_S", 0.0)
    model = tiny_bert()
    before = _state(model)
    with pytest.raises(ValueError, match="rank_pattern key 'query' took longer than the 0 s"):
        qkernels.load_adapters(model, adapter_dir)
    _unchanged(model, before)
