"""The export stage: a run's student for one target, verified in the target's runtime, recorded.

The artifact is written into a temporary folder next to its final place and renamed only once
export and verification are done, so a failure never leaves a half-written artifact behind; a
failed export gets a ledger row that says why. `RunInputs` holds what every export of one run needs
(the student, validation images, PyTorch's logits on them, calibration images), so `export
--target all` and `benchmark` load them once, not once per target and precision.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target, load_target
from edgevit.errors import EdgevitError
from edgevit.export.verify import Verification, verify
from edgevit.files import atomic_dir, disk_error, replace_dir
from edgevit.formats import get as get_format
from edgevit.formats import missing_package
from edgevit.models.checkpoint import STUDENT_FILE, load_student

EXPORTS_DIR = "exports"
# What converters say when they reject an op; the first group is the op's name.
_OP_PATTERNS = [
    r"operator '?([\w:.]+)'? to ONNX",  # torch.onnx
    r"[Cc]onversion rule[^:]*: ([\w:.,\s]+)",  # openvino
    r"convert function for op '([\w.]+)'",  # coremltools
    r"[Ll]owering (?:not found|failed)[^\w]*([\w.:]+)",  # litert-torch
    r"\b((?:aten|prims|torch\.ops\.\w+)[:.]{1,2}[\w.]+)",  # any aten op named in the message
]


@dataclass
class ExportResult:
    artifact: Artifact
    verification: Verification
    seconds: float  # converter time (quantization included), not verification


def failing_op(text: str) -> str | None:
    """The op a converter rejected, if its message names one."""
    for pattern in _OP_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip().rstrip(".,")
    return None


def tool_versions(tools: tuple[str, ...]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for t in tools:
        try:
            out[t] = importlib.metadata.version(t)
        except importlib.metadata.PackageNotFoundError:
            out[t] = "not installed"
    return out


def timed_export(
    fmt: str,
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> tuple[Artifact, float]:
    """Run one format's exporter; a converter failure becomes one line naming the format and op."""
    spec = get_format(fmt)
    if precision not in spec.precisions:
        raise EdgevitError(f"{fmt} export supports {', '.join(spec.precisions)} (asked for {precision})", "precision")
    return run_converter(
        fmt,
        precision,
        lambda: spec.export(model, sample, target, precision, calibration, out_dir, meta),
        spec.tools,
        out_dir,
    )


def run_converter(
    fmt: str, precision: str, convert: Callable[[], Artifact], tools: tuple[str, ...], out_dir: Path | None = None
) -> tuple[Artifact, float]:
    """Time `convert()`; a converter failure becomes one line naming the format and op (a full disk
    under `out_dir` says so instead)."""
    start = time.perf_counter()
    try:  # (what converters print on stdout is the CLI's business: console.converter_output_on_stderr)
        artifact = convert()
    except EdgevitError:
        raise
    except ModuleNotFoundError as exc:  # converters import their packages lazily
        raise missing_package(fmt, exc.name) from exc
    except Exception as exc:  # noqa: BLE001 - any converter failure becomes one readable line
        full_disk = disk_error(out_dir, exc) if out_dir is not None else None
        if full_disk is not None:
            raise full_disk from exc
        text = f"{type(exc).__name__}: {exc}"
        op = failing_op(text)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        where = f" at op {op}" if op else ""
        raise EdgevitError(f"{fmt} export ({precision}) failed{where}: {first[:300]}") from exc
    seconds = time.perf_counter() - start
    artifact.manifest["tools"] = tool_versions(("torch", *tools))
    return artifact, seconds


def _images(dataset: Any, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(dataset[int(i)] for i in indices))
    return torch.stack(list(xs)).numpy().astype(np.float32), np.asarray(ys)


