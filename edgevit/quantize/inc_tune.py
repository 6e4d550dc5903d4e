"""Intel Neural Compressor 3.x `autotune` for the ONNX Runtime target (`tool="inc"`).

What works with neural-compressor 3.10 here: its PT2E static path (`neural_compressor.torch.export.export`
-> X86InductorQuantizer: u8 asymmetric or symmetric activations, s8 per-channel weights) tuned by
`autotune(TuningConfig(config_set, tolerable_loss))`, which tries configurations in order and stops at
the first within `tolerable_loss` (relative: max_drop / FP32 top-1). Its result is a PyTorch FX graph
of quantize/dequantize ops: in eager it is slow, and its fast form is torch.compile/Inductor on x86,
which is not one of our targets. The dynamo ONNX exporter turns it into a Q/DQ ONNX that onnxruntime
runs, so the artifact is the `onnx` target's. INC 3.x has no layer-wise fallback of its own (2.x had);
the configurations after its own four (act_sym x minmax/kl) keep more and more Linear/Conv modules in
fp32 (`set_local`), in the order of a per-module sensitivity measured here (the module's weight and
input fake-quantized alone in the FP32 model, logit error on 64 validation images).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.quantize.search import logit_error, top1


def fake_quant(t: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Symmetric int8 round trip, per channel along `dim` (weights) or per tensor (dim None)."""
    amax = t.abs().amax(dim=[d for d in range(t.dim()) if d != dim], keepdim=True) if dim is not None else t.abs().max()
    scale = torch.clamp(amax, min=1e-12) / 127
    return torch.clamp(torch.round(t / scale), -127, 127) * scale


def sensitivity(model: torch.nn.Module, x: np.ndarray, reference: np.ndarray) -> list[tuple[str, float]]:
    """Linear/Conv modules by the logit error when only that module's weight and input are int8, worst first."""
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    xs = torch.from_numpy(x)
    out = []
    for name in names:
        module = copy.deepcopy(model).eval()
        layer = module.get_submodule(name)
        with torch.no_grad():
            layer.weight.copy_(fake_quant(layer.weight, 0))
        handle = layer.register_forward_pre_hook(lambda _m, args: (fake_quant(args[0], None),))
        with torch.no_grad():
            logits = module(xs).numpy()
        handle.remove()
        out.append((name, round(logit_error(logits, reference), 6)))
    return sorted(out, key=lambda t: -t[1])


def configs(ranking: list[str]) -> list[Any]:
    """INC's own static set, then the best-guess config with 1, 2, 4, ... of the worst modules in fp32."""
    from neural_compressor.torch.quantization import StaticQuantConfig

    out: list[Any] = [
        StaticQuantConfig(act_sym=sym, act_algo=algo) for sym in (True, False) for algo in ("minmax", "kl")
    ]
    k = 1
    while k <= len(ranking):
        cfg = StaticQuantConfig(act_sym=True, act_algo="minmax")
        for name in ranking[:k]:
            cfg.set_local(name, StaticQuantConfig(w_dtype="fp32", act_dtype="fp32"))
        out.append(cfg)
        k = k * 2 if k * 2 <= len(ranking) or k == len(ranking) else len(ranking)
    return out


def tune_onnx(
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
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import TuningConfig, autotune

    from edgevit.export.onnx import INPUT, MODEL_FILE, OUTPUT
    from edgevit.quantize.qat import to_onnx_qdq
    from edgevit.runtimes import open_predictor

    fp32 = top1(reference, val_y)
    ranked = sensitivity(model, val_x[:64], reference[:64])
    trials = configs([n for n, _ in ranked])
    xs, vx = torch.from_numpy(calibration), torch.from_numpy(val_x)
    results: list[float] = []

    def run_fn(m: Any) -> None:
        with torch.no_grad():
            for i in range(0, len(xs), 32):
                m(xs[i : i + 32])

    def eval_fn(m: Any) -> float:
        with torch.no_grad():
            acc = top1(torch.cat([m(vx[i : i + 64]) for i in range(0, len(vx), 64)]).numpy(), val_y)
        results.append(acc)
        log(
            f"  INC trial {len(results) - 1}: top-1 {acc:.2f}% (FP32 {fp32:.2f}%)"
            if len(results) > 1
            else f"  INC baseline: top-1 {acc:.2f}%"
        )
        return acc

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = export(copy.deepcopy(model).eval(), (sample.repeat(2, 1, 1, 1),), dynamic_shapes=({0: batch},))
        tuned = autotune(
            graph,
            TuningConfig(config_set=trials, tolerable_loss=max_drop / max(fp32, 1e-9), max_trials=len(trials)),
            eval_fn=eval_fn,
            run_fn=run_fn,
            example_inputs=(sample,),
        )
    proto = to_onnx_qdq(tuned, sample, out_dir / MODEL_FILE, max(target.opset, 18))
    art = Artifact(
        "onnx",
        "int8",
        out_dir,
        [MODEL_FILE],
        list(sample.shape),
        {
            "opset": int(proto.opset_import[0].version),
            "dynamic_batch": False,
            "input_name": INPUT,
            "output_name": OUTPUT,
            "runtime": {
                k: v for k, v in target.runtime.items() if k in ("graph_optimization_level", "execution_provider")
            },
        },
    )
    predictor = open_predictor(art)
    try:
        acc = top1(predictor(val_x), val_y)
    finally:
        predictor.close()
    best = _best_trial(results[1:], fp32, max_drop)
    floats = [n for n, _ in ranked][: _fallback_count(best, len(ranked))]
    quant = {
        "scheme": "static",
        "format": "QDQ",
        "tool": "neural-compressor autotune (PT2E X86InductorQuantizer) + torch.onnx",
        "trials": results[1:],
        "chosen_trial": best,
        "float_layers": floats,
        "sensitivity": [{"layer": n, "error_alone": e} for n, e in ranked[:20]],
        "tuned_top1": acc,
        "tuned_drop": round(fp32 - acc, 2),
    }
    art.manifest["quantization"] = quant
    return art, quant


def _best_trial(results: list[float], fp32: float, max_drop: float) -> int:
    """The trial INC kept: the first within the loss, else the best."""
    for i, acc in enumerate(results):
        if fp32 - acc <= max_drop + 1e-9:
            return i
    return int(np.argmax(results)) if results else 0


def _fallback_count(trial: int, n: int) -> int:
    """How many modules trial `trial` of `configs` keeps in fp32 (0 for INC's own four)."""
    if trial < 4:
        return 0
    k, i = 1, 4
    while i < trial:
        k = k * 2 if k * 2 <= n or k == n else n
        i += 1
    return min(k, n)
