"""OpenVINO: IR from openvino.convert_model, the OpenVINO runtime, NNCF PTQ / accuracy control / QAT INT8."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor, first_line

_PRECISIONS = {"fp32": "f32", "f32": "f32", "fp16": "f16", "f16": "f16", "bf16": "bf16"}


def export(*args: Any) -> Any:
    from edgevit.export import openvino

    return openvino.export(*args)


def _config(threads: int | None, options: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    opts = dict(options)
    precision = opts.pop("INFERENCE_PRECISION_HINT", opts.pop("inference_precision", None))
    if precision is not None:
        if str(precision).lower() not in _PRECISIONS:
            raise EdgevitError(f"INFERENCE_PRECISION_HINT must be f32, f16 or bf16 (got {precision!r})")
        config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[str(precision).lower()]
    hint = opts.pop("PERFORMANCE_HINT", opts.pop("performance_hint", None))
    if hint is not None:
        if str(hint).upper() not in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
            raise EdgevitError(f"PERFORMANCE_HINT must be LATENCY or THROUGHPUT (got {hint!r})")
        config["PERFORMANCE_HINT"] = str(hint).upper()
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    for key, value in opts.items():  # any other OpenVINO property, by its own (upper-case) name
        if key != key.upper():
            raise EdgevitError(f"unknown openvino option '{key}' (pass OpenVINO properties by name, e.g. NUM_STREAMS)")
        config[key] = value
    return config


def open_openvino(artifact: Any, threads: int | None, options: dict[str, Any]) -> Predictor:
    """openvino options: INFERENCE_PRECISION_HINT (f32|f16|bf16; default: the manifest's, which the
    export recorded because the CPU plugin runs bf16 by default on AMX), PERFORMANCE_HINT
    (LATENCY|THROUGHPUT), device (CPU), and any other OpenVINO property by its name."""
    import openvino as ov

    opts = dict(options)
    device = str(opts.pop("device", "CPU"))
    config = _config(threads, opts)
    try:
        compiled = ov.Core().compile_model(str(artifact.model_path), device, config)
    except RuntimeError as exc:
        raise EdgevitError(f"openvino could not compile {artifact.model_path} on {device}: {first_line(exc)}") from None
    request = compiled.create_infer_request()
    shape = compiled.input(0).get_partial_shape()
    batch = shape[0].get_length() if shape[0].is_static else None
    # A static-shape model's input is written into the request's own input tensor, bound once: `infer({0: x})`
    # wraps each call's array in a new tensor for the plugin to bind and copies the outputs into a dict first
    # (~0.1-0.15 ms a call on a 2-core Xeon, 10-40 % of a 32-px student's time; benchmark_app pays none of it).
    f32 = compiled.input(0).get_element_type() == ov.Type.f32
    bound = request.get_input_tensor(0).data if shape.is_static and f32 else None

    def run(x: np.ndarray) -> np.ndarray:
        if bound is None:
            request.infer({0: x}, share_outputs=True)
        elif x.shape != bound.shape:  # checked here: a wrong tensor set on the request would stay bound
            raise EdgevitError(f"this openvino model takes inputs of shape {list(bound.shape)}; got {list(x.shape)}")
        else:
            np.copyto(bound, x)
            request.infer(share_outputs=True)  # the outputs are copied once, below
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    used = compiled.get_property("INFERENCE_PRECISION_HINT")
    settings = {
        "threads": threads,
        "device": device,
        "INFERENCE_PRECISION_HINT": used.to_string() if hasattr(used, "to_string") else str(used),
        "PERFORMANCE_HINT": str(compiled.get_property("PERFORMANCE_HINT")),
    }
    return Predictor("openvino", run, batch, settings, native=request)


def openvino_op_times(artifact: Any, threads: int | None, x: np.ndarray, runs: int) -> dict:
    """Per-op performance counters (PERF_COUNT): executed nodes' real time."""
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


def ir_float_layers(artifact: Any) -> list[str]:
    import openvino as ov

    from edgevit.quantize.nncf_tune import ov_float_layers

    return ov_float_layers(ov.Core().read_model(str(artifact.model_path)))


def tune_nncf(*args: Any, log: Any) -> Any:
    from edgevit.quantize.nncf_tune import tune_openvino

    return tune_openvino(*args, log=log)


def qat_quantizer() -> Any:
    from edgevit.quantize.qat import linear_conv_quantizer

    return linear_conv_quantizer()


def qat_export(
    qmodel: Any,
    quantizer: Any,
    sample: Any,
    target: Any,
    out_dir: Path,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
) -> Any:
    """The QDQ ONNX read by OpenVINO (Q/DQ become FakeQuantize), with the inference precision hint
    that keeps the accuracy (checked on the validation images)."""
    import openvino as ov

    from edgevit.export import openvino as ov_export
    from edgevit.quantize.nncf_tune import _choose_hint
    from edgevit.quantize.qat import convert, to_onnx_qdq

    to_onnx_qdq(convert(qmodel), sample, out_dir / "qdq.onnx", max(target.opset, 18))
    ov_model = ov.convert_model(str(out_dir / "qdq.onnx"))
    (out_dir / "qdq.onnx").unlink()
    ov_model.inputs[0].get_tensor().set_names({"input"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    quant = {"scheme": "static", "tool": "torchao PT2E QAT + torch.onnx (dynamo) + openvino.convert_model"}
    art = ov_export.save(ov_model, out_dir, sample, target, "int8", quant, hint="f32")
    hint, checks = _choose_hint(art, val_x, val_y, reference, max_drop)
    art.manifest["runtime"]["INFERENCE_PRECISION_HINT"] = hint
    quant["hint_top1"] = checks
    return art


FORMAT = Format(
    name="openvino",
    extra="openvino",
    precisions=("fp32", "fp16", "bf16", "int8"),
    export=export,
    tools=("openvino", "nncf"),
    runtime="openvino",
    open_predictor=open_openvino,
    runtime_modules=("openvino",),
    quant_methods=("ptq", "tune", "qat"),
    quant_tools=("openvino", "nncf", "torchao"),
    tuners={"nncf": tune_nncf},
    qat_quantizer=qat_quantizer,
    qat_export=qat_export,
    float_layers=ir_float_layers,
    per_op_times=openvino_op_times,
)
