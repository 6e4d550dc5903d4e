"""Accuracy-aware fallback: revert the most harmful quantized layers to float until the drop is met.

The same idea as NNCF's accuracy restorer, for quantizers that have none (ai-edge-quantizer for
LiteRT, ModelOpt's ONNX quantizer for TensorRT): quantize everything, rank each layer by the error
it causes when it is the only layer quantized (a smooth logit error against FP32 on a ranking
subset), then revert layers to float in that order, measuring top-1 on the validation split after
each, until the drop is within `max_drop` points.

Why "only this layer quantized" rather than NNCF's "only this layer reverted": quantization errors
interact. On a DeiT the logits suffer from the int8 output of the classifier heads *and* of the
op that averages them; reverting either alone changes nothing, so a revert-one ranking put them
last (21 of 22 layers reverted before the drop was met), while quantizing either alone shows its
whole error.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

Build = Callable[[frozenset[str]], Any]  # the layers to keep in float -> a runnable candidate
Predict = Callable[[Any, np.ndarray], np.ndarray]  # candidate, images -> logits


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent, rounded as verification records it."""
    return round(float((logits.argmax(1) == labels).mean() * 100), 2)


def logit_error(logits: np.ndarray, reference: np.ndarray) -> float:
    """Squared logit error relative to the reference logits' spread (0 = identical)."""
    spread = float(((reference - reference.mean(1, keepdims=True)) ** 2).sum()) or 1.0
    return float(((logits - reference) ** 2).sum()) / spread


@dataclass
class SearchResult:
    candidate: Any
    float_layers: list[str]
    top1: float
    drop: float  # FP32 top-1 minus this candidate's, points, on the validation split
    met: bool
    ranking: list[tuple[str, float]] = field(default_factory=list)  # layer, logit error when only it is quantized
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def revert_until(
    units: list[str],
    build: Build,
    predict: Predict,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
    *,
    rank_images: int = 128,
    max_float: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> SearchResult:
    """Greedy float fallback over `units` (names the builder understands); see the module docstring."""
    start = time.perf_counter()
    fp32 = top1(reference, val_y)
    history: list[dict] = []

    def measure(kept: list[str]) -> tuple[Any, float]:
        cand = build(frozenset(kept))
        acc = top1(predict(cand, val_x), val_y)
        history.append(
            {"float_layers": len(kept), "added": kept[-1] if kept else None, "top1": acc, "drop": round(fp32 - acc, 2)}
        )
        log(
            f"  {len(kept)} layer(s) in float{' (+' + kept[-1] + ')' if kept else ''}: top-1 {acc:.2f}% "
            f"(FP32 {fp32:.2f}%, drop {fp32 - acc:+.2f} pt)"
        )
        return cand, acc

    cand, acc = measure([])
    if round(fp32 - acc, 2) <= max_drop or not units:
        return SearchResult(
            cand,
            [],
            acc,
            round(fp32 - acc, 2),
            round(fp32 - acc, 2) <= max_drop,
            history=history,
            seconds=time.perf_counter() - start,
        )
    ranking = rank(units, build, predict, val_x[:rank_images], reference[:rank_images], log)
    ranking = [(n, e) for n, e in ranking if e > 0] + [(n, e) for n, e in ranking if e <= 0]
    kept: list[str] = []
    limit = len(units) if max_float is None else min(max_float, len(units))
    for name, _gain in ranking[:limit]:
        kept.append(name)
        cand, acc = measure(kept)
        if round(fp32 - acc, 2) <= max_drop:
            break
    drop = round(fp32 - acc, 2)
    return SearchResult(cand, list(kept), acc, drop, drop <= max_drop, ranking, history, time.perf_counter() - start)


def rank(
    units: list[str],
    build: Build,
    predict: Predict,
    x: np.ndarray,
    reference: np.ndarray,
    log: Callable[[str], None] = lambda _m: None,
) -> list[tuple[str, float]]:
    """Each unit's logit error when it is the only one quantized, largest first."""
    everything = frozenset(units)
    errors = []
    for i, unit in enumerate(units, 1):
        errors.append((unit, round(logit_error(predict(build(everything - {unit}), x), reference), 6)))
        if i % 10 == 0 or i == len(units):
            log(f"  ranked {i}/{len(units)} layers")
    return sorted(errors, key=lambda g: -g[1])


def run_candidate(fmt: str, model_file: str, data: bytes, x: np.ndarray, work: Path) -> np.ndarray:
    """Run a candidate model (serialized) on `x` through the same opener verification uses."""
    from edgevit.artifact import Artifact
    from edgevit.runtimes import open_predictor

    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        (folder / model_file).write_bytes(data)
        predictor = open_predictor(Artifact(fmt, "int8", folder, [model_file], [1, *x.shape[1:]], {}))
        try:
            return predictor(x)
        finally:
            predictor.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
