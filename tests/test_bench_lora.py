"""The LoRA step bench's memory accounting and its summary ratios."""

import torch

from qkernels.bench import lora


def test_step_peak_counts_the_tensors_a_step_holds_at_once():
    def step() -> None:
        a = torch.ones(2**20)  # 4 MiB
        b = a * 2  # 4 MiB more while a lives
        del a
        c = b + 1  # b and c: 8 MiB again, never 12
        del b, c

    peak = lora.step_peak_tensor_mb(step)
    assert 7.9 < peak < 8.5, peak


def _row(config: str, step_ms: float | None, live: float | None, rss: float = 0.0):
    return lora.StepRow(config, step_ms, 1.0, 100.0, rss, live, 10.0, 5.0, 1000)


def test_step_summary_takes_ratios_only_where_both_configs_ran():
    rows = [
        _row(lora.OURS, 100.0, 300.0, rss=40.0),
        _row(lora.PEFT, 250.0, 400.0),  # its RSS grew by 0: no ratio over it
        _row(lora.OURS + lora.CHECKPOINTING, 120.0, 150.0),
        _row("peft lora bf16", None, None),  # failed: no ratio
    ]
    out = lora.step_summary(rows)
    assert out["step: peft lora fp32 / qkernels lora w8a8"] == 2.5
    assert out["peak live: qkernels / peft fp32"] == 0.75
    assert "step: peft lora bf16 / qkernels lora w8a8" not in out
    assert not any("checkpointing" in k for k in out)  # the peer's checkpointed run is missing
    assert "model RSS: qkernels / peft fp32" not in out


def test_rounds_merge_to_medians_and_the_range_of_their_steps():
    rows = [_row(lora.OURS, ms, live) for ms, live in ((300.0, 10.0), (250.0, 30.0), (280.0, 20.0))]
    rows.append(_row(lora.OURS, None, None))  # a failed process does not count
    merged = lora._merge_rounds(rows)
    assert (merged.step_ms, merged.peak_live_mb, merged.spread_ms) == (280.0, 20.0, 50.0)
    assert merged.trainable_params == 1000 and merged.note == "median of 3 processes"
    failed = _row(lora.PEFT, None, None)
    assert lora._merge_rounds([failed]) is failed


def test_bitsandbytes_configs_train_on_cpu():
    """bitsandbytes int8 + PEFT and NF4 + PEFT (QLoRA) load and take training steps here
    (transformers' BitsAndBytesConfig, PEFT's prepare_model_for_kbit_training)."""
    import pytest

    pytest.importorskip("bitsandbytes")
    rows = lora.run_lora_step_suite(
        lora.CI_MODEL, configs=[lora.BNB_INT8, lora.BNB_NF4], rounds=1, progress=False
    )
    for row in rows:
        assert row.step_ms is not None and row.step_ms > 0, row.note
        assert row.trainable_params > 0 and row.frozen_weight_mb > 0