@dataclass
class RunInputs:
    """A run's student with its validation images and PyTorch's logits on them (at one input size),
    and calibration images drawn from the training split on demand."""

    run_dir: Path
    model: torch.nn.Module
    meta: dict[str, Any]
    size: int
    val_x: np.ndarray
    val_y: np.ndarray
    reference: np.ndarray
    train: Any
    _calibration: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: str | Path, size: int | None = None, verify_images: int = 2000) -> "RunInputs":
        from edgevit.data import build_datasets

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise EdgevitError(f"run folder {run_dir} does not exist")
        if not (run_dir / STUDENT_FILE).exists():
            raise EdgevitError(f"run {run_dir} has no student ({STUDENT_FILE}): run `edgevit distill` first")
        if verify_images < 1:
            raise EdgevitError(f"verify_images must be >= 1 (got {verify_images})")
        model, meta = load_student(run_dir)
        size = size or int(meta["img_size"])
        ds = build_datasets(
            {**dict(meta["data"]), "img_size": size},
            None,
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            crop_pct=meta.get("crop_pct"),
        )
        idx = np.arange(len(ds.val))
        if len(idx) > verify_images:
            idx = np.sort(np.random.default_rng(0).permutation(len(ds.val))[:verify_images])
        val_x, val_y = _images(ds.val, idx)
        try:
            with torch.inference_mode():
                reference = np.concatenate(
                    [model(torch.from_numpy(val_x[i : i + 256])).numpy() for i in range(0, len(val_x), 256)]
                )
        except Exception as exc:  # noqa: BLE001 - shape errors come in many types
            raise EdgevitError(
                f"the student of {run_dir.name} cannot take {size}x{size} inputs "
                f"({str(exc).splitlines()[0][:120]}); drop the target's input_size or set it to "
                f"{meta['img_size']}"
            ) from None
        return cls(run_dir, model, meta, size, val_x, val_y, reference, ds.train)

    def calibration(self, n: int) -> np.ndarray:
        """n training images in a seeded order (the same n images every time)."""
        if n < 1:
            raise EdgevitError(f"calibration must be >= 1 training image (got {n})", "calibration")
        if n not in self._calibration:
            order = np.random.default_rng(0).permutation(len(self.train))[: min(n, len(self.train))]
            self._calibration[n] = _images(self.train, order)[0]
        return self._calibration[n]

    def sample(self, batch: int) -> torch.Tensor:
        if len(self.val_x) < batch:
            raise EdgevitError(f"target batch {batch} is larger than the validation split ({len(self.val_x)} images)")
        return torch.from_numpy(self.val_x[:batch].copy())


class InputsCache:
    """RunInputs per (run, input size), for callers that export one run many times."""

    def __init__(self, verify_images: int = 2000):
        self.verify_images, self._items = verify_images, {}

    def get(self, run_dir: Path, size: int | None) -> RunInputs:
        key = (str(Path(run_dir).resolve()), size)
        if key not in self._items:
            self._items[key] = RunInputs.load(run_dir, size, self.verify_images)
        return self._items[key]


def check_calibration(calibration: int | None) -> None:
    """None means the target's own count; anything else must be a count of images (0 is not "the default")."""
    if calibration is not None and (
        isinstance(calibration, bool) or not isinstance(calibration, int) or calibration < 1
    ):
        raise EdgevitError(
            f"calibration must be a whole number of training images >= 1 (got {calibration!r}); "
            "leave it out for the target's own count",
            "calibration",
        )


def resolve_target(
    target: str | Target, precision: str | None, scheme: str | None, dynamic_batch: bool | None
) -> tuple[Target, str, str]:
    """(target with the overrides applied, precision, the artifact folder's name)."""
    tgt = target if isinstance(target, Target) else load_target(target)
    precision = precision or tgt.precision
    if precision not in tgt.precisions:
        raise EdgevitError(f"target {tgt.name} offers precisions {', '.join(tgt.precisions)} (asked for {precision})")
    folder = precision
    if scheme and scheme != tgt.quantization.scheme:
        if precision != "int8":
            raise EdgevitError(f"scheme applies to int8 only (asked for {precision})", "scheme")
        folder = f"{precision}-{scheme}"
    updates: dict[str, Any] = {}
    if scheme:
        updates["quantization"] = tgt.quantization.model_copy(update={"scheme": scheme})
    if dynamic_batch is not None:
        updates["dynamic_batch"] = dynamic_batch
    return (tgt.model_copy(update=updates) if updates else tgt), precision, folder


