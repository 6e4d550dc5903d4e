"""TensorRT (Jetson): an ONNX shaped for trtexec, plus the exact command that builds the engine.

The ONNX is static-shaped, opset >= 17 (LayerNormalization is one op) and constant-folded by
polygraphy, then linted by polygraphy. Precision is chosen when the engine is built:
- fp16: `--fp16` with every LayerNormalization pinned to FP32 (`--layerPrecisions ... :fp32
  --precisionConstraints=obey`): FP16 LayerNorm overflows in ViTs and accuracy collapses.
- int8: explicit Q/DQ nodes placed by NVIDIA ModelOpt's ONNX quantizer the way TensorRT fuses
  them (calibrated on the CPU), float parts left in FP32 so the ONNX also runs in onnxruntime;
  built with `--int8 --fp16` and the same LayerNorm pinning.
TensorRT cannot be installed here, so the command goes into the manifest and build_engine.sh;
where a TensorRT Python package and a CUDA GPU exist, the engine is built right away too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError
from edgevit.export.onnx import to_onnx
from edgevit.profile.trtexec import trtexec_command

MODEL_FILE, ENGINE_FILE, SCRIPT_FILE = "model.onnx", "model.engine", "build_engine.sh"


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    import onnx

    folded = folded_onnx(model, sample, target, out_dir)
    path = out_dir / MODEL_FILE
    quant = None
    if precision == "int8":
        fp32 = out_dir / "fp32.onnx"
        onnx.save(folded, str(fp32))
        quant = _quantize(fp32, path, target, calibration)
        fp32.unlink()
    else:
        onnx.save(folded, str(path))
    return package(path, out_dir, sample, target, precision, quant)


def folded_onnx(model: torch.nn.Module, sample: torch.Tensor, target: Target, out_dir: Path) -> Any:
    """The static-shaped ONNX, constant-folded by polygraphy (what TensorRT's parser wants)."""
    import onnx
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING
    if target.dynamic_batch:
        raise EdgevitError("the TensorRT target uses static shapes; set dynamic_batch: false")
    raw = to_onnx(model, sample, out_dir / "raw.onnx", target.opset, dynamic_batch=False)
    folded = fold_constants(onnx.load(str(raw)), error_ok=False)
    raw.unlink()
    return folded


def package(
    path: Path, out_dir: Path, sample: torch.Tensor, target: Target, precision: str, quant: dict[str, Any] | None
) -> Artifact:
    """Lint the ONNX at `path`, write build_engine.sh (and the engine where TensorRT exists): the artifact."""
    import onnx

    lint = polygraphy_lint(path)
    graph = onnx.load(str(path))
    layernorms = [n.name for n in graph.graph.node if n.op_type == "LayerNormalization"]
    build = {
        "precision": precision,
        "fp32_layers": layernorms if precision != "fp32" else [],
        "workspace_mb": int(target.runtime.get("workspace_mb", 1024)),
        "use_dla": bool(target.runtime.get("use_dla", False)),
    }
    command = trtexec_command(target.device.tool or "trtexec", **build)
    script = out_dir / SCRIPT_FILE
    script.write_text(
        "#!/bin/sh\n# Build the TensorRT engine on the device, next to this file.\n"
        'set -e\ncd "$(dirname "$0")"\n' + shlex.join(command) + "\n"
    )
    script.chmod(0o755)
    files = [MODEL_FILE, SCRIPT_FILE]
    engine_note = "not built here: TensorRT is not installed; run build_engine.sh on the device"
    if tensorrt_available():
        build_engine(path, out_dir / ENGINE_FILE, precision, layernorms, int(target.runtime.get("workspace_mb", 1024)))
        files.append(ENGINE_FILE)
        engine_note = "built here with the TensorRT Python API (not run here)"
    return Artifact(
        "tensorrt",
        precision,
        out_dir,
        files,
        list(sample.shape),
        {
            "opset": int(graph.opset_import[0].version),
            "input_name": graph.graph.input[0].name,
            "output_name": graph.graph.output[0].name,
            "quantization": quant,
            "trtexec": shlex.join(command),
            "trtexec_build": build,
            "engine": engine_note,
            "fp32_layers": layernorms if precision != "fp32" else [],
            "polygraphy_lint": lint,
            "runtime": {},
        },
    )


def _quantize(
    src: Path, dst: Path, target: Target, calibration: np.ndarray | None, nodes_to_exclude: list[str] | None = None
) -> dict[str, Any]:
    """ModelOpt INT8 Q/DQ on the CPU; calibration method from the target (entropy | max).

    `nodes_to_exclude`: ONNX node names kept in float (ModelOpt takes regexes; these are escaped)."""
    if target.quantization.scheme != "static":
        raise EdgevitError(f"TensorRT INT8 is static (explicit Q/DQ); the target asks for {target.quantization.scheme}")
    if calibration is None or not len(calibration):
        raise EdgevitError("TensorRT INT8 needs calibration images (calibration >= 1)", "calibration")
    method = (target.quantization.method or "entropy").lower()
    if method == "minmax":
        method = "max"
    if method not in ("entropy", "max"):
        raise EdgevitError(
            f"ModelOpt INT8 calibration method must be entropy or max (got {target.quantization.method!r})"
        )
    calib = src.with_name("calibration.npy")
    np.save(calib, np.ascontiguousarray(calibration, np.float32))
    # ModelOpt patches onnxruntime's calibrator for the whole process, which then breaks later
    # onnxruntime quantization (the onnx target's INT8): run it in a fresh process.
    options = dict(target.quantization.options)
    if nodes_to_exclude:
        options["nodes_to_exclude"] = [
            *options.get("nodes_to_exclude", []),
            *(f"^{re.escape(n)}$" for n in nodes_to_exclude),
        ]
    args = json.dumps([str(src), str(dst), str(calib), method, options])
    code = (
        "import json, sys; from edgevit.export.tensorrt import _modelopt_int8; _modelopt_int8(*json.loads(sys.argv[1]))"
    )
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    calib.unlink()
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"ModelOpt INT8 quantization failed: {lines[-1] if lines else proc.returncode}")
    return {
        "scheme": "static",
        "tool": "nvidia-modelopt",
        "format": "QDQ (TensorRT explicit quantization)",
        "calibration_method": method,
        "calibration_images": len(calibration),
    }


