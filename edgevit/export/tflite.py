"""LiteRT (TFLite) flatbuffers for mobile CPUs: litert-torch converts, ai-edge-quantizer quantizes.

fp16 casts weights to float16 (dequantized at load), int8 follows the target's scheme: `dynamic`
(int8 weights, activations quantized on the fly), `static` (full integer: int8 weights and
activations calibrated on training images; the model then takes an int8 input, and the manifest
carries its scale/zero-point; `quantization.options.activation_bits: 16` keeps activations in
int16, which costs less accuracy) or `weight-only`.
"""

from __future__ import annotations

import copy
import itertools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError

MODEL_FILE = "model.tflite"
_FP16_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    if target.dynamic_batch:
        raise EdgevitError("tflite export has a static batch; set dynamic_batch: false in the target")
    flat = convert(model.eval(), sample)
    quant = None
    if precision != "fp32":
        flat, quant = _quantize(flat, precision, target, calibration)
    (out_dir / MODEL_FILE).write_bytes(flat)
    manifest: dict[str, Any] = {"quantization": quant, "runtime": {}}
    if quant and quant["scheme"] == "static":
        manifest.update(_io_quantization(out_dir / MODEL_FILE))
    return Artifact("tflite", precision, out_dir, [MODEL_FILE], list(sample.shape), manifest)


def convert(model: torch.nn.Module, sample: torch.Tensor, **options: Any) -> bytes:
    """litert-torch's flatbuffer for `model` (in eval mode already), converted from contiguous weights.

    litert-torch 0.10 caches each weight it inlines under the address of a `.contiguous()` copy it
    frees at once, so two non-contiguous weights of one shape (channels_last training leaves conv
    weights so) can land on one address and the second layer silently gets the first one's values:
    a pruned PVT-v2's two spatial-reduction convs did, and its LiteRT export no longer matched PyTorch.
    Converting a copy whose weights are contiguous gives each its own, live address.
    """
    import litert_torch

    tensors = itertools.chain(model.parameters(), model.buffers())
    if not all(t.is_contiguous() for t in tensors):
        model = copy.deepcopy(model)
        for t in itertools.chain(model.parameters(), model.buffers()):
            t.data = t.data.contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return bytes(litert_torch.convert(model, (sample,), **options).model_content())


def _quantize(flat: bytes, precision: str, target: Target, calibration: np.ndarray | None) -> tuple[bytes, dict]:
    from ai_edge_quantizer import quantizer, recipe

    scheme = "weight-only" if precision == "fp16" else target.quantization.scheme
    bits = int(target.quantization.options.get("activation_bits", 8))  # 16: int16 activations, int8 weights
    if bits not in (8, 16):
        raise EdgevitError(f"tflite quantization.options.activation_bits must be 8 or 16 (got {bits})")
    recipes = {
        "dynamic": recipe.dynamic_wi8_afp32,
        "static": recipe.static_wi8_ai8 if bits == 8 else recipe.static_wi8_ai16,
        "weight-only": recipe.weight_only_wi8_afp32,
    }
    q = quantizer.Quantizer(bytearray(flat), _FP16_RECIPE if precision == "fp16" else recipes[scheme]())
    result = None
    if scheme == "static":
        if calibration is None or not len(calibration):
            raise EdgevitError("tflite full-integer INT8 needs calibration images (calibration >= 1)", "calibration")
        key, name = _signature(flat)
        threads = max(1, min(4, os.cpu_count() or 1))
        result = q.calibrate(
            {key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]}, num_threads=threads
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = q.quantize(result, enable_progress_report=False).quantized_model
    info = {
        "scheme": scheme,
        "tool": "ai-edge-quantizer",
        "recipe": "fp16 weights" if precision == "fp16" else recipes[scheme].__name__,
    }
    return bytes(out), info


def _signature(flat: bytes) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=flat).get_signature_list()
    key = next(iter(signatures))
    return key, signatures[key]["inputs"][0]


def _io_quantization(path: Path) -> dict[str, Any]:
    """A full-integer model's input/output scale and zero-point, for device-side programs."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    return {
        "input_dtype": np.dtype(i["dtype"]).name,
        "input_quantization": {"scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1])},
        "output_dtype": np.dtype(o["dtype"]).name,
        "output_quantization": {"scale": float(o["quantization"][0]), "zero_point": int(o["quantization"][1])},
    }
