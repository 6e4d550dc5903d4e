"""What every format module declares (`Format`) and what every runtime returns (`Predictor`).

Standard library and numpy only: the device agent, shipped as source to boards that have numpy and
one runtime but none of edgevit's dependencies, opens artifacts through these classes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgevit.errors import EdgevitError


@dataclass(frozen=True)
class Format:
    """Everything edgevit knows about one export format; the functions import their packages when called.

    - `export(model, sample, target, precision, calibration, out_dir, meta) -> Artifact`; `precisions`
      are what it can write, `tools` the distributions whose versions go into the manifest, `extra`
      the pip extra that installs its converter.
    - `open_predictor(artifact, threads, options) -> Predictor`: the runtime that runs it here, named
      `runtime`; it is available when one of `runtime_modules` imports (else `missing_runtime` says
      why) on one of `platforms` (empty: any; else `wrong_platform` says why); `preload()` imports it
      ahead of a load-time measurement;
      `artifact_check(artifact)` names what a particular artifact needs beyond that, or returns None.
    - `timer`: "runtime" (timed through the predictor, here or by the SSH agent) or "trtexec" (built
      and timed on the device); `adjust_verification(precision, passed, note, runtime, rule)` for a runtime that runs
      a stand-in here (TensorRT's ONNX) rather than the artifact itself.
    - INT8: `quant_methods` (ptq|tune|qat) with `quant_tools` for the manifest, `tuners` (tool ->
      tune function; the first is the default), `qat_quantizer()` and `qat_export(...)`, and
      `float_layers(artifact)`: which compute layers stayed in float. `no_quantization` says why a
      format has none.
    - `per_op_times(artifact, threads, x, runs) -> {(op, type): [ms per call]}` from the runtime's own
      profiler, or `no_per_op`: why not.
    """

    name: str
    extra: str
    precisions: tuple[str, ...]
    export: Callable[..., Any]
    tools: tuple[str, ...]
    runtime: str | None = None
    open_predictor: Callable[..., Predictor] | None = None
    runtime_modules: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    wrong_platform: str = ""
    missing_runtime: str = ""
    preload: Callable[[], Any] | None = None
    artifact_check: Callable[[Any], str | None] | None = None
    timer: str = "runtime"
    adjust_verification: Callable[[str, bool, str, str, str], tuple[bool, str]] | None = None
    quant_methods: tuple[str, ...] = ()
    quant_tools: tuple[str, ...] = ()
    tuners: dict[str, Callable[..., Any]] = field(default_factory=dict)
    qat_quantizer: Callable[[], Any] | None = None
    qat_export: Callable[..., Any] | None = None
    float_layers: Callable[[Any], list[str]] | None = None
    no_quantization: str = ""
    per_op_times: Callable[..., dict] | None = None
    no_per_op: str = ""

    def runtime_available(self) -> tuple[bool, str]:
        """Whether an artifact of this format can run here, and if not, why (one line)."""
        if self.open_predictor is None:
            return False, self.missing_runtime or f"no runtime runs {self.name} artifacts here"
        if self.platforms and sys.platform not in self.platforms:
            return False, self.wrong_platform or f"{self.runtime} does not run on {sys.platform}"
        if self.runtime_modules and not any(importlib.util.find_spec(m) for m in self.runtime_modules):
            module = self.runtime_modules[0]
            return (
                False,
                self.missing_runtime or f"{self.runtime} is not installed (pip install {module.replace('_', '-')})",
            )
        return True, self.runtime or self.name

    def warm_up_runtime(self) -> None:
        """Import the runtime now, so a load-time measurement does not time Python's imports."""
        if self.preload is not None:
            self.preload()
        elif self.runtime_modules:
            importlib.import_module(self.runtime_modules[0])

    @property
    def default_tuner(self) -> str | None:
        return next(iter(self.tuners), None)


class Predictor:
    """Callable over a batch of float32 NCHW images; runs a static-batch model chunk by chunk.

    `runtime` names the runtime, `settings` the effective options (threads, hints) so a latency
    record can say exactly what was measured; `native` is the runtime's own object (session,
    infer request, program) for its profiler.
    """

    def __init__(
        self,
        runtime: str,
        run: Callable[[np.ndarray], np.ndarray],
        batch: int | None,
        settings: dict[str, Any],
        close: Callable[[], None] | None = None,
        native: Any = None,
    ):
        self.runtime = runtime
        self.batch = batch  # None: any batch size in one call
        self.settings = settings
        self.native = native
        self._run = run
        self._close = close

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.batch is None or x.shape[0] == self.batch:
            return self._run(x)
        if x.shape[0] % self.batch:
            raise EdgevitError(
                f"this {self.runtime} model has a static batch of {self.batch}; "
                f"got {x.shape[0]} images (export with --dynamic-batch or send multiples of {self.batch})"
            )
        return np.concatenate([self._run(x[i : i + self.batch]) for i in range(0, x.shape[0], self.batch)])

    def close(self) -> None:
        if self._close:
            self._close()


def reject_unknown(runtime: str, options: dict[str, Any], known: set[str]) -> None:
    """One line for runtime options the runtime does not take."""
    extra = sorted(set(options) - known)
    if extra:
        raise EdgevitError(
            f"unknown {runtime} option(s) {', '.join(extra)} (known: {', '.join(sorted(known)) or 'none'})"
        )


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
