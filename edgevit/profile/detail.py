"""Where the time goes: the slowest ops of an artifact, from each runtime's own profiler.

`top_ops(artifact, threads=None, n=5)` -> [{"op", "type", "ms", "share"}], slowest first: `op` is
the runtime's name for one node, `type` its kind, `ms` its median time per inference over `runs`
calls (after one untimed call), `share` its fraction of the summed time of all profiled ops. Each
format's `per_op_times` (ONNX Runtime's profiler, OpenVINO's PERF_COUNT, ExecuTorch's ETDump) gives
the raw times; a format without one says why in one line (`Format.no_per_op`).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from edgevit import formats
from edgevit.artifact import Artifact
from edgevit.errors import EdgevitError


def top_ops(artifact: Artifact | str | Path, threads: int | None = None, n: int = 5, runs: int = 10) -> list[dict]:
    """The `n` slowest ops of the artifact in its runtime here (see the module docstring)."""
    from edgevit.profile.runners import check_runtime, load_artifact, make_input

    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    if n < 1 or runs < 1:
        raise EdgevitError(f"n and runs must be >= 1 (got {n}, {runs})")
    fmt = formats.get(artifact.format)
    if fmt.per_op_times is None:
        why = f": {fmt.no_per_op}" if fmt.no_per_op else ""
        raise EdgevitError(f"per-op times are not available for {artifact.format}{why}")
    check_runtime(artifact.format)
    times = fmt.per_op_times(artifact, threads, make_input(artifact.input_shape), runs)  # (op, type) -> ms per call
    return _top(times, n)


def _top(times: dict[tuple[str, str], list[float]], n: int) -> list[dict]:
    med = {key: statistics.median(v) for key, v in times.items()}
    med = {key: ms for key, ms in med.items() if ms > 0}
    total = sum(med.values())
    ranked = sorted(med.items(), key=lambda kv: -kv[1])[:n]
    return [{"op": op, "type": kind, "ms": round(ms, 4), "share": round(ms / total, 4)} for (op, kind), ms in ranked]
