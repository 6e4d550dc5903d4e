"""ONNX: torch.onnx export, ONNX Runtime here and on boards, NNCF / Neural Compressor / QAT INT8 (QDQ)."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor, reject_unknown

ORT_OPTIONS = {"graph_optimization_level", "execution_provider", "profile_prefix"}


def export(*args: Any) -> Any:
    from edgevit.export import onnx

    return onnx.export(*args)


def open_onnxruntime(artifact: Any, threads: int | None, options: dict[str, Any]) -> Predictor:
    """onnxruntime options: graph_optimization_level (disable|basic|extended|all), execution_provider,
    profile_prefix (write onnxruntime's profile JSON, read by `per_op_times`)."""
    import onnxruntime as ort

    reject_unknown("onnxruntime", options, ORT_OPTIONS)
    so = ort.SessionOptions()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    level = str(options.get("graph_optimization_level", "all"))
    if level not in levels:
        raise EdgevitError(f"graph_optimization_level must be one of {', '.join(levels)} (got {level!r})")
    so.graph_optimization_level = levels[level]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if options.get("profile_prefix"):  # onnxruntime's profiler: JSON written by session.end_profiling()
        so.enable_profiling = True
        so.profile_file_prefix = str(options["profile_prefix"])
    provider = str(options.get("execution_provider", "CPUExecutionProvider"))
    if provider not in ort.get_available_providers():
        raise EdgevitError(
            f"onnxruntime has no {provider} here (available: {', '.join(ort.get_available_providers())})"
        )
    sess = ort.InferenceSession(str(artifact.model_path), so, providers=[provider])
    inp = sess.get_inputs()[0]
    name = inp.name
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    out_name = sess.get_outputs()[0].name
    return Predictor(
        "onnxruntime",
        lambda x: np.asarray(sess.run([out_name], {name: x})[0], dtype=np.float32),
        batch,
        {"threads": threads, "graph_optimization_level": level, "execution_provider": provider},
        native=sess,
    )


def onnxruntime_op_times(artifact: Any, threads: int | None, x: np.ndarray, runs: int) -> dict:
    """Per-node kernel times from onnxruntime's profiler (the `*_kernel_time` events of its JSON)."""
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


def onnx_float_layers(artifact: Any) -> list[str]:
    import onnx

    from edgevit.quantize.nncf_tune import onnx_float_layers

    return onnx_float_layers(onnx.load(str(artifact.model_path)))


def tune_nncf(*args: Any, log: Any) -> Any:
    from edgevit.quantize.nncf_tune import tune_onnx

    return tune_onnx(*args, log=log)


def tune_inc(*args: Any, log: Any) -> Any:
    from edgevit.quantize.inc_tune import tune_onnx

    return tune_onnx(*args, log=log)


def qat_quantizer() -> Any:
    from edgevit.quantize.qat import linear_conv_quantizer

    return linear_conv_quantizer()


def qat_export(qmodel: Any, quantizer: Any, sample: Any, target: Any, out_dir: Path, *_checks: Any) -> Any:
    """The trained fake-quant graph as a QDQ ONNX (per-channel symmetric weights)."""
    from edgevit.artifact import Artifact
    from edgevit.export.onnx import INPUT, MODEL_FILE, OUTPUT
    from edgevit.quantize.qat import convert, to_onnx_qdq

    model = to_onnx_qdq(convert(qmodel), sample, out_dir / MODEL_FILE, max(target.opset, 18))
    quant = {"scheme": "static", "format": "QDQ", "tool": "torchao PT2E QAT + torch.onnx (dynamo)", "per_channel": True}
    runtime = {k: v for k, v in target.runtime.items() if k in ("graph_optimization_level", "execution_provider")}
    return Artifact(
        "onnx",
        "int8",
        out_dir,
        [MODEL_FILE],
        list(sample.shape),
        {
            "opset": int(model.opset_import[0].version),
            "dynamic_batch": False,
            "input_name": INPUT,
            "output_name": OUTPUT,
            "quantization": quant,
            "runtime": runtime,
        },
    )


FORMAT = Format(
    name="onnx",
    extra="onnx",
    precisions=("fp32", "int8"),
    export=export,
    tools=("onnx", "onnxruntime"),
    runtime="onnxruntime",
    open_predictor=open_onnxruntime,
    runtime_modules=("onnxruntime",),
    quant_methods=("ptq", "tune", "qat"),
    quant_tools=("onnx", "onnxruntime", "nncf", "neural-compressor", "torchao"),
    tuners={"nncf": tune_nncf, "inc": tune_inc},
    qat_quantizer=qat_quantizer,
    qat_export=qat_export,
    float_layers=onnx_float_layers,
    per_op_times=onnxruntime_op_times,
)
