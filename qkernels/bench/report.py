"""What every benchmark suite shares: the timer, the environment record, the ratio
summary, the table formatter and the JSON file. Suites differ only in what they time."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch


def median_ms(fn: Callable, min_run_time: float, *arg: object) -> float:
    """Median of blocked CPU timings of fn() (or fn(arg): no wrapper call in the timed
    statement), in milliseconds (torch.utils.benchmark)."""
    from torch.utils.benchmark import Timer

    stmt, env = ("fn(x)", {"fn": fn, "x": arg[0]}) if arg else ("fn()", {"fn": fn})
    timer = Timer(stmt, globals=env, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def timing_warnings(rows: Sequence) -> str:
    """The lines a table of timed rows ends with when its numbers are doubtful: rows
    whose interquartile range exceeds qkernels.timing.NOISY_SPREAD of the median, and
    other work competing for the CPUs while they were timed."""
    from qkernels.timing import NOISY_SPREAD

    lines = []
    noisy = [r for r in rows if r.spread > NOISY_SPREAD]
    if noisy:
        worst = max(noisy, key=lambda r: r.spread)
        lines.append(
            f"warning: {len(noisy)} of {len(rows)} timings are noisy (interquartile range > "
            f"{100 * NOISY_SPREAD:.0f}% of the median; worst {100 * worst.spread:.0f}%, "
            f"{worst.impl})"
        )
    busy = max((r.other_runnable for r in rows), default=0)
    if busy >= 1:
        lines.append(
            f"warning: the machine was busy (up to {busy:g} other runnable tasks while timing); "
            "ratios may be off"
        )
    return "".join("\n" + line for line in lines)


def last_level_cache_bytes() -> int:
    """L3 size from sysfs (index3), or 32 MiB when it cannot be read."""
    for index in range(4, -1, -1):
        path = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size")
        if path.exists():
            text = path.read_text().strip().upper()
            unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
            return int(text.rstrip("KM")) * unit
    return 32 << 20


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_identity() -> dict:
    """Vendor, family / model / stepping and logical CPUs: the model name alone ("Intel(R)
    Xeon(R) Processor") does not tell two hosts of one kind apart."""
    fields = {"vendor_id": "cpu_vendor", "cpu family": "cpu_family", "model": "cpu_model",
              "stepping": "cpu_stepping"}  # fmt: skip
    out = {"cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key in fields and fields[key] not in out:
                out[fields[key]] = value
            if key == "flags" and "cpu_amx" not in out:  # torch's oneDNN GEMMs use AMX
                out["cpu_amx"] = " ".join(f for f in value.split() if f.startswith("amx"))
            if not key and len(out) > len(fields) + 1:  # the first processor's block ends
                break
    except OSError:
        pass
    return out


def environment(gpu: bool = False) -> dict:
    """Where the numbers came from: date, versions, and the CPU or GPU that ran them."""
    from qkernels._memory import freed_memory_kept

    env = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        # glibc's default, or freed memory kept for reuse (qkernels.keep_freed_memory)
        "malloc": "keep freed memory" if freed_memory_kept() else "default",
    }
    if not gpu:
        from qkernels import _C

        env.update(
            device="cpu",
            cpu=_cpu_model(),
            **_cpu_identity(),
            cpu_features=_C.cpu_features(),
            l3_bytes=last_level_cache_bytes(),
        )
        return env
    import triton

    from qkernels.triton._common import chosen_configs

    cuda = torch.cuda.is_available()
    env.update(
        device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)",
        capability=".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        interpreter=not cuda,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        autotune_choices=chosen_configs(),
    )
    return env


def ratios(
    rows: Sequence, key: Sequence[str], pairs: Callable[[tuple], Iterable[tuple[str, str]]]
) -> list[dict]:
    """Per case (rows sharing the `key` fields): peer median / ours median for each
    (ours, peer) of pairs(case) present in the rows; > 1 means qkernels is faster."""
    by_case: dict[tuple, dict[str, object]] = {}
    for r in rows:
        by_case.setdefault(tuple(getattr(r, f) for f in key), {})[r.impl] = r
    out = []
    for case, impls in by_case.items():
        entry = dict(zip(key, case, strict=True))
        for ours, peer in pairs(case):
            if ours in impls and peer in impls:
                entry[f"{ours} / {peer}"] = round(impls[peer].median_ms / impls[ours].median_ms, 3)
        out.append(entry)
    return out


def table(rows: Sequence, columns: Sequence[tuple[str, str, str]]) -> str:
    """A fixed-width text table. columns: (header, attribute, format spec such as ">9.3f"
    or "<26"); rows: dataclasses or dicts; a missing value prints blank."""

    def width(spec: str) -> int:
        return int(re.match(r"[<>^]?(\d+)", spec).group(1))

    def cell(r, attr: str, spec: str) -> str:
        v = r.get(attr) if isinstance(r, dict) else getattr(r, attr, None)
        return " " * width(spec) if v is None else f"{v:{spec}}"

    align = {True: "<", False: ">"}
    header = " ".join(f"{h:{align[spec.startswith('<')]}{width(spec)}}" for h, _, spec in columns)
    lines = [header, "-" * len(header)]
    lines += [" ".join(cell(r, a, spec) for _, a, spec in columns) for r in rows]
    return "\n".join(lines)


def ratio_table(summary: list[dict], key: Sequence[str]) -> str:
    """The ratio summary as text: one line per case, `ours / peer  x.xx` pairs."""
    lines = ["speedup of qkernels (peer median / qkernels median):"]
    for entry in summary:
        case = " ".join(f"{f}={entry[f]}" for f in key)
        pairs = [f"{k} {v:.2f}x" for k, v in entry.items() if k not in key]
        lines.append(f"  {case}: " + ", ".join(pairs))
    return "\n".join(lines)


def save_json(path: str | os.PathLike, rows: Sequence, env: dict, **extra) -> Path:
    """rows (dataclasses) with their environment and any summaries, as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": env, **extra, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(payload, indent=1))
    return path
