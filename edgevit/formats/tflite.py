"""LiteRT (TFLite): litert-torch conversion, the LiteRT interpreter (or tflite-runtime on boards),
full-integer PTQ, ai-edge-quantizer recipes with float fallback, and PT2E QAT."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor, first_line, reject_unknown, version

# LiteRT interpreters in order of preference: ai_edge_litert (current ops), then tflite_runtime, the older
# standalone interpreter many boards ship (2.14: needs numpy < 2, lacks e.g. FULLY_CONNECTED v12).
LITERT_MODULES = ("ai_edge_litert", "tflite_runtime")
_NEWER_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")


def export(*args: Any) -> Any:
    from edgevit.export import tflite

    return tflite.export(*args)


def litert_interpreter() -> tuple[Any, str]:
    """The Interpreter class of the first LiteRT runtime that imports here, and its runtime name."""
    failures = []
    for module in LITERT_MODULES:
        if importlib.util.find_spec(module) is None:
            continue
        if module == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2:  # its last release predates numpy 2
            failures.append(
                f"tflite-runtime {version('tflite-runtime')} needs numpy < 2 (numpy {np.__version__} here: "
                "pip install 'numpy<2')"
            )
            continue
        try:
            interpreter = importlib.import_module(f"{module}.interpreter")
        except (ImportError, AttributeError) as exc:  # a broken install: try the next one
            failures.append(f"{module}: {first_line(exc)}")
            continue
        return interpreter.Interpreter, ("litert" if module == "ai_edge_litert" else "tflite-runtime")
    raise EdgevitError(f"no LiteRT interpreter works here: {'; '.join(failures) or 'none installed'}")


def _preload() -> None:  # whichever interpreter litert_interpreter will open
    name = next((m for m in LITERT_MODULES if importlib.util.find_spec(m)), LITERT_MODULES[0])
    importlib.import_module(f"{name}.interpreter")


def open_litert(artifact: Any, threads: int | None, options: dict[str, Any]) -> Predictor:
    """LiteRT takes no options besides threads; a full-integer model's input and output are
    (de)quantized here with the scales the flatbuffer holds."""
    Interpreter, runtime = litert_interpreter()
    reject_unknown("litert", options, set())
    try:
        interp = Interpreter(model_path=str(artifact.model_path), num_threads=threads)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        newer = _NEWER_OP.search(str(exc))
        if newer and runtime == "tflite-runtime":
            raise EdgevitError(
                f"{artifact.model_path} needs the TFLite op {newer.group(1)} version {newer.group(2)}, "
                f"newer than tflite-runtime {version('tflite-runtime')} has: install ai-edge-litert on this "
                "device (or export with an older op set)"
            ) from None
        raise EdgevitError(f"{runtime} cannot load {artifact.model_path}: {first_line(exc)}") from None
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def run(x: np.ndarray) -> np.ndarray:
        if np.issubdtype(inp["dtype"], np.integer):  # full-integer model: quantize the input ourselves
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if np.issubdtype(out["dtype"], np.integer):
            y = (y.astype(np.float32) - out_zero) * out_scale
        return np.array(y, dtype=np.float32)

    settings = {"threads": threads, "input_dtype": np.dtype(inp["dtype"]).name}
    return Predictor(runtime, run, int(inp["shape"][0]), settings)


def flatbuffer_float_layers(artifact: Any) -> list[str]:
    from edgevit.quantize.tflite import float_layers

    return float_layers(artifact.model_path.read_bytes())


def tune_recipes(*args: Any, log: Any) -> Any:
    from edgevit.quantize.tflite import tune

    art, _result = tune(*args, log=log)
    return art, art.manifest["quantization"]


def qat_quantizer() -> Any:
    from edgevit.quantize.qat import litert_quantizer

    return litert_quantizer()


def qat_export(qmodel: Any, quantizer: Any, sample: Any, target: Any, out_dir: Path, *_checks: Any) -> Any:
    """litert-torch converts the unfolded PT2E graph with its own quantizer: a static INT8 flatbuffer."""
    from litert_torch.quantize.quant_config import QuantConfig

    from edgevit.artifact import Artifact
    from edgevit.export.tflite import MODEL_FILE, _io_quantization, convert
    from edgevit.quantize.qat import convert as convert_pt2e

    flat = convert(
        convert_pt2e(qmodel, fold_quantize=False), sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)
    )
    (out_dir / MODEL_FILE).write_bytes(flat)
    quant = {"scheme": "static", "tool": "litert-torch PT2E (QAT)", "full_integer": False}
    manifest = {"quantization": quant, "runtime": {}, **_io_quantization(out_dir / MODEL_FILE)}
    return Artifact("tflite", "int8", out_dir, [MODEL_FILE], list(sample.shape), manifest)


FORMAT = Format(
    name="tflite",
    extra="tflite",
    precisions=("fp32", "fp16", "int8"),
    export=export,
    tools=("litert-torch", "ai-edge-litert", "ai-edge-quantizer"),
    runtime="litert",
    open_predictor=open_litert,
    runtime_modules=LITERT_MODULES,
    missing_runtime="litert is not installed (pip install ai-edge-litert, or tflite-runtime on a board)",
    preload=_preload,
    quant_methods=("ptq", "tune", "qat"),
    quant_tools=("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao"),
    tuners={"ai-edge-quantizer": tune_recipes},
    qat_quantizer=qat_quantizer,
    qat_export=qat_export,
    float_layers=flatbuffer_float_layers,
    no_per_op="ai_edge_litert's Python Interpreter exposes no per-op timing (use LiteRT's benchmark_model "
    "--enable_op_profiling=true on the device)",
)