def _modelopt_int8(src: str, dst: str, calibration: str, method: str, options: dict[str, Any]) -> None:
    from modelopt.onnx.quantization import quantize

    quantize(
        onnx_path=src,
        quantize_mode="int8",
        calibration_data=np.load(calibration),
        calibration_method=method,
        calibration_eps=["cpu"],
        output_path=dst,
        high_precision_dtype="fp32",
        log_level="ERROR",
        **options,
    )


def polygraphy_lint(path: Path) -> str:
    """`polygraphy check lint`: a model TensorRT's parser would reject fails here, not on the device."""
    exe = Path(sys.executable).with_name("polygraphy")
    report = path.with_name("lint.json")
    proc = subprocess.run(
        [str(exe), "check", "lint", str(path), "-o", str(report)],
        capture_output=True,
        text=True,
        env={**os.environ, "POLYGRAPHY_AUTOINSTALL_DEPS": "0"},
    )
    report.unlink(missing_ok=True)
    if proc.returncode != 0:
        failed = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "[E]" in line]
        raise EdgevitError(
            f"polygraphy lint rejects {path.name}: {(failed or ['see polygraphy check lint'])[0].strip()}"
        )
    return "passed"


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def build_engine(onnx_path: Path, engine_path: Path, precision: str, fp32_layers: list[str], workspace_mb: int) -> None:
    """What trtexec does, through the TensorRT Python API (TensorRT 10)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise EdgevitError(f"TensorRT cannot parse {onnx_path.name}: {parser.get_error(0).desc()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if precision != "fp32" and fp32_layers:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = set(fp32_layers)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in pinned:
                layer.precision = trt.float32
                layer.set_output_type(0, trt.float32)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EdgevitError(f"TensorRT could not build an engine from {onnx_path.name} ({precision})")
    engine_path.write_bytes(bytes(engine))
