"""Export a run's student for one target, verify it in the target's runtime, record it.

The artifact is written into a temporary folder next to its final place and renamed only once
export and verification are done, so a failure never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgevit.config import Target, load_target
from edgevit.errors import EdgevitError
from edgevit.artifact import Artifact
from edgevit.export.registry import format_module
from edgevit.export.verify import Verification, verify
from edgevit.models.students import STUDENT_FILE, load_student

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


def timed_export(fmt: str, model: torch.nn.Module, sample: torch.Tensor, target: Target, precision: str,
                 calibration: np.ndarray | None, out_dir: Path, meta: dict[str, Any]) -> tuple[Artifact, float]:
    """Run one format's exporter; a converter failure becomes one line naming the format and op."""
    module = format_module(fmt)
    if precision not in module.PRECISIONS:
        raise EdgevitError(f"{fmt} export supports {', '.join(module.PRECISIONS)} (asked for {precision})")
    return run_converter(fmt, precision, lambda: module.export(model, sample, target, precision, calibration, out_dir, meta),
                         module.TOOLS)


def run_converter(fmt: str, precision: str, convert: Callable[[], Artifact], tools: tuple[str, ...]) -> tuple[Artifact, float]:
    """Time `convert()`; a converter failure becomes one line naming the format and op."""
    start = time.perf_counter()
    try:  # converters print progress on stdout; keep stdout for the command's own table
        with contextlib.redirect_stdout(sys.stderr):
            artifact = convert()
    except EdgevitError:
        raise
    except Exception as exc:  # noqa: BLE001 - any converter failure becomes one readable line
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
class ExportInputs:
    """Everything an exporter or a quantizer needs from a run: the model and the images it is checked on."""

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

    @property
    def torch_top1(self) -> float:
        return round(float((self.reference.argmax(1) == self.val_y).mean() * 100), 2)


def export_run(run_dir: str | Path, target: str | Target, precision: str | None = None,
               calibration: int | None = None, ledger: bool = True, scheme: str | None = None,
               dynamic_batch: bool | None = None, verify_images: int = 2000) -> ExportResult:
    """Export `run_dir`'s student for `target` (name, alias, path or Target) and verify it.

    `calibration` is the number of training images for INT8 (default: the target's);
    `scheme` (static|dynamic|weight-only) overrides the target's INT8 scheme — a non-default
    scheme goes to `<precision>-<scheme>/` so both can sit side by side. Verification uses the
    whole validation split up to `verify_images` (a seeded sample beyond that, to bound time/memory).
    Writes `runs/<run>/exports/<target>/<precision>/` and a ledger row.
    """
    inp = prepare_export(run_dir, target, precision, calibration, scheme, dynamic_batch, verify_images)
    return write_export(inp, lambda out: timed_export(inp.target.format, inp.model, inp.sample, inp.target, inp.precision,
                                                      inp.calibration, out, inp.meta), ledger=ledger)


