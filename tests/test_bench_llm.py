"""The llm suite (qkernels.bench.llm): every implementation runs in its own process and
reports prefill / decode rates, its own peak RSS and its agreement with fp32; a peer that
cannot run (here llama.cpp, made to fail) is a note, not an error."""

import math

import pytest

pytest.importorskip("transformers")
from qkernels.bench import llm, llm_worker  # noqa: E402 - needs transformers


def test_ci_suite_runs_every_hf_impl_in_its_own_process(tmp_path, monkeypatch):
    def no_converter(*args, **kwargs):
        raise RuntimeError("no llama.cpp here\nsecond line")

    monkeypatch.setattr(llm, "convert_to_gguf", no_converter)
    rows = llm.run_llm_suite(tmp_path, ci=True, runs=1, progress=False)
    by_impl = {r.impl: r for r in rows}
    assert set(by_impl) == set(llm_worker.HF_IMPLS) | {llm_worker.LLAMA_CPP}
    assert by_impl[llm_worker.LLAMA_CPP].note.startswith("RuntimeError: no llama.cpp here")
    for impl in llm_worker.HF_IMPLS:
        r = by_impl[impl]
        assert not r.note and r.decode_tps > 0 and r.load_s > 0
        assert set(r.prefill_tps) == {str(n) for n in llm.CI["prefill"]}
        # the worker's own peak RSS: torch alone is hundreds of MB, far below a 64 GB bug
        assert 100 < r.peak_rss_mb < 64_000
        assert 0 <= r.top1_agreement <= 1
    assert by_impl["hf fp32"].top1_agreement == 1.0
    assert by_impl["qkernels w8a16"].top1_agreement > 0.5  # a tiny random model: loose
    text = llm.format_llm_table(rows)
    assert "qkernels w8a8" in text and "not run:" in text


def test_summary_ratios_are_against_llama_cpp():
    def row(impl, decode, prefill, rss):
        return llm.LlmRow(impl, 0, decode, {"128": prefill}, rss, 1.0, 1.0)

    rows = [
        row(llm_worker.LLAMA_CPP, 20.0, 100.0, 1000.0),
        row("qkernels w8a16", 22.0, 300.0, 1500.0),
        row("qkernels w8a16", 18.0, 260.0, 1700.0),  # a second run: medians
    ]
    summary = {e["impl"]: e for e in llm.summarize(rows)}
    ours = summary["qkernels w8a16"]
    assert ours["decode_tps"] == 20.0 and ours["decode_tps / llama.cpp"] == 1.0
    assert ours["prefill128_tps / llama.cpp"] == 2.8
    assert ours["peak_rss_mb / llama.cpp"] == 1.6
    nan = llm.summarize([row("qkernels w8a8", 1.0, 1.0, 1.0)])[0]["decode_tps / llama.cpp"]
    assert math.isnan(nan)  # no peer, no ratio
