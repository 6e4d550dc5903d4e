"""Core ML (iOS/macOS): an mlprogram .mlpackage converted from `torch.export`.

fp32 computes in FP32, fp16 in FP16 (the Neural Engine's precision), int8 is FP16 compute with
INT8 linear-symmetric weights (`linear_quantize_weights`). The `torch.export` path is used
because `torch.jit.trace` fails for DeiT with numpy >= 2.4. Prediction needs macOS, so on Linux
the model is converted without loading it and verification says "not verifiable here".
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError

MODEL_FILE = "model.mlpackage"


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    import coremltools as ct

    if target.dynamic_batch:
        raise EdgevitError("coreml export has a static batch here; set dynamic_batch: false in the target")
    deployment = str(target.runtime.get("minimum_deployment_target", "iOS16"))
    if not hasattr(ct.target, deployment):
        raise EdgevitError(
            f"unknown Core ML deployment target {deployment!r} (known: {', '.join(ct.target.__members__)})"
        )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(model.eval(), (sample,)).run_decompositions({})
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            inputs=[ct.TensorType(name="input", shape=tuple(sample.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name="logits", dtype=np.float32)],
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            minimum_deployment_target=getattr(ct.target, deployment),
            skip_model_load=sys.platform != "darwin",
        )
    quant = None
    if precision == "int8":
        if target.quantization.scheme != "weight-only":
            raise EdgevitError(
                f"coreml INT8 here is weight-only (target asks for {target.quantization.scheme}); "
                "activation quantization needs predictions, which need macOS"
            )
        options = {"mode": "linear_symmetric", "dtype": "int8", **dict(target.quantization.options)}
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(**options)
        )
        mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=config)
        quant = {"scheme": "weight-only", "tool": "coremltools", **options}
    mlmodel.save(str(out_dir / MODEL_FILE))
    return Artifact(
        "coreml",
        precision,
        out_dir,
        [MODEL_FILE],
        list(sample.shape),
        {
            "input_name": "input",
            "output_name": "logits",
            "minimum_deployment_target": deployment,
            "compute_precision": "fp32" if precision == "fp32" else "fp16",
            "quantization": quant,
            "runtime": {"compute_units": str(target.runtime.get("compute_units", "ALL")).upper()},
        },
    )
