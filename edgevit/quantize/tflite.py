"""LiteRT full-integer INT8 that keeps its accuracy: ai-edge-quantizer recipes with per-layer float fallback.

The float model is calibrated once (static_wi8_ai8: int8 weights and activations); each candidate is
the same recipe plus `no_quantize` entries for the ops of the layers kept in float, quantized from
that one calibration. A layer is a module of the PyTorch model, read back from the scope names
litert-torch writes into the flatbuffer (e.g. `blocks.3.attn.qkv`, `blocks.3.norm1`), so the
manifest names float layers the way the model's code does. Layers kept in float run on the CPU in
float: a model with any is no longer full-integer (what an Edge TPU or an int8-only NPU needs),
and the manifest says so.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.export.tflite import MODEL_FILE, _io_quantization, _signature, convert
from edgevit.quantize.search import SearchResult, revert_until, run_candidate

MODEL_UNIT = "(model)"
MAX_UNITS = 40  # past this many layers the fallback search ranks kinds of layer, not layers


def layer_of(scope: str) -> str:
    """A LiteRT tensor name as a PyTorch module path:
    `.../VisionTransformerDistilled/...Sequential_blocks/...Block_3/...Attention_attn/...Linear_qkv;1;`
    -> blocks.3.attn.qkv.
    """
    paths = [seg for seg in scope.split(";") if "/" in seg]
    if not paths:
        return MODEL_UNIT
    parts = max(paths, key=lambda s: s.count("/")).split("/")[1:]  # drop the model class itself
    names = [p.rsplit(".", 1)[-1].split("_", 1)[1] for p in parts if "_" in p.rsplit(".", 1)[-1]]
    return ".".join(names) or MODEL_UNIT


def kind_of(layer: str) -> str:
    """`blocks.3.attn.qkv` -> `blocks.*.attn.qkv`: the same module in every repeated block."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", layer)


