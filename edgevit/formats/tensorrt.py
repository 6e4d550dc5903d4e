"""TensorRT (Jetson): an ONNX shaped for trtexec plus its build command; the engine is built and timed
on the device (trtexec), and the ONNX it is built from runs in ONNX Runtime here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit.formats.base import Format
from edgevit.formats.onnx import onnx_float_layers, open_onnxruntime, qat_quantizer


def export(*args: Any) -> Any:
    from edgevit.export import tensorrt

    return tensorrt.export(*args)


def adjust_verification(precision: str, passed: bool, note: str, runtime: str, rule: str) -> tuple[bool, str]:
    """TensorRT picks its own fp16/int8 kernels when it builds the engine: the ONNX's numbers say how the
    graph quantizes, not what the engine computes; only the engine running would prove it."""
    if precision == "fp32":
        return passed, note + "; the FP32 ONNX the engine is built from (TensorRT runs on the device)"
    return False, (
        f"not verified here: the {precision} engine is built on the device (TensorRT); the ONNX it "
        f"is built from, in {runtime}: {rule}"
    )


def tune_modelopt(*args: Any, log: Any) -> Any:
    from edgevit.quantize.tensorrt import tune

    return tune(*args, log=log)


def qat_export(qmodel: Any, quantizer: Any, sample: Any, target: Any, out_dir: Path, *_checks: Any) -> Any:
    """A symmetric QDQ ONNX (TensorRT's explicit quantization) and the engine's build command."""
    from edgevit.export import tensorrt as trt_export
    from edgevit.quantize.qat import convert, to_onnx_qdq

    to_onnx_qdq(convert(qmodel), sample, out_dir / trt_export.MODEL_FILE, max(target.opset, 18))
    quant = {
        "scheme": "static",
        "tool": "torchao PT2E QAT + torch.onnx (dynamo)",
        "format": "QDQ (TensorRT explicit quantization, symmetric)",
    }
    return trt_export.package(out_dir / trt_export.MODEL_FILE, out_dir, sample, target, "int8", quant)


FORMAT = Format(
    name="tensorrt",
    extra="tensorrt",
    precisions=("fp32", "fp16", "int8"),
    export=export,
    tools=("onnx", "onnxruntime", "polygraphy", "onnx-graphsurgeon", "nvidia-modelopt", "tensorrt"),
    runtime="onnxruntime",
    open_predictor=open_onnxruntime,
    runtime_modules=("onnxruntime",),
    timer="trtexec",
    adjust_verification=adjust_verification,
    quant_methods=("ptq", "tune", "qat"),
    quant_tools=("onnx", "onnxruntime", "polygraphy", "nvidia-modelopt", "torchao"),
    tuners={"modelopt": tune_modelopt},
    qat_quantizer=qat_quantizer,
    qat_export=qat_export,
    float_layers=onnx_float_layers,
    no_per_op="TensorRT's per-layer times come from the engine on the device (trtexec --dumpProfile)",
)
