"""Latency statistics and the timing loop every local runner shares.

One loop for all runtimes, so their numbers differ only by the runtime: warm-up calls are run
and thrown away, then each call is timed alone with a monotonic clock (`perf_counter_ns`).
Medians and high percentiles, not means, are what we quote: a 2-core machine shared with other
work has a long tail, and the median is robust to it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LatencyStats:
    """Per-call latency of one (batched) inference, in milliseconds; throughput in images/s."""

    median_ms: float
    p90_ms: float | None  # None where a device tool does not report it (trtexec before 8.6)
    p99_ms: float | None
    mean_ms: float
    min_ms: float | None
    max_ms: float | None
    std_ms: float | None
    throughput: float
    iterations: int | None
    warmup: int | None
    batch: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without needing numpy."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def summarize(times_ms: Sequence[float], batch: int = 1, warmup: int = 0) -> LatencyStats:
    """Statistics of timed calls (warm-up already excluded). Throughput = images per second
    at the mean latency, i.e. what one stream of back-to-back calls sustains."""
    if not times_ms:
        raise ValueError("no timed iterations")
    s = sorted(float(t) for t in times_ms)
    n = len(s)
    mean = sum(s) / n
    std = math.sqrt(sum((t - mean) ** 2 for t in s) / n)
    return LatencyStats(
        median_ms=percentile(s, 50),
        p90_ms=percentile(s, 90),
        p99_ms=percentile(s, 99),
        mean_ms=mean,
        min_ms=s[0],
        max_ms=s[-1],
        std_ms=std,
        throughput=batch * 1000.0 / mean if mean > 0 else float("inf"),
        iterations=n,
        warmup=warmup,
        batch=batch,
    )


def interleaved(
    fns: dict[str, Callable[[Any], Any]], x: Any, rounds: int, calls: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Round-robin timing: every round gives every variant `calls` timed calls after 2 untimed ones.

    On a machine shared with other work, timing variants one after another charges each with
    whatever load ran during its turn; rounds spread the load evenly, so ratios stay honest.
    Returns wall-clock ms per call and process CPU ms per call (at 1 thread the CPU time does not
    include waiting for a core: the load-robust estimate of the idle latency).
    """
    for fn in fns.values():
        time_calls(lambda fn=fn: fn(x), 0, warmup)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            time_calls(lambda fn=fn: fn(x), 0, 2)
            for _ in range(calls):
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                fn(x)
                wall[key].append((time.perf_counter_ns() - t0) / 1e6)
                cpu[key].append((time.process_time_ns() - c0) / 1e6)
    return wall, cpu


def time_calls(fn: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    """Run `fn` warm-up times untimed, then `iterations` times timed one by one (ms each)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


# ------------------------------------------------------------------------------ peak memory
def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory the model adds to this process while it is loaded and run.

    Runtimes (ONNX Runtime, OpenVINO, LiteRT, PyTorch on CPU) do not report their own memory, so
    we measure the process: on Linux the kernel's high-water mark (VmHWM) is reset on entry
    (`/proc/self/clear_refs`, value 5) and read on exit, minus the resident size on entry.
    Elsewhere this gives None rather than a number that mixes in earlier work. Memory the allocator
    already held (freed by earlier work in the process, still resident) is reused without adding to
    the resident size, so in a long-lived process this can read low: profile in a fresh process.
    """

    def __init__(self) -> None:
        self.start_kb: float | None = None
        self.peak_mb: float | None = None

    def __enter__(self) -> "PeakMemory":
        self.start_kb = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.start_kb = None
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kb("VmHWM")
        if self.start_kb is not None and hwm is not None:
            self.peak_mb = max(0.0, (hwm - self.start_kb) / 1024.0)


def machine_load() -> str:
    """The 1/5/15-minute load averages, printed beside numbers taken on a shared machine."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