def export_run(
    run_dir: str | Path,
    target: str | Target,
    precision: str | None = None,
    *,
    calibration: int | None = None,
    ledger: bool = True,
    scheme: str | None = None,
    dynamic_batch: bool | None = None,
    verify_images: int = 2000,
    inputs: RunInputs | InputsCache | None = None,
) -> ExportResult:
    """Export `run_dir`'s student for `target` (name, alias, path or Target) and verify it.

    `calibration` is the number of training images for INT8 (default: the target's); `scheme`
    (static|dynamic|weight-only) overrides the target's INT8 scheme -- a non-default scheme goes to
    `<precision>-<scheme>/` so both can sit side by side. Verification uses the whole validation
    split up to `verify_images`. Pass `inputs` (RunInputs or an InputsCache) to reuse the loaded
    student and images across exports. Writes `runs/<run>/exports/<target>/<folder>/` and a ledger row.
    """
    run_dir = Path(run_dir)
    check_calibration(calibration)
    tgt, precision, folder = resolve_target(target, precision, scheme, dynamic_batch)
    if isinstance(inputs, InputsCache):
        inputs = inputs.get(run_dir, tgt.input_size)
    elif inputs is None or (tgt.input_size and tgt.input_size != inputs.size):
        inputs = RunInputs.load(run_dir, tgt.input_size, verify_images)
    try:
        result = _export(inputs, tgt, precision, folder, calibration)
    except BaseException as exc:
        if ledger and isinstance(exc, (EdgevitError, KeyboardInterrupt)):
            _record_failure(run_dir, tgt, precision, exc)
        raise
    if ledger:
        _record(run_dir, tgt, precision, result)
    return result


def _export(inputs: RunInputs, tgt: Target, precision: str, folder: str, calibration: int | None) -> ExportResult:
    inp = ExportInputs.of(inputs, tgt, precision, folder, calibration)
    return write_export(
        inp,
        lambda out: timed_export(tgt.format, inp.model, inp.sample, tgt, precision, inp.calibration, out, inp.meta),
        ledger=False,
    )


@dataclass
class ExportInputs:
    """What one exporter or quantizer needs: a run's inputs for one target, precision and folder."""

    run_dir: Path
    target: Target
    precision: str
    subdir: str  # the artifact's folder name under exports/<target>/
    model: torch.nn.Module
    meta: dict[str, Any]
    sample: torch.Tensor
    val_x: np.ndarray
    val_y: np.ndarray
    calibration: np.ndarray | None
    reference: np.ndarray  # PyTorch FP32 logits on val_x

    @classmethod
    def of(cls, inputs: RunInputs, tgt: Target, precision: str, folder: str, calibration: int | None) -> "ExportInputs":
        calib = None
        if precision == "int8" and tgt.quantization.scheme == "static":
            calib = inputs.calibration(calibration or tgt.quantization.calibration_samples)
        return cls(
            inputs.run_dir,
            tgt,
            precision,
            folder,
            inputs.model,
            inputs.meta,
            inputs.sample(tgt.batch),
            inputs.val_x,
            inputs.val_y,
            calib,
            inputs.reference,
        )

    @property
    def torch_top1(self) -> float:
        return round(float((self.reference.argmax(1) == self.val_y).mean() * 100), 2)


def prepare_export(
    run_dir: str | Path,
    target: str | Target,
    precision: str | None = None,
    calibration: int | None = None,
    scheme: str | None = None,
    dynamic_batch: bool | None = None,
    verify_images: int = 2000,
) -> ExportInputs:
    """Load a run's student, validation images (and PyTorch's logits on them) and calibration images."""
    check_calibration(calibration)
    tgt, precision, folder = resolve_target(target, precision, scheme, dynamic_batch)
    return ExportInputs.of(RunInputs.load(run_dir, tgt.input_size, verify_images), tgt, precision, folder, calibration)


