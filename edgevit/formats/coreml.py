"""Core ML: coremltools conversion (ML Program), predicted with Core ML on macOS only."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor, reject_unknown


def export(*args: Any) -> Any:
    from edgevit.export import coreml

    return coreml.export(*args)


def open_coreml(artifact: Any, threads: int | None, options: dict[str, Any]) -> Predictor:
    """coreml option (macOS only): compute_units (ALL|CPU_ONLY|CPU_AND_GPU|CPU_AND_NE)."""
    import coremltools as ct

    reject_unknown("coreml", options, {"compute_units"})
    units = str(options.get("compute_units", "ALL")).upper()
    if units not in ct.ComputeUnit.__members__:
        raise EdgevitError(f"compute_units must be one of {', '.join(ct.ComputeUnit.__members__)} (got {units!r})")
    model = ct.models.MLModel(str(artifact.model_path), compute_units=ct.ComputeUnit[units])
    spec = model.get_spec()
    in_name, out_name = spec.description.input[0].name, spec.description.output[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict({in_name: x})[out_name], dtype=np.float32)

    return Predictor("coreml", run, int(artifact.input_shape[0]), {"threads": threads, "compute_units": units})


FORMAT = Format(
    name="coreml",
    extra="coreml",
    precisions=("fp32", "fp16", "int8"),
    export=export,
    tools=("coremltools",),
    runtime="coreml",
    open_predictor=open_coreml,
    runtime_modules=("coremltools",),
    platforms=("darwin",),
    wrong_platform="not verifiable here: Core ML prediction needs macOS",
    no_quantization="has weight-only INT8 (no activation quantization to tune or train)",
    no_per_op="Core ML reports no per-op times, and predicts only on macOS (use Xcode's Core ML performance report)",
)
