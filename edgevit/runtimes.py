"""Run an exported artifact in its own runtime: one `Predictor` interface over all of them.

`open_predictor(artifact, threads=None, **options)` returns a callable that takes float32 NCHW
images (already normalised, any batch size) and returns float32 logits. Verification and the
latency runners both use it, so what is verified is exactly what is timed.

Runtimes imported lazily: only the one an artifact needs has to be installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevit.artifact import MANIFEST, Artifact
from edgevit.errors import EdgevitError

# format -> (runtime name, python module it needs)
RUNTIMES: dict[str, tuple[str, str]] = {
    "onnx": ("onnxruntime", "onnxruntime"),
    "tensorrt": ("onnxruntime", "onnxruntime"),  # the TensorRT ONNX runs in onnxruntime here; engines need trtexec
    "openvino": ("openvino", "openvino"),
    "tflite": ("litert", "ai_edge_litert"),  # or tflite_runtime (see _litert)
    "coreml": ("coreml", "coremltools"),
    "executorch": ("executorch", "executorch"),
}

# LiteRT interpreters in order of preference: ai_edge_litert (current ops), then tflite_runtime, the older
# standalone interpreter many boards ship (2.14: needs numpy < 2, lacks e.g. FULLY_CONNECTED v12).
LITERT_MODULES = ("ai_edge_litert", "tflite_runtime")
_NEWER_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")

_OV_PRECISIONS = {"fp32": "f32", "f32": "f32", "fp16": "f16", "f16": "f16", "bf16": "bf16"}


class Predictor:
    """Callable over a batch of float32 NCHW images; runs a static-batch model chunk by chunk.

    `runtime` names the runtime, `settings` the effective options (threads, hints) so a latency
    record can say exactly what was measured; `native` is the runtime's own object (session,
    infer request, program) for its profiler (edgevit.profile.detail).
    """

    def __init__(
        self,
        runtime: str,
        run: Callable[[np.ndarray], np.ndarray],
        batch: int | None,
        settings: dict[str, Any],
        close: Callable[[], None] | None = None,
        native: Any = None,
    ):
        self.runtime = runtime
        self.batch = batch  # None: any batch size in one call
        self.settings = settings
        self.native = native
        self._run = run
        self._close = close

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.batch is None or x.shape[0] == self.batch:
            return self._run(x)
        if x.shape[0] % self.batch:
            raise EdgevitError(
                f"this {self.runtime} model has a static batch of {self.batch}; "
                f"got {x.shape[0]} images (export with --dynamic-batch or send multiples of {self.batch})"
            )
        return np.concatenate([self._run(x[i : i + self.batch]) for i in range(0, x.shape[0], self.batch)])

    def close(self) -> None:
        if self._close:
            self._close()


def runtime_available(fmt: str) -> tuple[bool, str]:
    """Whether an artifact of this format can run here, and if not, why (one line)."""
    if fmt not in RUNTIMES:
        raise EdgevitError(f"unknown format '{fmt}' (known: {', '.join(RUNTIMES)})")
    runtime, module = RUNTIMES[fmt]
    if fmt == "coreml" and sys.platform != "darwin":
        return False, "not verifiable here: Core ML prediction needs macOS"
    if fmt == "tflite":
        if not any(importlib.util.find_spec(m) for m in LITERT_MODULES):
            return False, "litert is not installed (pip install ai-edge-litert, or tflite-runtime on a board)"
        return True, runtime
    if importlib.util.find_spec(module) is None:
        return False, f"{runtime} is not installed (pip install {module.replace('_', '-')})"
    return True, runtime


def import_runtime(fmt: str) -> None:
    """Import a format's runtime now, so a load-time measurement does not time Python's imports."""
    import importlib

    if fmt == "executorch":
        _portable_lib()
    elif fmt == "tflite":  # whichever interpreter _litert will open
        name = next((m for m in LITERT_MODULES if importlib.util.find_spec(m)), LITERT_MODULES[0])
        importlib.import_module(f"{name}.interpreter")
    elif fmt in RUNTIMES:
        importlib.import_module(RUNTIMES[fmt][1])


def runs_here(artifact: Artifact) -> tuple[bool, str]:
    """Whether this artifact (not just its format) can run here: an ExecuTorch .pte also needs
    every backend it delegates to (a Core ML-delegated .pte needs Apple's CoreMLBackend)."""
    ok, why = runtime_available(artifact.format)
    if not ok or artifact.format != "executorch":
        return ok, why
    missing = _missing_backends(artifact)
    if missing:
        return False, (
            f"not verifiable here: the .pte delegates to {', '.join(missing)}, which this ExecuTorch "
            "runtime lacks (the Core ML delegate runs on Apple devices)"
        )
    return True, why


def open_predictor(artifact: Artifact | str | Path, threads: int | None = None, **options: Any) -> Predictor:
    """Load an artifact in its runtime. `threads` None keeps the runtime's default.

    Options per runtime:
    - onnxruntime: graph_optimization_level (disable|basic|extended|all), execution_provider.
    - openvino: INFERENCE_PRECISION_HINT (f32|f16|bf16; default: the manifest's, which the export
      recorded because the CPU plugin runs bf16 by default on AMX), PERFORMANCE_HINT
      (LATENCY|THROUGHPUT), device (CPU), and any other OpenVINO property by its name.
    - litert: none besides threads.
    - coreml (macOS only): compute_units (ALL|CPU_ONLY|CPU_AND_GPU|CPU_AND_NE).
    - executorch: etdump (true: record ExecuTorch's per-op profile; edgevit.profile.detail reads it).
      `threads` sizes ExecuTorch's process-wide thread pool (XNNPACK runs on it); the predictor
      resets it before a call when another predictor changed it.
    """
    if not isinstance(artifact, Artifact):
        if not (Path(artifact) / MANIFEST).exists():
            raise EdgevitError(f"{artifact} is not an export folder (no {MANIFEST}); run `edgevit export` first")
        artifact = Artifact.load(artifact)
    ok, why = runtime_available(artifact.format)
    if not ok:
        raise EdgevitError(f"cannot run {artifact.format} artifact {artifact.directory}: {why}")
    if threads is not None and threads < 1:
        raise EdgevitError(f"threads must be >= 1 (got {threads})")
    opener = {
        "onnx": _onnxruntime,
        "tensorrt": _onnxruntime,
        "openvino": _openvino,
        "tflite": _litert,
        "coreml": _coreml,
        "executorch": _executorch,
    }[artifact.format]
    defaults = dict(artifact.manifest.get("runtime") or {})
    return opener(artifact, threads, {**defaults, **options})


def _unknown(runtime: str, options: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(options) - known)
    if extra:
        raise EdgevitError(
            f"unknown {runtime} option(s) {', '.join(extra)} (known: {', '.join(sorted(known)) or 'none'})"
        )


# ------------------------------------------------------------------------------------ onnxruntime
def _onnxruntime(artifact: Artifact, threads: int | None, options: dict[str, Any]) -> Predictor:
    import onnxruntime as ort

    _unknown("onnxruntime", options, {"graph_optimization_level", "execution_provider", "profile_prefix"})
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


# --------------------------------------------------------------------------------------- openvino
def _openvino(artifact: Artifact, threads: int | None, options: dict[str, Any]) -> Predictor:
    import openvino as ov

    opts = dict(options)
    device = str(opts.pop("device", "CPU"))
    config: dict[str, Any] = {}
    precision = opts.pop("INFERENCE_PRECISION_HINT", opts.pop("inference_precision", None))
    if precision is not None:
        if str(precision).lower() not in _OV_PRECISIONS:
            raise EdgevitError(f"INFERENCE_PRECISION_HINT must be f32, f16 or bf16 (got {precision!r})")
        config["INFERENCE_PRECISION_HINT"] = _OV_PRECISIONS[str(precision).lower()]
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
    core = ov.Core()
    try:
        compiled = core.compile_model(str(artifact.model_path), device, config)
    except RuntimeError as exc:
        raise EdgevitError(
            f"openvino could not compile {artifact.model_path} on {device}: {_first_line(exc)}"
        ) from None
    request = compiled.create_infer_request()
    shape = compiled.input(0).get_partial_shape()
    batch = shape[0].get_length() if shape[0].is_static else None

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    precision_used = compiled.get_property("INFERENCE_PRECISION_HINT")
    settings = {
        "threads": threads,
        "device": device,
        "INFERENCE_PRECISION_HINT": precision_used.to_string()
        if hasattr(precision_used, "to_string")
        else str(precision_used),
        "PERFORMANCE_HINT": str(compiled.get_property("PERFORMANCE_HINT")),
    }
    return Predictor("openvino", run, batch, settings, native=request)


# ----------------------------------------------------------------------------------------- litert
def litert_interpreter() -> tuple[Any, str]:
    """The Interpreter class of the first LiteRT runtime that imports here, and its runtime name."""
    failures = []
    for module in LITERT_MODULES:
        if importlib.util.find_spec(module) is None:
            continue
        if (
            module == "tflite_runtime" and int(np.__version__.split(".")[0]) >= 2
        ):  # its last release, 2.14, predates numpy 2
            failures.append(
                f"tflite-runtime {_version('tflite-runtime')} needs numpy < 2 (numpy {np.__version__} here: "
                "pip install 'numpy<2')"
            )
            continue
        try:
            interpreter = importlib.import_module(f"{module}.interpreter")
        except (ImportError, AttributeError) as exc:  # a broken install: try the next one
            failures.append(f"{module}: {_first_line(exc)}")
            continue
        return interpreter.Interpreter, ("litert" if module == "ai_edge_litert" else "tflite-runtime")
    raise EdgevitError(f"no LiteRT interpreter works here: {'; '.join(failures) or 'none installed'}")


def _litert(artifact: Artifact, threads: int | None, options: dict[str, Any]) -> Predictor:
    Interpreter, runtime = litert_interpreter()
    _unknown("litert", options, set())
    try:
        interp = Interpreter(model_path=str(artifact.model_path), num_threads=threads)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        newer = _NEWER_OP.search(str(exc))
        if newer and runtime == "tflite-runtime":
            version = _version("tflite-runtime")
            raise EdgevitError(
                f"{artifact.model_path} needs the TFLite op {newer.group(1)} version {newer.group(2)}, "
                f"newer than tflite-runtime {version} has: install ai-edge-litert on this device "
                "(or export with an older op set)"
            ) from None
        raise EdgevitError(f"{runtime} cannot load {artifact.model_path}: {_first_line(exc)}") from None
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

    return Predictor(
        runtime, run, int(inp["shape"][0]), {"threads": threads, "input_dtype": np.dtype(inp["dtype"]).name}
    )


# ----------------------------------------------------------------------------------------- coreml
def _coreml(artifact: Artifact, threads: int | None, options: dict[str, Any]) -> Predictor:
    import coremltools as ct

    opts = dict(options)
    _unknown("coreml", opts, {"compute_units"})
    units = str(opts.get("compute_units", "ALL")).upper()
    if units not in ct.ComputeUnit.__members__:
        raise EdgevitError(f"compute_units must be one of {', '.join(ct.ComputeUnit.__members__)} (got {units!r})")
    model = ct.models.MLModel(str(artifact.model_path), compute_units=ct.ComputeUnit[units])
    spec = model.get_spec()
    in_name, out_name = spec.description.input[0].name, spec.description.output[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict({in_name: x})[out_name], dtype=np.float32)

    return Predictor("coreml", run, int(artifact.input_shape[0]), {"threads": threads, "compute_units": units})


# ------------------------------------------------------------------------------------- executorch
def _portable_lib() -> Any:
    """ExecuTorch's runtime bindings (they import torch); quiet about being experimental."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    return portable_lib, Runtime.get()


def _missing_backends(artifact: Artifact) -> list[str]:
    _, runtime = _portable_lib()
    return [b for b in artifact.manifest.get("backends") or [] if not runtime.backend_registry.is_available(b)]


class _EtPool:
    """ExecuTorch's threadpool is process-wide, and XNNPACK's runtime keeps the pool a program was
    loaded with; a reset frees that pool (running on gave wrong outputs or a segfault). Resets are
    counted so that a predictor knows when to load its program again."""

    resets = 0

    @classmethod
    def ensure(cls, lib: Any, threads: int | None) -> None:
        if threads and lib._threadpool_get_thread_count() != threads:
            lib._unsafe_reset_threadpool(threads)
            cls.resets += 1


def _executorch(artifact: Artifact, threads: int | None, options: dict[str, Any]) -> Predictor:
    import torch

    _unknown("executorch", options, {"etdump"})
    lib, runtime = _portable_lib()
    missing = _missing_backends(artifact)
    if missing:
        raise EdgevitError(
            f"{artifact.model_path} delegates to {', '.join(missing)}, which this ExecuTorch runtime "
            f"lacks (it has {', '.join(runtime.backend_registry.registered_backend_names)})"
        )
    etdump = bool(options.get("etdump", False))

    def load() -> tuple[Any, Any, int]:
        _EtPool.ensure(lib, threads)
        program = runtime.load_program(artifact.model_path, enable_etdump=etdump)
        return program, program.load_method("forward"), _EtPool.resets

    program, method, loaded_at = load()

    def run(x: np.ndarray) -> np.ndarray:
        nonlocal method, loaded_at
        _EtPool.ensure(lib, threads)
        if loaded_at != _EtPool.resets:  # the pool this program was loaded with is gone
            predictor.native, method, loaded_at = load()
        return np.asarray(method.execute([torch.from_numpy(x)])[0].numpy(), dtype=np.float32)

    batch = int(method.metadata.input_tensor_meta(0).sizes()[0])
    settings = {
        "threads": threads,
        "threadpool": lib._threadpool_get_thread_count(),
        "delegates": ",".join(artifact.manifest.get("backends") or []) or "none",
        "etdump": etdump,
    }
    predictor = Predictor("executorch", run, batch, settings, native=program)
    return predictor


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
