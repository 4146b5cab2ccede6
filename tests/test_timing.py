"""qkernels.timing, the timer behind every printed speed: identical work gives 1.00x within
the measured spread, a known ratio is measured as such, and noise and a busy machine are
reported."""

import copy
import time

import pytest
import torch
from torch import nn

from qkernels import timing


def _sleeper(ms: float):
    return lambda: time.sleep(ms / 1e3)


def test_identical_models_time_as_one_within_the_spread():
    """A bias would show in every attempt; a burst of load from another process (CI runs
    two test workers on two cores) spoils one now and then, so up to three attempts."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 256)).eval()
    twin = copy.deepcopy(model)
    x = torch.randn(64, 256)
    seen = []
    for _ in range(3):
        with torch.no_grad():
            c = timing.compare({"a": lambda: model(x), "b": lambda: twin(x)}, rounds=9)
        lo, hi = c.ratio_range("a", "b")
        assert lo <= hi
        if lo < 1.15 and hi > 1 / 1.15:
            return
        seen.append(c.ratio_text("a", "b"))
    pytest.fail(f"identical models never timed as one: {seen}")


def test_a_known_ratio_is_measured():
    c = timing.compare({"slow": _sleeper(6), "fast": _sleeper(2)}, rounds=5, min_sample_s=0)
    assert 2.2 < c.ratio("slow", "fast") < 3.6
    assert c.timings["fast"].q1_ms <= c.timings["fast"].median_ms <= c.timings["fast"].q3_ms
    assert "x (IQR range" in c.ratio_text("slow", "fast")


def test_noise_is_flagged():
    calls = []

    def drifting():  # every call slower than the last: a wide spread
        calls.append(None)
        time.sleep(len(calls) * 1e-3)

    c = timing.compare({"drifting": drifting}, rounds=7, min_sample_s=0)
    assert c.timings["drifting"].spread > timing.NOISY_SPREAD
    assert any("drifting: noisy" in w for w in c.warnings)


@pytest.mark.parametrize("others,busy", [(0, False), (3, True)])
def test_a_busy_machine_is_flagged(monkeypatch, others, busy):
    monkeypatch.setattr(timing, "_runnable_tasks", lambda: others + torch.get_num_threads())
    c = timing.compare({"f": _sleeper(1)}, rounds=3, min_sample_s=0)
    assert c.other_runnable == others
    assert any("busy" in w for w in c.warnings) == busy


def test_bad_arguments_are_an_error():
    with pytest.raises(ValueError, match="rounds >= 1"):
        timing.compare({"f": _sleeper(1)}, rounds=0)
