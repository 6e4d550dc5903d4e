"""Jetson (TensorRT) Q/DQ INT8 that keeps its accuracy: ModelOpt's quantizer with `nodes_to_exclude`.

ModelOpt places Q/DQ pairs on the inputs of the ops TensorRT fuses (MatMul, the residual Adds,
LayerNorm inputs). Searching with one ModelOpt run per candidate would cost a calibration each, so
candidates are made from one fully quantized model by bypassing the Q/DQ pairs in front of the
nodes kept in float (what `nodes_to_exclude` does), run in onnxruntime. The chosen set then goes
back through ModelOpt as `nodes_to_exclude`, and that artifact is measured again (and more nodes
kept in float while it misses the drop), so what ships is exactly ModelOpt's output.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.export import tensorrt as trt_export
from edgevit.quantize.search import revert_until, run_candidate, top1
from edgevit.quantize.tflite import search_record

FINAL_ROUNDS = 4  # extra ModelOpt runs when the re-quantized model misses the drop the search met


def quantized_nodes(model: Any) -> list[str]:
    """Nodes with at least one input from a DequantizeLinear fed by a QuantizeLinear (an activation Q/DQ pair)."""
    made_by = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(_pair_source(made_by, i) is not None for i in n.input):
            out.append(n.name)
    return out


def _pair_source(made_by: dict[str, Any], tensor: str) -> str | None:
    dq = made_by.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = made_by.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def bypass(serialized: bytes, nodes: frozenset[str]) -> bytes:
    """The model with the Q/DQ pairs feeding `nodes` bypassed (their inputs read the float tensors)."""
    import onnx

    model = onnx.ModelProto.FromString(serialized)
    made_by = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.name in nodes:
            for k, tensor in enumerate(list(n.input)):
                src = _pair_source(made_by, tensor)
                if src is not None:
                    n.input[k] = src
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    while True:  # drop Q/DQ nodes nobody reads any more
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    return model.SerializeToString()


def run_onnx(serialized: bytes, x: np.ndarray, work: Path) -> np.ndarray:
    return run_candidate("tensorrt", trt_export.MODEL_FILE, serialized, x, work)


def tune(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    calibration: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    reference: np.ndarray,
    max_drop: float,
    out_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[Artifact, dict[str, Any]]:
    import onnx

    fp32 = out_dir / "fp32.onnx"
    onnx.save(trt_export.folded_onnx(model, sample, target, out_dir), str(fp32))
    path = out_dir / trt_export.MODEL_FILE
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=out_dir))
    try:
        quant = trt_export._quantize(fp32, path, target, calibration)
        full = path.read_bytes()
        units = quantized_nodes(onnx.ModelProto.FromString(full))
        log(f"ModelOpt Q/DQ: {len(units)} nodes read quantized inputs")
        result = revert_until(
            units,
            lambda keep: bypass(full, keep),
            lambda m, x: run_onnx(m, x, work),
            val_x,
            val_y,
            reference,
            max_drop,
            log=log,
        )
        kept, ranked = list(result.float_layers), [n for n, _ in result.ranking]
        fp32_top1, acc = top1(reference, val_y), result.top1
        for _ in range(FINAL_ROUNDS + 1 if kept else 0):  # ModelOpt itself, with those nodes excluded
            quant = trt_export._quantize(fp32, path, target, calibration, nodes_to_exclude=kept)
            acc = top1(run_onnx(path.read_bytes(), val_x, work), val_y)
            log(f"  ModelOpt with {len(kept)} node(s) excluded: top-1 {acc:.2f}% (drop {fp32_top1 - acc:+.2f} pt)")
            missing = [n for n in ranked if n not in kept]
            if round(fp32_top1 - acc, 2) <= max_drop or not missing:
                break
            kept.append(missing[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        fp32.unlink(missing_ok=True)
    record = search_record(result)
    record.update(
        float_layers=kept,
        tuned_top1=acc,
        tuned_drop=round(fp32_top1 - acc, 2),
        within_max_drop=round(fp32_top1 - acc, 2) <= max_drop,
        search_float_layers=result.float_layers,
    )
    quant = {**quant, **record}
    return trt_export.package(path, out_dir, sample, target, "int8", quant), quant
