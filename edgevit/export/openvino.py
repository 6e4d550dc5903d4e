"""OpenVINO IR (.xml/.bin) for Intel CPUs; INT8 by NNCF post-training quantization.

The CPU plugin runs bf16 by default on AMX CPUs, so the precision an artifact is meant to run in
is recorded in the manifest as INFERENCE_PRECISION_HINT and the runtime asks for it explicitly:
fp32 -> f32, fp16 -> f16 (FP16-compressed weights), bf16 -> bf16 (FP16-compressed weights),
int8 -> bf16 for the ops NNCF leaves in float where the CPU has BF16 (f32 there costs more than
INT8 saves on AMX), else f32.

`quantization.options` for INT8 (all optional, YAML-able): preset (performance|mixed),
ignored_types (OpenVINO op types, e.g. ScaledDotProductAttention), ignored_patterns (regexes on
node names, e.g. the classifier heads), smooth_quant_alpha (SmoothQuant alpha for MatMuls; < 0 off).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError

MODEL_FILE, WEIGHTS_FILE = "model.xml", "model.bin"
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}  # int8: bf16 if the CPU has it
QUANT_OPTIONS = ("preset", "ignored_types", "ignored_patterns", "smooth_quant_alpha")


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    ov_model = convert(model, sample, target)
    quant = None
    if precision == "int8":
        ov_model, quant = _quantize(ov_model, model, target, calibration)
    return save(ov_model, out_dir, sample, target, precision, quant)


def convert(model: torch.nn.Module, sample: torch.Tensor, target: Target) -> Any:
    """The student as an OpenVINO model with named input/output (static batch unless the target asks)."""
    import openvino as ov

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        shape = [-1 if target.dynamic_batch else sample.shape[0], *sample.shape[1:]]
        ov_model = ov.convert_model(model, example_input=sample, input=[shape])
    ov_model.inputs[0].get_tensor().set_names({"input"})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def save(
    ov_model: Any,
    out_dir: Path,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    quant: dict[str, Any] | None,
    hint: str | None = None,
) -> Artifact:
    """Write the IR and the runtime settings it is meant to run with (`hint` overrides the default)."""
    import openvino as ov

    ov.save_model(ov_model, str(out_dir / MODEL_FILE), compress_to_fp16=precision in ("fp16", "bf16"))
    device = str(target.runtime.get("device", "CPU"))
    default_hint = INFERENCE_PRECISION[precision]
    if precision == "int8" and has_bf16(device):
        default_hint = "bf16"
    runtime = {
        "device": device,
        "INFERENCE_PRECISION_HINT": hint or str(target.runtime.get("inference_precision", default_hint)),
    }
    if "performance_hint" in target.runtime:
        runtime["PERFORMANCE_HINT"] = str(target.runtime["performance_hint"]).upper()
    return Artifact(
        "openvino",
        precision,
        out_dir,
        [MODEL_FILE, WEIGHTS_FILE],
        list(sample.shape),
        {
            "input_name": "input",
            "output_name": "logits",
            "weights": "fp16" if precision in ("fp16", "bf16") else ("int8" if precision == "int8" else "fp32"),
            "quantization": quant,
            "runtime": runtime,
        },
    )


def has_bf16(device: str = "CPU") -> bool:
    import openvino as ov

    return "BF16" in _capabilities(ov.Core(), device)


def _quantize(
    ov_model: Any, model: torch.nn.Module, target: Target, calibration: np.ndarray | None
) -> tuple[Any, dict]:
    """NNCF PTQ; transformer model type (keeps LayerNorm/Softmax/GELU in float) when the model has attention."""
    import nncf

    q = target.quantization
    if q.scheme != "static":
        raise EdgevitError(f"openvino INT8 is static post-training quantization with NNCF (target asks for {q.scheme})")
    if calibration is None or not len(calibration):
        raise EdgevitError("openvino INT8 needs calibration images (calibration >= 1)", "calibration")
    model_type = model_type_of(nncf, model)
    has_attention = model_type is not None
    batch = 1 if ov_model.inputs[0].get_partial_shape()[0].is_static else len(calibration)
    data = nncf.Dataset([calibration[i : i + batch] for i in range(0, len(calibration), batch)])
    quantized = nncf.quantize(
        ov_model, data, model_type=model_type, subset_size=len(calibration), **_nncf_options(nncf, q.options)
    )
    return quantized, {
        "scheme": "static",
        "tool": "nncf",
        "model_type": "transformer" if has_attention else "default",
        "subset_size": len(calibration),
        "options": dict(q.options),
    }


def model_type_of(nncf: Any, model: torch.nn.Module) -> Any:
    """NNCF's transformer model type (LayerNorm/Softmax/GELU kept in float) when the model has attention."""
    return nncf.ModelType.TRANSFORMER if any(name.endswith("attn") for name, _ in model.named_modules()) else None


def _nncf_options(nncf: Any, options: dict[str, Any]) -> dict[str, Any]:
    """quantization.options (YAML) -> nncf.quantize keyword arguments."""
    unknown = sorted(set(options) - set(QUANT_OPTIONS))
    if unknown:
        raise EdgevitError(
            f"unknown openvino quantization option(s) {', '.join(unknown)} (allowed: {', '.join(QUANT_OPTIONS)})"
        )
    kwargs: dict[str, Any] = {}
    if options.get("preset") is not None:
        presets = [p.value for p in nncf.QuantizationPreset]
        if str(options["preset"]).lower() not in presets:
            raise EdgevitError(f"quantization preset must be one of {', '.join(presets)} (got {options['preset']!r})")
        kwargs["preset"] = nncf.QuantizationPreset(str(options["preset"]).lower())
    types, patterns = list(options.get("ignored_types") or []), list(options.get("ignored_patterns") or [])
    if types or patterns:
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=types, patterns=patterns, validate=False)
    if options.get("smooth_quant_alpha") is not None:
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

        alpha = float(options["smooth_quant_alpha"])  # the non-deprecated form of smooth_quant_alpha=alpha
        kwargs["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alpha)
        )
    return kwargs


def _capabilities(core: Any, device: str) -> list[str]:
    try:
        return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 -- a device without the property: assume no BF16
        return []
