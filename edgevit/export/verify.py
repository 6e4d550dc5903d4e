"""Check an artifact in its own runtime against PyTorch on validation images.

Recorded: top-1 agreement with PyTorch (%), max abs logit difference, the runtime's top-1
accuracy and PyTorch's. `verified` means it ran here and passed: >= 99% agreement for float
precisions, top-1 within 1 point of PyTorch's for INT8. An artifact whose runtime cannot run
here says so in `note` instead of pretending.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgevit import formats
from edgevit.artifact import Artifact
from edgevit.errors import EdgevitError
from edgevit.runtimes import open_predictor, runs_here

MIN_AGREEMENT = 99.0  # % of validation top-1 that a float export must share with PyTorch
MAX_INT8_DROP = 1.0  # top-1 points an INT8 export may lose against PyTorch


@dataclass
class Verification:
    verified: bool
    note: str
    runtime: str | None = None
    images: int = 0
    agreement: float | None = None
    max_abs_diff: float | None = None
    top1: float | None = None
    torch_top1: float | None = None
    # INT8: whether the measured top-1 met the allowed drop, even where `verified` cannot be true
    # (a Jetson engine is built on the device; its ONNX ran here). None: nothing measured.
    within_drop: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def verify(
    artifact: Artifact, images: np.ndarray, labels: np.ndarray, reference: np.ndarray, max_drop: float | None = None
) -> Verification:
    """Run `images` through the artifact and compare with PyTorch's `reference` logits.

    `max_drop`: the top-1 points an INT8 artifact may lose (default MAX_INT8_DROP); a tuned or
    quantization-aware artifact is held to the drop it was made for."""
    torch_top1 = round(float((reference.argmax(1) == labels).mean() * 100), 2)
    extra = f"; {artifact.manifest['note']}" if artifact.manifest.get("note") else ""  # the exporter's own note
    ok, why = runs_here(artifact)
    if not ok:
        return Verification(False, why + extra, torch_top1=torch_top1)
    predictor = open_predictor(artifact)
    try:
        out = predictor(images)
    except EdgevitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime rejecting the artifact is an export failure
        raise EdgevitError(
            f"{artifact.format} artifact does not run in {predictor.runtime}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    finally:
        predictor.close()
    if out.shape != reference.shape:
        raise EdgevitError(f"{predictor.runtime} returned shape {out.shape}, PyTorch {reference.shape}")
    agreement = round(float((out.argmax(1) == reference.argmax(1)).mean() * 100), 2)
    top1 = round(float((out.argmax(1) == labels).mean() * 100), 2)
    diff = float(np.abs(out - reference).max())
    within = None
    if artifact.precision == "int8":
        allowed = MAX_INT8_DROP if max_drop is None else max_drop
        passed = within = round(torch_top1 - top1, 2) <= allowed
        rule = f"INT8 top-1 {top1:.2f}% vs PyTorch {torch_top1:.2f}% (allowed drop {allowed:g} pt)"
    else:
        passed = agreement >= MIN_AGREEMENT
        rule = f"agreement {agreement:.2f}% (needs >= {MIN_AGREEMENT}%)"
    note = f"{predictor.runtime} on {len(images)} val images: {rule}" + ("" if passed else " FAILED")
    adjust = formats.get(artifact.format).adjust_verification
    if adjust is not None:  # the runtime here ran a stand-in (TensorRT's ONNX), not the artifact itself
        passed, note = adjust(artifact.precision, passed, note, predictor.runtime, rule)
    note += extra
    return Verification(passed, note, predictor.runtime, len(images), agreement, diff, top1, torch_top1, within)
