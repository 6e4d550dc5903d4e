"""Accuracy-aware PTQ for OpenVINO and ONNX Runtime: NNCF's `quantize_with_accuracy_control`.

NNCF quantizes, measures the validation metric, ranks the quantizers by their effect and reverts
groups of them to float until the drop is within `max_drop`. Our validation function returns
top-1 in percent, so `max_drop` is in points (drop_type ABSOLUTE). NNCF validates OpenVINO models
compiled with an f32 inference precision; on CPUs with BF16 the artifact is then checked once more
with the bf16 hint (faster on AMX) and keeps it only if the drop still holds.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError
from edgevit.quantize.search import top1

COMPUTE_OV = ("MatMul", "Convolution", "ScaledDotProductAttention")
COMPUTE_ONNX = ("MatMul", "Gemm", "Conv")


def _datasets(
    nncf: Any,
    calibration: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    batch: int | None,
    feed: Callable[[np.ndarray], Any] = lambda x: x,
) -> tuple[Any, Any]:
    """Calibration batches and (image, label) validation items; `feed` makes a model input (ONNX: a dict)."""
    step = batch or len(calibration)
    calib = nncf.Dataset([calibration[i : i + step] for i in range(0, len(calibration), step)], feed)
    val = nncf.Dataset([(val_x[i : i + 1], int(val_y[i])) for i in range(len(val_x))], lambda item: feed(item[0]))
    return calib, val


def tune_openvino(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    calibration: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
    out_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Artifact, dict[str, Any]]:
    import nncf

    from edgevit.export import openvino as ov_export

    q = target.quantization
    if q.scheme != "static":
        raise EdgevitError(f"openvino INT8 is static post-training quantization with NNCF (target asks for {q.scheme})")
    ov_model = ov_export.convert(model, sample, target)
    batch = 1 if ov_model.inputs[0].get_partial_shape()[0].is_static else None
    calib, val = _datasets(nncf, calibration, val_x, val_y, batch)

    def validate(compiled: Any, items: Any) -> float:
        logits, labels = [], []
        for x, y in items:
            logits.append(np.asarray(compiled(x)[0]))
            labels.append(y)
        return top1(np.concatenate(logits), np.asarray(labels))

    with tempfile.TemporaryDirectory() as initial:
        params = nncf.AdvancedAccuracyRestorerParameters(intermediate_model_dir=initial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuned = nncf.quantize_with_accuracy_control(
                ov_model,
                calib,
                val,
                validate,
                max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE,
                model_type=ov_export.model_type_of(nncf, model),
                subset_size=len(calibration),
                advanced_accuracy_restorer_parameters=params,
                **_nncf_kwargs(nncf, ov_export, q.options),
            )
        import openvino as ov

        ptq_float = ov_float_layers(ov.Core().read_model(str(Path(initial) / "intermediate_model.xml")))
    float_layers = ov_float_layers(tuned)
    art = ov_export.save(tuned, out_dir, sample, target, "int8", None, hint="f32")
    hint, checks = _choose_hint(art, val_x, val_y, reference, max_drop)
    art.manifest["runtime"]["INFERENCE_PRECISION_HINT"] = hint
    art.manifest["quantization"] = {
        "scheme": "static",
        "tool": "nncf",
        "algorithm": "quantize_with_accuracy_control",
        "model_type": "transformer" if ov_export.model_type_of(nncf, model) else "default",
        "subset_size": len(calibration),
        "options": dict(q.options),
        "float_layers": float_layers,
        "reverted_layers": [n for n in float_layers if n not in ptq_float],
        "tuned_top1": checks[hint],
        "tuned_drop": round(top1(reference, val_y) - checks[hint], 2),
        "hint_top1": checks,
    }
    return art, art.manifest["quantization"]


def _nncf_kwargs(nncf: Any, ov_export: Any, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = ov_export._nncf_options(nncf, options)
    if "advanced_parameters" in kwargs:  # quantize() calls it advanced_parameters, QwAC the longer name
        kwargs["advanced_quantization_parameters"] = kwargs.pop("advanced_parameters")
    return kwargs


def _choose_hint(
    art: Artifact, val_x: np.ndarray, val_y: np.ndarray, reference: np.ndarray, max_drop: float
) -> tuple[str, dict[str, float]]:
    """f32 (what NNCF validated with), or bf16 where the CPU has it and the drop still holds."""
    from edgevit.export.openvino import has_bf16
    from edgevit.runtimes import open_predictor

    checks: dict[str, float] = {}
    fp32 = top1(reference, val_y)
    for hint in (["bf16"] if has_bf16(str(art.manifest["runtime"].get("device", "CPU"))) else []) + ["f32"]:
        predictor = open_predictor(art, INFERENCE_PRECISION_HINT=hint)
        try:
            checks[hint] = top1(predictor(val_x), val_y)
        finally:
            predictor.close()
        if round(fp32 - checks[hint], 2) <= max_drop:
            return hint, checks
    return "f32", checks


def ov_float_layers(ov_model: Any) -> list[str]:
    """Compute layers with no quantized input (no FakeQuantize, no int8 weight constant upstream)."""
    out = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in COMPUTE_OV:
            continue
        if not any(_quantized_input(op.input_value(i).get_node()) for i in range(op.get_input_size())):
            out.append(_ov_layer_name(op.get_friendly_name()))
    return out


def _quantized_input(node: Any) -> bool:
    for _ in range(4):  # Constant(i8) -> Convert -> [Subtract] -> Multiply -> [Reshape]
        kind = node.get_type_name()
        if kind in ("FakeQuantize", "FakeConvert"):
            return True
        if kind == "Constant":
            return str(node.get_element_type()) in ("<Type: 'int8_t'>", "<Type: 'uint8_t'>")
        if kind not in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose") or not node.get_input_size():
            return False
        node = node.input_value(0).get_node()
    return False


def _ov_layer_name(friendly: str) -> str:
    """`__module.blocks.0.attn.qkv/aten::linear/MatMul` -> `blocks.0.attn.qkv`."""
    return re.sub(r"^__module\.", "", friendly.split("/", 1)[0])


# --------------------------------------------------------------------------------------- ONNX
def tune_onnx(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    calibration: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
    out_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Artifact, dict[str, Any]]:
    import nncf
    import onnx
    import onnxruntime as ort

    from edgevit.export import onnx as onnx_export
    from edgevit.export.openvino import model_type_of

    q = target.quantization
    if q.scheme != "static":
        raise EdgevitError(f"onnx tuning is static INT8 (QDQ); the target asks for {q.scheme}")
    fp32 = onnx_export.to_onnx(model, sample, out_dir / "fp32.onnx", target.opset, target.dynamic_batch)
    fp32_model = onnx.load(str(fp32))
    fp32.unlink()
    name = fp32_model.graph.input[0].name
    calib, val = _datasets(nncf, calibration, val_x, val_y, None if target.dynamic_batch else 1, lambda x: {name: x})
    so = ort.SessionOptions()
    so.log_severity_level = 3

    def validate(proto: Any, items: Any) -> float:
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        logits, labels = [], []
        for x, y in items:
            logits.append(sess.run(None, {name: x})[0])
            labels.append(y)
        return top1(np.concatenate(logits), np.asarray(labels))

    # onnxruntime's ActivationSymmetric (the onnx target's default) is NNCF's performance preset
    preset = (
        nncf.QuantizationPreset.PERFORMANCE if q.options.get("ActivationSymmetric") else nncf.QuantizationPreset.MIXED
    )
    with tempfile.TemporaryDirectory() as initial, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = nncf.AdvancedAccuracyRestorerParameters(intermediate_model_dir=initial)
        tuned = nncf.quantize_with_accuracy_control(
            fp32_model,
            calib,
            val,
            validate,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=preset,
            model_type=model_type_of(nncf, model),
            subset_size=len(calibration),
            advanced_quantization_parameters=_no_smooth_quant(nncf),
            advanced_accuracy_restorer_parameters=params,
        )
        initial_path = Path(initial) / "intermediate_model.onnx"
        ptq_float = onnx_float_layers(onnx.load(str(initial_path))) if initial_path.exists() else None
    onnx.save(tuned, str(out_dir / onnx_export.MODEL_FILE))
    float_layers = onnx_float_layers(tuned)
    acc = validate(tuned, val.get_data())
    quant = {
        "scheme": "static",
        "format": "QDQ",
        "tool": "nncf",
        "algorithm": "quantize_with_accuracy_control",
        "preset": preset.value,
        "per_channel": True,
        "float_layers": float_layers,
        "reverted_layers": None if ptq_float is None else [n for n in float_layers if n not in ptq_float],
        "tuned_top1": acc,
        "tuned_drop": round(top1(reference, val_y) - acc, 2),
    }
    return Artifact(
        "onnx",
        "int8",
        out_dir,
        [onnx_export.MODEL_FILE],
        list(sample.shape),
        {
            "opset": int(tuned.opset_import[0].version),
            "dynamic_batch": target.dynamic_batch,
            "input_name": tuned.graph.input[0].name,
            "output_name": tuned.graph.output[0].name,
            "quantization": quant,
            "runtime": {
                k: v for k, v in target.runtime.items() if k in ("graph_optimization_level", "execution_provider")
            },
        },
    ), quant


def _no_smooth_quant(nncf: Any) -> Any:
    """NNCF 3.4's ONNX accuracy restorer puts a reverted MatMul's original weights back but keeps the
    SmoothQuant scaling (a Mul) on its input: every revert then makes the model worse (tiny DeiT: drop
    0.28 pt quantized, 40 pt with all 15 layers reverted). Without SmoothQuant a revert is exact."""
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    return nncf.AdvancedQuantizationParameters(smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1))


def onnx_float_layers(model: Any) -> list[str]:
    """MatMul/Gemm/Conv nodes none of whose inputs comes out of a DequantizeLinear."""
    made_by = {o: n.op_type for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in COMPUTE_ONNX and not any(made_by.get(i) == "DequantizeLinear" for i in n.input)
    ]