def write_export(
    inp: ExportInputs,
    build: Callable[[Path], tuple[Artifact, float]],
    *,
    ledger: bool = True,
    max_drop: float | None = None,
    method: str | None = None,
) -> ExportResult:
    """Build into a temp folder, complete the manifest, verify, rename into place; record in the ledger.

    `max_drop` (top-1 points) replaces verify's INT8 rule (a tuned artifact is held to the drop it was
    tuned for), and an artifact that misses it is kept as `<folder>-missed`; `method` (ptq|tune|qat)
    goes into the ledger row.
    """
    run_dir, tgt, meta, calib = inp.run_dir, inp.target, inp.meta, inp.calibration
    final = run_dir / EXPORTS_DIR / tgt.name / inp.subdir
    staged = final.with_name(f".{final.name}-staged")
    try:
        with atomic_dir(staged) as tmp:
            artifact, seconds = build(tmp)
            artifact.manifest = {  # the exporter's own fields win (e.g. a full-integer model's int8 input)
                "target": tgt.name,
                "device_name": tgt.device_name,
                "model_name": meta["model_name"],
                "layout": "NCHW",
                "input_dtype": "float32",
                "img_size": int(inp.sample.shape[-1]),
                "mean": list(meta["mean"]),
                "std": list(meta["std"]),
                "crop_pct": meta.get("crop_pct"),
                "class_names": list(meta["class_names"]),
                "num_classes": len(meta["class_names"]),
                "source_checkpoint": {"file": str(run_dir / STUDENT_FILE), "sha256": meta["sha256"]},
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "export_seconds": round(seconds, 3),
                "calibration_images": None if calib is None else len(calib),
                **artifact.manifest,
            }
            check = verify(artifact, inp.val_x, inp.val_y, inp.reference, max_drop=max_drop)
            artifact.manifest["verification"] = check.to_dict()
            artifact.write_manifest()
    except BaseException as exc:
        if ledger and isinstance(exc, (EdgevitError, KeyboardInterrupt)):
            _record_failure(run_dir, tgt, inp.precision, exc)
        raise
    # kept, under a name that says so; judged by the measured drop (a Jetson INT8's ONNX ran here, its engine cannot)
    missed = max_drop is not None and check.within_drop is False
    artifact.directory = final.with_name(final.name + "-missed") if missed else final
    replace_dir(staged, artifact.directory)
    result = ExportResult(artifact, check, seconds)
    if ledger:
        _record(run_dir, tgt, inp.precision, result, method)
    return result


def _record(run_dir: Path, tgt: Target, precision: str, result: ExportResult, method: str | None = None) -> None:
    from edgevit.runs import Ledger

    int8, check = precision == "int8", result.verification
    quant = result.artifact.manifest.get("quantization") or {}
    Ledger(run_dir.parent).record_export(
        run_dir.name,
        target=tgt.name,
        format=tgt.format,
        precision=precision,
        scheme=tgt.quantization.scheme if int8 else None,
        method=(method or quant.get("method", "ptq")) if int8 else None,
        path=result.artifact.directory,
        size_bytes=result.artifact.size_bytes(),
        seconds=round(result.seconds, 3),
        verified=check.verified,
        agreement=check.agreement,
        max_abs_diff=check.max_abs_diff,
        top1=check.top1,
        note=check.note,
        extra={"folder": result.artifact.directory.name, "float_layers": quant.get("float_layers")},
    )


def _record_failure(run_dir: Path, tgt: Target, precision: str, exc: BaseException) -> None:
    """A failed export leaves no artifact but a row that says why (best effort: the error is what matters)."""
    from edgevit.runs import Ledger, failure_reason

    try:
        Ledger(run_dir.parent).record_export(
            run_dir.name,
            target=tgt.name,
            format=tgt.format,
            precision=precision,
            scheme=tgt.quantization.scheme if precision == "int8" else None,
            verified=False,
            note=f"failed: {failure_reason(exc)}",
            extra={"status": "failed"},
        )
    except Exception:  # noqa: BLE001
        pass
