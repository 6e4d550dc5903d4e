"""`time_artifacts`: several artifacts (and the PyTorch FP32 baseline) timed side by side, here.

On a shared machine one-after-another timing charges each runtime with whatever load ran during its
turn; interleaving calls in rounds spreads that load over all of them, so ratios between them hold.
Each artifact is opened (its runtime imported first, so load time is the model's, not Python's), run
once for its load time and peak memory, then timed in `rounds` interleaved rounds. `benchmark` and
the latency-budget search both time through this function.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgevit.artifact import Artifact
from edgevit.errors import EdgevitError
from edgevit.profile.runners import ProfileResult, device_description, input_description, make_input
from edgevit.profile.stats import PeakMemory, interleaved, machine_load, summarize
from edgevit.vocab import BASELINE

ROUNDS = 10
logger = logging.getLogger("edgevit.profile")


def time_artifacts(
    artifacts: Mapping[str, str | Path | Artifact],
    timing: Any,
    rounds: int = ROUNDS,
    *,
    baseline: str | Path | None = None,
) -> dict[str, ProfileResult]:
    """Time every artifact here, interleaved in rounds; key -> ProfileResult (with load_ms and peak memory).

    Args:
        artifacts: key -> export folder (or Artifact); every one must run here (`runtimes.runs_here`).
        timing: a `Timing` (threads, batch, iterations spread over the rounds, warmup).
        rounds: interleaved rounds (>= 1).
        baseline: a run folder (or student.pt) whose PyTorch FP32 student is timed alongside, under
            the key `BASELINE`; None: artifacts only.

    Returns:
        One ProfileResult per key (and `BASELINE` when asked), in the order given.
    """
    check_rounds(rounds)
    if not artifacts and baseline is None:
        raise EdgevitError("time_artifacts needs at least one artifact or a baseline", "artifacts")
    student = _load_baseline(baseline)
    opened = _open_all(_openers(artifacts, timing, student), _input(artifacts, student, timing.batch))
    calls = max(1, -(-timing.iterations // rounds))
    x = next(iter(opened.values()))["x"]
    wall, _ = interleaved({k: o["fn"] for k, o in opened.items()}, x, rounds, calls, timing.warmup)
    return {key: _result(o, wall[key], timing, rounds, calls) for key, o in opened.items()}


def check_rounds(rounds: Any) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise EdgevitError(f"rounds must be a whole number >= 1 (got {rounds!r})", "rounds")


def _load_baseline(baseline: str | Path | None) -> tuple[Any, dict] | None:
    """(student, its metadata) loaded once, or None without a baseline."""
    if baseline is None:
        return None
    from edgevit.models.checkpoint import load_student

    return load_student(_student_file(baseline))


def _input(artifacts: Mapping[str, Any], student: tuple[Any, dict] | None, batch: int | None) -> np.ndarray:
    """The one input every artifact gets: the student's size when there is a baseline, else the first artifact's."""
    if student is not None:
        size = int(student[1].get("img_size") or 224)
        return make_input([1, 3, size, size], batch or 1)
    return make_input(_artifact(next(iter(artifacts.values()))).input_shape, batch or 1)


def _student_file(baseline: str | Path) -> Path:
    from edgevit.models.checkpoint import STUDENT_FILE

    path = Path(baseline)
    return path / STUDENT_FILE if path.is_dir() else path


def _artifact(a: str | Path | Artifact) -> Artifact:
    from edgevit.profile.runners import load_artifact

    return a if isinstance(a, Artifact) else load_artifact(a)


def _openers(
    artifacts: Mapping[str, Any], timing: Any, student: tuple[Any, dict] | None
) -> list[tuple[str, Any, Callable]]:
    """(key, artifact or None, open()) for the baseline first, then each artifact."""
    from edgevit.profile.runners import torch_predictor
    from edgevit.runtimes import open_predictor, runs_here

    out: list[tuple[str, Any, Callable]] = []
    if student is not None:
        out.append((BASELINE, None, lambda: torch_predictor(student[0], timing.threads)))
    for key, a in artifacts.items():
        art = _artifact(a)
        ok, why = runs_here(art)
        if not ok:
            raise EdgevitError(f"{key} cannot be timed here: {why}", "artifacts")
        out.append((key, art, lambda art=art: open_predictor(art, threads=timing.threads)))
    return out


def _open_all(openers: list[tuple[str, Any, Callable]], x: np.ndarray) -> dict[str, dict[str, Any]]:
    from edgevit.runtimes import import_runtime

    opened: dict[str, dict[str, Any]] = {}
    for key, art, opener in openers:
        if art is not None:
            import_runtime(art.format)  # load time is the model's, not Python's first import of the runtime
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            fn = opener()
            fn(x)
            load_ms = (time.perf_counter() - t0) * 1000
        opened[key] = {"fn": fn, "artifact": art, "x": x, "load_ms": load_ms, "peak_mem_mb": mem.peak_mb}
    return opened


def _result(o: dict[str, Any], wall_ms: list[float], timing: Any, rounds: int, calls: int) -> ProfileResult:
    art, x = o["artifact"], o["x"]
    result = ProfileResult(
        runtime=getattr(o["fn"], "runtime", "pytorch eager"),
        format=art.format if art is not None else "pytorch",
        precision=art.precision if art is not None else "fp32",
        device=device_description(),
        threads=timing.threads,
        batch=timing.batch or 1,
        input_shape=list(x.shape),
        stats=summarize(wall_ms, batch=timing.batch or 1, warmup=timing.warmup),
        peak_mem_mb=o["peak_mem_mb"],
        extra={
            "input": input_description(list(x.shape)),
            "load": machine_load(),
            "interleaved_rounds": rounds,
            "round_medians_ms": [float(np.median(wall_ms[i : i + calls])) for i in range(0, len(wall_ms), calls)],
            **({"artifact": str(art.directory)} if art is not None else {}),
        },
    )
    result.load_ms = o["load_ms"]
    return result