def layer_ops(flat: bytes, with_ops: bool = False) -> dict[str, list[tuple]]:
    """Layer name -> its ops as (TFLite op name, scope[, op]), in graph order."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    model = tfu.read_model(flat)
    graph = model.subgraphs[0]
    layers: dict[str, list[tuple[str, str]]] = {}
    runs, previous = 0, None  # the model's own ops (tokens + position, heads averaged): one unit per contiguous run
    for op in graph.operators:
        name = tfu.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        if name is None:
            continue
        scope = tfu.get_op_scope(op, graph.tensors)
        layer = layer_of(scope)
        if layer == MODEL_UNIT:
            runs += previous != MODEL_UNIT
            previous, layer = MODEL_UNIT, f"{MODEL_UNIT} {runs}"
        else:
            previous = layer
        entry = (
            (str(getattr(name, "value", name)), scope, op) if with_ops else (str(getattr(name, "value", name)), scope)
        )
        layers.setdefault(layer, []).append(entry)
    return layers


def float_layers(flat: bytes) -> list[str]:
    """Layers with an op that outputs float32 in this flatbuffer (QUANTIZE/DEQUANTIZE are not layers' ops)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    model = tfu.read_model(flat)
    graph = model.subgraphs[0]
    out: list[str] = []
    for layer, ops in layer_ops(flat, with_ops=True).items():
        if any(any(graph.tensors[t].type == 0 for t in op.outputs) for _, _, op in ops):  # 0: FLOAT32
            out.append(layer)
    return out


def recipe_with_float(base: list[dict], ops: list[tuple[str, str]]) -> list[dict]:
    """`base` plus a no_quantize entry per op (later entries win in ai-edge-quantizer)."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(base)
    for op_name, scope in ops:
        rm.add_quantization_config(
            regex=f"^{re.escape(scope)}$",
            operation_name=qtyping.TFLOperationName(op_name),
            algorithm_key=AlgorithmName.NO_QUANTIZE,
        )
    return rm.get_quantization_recipe()


class Candidates:
    """Quantized variants of one float flatbuffer from one calibration, and a runner for them."""

    def __init__(self, flat: bytes, calibration: np.ndarray, work: Path, activation_bits: int = 8):
        from ai_edge_quantizer import quantizer, recipe

        self.flat = flat
        self.base = recipe.static_wi8_ai8() if activation_bits == 8 else recipe.static_wi8_ai16()
        self.recipe_name = "static_wi8_ai8" if activation_bits == 8 else "static_wi8_ai16"
        self.layers = layer_ops(flat)
        self.work = work
        q = quantizer.Quantizer(bytearray(flat), self.base)
        key, name = _signature(flat)
        with _quiet_tqdm():
            self.calibration = q.calibrate(
                {key: [{name: calibration[i : i + 1]} for i in range(len(calibration))]}, num_threads=1
            )

    def tunable(self, max_units: int = MAX_UNITS) -> list[str]:
        """Every layer, data movement included (an int8 reshape or slice forces int8 on its neighbours
        too); past `max_units` layers, one unit per kind of layer (`blocks.*.attn`: that module in every
        block), since ranking costs one quantize-and-run per unit (DeiT-Ti/224 has over a hundred layers)."""
        if len(self.layers) <= max_units:
            return list(self.layers)
        return list(dict.fromkeys(kind_of(layer) for layer in self.layers))

    def ops_of(self, units: frozenset[str]) -> list[tuple[str, str]]:
        return [
            op
            for layer in sorted(self.layers)
            if layer in units or kind_of(layer) in units
            for op in self.layers[layer]
        ]

    @functools.lru_cache(maxsize=4)
    def build(self, float_layers: frozenset[str]) -> bytes:
        from ai_edge_quantizer import quantizer

        ops = self.ops_of(float_layers)
        q = quantizer.Quantizer(bytearray(self.flat), recipe_with_float(self.base, ops))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(
                q.quantize(self.calibration, enable_progress_report=False, enable_progress_bar=False).quantized_model
            )

    def predict(self, flat: bytes, x: np.ndarray) -> np.ndarray:
        """Run a candidate in LiteRT exactly as verification will (the same opener)."""
        return run_candidate("tflite", MODEL_FILE, flat, x, self.work)


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
) -> tuple[Artifact, SearchResult]:
    """Full-integer INT8 for `target`, with the fewest float layers that keep top-1 within `max_drop`."""
    flat = convert(model.eval(), sample)
    bits = int(target.quantization.options.get("activation_bits", 8))
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=out_dir))
    try:
        cands = Candidates(flat, calibration, work, bits)
        units = cands.tunable()
        what = "layers" if len(units) == len(cands.layers) else f"kinds of layer (of {len(cands.layers)} layers)"
        log(f"LiteRT full-integer ({cands.recipe_name}): {len(units)} {what} can fall back to float")
        result = revert_until(units, cands.build, cands.predict, val_x, val_y, reference, max_drop, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out_dir / MODEL_FILE).write_bytes(result.candidate)
    quant: dict[str, Any] = {
        "scheme": "static",
        "tool": "ai-edge-quantizer",
        "recipe": cands.recipe_name,
        "full_integer": not result.float_layers,
        **search_record(result),
    }
    manifest: dict[str, Any] = {"quantization": quant, "runtime": {}, **_io_quantization(out_dir / MODEL_FILE)}
    return Artifact("tflite", "int8", out_dir, [MODEL_FILE], list(sample.shape), manifest), result


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """ai-edge-quantizer's calibration bar (tens of thousands of steps) would flood the log: switch it off."""
    from ai_edge_quantizer.utils import progress_utils

    original = progress_utils.tqdm  # the tqdm module as that one module sees it; tqdm itself is untouched
    progress_utils.tqdm = types.SimpleNamespace(tqdm=lambda *a, **k: original.tqdm(*a, **{**k, "disable": True}))
    try:
        yield
    finally:
        progress_utils.tqdm = original


def search_record(result: SearchResult) -> dict[str, Any]:
    """What the manifest keeps of a fallback search."""
    return {
        "float_layers": result.float_layers,
        "tuned_top1": result.top1,
        "tuned_drop": result.drop,
        "within_max_drop": result.met,
        "search_seconds": round(result.seconds, 1),
        "ranking": [{"layer": n, "error_alone": g} for n, g in result.ranking[:20]],
        "history": result.history,
    }
