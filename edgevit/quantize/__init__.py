"""`quantize(run, target, method, max_drop)`: INT8 that keeps its accuracy, per target.

Methods:
- `ptq`: the target's one-shot post-training quantization (what `edgevit export --precision int8`
  writes; LiteRT as full integer), checked against `max_drop`.
- `tune`: accuracy-aware PTQ, layers kept in float until top-1 on the validation split is within
  `max_drop` points of FP32. OpenVINO and ONNX Runtime: NNCF `quantize_with_accuracy_control`;
  LiteRT full integer: ai-edge-quantizer recipes with per-layer float fallback; Jetson: ModelOpt
  Q/DQ with `nodes_to_exclude` (both searched by `edgevit.quantize.search`).
- `qat`: quantization-aware distillation from the FP32 student (torchao PT2E), exported in the
  target's own INT8 format (see `edgevit.quantize.qat`).

Artifacts go to `runs/<run>/exports/<target>/int8[-static|-tune|-qat]/`; the manifest's `quantization`
records the method, `max_drop`, the layers left in float and the drop measured, and verification
holds the artifact to `max_drop`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from edgevit import formats
from edgevit.errors import EdgevitError
from edgevit.vocab import QUANT_METHODS

logger = logging.getLogger("edgevit.quantize")

METHODS = QUANT_METHODS
MAX_DROP_RANGE = (0.0, 100.0)


def check_request(fmt: str, target_name: str, method: str, max_drop: float, tool: str | None = None) -> None:
    """Bad input -> one line naming the problem (by parameter name) and the fix."""
    if method not in METHODS:
        raise EdgevitError(f"unknown quantization method '{method}' (choose {', '.join(METHODS)})", "method")
    lo, hi = MAX_DROP_RANGE
    if not (lo <= max_drop < hi) or max_drop != max_drop:
        raise EdgevitError(
            f"max_drop {max_drop} is out of range: give top-1 points in [{lo:g}, {hi:g}), e.g. 0.5", "max_drop"
        )
    spec = formats.get(fmt)
    if method not in spec.quant_methods:
        able = ", ".join(sorted(f.name for f in formats.FORMATS.values() if method in f.quant_methods))
        if spec.no_quantization:
            raise EdgevitError(
                f"target {target_name} ({fmt}) {spec.no_quantization}: method {method} works for {able} targets",
                "method",
            )
        raise EdgevitError(
            f"target {target_name} ({fmt}) cannot do method {method} (formats that can: {able})", "method"
        )
    if tool is not None:
        if method != "tune":
            raise EdgevitError(
                f"method {method} takes no tool (tool chooses the tuner of method tune)", ("method", "tool")
            )
        if tool not in spec.tuners:
            raise EdgevitError(
                f"tool {tool} cannot tune target {target_name} ({fmt}); its tuners: {', '.join(spec.tuners)}", "tool"
            )


def quantize(
    run: str | Path,
    target: str | Any,
    method: str = "tune",
    max_drop: float = 0.5,
    *,
    calibration: int | None = None,
    epochs: int = 3,
    steps: int | None = None,
    lr: float = 1e-4,
    teacher: str = "student",
    tool: str | None = None,
    verify_images: int = 2000,
    ledger: bool = True,
    log: Callable[[str], None] | None = None,
) -> Any:
    """INT8 for one target with `method` (ptq|tune|qat), held to `max_drop` top-1 points below FP32.

    Returns the ExportResult (artifact + verification in the target's runtime). `calibration`: training
    images for calibration (default the target's); `epochs`/`steps`/`lr`: QAT length and step size;
    `teacher`: QAT teacher, `student` (the FP32 student) or `run` (the run's own distillation teacher);
    `tool`: the tuner for `tune` where a target has two (onnx: nncf, the default, or inc).
    """
    from edgevit.config import Target, load_target
    from edgevit.export.pipeline import prepare_export, run_converter, write_export

    log = log or logger.info
    tgt = target if isinstance(target, Target) else load_target(target)
    check_request(tgt.format, tgt.name, method, float(max_drop), tool)
    if "int8" not in tgt.precisions:
        raise EdgevitError(f"target {tgt.name} offers no int8 (precisions: {', '.join(tgt.precisions)})")
    if teacher not in ("student", "run"):
        raise EdgevitError(f"teacher must be 'student' or 'run' (got {teacher!r})", "teacher")
    if method == "qat" and (epochs < 1 or (steps is not None and steps < 1)):
        raise EdgevitError(f"epochs and steps must be >= 1 (got {epochs}, {steps})", ("epochs", "steps"))
    scheme = "static" if tgt.quantization.scheme != "static" else None  # INT8 here means calibrated activations
    inp = prepare_export(run, tgt, "int8", calibration, scheme=scheme, verify_images=verify_images)
    if method != "ptq":
        inp.subdir = f"int8-{method}"

    def build(out: Path):
        if method == "ptq":
            from edgevit.export.pipeline import timed_export

            art, seconds = timed_export(
                inp.target.format, inp.model, inp.sample, inp.target, "int8", inp.calibration, out, inp.meta
            )
            record: dict[str, Any] = {"float_layers": ptq_float_layers(art)}
        else:

            def convert():
                nonlocal record
                try:
                    art, record = _tuned(method, inp, out, float(max_drop), epochs, steps, lr, teacher, tool, log)
                except ModuleNotFoundError as exc:
                    raise EdgevitError(
                        f"method {method} for {inp.target.name} needs the package '{exc.name}': "
                        "pip install -e '.[quantize]'",
                        "method",
                    ) from None
                return art

            record = {}
            art, seconds = run_converter(
                inp.target.format, f"int8 {method}", convert, formats.get(inp.target.format).quant_tools, out
            )
        art.manifest["quantization"] = {
            **(art.manifest.get("quantization") or {}),
            **record,
            "method": method,
            "max_drop": float(max_drop),
        }
        return art, seconds

    start = time.perf_counter()
    result = write_export(inp, build, ledger=ledger, max_drop=float(max_drop), method=method)
    v = result.verification
    drop = round(v.torch_top1 - v.top1, 2) if v.top1 is not None else None
    log(
        f"{tgt.name} int8 {method}: top-1 {v.top1}% vs FP32 {v.torch_top1}% (drop {drop} pt, allowed {max_drop:g}) "
        f"in {time.perf_counter() - start:.0f} s -> {result.artifact.directory}"
    )
    return result


def _tuned(
    method: str,
    inp: Any,
    out: Path,
    max_drop: float,
    epochs: int,
    steps: int | None,
    lr: float,
    teacher: str,
    tool: str | None,
    log: Callable[[str], None],
) -> tuple[Any, dict[str, Any]]:
    fmt, args = (
        inp.target.format,
        (inp.model, inp.sample, inp.target, inp.calibration, inp.val_x, inp.val_y, inp.reference, max_drop, out),
    )
    spec = formats.get(fmt)
    if method == "tune":
        return spec.tuners[tool or spec.default_tuner](*args, log=log)
    from edgevit.quantize.qat import run as qat_run

    train_set = _train_split(inp)
    return qat_run(
        inp.model,
        _teacher(inp, teacher, log),
        inp.sample,
        inp.target,
        train_set,
        inp.calibration,
        inp.val_x,
        inp.val_y,
        inp.reference,
        max_drop,
        out,
        epochs=epochs,
        steps=steps,
        lr=lr,
        log=log,
    )


def _train_split(inp: Any) -> Any:
    """The run's training split with the eval transform (QAT here is short: distillation, no augmentation)."""
    from edgevit.data import build_datasets

    meta = inp.meta
    data = {**dict(meta["data"]), "img_size": int(inp.sample.shape[-1])}
    return build_datasets(
        data, None, mean=tuple(meta["mean"]), std=tuple(meta["std"]), crop_pct=meta.get("crop_pct")
    ).train


def _teacher(inp: Any, teacher: str, log: Callable[[str], None]) -> Any:
    """None: the FP32 student teaches. `run`: the fine-tuned teacher the run distilled from (teachers/*.pt),
    rebuilt from the run's recipe as the frozen `Teacher` that re-normalises the student's input."""
    if teacher == "student":
        return None
    import timm
    import torch
    import yaml

    from edgevit.models.teachers import Teacher

    found = sorted((inp.run_dir / "teachers").glob("*.pt"))
    recipe_file = inp.run_dir / "recipe.yaml"
    names = (
        (yaml.safe_load(recipe_file.read_text()) or {}).get("teacher", {}).get("names", [])
        if recipe_file.exists()
        else []
    )
    if len(found) != 1 or len(names) != 1 or names[0] == "self":
        raise EdgevitError(
            f"teacher 'run' needs a run with one saved timm teacher (teachers/*.pt and recipe.yaml); "
            f"{inp.run_dir.name} has {len(found)} file(s) for {names or 'no teacher'}: use teacher 'student'",
            "teacher",
        )
    model = timm.create_model(names[0], pretrained=False, num_classes=len(inp.meta["class_names"]))
    model.load_state_dict(torch.load(found[0], map_location="cpu", weights_only=True))
    log(f"QAT teacher: {names[0]} from {found[0]}")
    return Teacher([model], names, student_mean=list(inp.meta["mean"]), student_std=list(inp.meta["std"]))


def ptq_float_layers(art: Any) -> list[str]:
    """Compute layers a one-shot PTQ artifact leaves in float, in the format's own naming."""
    return formats.get(art.format).float_layers(art)
