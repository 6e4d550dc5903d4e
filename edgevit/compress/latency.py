"""Latency in the search loop: candidates timed on the target, and a cache so nothing is timed twice.

A candidate's latency is its artifact's median in the target's runtime, here (interleaved rounds
through `time_artifacts`, as `benchmark` times) or on the device over SSH (the agent, or trtexec;
there the artifacts are interleaved round by round). The spread between rounds' medians is kept:
it sets the margin under the budget that a pick must leave (`margin`).

The cache (`runs/latency_cache.json`) is keyed by (device, target, precision, threads, batch,
architecture): a second search, or a resumed one, re-times nothing it already timed there.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from edgevit.errors import EdgevitError
from edgevit.files import write_json
from edgevit.profile.stats import machine_load, percentile

CACHE_FILE = "latency_cache.json"
logger = logging.getLogger("edgevit.compress")


def device_key(device: Any) -> str:
    """Where a latency was measured: this machine's CPU, or the device's URL."""
    if device.local:
        from edgevit.profile.runners import device_description

        return device_description()
    return device.url


class LatencyCache:
    """Measured latencies in the runs folder, one JSON file shared by every search (file-locked)."""

    def __init__(self, runs_dir: str | Path):
        self.path = Path(runs_dir) / CACHE_FILE
        self._lock = FileLock(str(self.path) + ".lock")

    @staticmethod
    def key(device: str, target: str, precision: str, threads: int | None, batch: int, arch: str) -> str:
        return f"{device} | {target} | {precision} | threads {threads or 'default'} | batch {batch} | {arch}"

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            logger.warning("%s is unreadable: timing again (it will be rewritten)", self.path)
            return {}

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._read().get(key)

    def put(self, entries: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            data = self._read()
            data.update(entries)
            write_json(self.path, data)


def entry(round_medians: list[float], result: Any) -> dict[str, Any]:
    """What the cache keeps of one measurement: the median over rounds, p90 and the rounds' spread."""
    med = statistics.median(round_medians)
    high = percentile(sorted(round_medians), 90)
    return {
        "median_ms": result.stats.median_ms,
        "p90_ms": result.stats.p90_ms,
        "round_medians_ms": round_medians,
        "spread": (high - med) / med if med > 0 else 0.0,
        "runtime": result.runtime,
        "iterations": result.stats.iterations,
        "load": machine_load(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def time_folders(folders: dict[str, Path], target: Any, device: Any, timing: Any, rounds: int) -> dict[str, dict]:
    """key -> cache entry for each artifact folder, timed side by side on `device`."""
    if not folders:
        return {}
    if device.local:
        from edgevit import formats
        from edgevit.profile.side_by_side import time_artifacts

        if formats.get(target.format).timer != "runtime":
            raise EdgevitError(
                f"{target.name} is timed by trtexec on the device: give device ssh://user@host", "device"
            )
        results = time_artifacts(folders, timing, rounds)
        return {k: entry(r.extra["round_medians_ms"], r) for k, r in results.items()}
    return _time_remote(folders, target, device, timing, rounds)


def _time_remote(folders: dict[str, Path], target: Any, device: Any, timing: Any, rounds: int) -> dict[str, dict]:
    """Round by round, each artifact once per round on the device (its own tool), so a device's load
    spreads over all of them; the result is the last round's, its median the median over rounds."""
    import contextlib
    from dataclasses import replace

    from edgevit import formats
    from edgevit.profile.stage import profile_artifact_on, ssh_runner

    per_round = replace(timing, iterations=max(1, -(-timing.iterations // rounds)))
    medians: dict[str, list[float]] = {k: [] for k in folders}
    last: dict[str, Any] = {}
    ssh = ssh_runner(device, target)
    agent = formats.get(target.format).timer != "trtexec"  # the agent's artifacts go to the device once
    with ssh.staging() if agent else contextlib.nullcontext():
        for _ in range(rounds):
            for key, folder in folders.items():
                last[key] = profile_artifact_on(folder, target, device, per_round, ssh=ssh)
                medians[key].append(last[key].stats.median_ms)
    out = {}
    for key, result in last.items():
        out[key] = entry(medians[key], result)
        out[key]["median_ms"] = statistics.median(medians[key])
    return out


def margin(entries: list[dict[str, Any]], floor: float) -> float:
    """The share of a budget a pick must leave free: the median rounds' spread of what was timed
    (how far a round's median strays above the median), at least `floor`."""
    spreads = [e["spread"] for e in entries if e.get("spread") is not None]
    return max(floor, statistics.median(spreads)) if spreads else floor
