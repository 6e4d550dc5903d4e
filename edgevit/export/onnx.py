"""ONNX for ONNX Runtime: FP32 at opset >= 17 (LayerNormalization stays one op), INT8 as QDQ.

INT8 uses onnxruntime's static quantization (QDQ, per-channel weights) calibrated on training
images, or its dynamic quantization when the target's scheme is `dynamic`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError

MODEL_FILE = "model.onnx"
INPUT, OUTPUT = "input", "logits"
# The compute-heavy ops; quantizing LayerNorm/Softmax/Add too costs accuracy for little speed.
# A target overrides this with quantization.options.op_types_to_quantize.
QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes with no constant input: attention's q.k^T and attn.v, not the weight layers.

    Static INT8 of these (activation x activation) costs a ViT the most agreement with FP32 and buys
    the least speed, so they stay in float by default (the figures: docs/results/latency.md).
    onnxruntime's own `MatMulConstBOnly` option would say this, but its QDQ quantizer ignores it (1.31.1:
    all 24 attention MatMuls of DeiT-Ti still got Q/DQ), so the nodes are excluded by name."""
    g = model.graph
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in g.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def to_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> Path:
    """TorchScript exporter (dynamo=False): it honours the opset (dynamo silently gives 18 for 17)."""
    if opset < 17:
        raise EdgevitError(f"opset {opset} is too old: LayerNormalization is one op only from opset 17")
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return path


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    path = out_dir / MODEL_FILE
    if precision == "fp32":
        to_onnx(model, sample, path, target.opset, target.dynamic_batch)
    else:
        fp32 = to_onnx(model, sample, out_dir / "fp32.onnx", target.opset, target.dynamic_batch)
        quantize(fp32, path, target, calibration)
        fp32.unlink()
    q = target.quantization
    return Artifact(
        "onnx",
        precision,
        out_dir,
        [MODEL_FILE],
        list(sample.shape),
        {
            "opset": target.opset,
            "dynamic_batch": target.dynamic_batch,
            "input_name": INPUT,
            "output_name": OUTPUT,
            "quantization": None
            if precision == "fp32"
            else {
                "scheme": q.scheme,
                "format": "QDQ" if q.scheme == "static" else "QOperator",
                "per_channel": q.per_channel,
                "calibration_method": q.method or "minmax",
                "reduce_range": bool(q.options.get("reduce_range", True)),
            },
            "runtime": {
                k: v for k, v in target.runtime.items() if k in ("graph_optimization_level", "execution_provider")
            },
        },
    )


def quantize(src: Path, dst: Path, target: Target, calibration: np.ndarray | None) -> None:
    """onnxruntime INT8: static QDQ (per-channel S8 weights, U8 activations) or dynamic.

    `quantization.options` go to onnxruntime as extra_options, except op_types_to_quantize and
    nodes_to_exclude, which are its own arguments, quantize_activation_matmuls (default false:
    static INT8 leaves activation x activation MatMuls, i.e. attention, in float) and reduce_range
    (default true: 7-bit weights; onnxruntime's U8S8 kernels saturate on x86 CPUs without VNNI, e.g.
    AVX2-only ones, and the same artifact must run there: the tiny test DeiT lost 3.6 pt without it)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    q = target.quantization
    options = dict(q.options)
    op_types = options.pop("op_types_to_quantize", list(QUANTIZED_OPS))
    exclude = list(options.pop("nodes_to_exclude", None) or [])
    keep_attention_float = not options.pop("quantize_activation_matmuls", False)
    reduce_range = bool(options.pop("reduce_range", True))
    pre = src.with_name("pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    if q.scheme == "static" and keep_attention_float:
        exclude += activation_matmuls(onnx.load(str(pre)))
    if q.scheme == "dynamic":
        quantize_dynamic(
            str(pre),
            str(dst),
            per_channel=q.per_channel,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            extra_options=options,
        )
    elif q.scheme == "static":
        if calibration is None or not len(calibration):
            raise EdgevitError("static INT8 needs calibration images (calibration >= 1)", "calibration")
        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        method = (q.method or "minmax").lower()
        if method not in methods:
            raise EdgevitError(f"onnxruntime calibration method must be one of {', '.join(methods)} (got {q.method!r})")
        batch = 1 if not target.dynamic_batch else len(calibration)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.chunks = iter([calibration[i : i + batch] for i in range(0, len(calibration), batch)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.chunks, None)
                return None if x is None else {INPUT: np.ascontiguousarray(x, dtype=np.float32)}

        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=q.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            calibrate_method=methods[method],
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            extra_options=options,
        )
    else:
        raise EdgevitError(f"onnx INT8 supports the quantization schemes static and dynamic (got {q.scheme})")
    pre.unlink()
