"""`qkernels info | bench` smoke tests and the lean-import promise."""

import json
import subprocess
import sys

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
        ]
    )
    assert "qkernels w8a8" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["environment"]["device"] == "cpu"
    impls = {r["impl"] for r in data["rows"]}
    assert {"fp32 nn.Linear", "torch.ao dynamic int8", "qkernels w8a8"} <= impls
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
