"""ExecuTorch: a .pte lowered to XNNPACK (or Core ML / other delegates), run by ExecuTorch's runtime
bindings here, with ETDump per-op profiles."""

from __future__ import annotations

import re
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor, reject_unknown


def export(*args: Any) -> Any:
    from edgevit.export import executorch

    return executorch.export(*args)


def portable_lib() -> Any:
    """ExecuTorch's runtime bindings (they import torch); quiet about being experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    return portable_lib, Runtime.get()


def missing_backends(artifact: Any) -> list[str]:
    _, runtime = portable_lib()
    return [b for b in artifact.manifest.get("backends") or [] if not runtime.backend_registry.is_available(b)]


def _needs(artifact: Any) -> str | None:
    """A .pte also needs every backend it delegates to (a Core ML-delegated .pte needs Apple's CoreMLBackend)."""
    missing = missing_backends(artifact)
    if not missing:
        return None
    return (
        f"not verifiable here: the .pte delegates to {', '.join(missing)}, which this ExecuTorch "
        "runtime lacks (the Core ML delegate runs on Apple devices)"
    )


class _EtPool:
    """ExecuTorch's threadpool is process-wide, and XNNPACK's runtime keeps the pool a program was
    loaded with; a reset frees that pool (running on gave wrong outputs or a segfault). Resets are
    counted so that a predictor knows when to load its program again."""

    resets = 0

    @classmethod
    def ensure(cls, lib: Any, threads: int | None) -> None:
        if threads and lib._threadpool_get_thread_count() != threads:
            lib._unsafe_reset_threadpool(threads)
            cls.resets += 1


def open_executorch(artifact: Any, threads: int | None, options: dict[str, Any]) -> Predictor:
    """executorch option: etdump (true: record ExecuTorch's per-op profile). `threads` sizes ExecuTorch's
    process-wide thread pool (XNNPACK runs on it); the predictor resets it before a call when another
    predictor changed it."""
    import torch

    reject_unknown("executorch", options, {"etdump"})
    lib, runtime = portable_lib()
    missing = missing_backends(artifact)
    if missing:
        raise EdgevitError(
            f"{artifact.model_path} delegates to {', '.join(missing)}, which this ExecuTorch runtime "
            f"lacks (it has {', '.join(runtime.backend_registry.registered_backend_names)})"
        )
    etdump = bool(options.get("etdump", False))

    def load() -> tuple[Any, Any, int]:
        _EtPool.ensure(lib, threads)
        program = runtime.load_program(artifact.model_path, enable_etdump=etdump)
        return program, program.load_method("forward"), _EtPool.resets

    program, method, loaded_at = load()

    def run(x: np.ndarray) -> np.ndarray:
        nonlocal method, loaded_at
        _EtPool.ensure(lib, threads)
        if loaded_at != _EtPool.resets:  # the pool this program was loaded with is gone
            predictor.native, method, loaded_at = load()
        return np.asarray(method.execute([torch.from_numpy(x)])[0].numpy(), dtype=np.float32)

    batch = int(method.metadata.input_tensor_meta(0).sizes()[0])
    settings = {
        "threads": threads,
        "threadpool": lib._threadpool_get_thread_count(),
        "delegates": ",".join(artifact.manifest.get("backends") or []) or "none",
        "etdump": etdump,
    }
    predictor = Predictor("executorch", run, batch, settings, native=program)
    return predictor


def etdump_op_times(artifact: Any, threads: int | None, x: np.ndarray, runs: int) -> dict:
    """ETDump (the pip wheel's runtime is built with the event tracer), read with
    `executorch.devtools.Inspector`: XNNPACK's per-op events inside each delegate call plus the
    portable kernels outside them (the Method::execute / DELEGATE_CALL / OPERATOR_CALL totals are
    left out: they would count the same time twice). XNNPACK reports whole microseconds, so ops under
    1 us show 0 and are dropped."""
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
    return etdump_times(frame, backends[0] if len(backends) == 1 else "delegate")


def etdump_times(frame: Any, backend: str) -> dict[tuple[str, str], list[float]]:
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


FORMAT = Format(
    name="executorch",
    extra="executorch",
    precisions=("fp32", "int8"),
    export=export,
    tools=("executorch", "torchao", "coremltools"),
    runtime="executorch",
    open_predictor=open_executorch,
    runtime_modules=("executorch",),
    preload=portable_lib,
    artifact_check=_needs,
    per_op_times=etdump_op_times,
)