def prepare_export(run_dir: str | Path, target: str | Target, precision: str | None = None,
                   calibration: int | None = None, scheme: str | None = None, dynamic_batch: bool | None = None,
                   verify_images: int = 2000) -> ExportInputs:
    """Load the run's student, its validation images (and PyTorch's logits on them) and calibration images."""
    from edgevit.data import build_datasets

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EdgevitError(f"run folder {run_dir} does not exist")
    if not (run_dir / STUDENT_FILE).exists():
        raise EdgevitError(f"run {run_dir} has no student ({STUDENT_FILE}): run `edgevit distill` first")
    tgt = target if isinstance(target, Target) else load_target(target)
    precision = precision or tgt.precision
    if precision not in tgt.precisions:
        raise EdgevitError(f"target {tgt.name} offers precisions {', '.join(tgt.precisions)} (asked for {precision})")
    subdir = precision
    if scheme and scheme != tgt.quantization.scheme:
        if precision != "int8":
            raise EdgevitError(f"--scheme applies to int8 only (asked for {precision})")
        subdir = f"{precision}-{scheme}"
    updates: dict[str, Any] = {}
    if scheme:
        updates["quantization"] = tgt.quantization.model_copy(update={"scheme": scheme})
    if dynamic_batch is not None:
        updates["dynamic_batch"] = dynamic_batch
    tgt = tgt.model_copy(update=updates) if updates else tgt

    model, meta = load_student(run_dir)
    size = tgt.input_size or int(meta["img_size"])
    data = {**dict(meta["data"]), "img_size": size}
    ds = build_datasets(data, None, mean=tuple(meta["mean"]), std=tuple(meta["std"]), crop_pct=meta.get("crop_pct"))
    if verify_images < 1:
        raise EdgevitError(f"verify_images must be >= 1 (got {verify_images})")
    val_idx = np.arange(len(ds.val))
    if len(val_idx) > verify_images:
        val_idx = np.sort(np.random.default_rng(0).permutation(len(ds.val))[:verify_images])
    val_x, val_y = _images(ds.val, val_idx)
    sample = torch.from_numpy(val_x[: tgt.batch].copy())
    if len(sample) < tgt.batch:
        raise EdgevitError(f"target batch {tgt.batch} is larger than the validation split ({len(val_x)} images)")
    calib = None
    if precision == "int8" and tgt.quantization.scheme == "static":
        n = calibration or tgt.quantization.calibration_samples
        if n < 1:
            raise EdgevitError(f"--calibration must be >= 1 (got {n})")
        order = np.random.default_rng(0).permutation(len(ds.train))[: min(n, len(ds.train))]
        calib, _ = _images(ds.train, order)
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(val_x[i:i + 256])).numpy()
                                    for i in range(0, len(val_x), 256)])
    return ExportInputs(run_dir, tgt, precision, subdir, model, meta, sample, val_x, val_y, calib, reference)


def write_export(inp: ExportInputs, build: Callable[[Path], tuple[Artifact, float]], *, ledger: bool = True,
                 max_drop: float | None = None, method: str | None = None) -> ExportResult:
    """Build into a temp folder, complete the manifest, verify, rename into place, record in the ledger.

    `max_drop` (top-1 points) replaces the INT8 verification rule of `verify` (a tuned artifact is held
    to the drop it was tuned for); `method` (ptq|tune|qat) is recorded with the export.
    """
    run_dir, tgt, meta = inp.run_dir, inp.target, inp.meta
    out_root = run_dir / EXPORTS_DIR / tgt.name
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / inp.subdir
    tmp = Path(tempfile.mkdtemp(prefix=f".{inp.subdir}-", dir=out_root))
    try:
        artifact, seconds = build(tmp)
        calib = inp.calibration
        artifact.manifest = {  # the exporter's own fields win (e.g. a full-integer model's int8 input)
            "target": tgt.name, "device_name": tgt.device_name, "model_name": meta["model_name"],
            "layout": "NCHW", "input_dtype": "float32", "img_size": int(inp.sample.shape[-1]),
            "mean": list(meta["mean"]), "std": list(meta["std"]), "crop_pct": meta.get("crop_pct"),
            "class_names": list(meta["class_names"]), "num_classes": len(meta["class_names"]),
            "source_checkpoint": {"file": str(run_dir / STUDENT_FILE), "sha256": meta["sha256"]},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "export_seconds": round(seconds, 3), "calibration_images": None if calib is None else len(calib),
            **artifact.manifest}
        check = verify(artifact, inp.val_x, inp.val_y, inp.reference, max_drop=max_drop)
        artifact.manifest["verification"] = check.to_dict()
        artifact.write_manifest()
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    artifact.directory = final
    if ledger:
        from edgevit.runs import Ledger

        # TODO(ledger v2): precision="int8", scheme=..., method=method, extra=manifest["quantization"];
        # until exports.method exists the method rides in the folder name (int8-tune) and the manifest.
        Ledger(run_dir.parent).record_export(
            run_dir.name, target=tgt.name, format=tgt.format, precision=inp.subdir, path=final,
            size_bytes=artifact.size_bytes(), seconds=round(seconds, 3), verified=check.verified,
            agreement=check.agreement, max_abs_diff=check.max_abs_diff, top1=check.top1, note=check.note)
    return ExportResult(artifact, check, seconds)


def _replace(tmp: Path, final: Path) -> None:
    """Swap a finished artifact folder into place; an older export is removed only afterwards."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{time.time_ns()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
