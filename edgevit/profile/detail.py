"""Where the time goes: the slowest ops of an artifact, from each runtime's own profiler.

`top_ops(artifact, threads=None, n=5)` -> [{"op", "type", "ms", "share"}], slowest first: `op` is
the runtime's name for one node, `type` its kind, `ms` its median time per inference over `runs`
calls (after one untimed call), `share` its fraction of the summed time of all profiled ops.

- ONNX Runtime: its profiler (`enable_profiling`), the per-node `*_kernel_time` events of the JSON.
- OpenVINO: per-op performance counters (`PERF_COUNT`), executed nodes' real time.
- ExecuTorch: ETDump (the pip wheel's runtime is built with the event tracer), read with
  `executorch.devtools.Inspector`: XNNPACK's per-op events inside each delegate call plus the
  portable kernels outside them (the Method::execute / DELEGATE_CALL / OPERATOR_CALL totals are
  left out: they would count the same time twice). XNNPACK reports whole microseconds, so ops under 1 us show 0
  and are dropped.
- LiteRT, Core ML, TensorRT: see `_unavailable` (one-line EdgevitError).
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.artifact import Artifact
from edgevit.errors import EdgevitError

_UNAVAILABLE = {
    "tflite": "ai_edge_litert's Python Interpreter exposes no per-op timing (use LiteRT's benchmark_model "
    "--enable_op_profiling=true on the device)",
    "coreml": "Core ML reports no per-op times, and predicts only on macOS (use Xcode's Core ML performance report)",
    "tensorrt": "TensorRT's per-layer times come from the engine on the device (trtexec --dumpProfile)",
}


def top_ops(artifact: Artifact | str | Path, threads: int | None = None, n: int = 5, runs: int = 10) -> list[dict]:
    """The `n` slowest ops of the artifact in its runtime here (see the module docstring)."""
    from edgevit.profile.runners import check_runtime, load_artifact, make_input

    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    if n < 1 or runs < 1:
        raise EdgevitError(f"n and runs must be >= 1 (got {n}, {runs})")
    if artifact.format in _UNAVAILABLE:
        raise EdgevitError(f"per-op times are not available for {artifact.format}: {_UNAVAILABLE[artifact.format]}")
    check_runtime(artifact.format)
    x = make_input(artifact.input_shape)
    profilers = {"onnx": _onnxruntime, "openvino": _openvino, "executorch": _executorch}
    if artifact.format not in profilers:
        raise EdgevitError(f"per-op times are not available for {artifact.format}")
    times = profilers[artifact.format](artifact, threads, x, runs)  # (op, type) -> ms per call
    return _top(times, n)


def _top(times: dict[tuple[str, str], list[float]], n: int) -> list[dict]:
    med = {key: statistics.median(v) for key, v in times.items()}
    med = {key: ms for key, ms in med.items() if ms > 0}
    total = sum(med.values())
    ranked = sorted(med.items(), key=lambda kv: -kv[1])[:n]
    return [{"op": op, "type": kind, "ms": round(ms, 4), "share": round(ms / total, 4)} for (op, kind), ms in ranked]


def _onnxruntime(artifact: Artifact, threads: int | None, x: np.ndarray, runs: int) -> dict:
    from edgevit.runtimes import open_predictor

    with tempfile.TemporaryDirectory() as tmp:
        predictor = open_predictor(artifact, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(runs + 1):
            predictor(x)
        events = json.loads(Path(predictor.native.end_profiling()).read_text())
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[(e["name"][: -len("_kernel_time")], e["args"]["op_name"])].append(e["dur"] / 1e3)
    return {key: v[1:] or v for key, v in times.items()}  # drop the first (untimed) call


def _openvino(artifact: Artifact, threads: int | None, x: np.ndarray, runs: int) -> dict:
    from edgevit.runtimes import open_predictor

    predictor = open_predictor(artifact, threads=threads, PERF_COUNT=True)
    predictor(x)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(runs):
        predictor(x)
        for info in predictor.native.profiling_info:  # the last call's counters
            if info.status == info.Status.EXECUTED:
                times[(info.node_name, info.node_type)].append(info.real_time.total_seconds() * 1e3)
    return times


def _executorch(artifact: Artifact, threads: int | None, x: np.ndarray, runs: int) -> dict:
    import warnings

    from edgevit.runtimes import open_predictor

    predictor = open_predictor(artifact, threads=threads, etdump=True)
    for _ in range(runs + 1):
        predictor(x)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.devtools import Inspector

        etdump, debug = str(Path(tmp) / "run.etdp"), str(Path(tmp) / "debug.bin")
        predictor.native.write_etdump_result_to_file(etdump, debug)
        frame = Inspector(etdump_path=etdump).to_dataframe()
    backends = artifact.manifest.get("backends") or []
    return _etdump_times(frame, backends[0] if len(backends) == 1 else "delegate")


def _etdump_times(frame: Any, backend: str) -> dict[tuple[str, str], list[float]]:
    """Per-op times from the Inspector's table: a delegate's ops (named '... in delegate k') and the
    portable kernels (`native_call_*`); totals (Method::execute, DELEGATE_CALL, OPERATOR_CALL) are skipped."""
    times: dict[tuple[str, str], list[float]] = {}
    delegate, seen = 1, defaultdict(int)
    for row in frame.itertuples():
        name = str(row.event_name)
        if row.event_block_name != "Execute":
            continue
        if name == "DELEGATE_CALL":  # closes the delegate call whose ops came just before it
            delegate += 1
            continue
        if not row.is_delegated_op and not name.startswith("native_call_"):
            continue
        raw = [float(v) for v in row.raw][1:] or [float(v) for v in row.raw]  # drop the first (untimed) call
        if row.is_delegated_op:
            kind = re.sub(r"\s*#\d+$", "", name)
            times[(f"{name} in delegate {delegate}", f"{row.delegate_backend_name or backend}: {kind}")] = raw
        else:
            kernel = name.removeprefix("native_call_")
            seen[kernel] += 1
            times[(f"{kernel} #{seen[kernel]}", f"portable: {kernel}")] = raw
    return times
