"""The one timer behind every speed qkernels prints (fine-tuning report, demo, benchmarks):
the compared callables are warmed up, then timed in interleaved rounds (each round runs
every one once, in a rotating order), so a machine that gets busier halfway slows all of
them alike. Reported: median and quartiles per callable, the thread count, the load, and
warnings when the spread is large or other work competes for the CPUs.

A ratio comes with a range from the quartiles (slowest plausible to fastest plausible),
and two identical models give 1.00x within it (tests/test_timing.py).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

NOISY_SPREAD = 0.10  # interquartile range / median above which a timing is flagged


@dataclass
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0


@dataclass
class Comparison:
    timings: dict[str, Timing]
    rounds: int
    threads: int
    cpus: int
    load_1min: float  # os.getloadavg() when timing started
    other_runnable: float  # median count of other runnable tasks seen between rounds
    warnings: list[str] = field(default_factory=list)

    def ratio(self, slow: str, fast: str) -> float:
        """How many times faster `fast` is than `slow` (medians)."""
        return self.timings[slow].median_ms / self.timings[fast].median_ms

    def ratio_range(self, slow: str, fast: str) -> tuple[float, float]:
        """The ratio from the quartiles: (slow's q1 / fast's q3, slow's q3 / fast's q1)."""
        s, f = self.timings[slow], self.timings[fast]
        return s.q1_ms / f.q3_ms, s.q3_ms / f.q1_ms

    def ratio_text(self, slow: str, fast: str) -> str:
        lo, hi = self.ratio_range(slow, fast)
        return f"{self.ratio(slow, fast):.2f}x (IQR range {lo:.2f}-{hi:.2f})"

    def as_dict(self) -> dict:
        return asdict(self)


def _runnable_tasks() -> int | None:
    """Runnable tasks on the machine right now (/proc/loadavg's 4th field), or None."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, median, q3


def compare(
    fns: dict[str, Callable[[], object]],
    rounds: int = 7,
    warmup: int = 1,
    min_sample_s: float = 0.02,
) -> Comparison:
    """Time each callable in `fns` in `rounds` interleaved rounds. A sample repeats a
    callable enough times to last about `min_sample_s` (the count is set from the
    warm-up, the same for every round). Warnings go into the result, not to stderr."""
    if not fns or rounds < 1:
        raise ValueError(f"timing.compare: needs callables and rounds >= 1, got {rounds=}")
    names = list(fns)
    # CUDA work is asynchronous: wait for it at both ends of every timed sample.
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    repeat = {}
    for name in names:
        for _ in range(max(0, warmup - 1)):
            fns[name]()
        sync()
        t0 = time.perf_counter()
        fns[name]()
        sync()
        repeat[name] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t0, 1e-9)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    samples: dict[str, list[float]] = {name: [] for name in names}
    others: list[int] = []
    for r in range(rounds):
        running = _runnable_tasks()
        if running is not None:  # minus this process's threads (its pool may still spin)
            others.append(max(0, running - torch.get_num_threads()))
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], repeat[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            sync()
            samples[name].append((time.perf_counter() - t0) / n * 1e3)
    timings = {}
    for name in names:
        q1, med, q3 = _quartiles(samples[name])
        timings[name] = Timing(round(med, 4), round(q1, 4), round(q3, 4))
    result = Comparison(
        timings,
        rounds,
        torch.get_num_threads(),
        _cpus(),
        round(load, 2),
        statistics.median(others) if others else float("nan"),
    )
    for name, t in timings.items():
        if t.spread > NOISY_SPREAD:
            result.warnings.append(
                f"{name}: noisy timing (interquartile range {100 * t.spread:.0f}% of the median)"
            )
    if result.other_runnable >= 1:
        result.warnings.append(
            f"the machine is busy: {result.other_runnable:g} other runnable tasks on "
            f"{result.cpus} CPUs while timing (load average {result.load_1min:.2f}); "
            "speed ratios may be off"
        )
    return result
