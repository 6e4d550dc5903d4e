"""ExecuTorch `.pte` for mobile CPUs: torch.export -> edge dialect -> delegate(s) -> to_executorch.

fp32 lowers to the XNNPACK delegate; int8 first quantizes with PT2E (`XNNPACKQuantizer`, symmetric,
per-channel weights; static activations calibrated on training images, or dynamic; linear and
conv layers by default, see `_quantize`) and then lowers the same way. Whatever the delegate
does not take runs in ExecuTorch's portable kernels:
the export still succeeds, and the manifest's `delegation` says what fraction of the graph the
delegate took and which ops fell back (on XNNPACK 1.5.1 e.g. LayerNorm, which it has no node for).

Attention: before lowering (after quantization), `scaled_dot_product_attention` without a mask
is rewritten as bmm -> softmax -> bmm and `unbind` (timm's q, k, v split) as slice + reshape,
which XNNPACK takes whole. The default decompositions (a "safe" softmax with any/where/
logical_not for fully masked rows, which cannot occur without a mask; select + squeeze) fall back
to portable kernels and split the graph into many small delegate calls, each a round trip;
with the rewrites XNNPACK takes DeiT-Ti/224 in a few large calls. What still falls back there is
LayerNorm (no XNNPACK node): rewriting it too (4-D mean/sub/rsqrt) let XNNPACK take nearly all of
it but measured no faster, so it stays in its portable kernel.

`runtime.delegates` in the target: [xnnpack] (default) or [coreml, xnnpack]. The Core ML delegate
lowers on Linux too (coremltools converts; fp32 only here), Core ML takes what it can and XNNPACK
the rest, but such a .pte runs only where ExecuTorch has the CoreMLBackend (Apple devices), so
verification here says it cannot run it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from edgevit.artifact import Artifact
from edgevit.config import Target
from edgevit.errors import EdgevitError

MODEL_FILE = "model.pte"
DELEGATES = ("xnnpack", "coreml")
_STRUCTURAL = {"getitem"}  # tuple access nodes: not ops that run anywhere
QUANT_OPS = {
    "linear": torch.ops.aten.linear.default,
    "conv": torch.ops.aten.conv2d.default,
    "add": torch.ops.aten.add.Tensor,
    "mul": torch.ops.aten.mul.Tensor,
    "cat": torch.ops.aten.cat.default,
    "adaptive_avg_pool2d": torch.ops.aten.adaptive_avg_pool2d.default,
}
DEFAULT_QUANT_OPS = ("linear", "conv")


def export(
    model: torch.nn.Module,
    sample: torch.Tensor,
    target: Target,
    precision: str,
    calibration: np.ndarray | None,
    out_dir: Path,
    meta: dict[str, Any],
) -> Artifact:
    from executorch.exir import to_edge_transform_and_lower

    if target.dynamic_batch:
        raise EdgevitError("executorch export has a static batch; set dynamic_batch: false in the target")
    delegates = _delegates(target, precision)
    quant = None
    with _quiet(), torch.no_grad():
        program = torch.export.export(model.eval(), (sample,))
        if precision == "int8":
            program, quant = _quantize(program, sample, target, calibration)
        if delegates[0] == "xnnpack":
            program = program.run_decompositions(
                {torch.ops.aten.scaled_dot_product_attention.default: _attention, torch.ops.aten.unbind.int: _unbind}
            )
        edge = to_edge_transform_and_lower(program, partitioner=[_partitioner(d, target, precision) for d in delegates])
        delegation = delegation_summary(edge.exported_program().graph_module)
        buffer = edge.to_executorch().buffer
    (out_dir / MODEL_FILE).write_bytes(buffer)
    return Artifact(
        "executorch",
        precision,
        out_dir,
        [MODEL_FILE],
        list(sample.shape),
        {
            "delegates": delegates,
            "backends": delegation["backends"],
            "delegation": delegation,
            "quantization": quant,
            "note": delegation["note"],
            "runtime": {},
        },
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ExecuTorch and torchao warn about experimental APIs on every call; the result is what counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _delegates(target: Target, precision: str) -> list[str]:
    names = [str(d).lower() for d in target.runtime.get("delegates", ["xnnpack"])]
    unknown = [d for d in names if d not in DELEGATES]
    if not names or unknown:
        raise EdgevitError(f"executorch runtime.delegates must list some of {', '.join(DELEGATES)} (got {names})")
    if "coreml" in names and precision != "fp32":
        raise EdgevitError(
            "the Core ML delegate is fp32-only here (int8 uses XNNPACK's quantizer): use delegates: [xnnpack] for int8"
        )
    return names


def _partitioner(name: str, target: Target, precision: str) -> Any:
    if name == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    deployment = str(target.runtime.get("minimum_deployment_target", "iOS16"))
    if not hasattr(ct.target, deployment):
        raise EdgevitError(
            f"unknown Core ML deployment target {deployment!r} (known: {', '.join(ct.target.__members__)})"
        )
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=getattr(ct.target, deployment), compute_precision=ct.precision.FLOAT32
    )
    return CoreMLPartitioner(compile_specs=specs)


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Unmasked attention as plain bmm/softmax/bmm (what XNNPACK takes); anything else as torch does it."""
    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    if attn_mask is not None or is_causal or enable_gqa or dropout_p:
        return sdpa.decompose(q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
    s = scale if scale is not None else q.shape[-1] ** -0.5
    lead, n, m = q.shape[:-2], q.shape[-2], k.shape[-2]
    q3, k3, v3 = (q * s).reshape(-1, n, q.shape[-1]), k.reshape(-1, m, k.shape[-1]), v.reshape(-1, m, v.shape[-1])
    return torch.bmm(torch.softmax(torch.bmm(q3, k3.transpose(1, 2)), dim=-1), v3).reshape(*lead, n, v.shape[-1])


def _unbind(x: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
    """unbind as slice + reshape (XNNPACK takes both) instead of select + squeeze (portable kernels)."""
    dim = dim % x.dim()
    shape = [s for i, s in enumerate(x.shape) if i != dim]
    return [x.narrow(dim, i, 1).reshape(shape) for i in range(x.shape[dim])]


def _quantize(
    program: Any, sample: torch.Tensor, target: Target, calibration: np.ndarray | None
) -> tuple[Any, dict[str, Any]]:
    """PT2E INT8 with XNNPACK's quantizer; returns the re-exported quantized program.

    Static INT8 quantizes the ops in `quantization.options.ops` (default linear and conv): the
    quantizer's global setting also quantizes residual adds, muls and cats: int8 on a ViT's residual
    stream costs it much more agreement with FP32 than int8 on its weight layers."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q = target.quantization
    if q.scheme not in ("static", "dynamic"):
        raise EdgevitError(f"executorch INT8 supports the quantization schemes static and dynamic (got {q.scheme})")
    options = dict(q.options)
    ops = [str(o) for o in options.pop("ops", DEFAULT_QUANT_OPS)]
    if options or not ops or set(ops) - set(QUANT_OPS):
        raise EdgevitError(
            f"executorch quantization.options takes only ops: a list of {', '.join(QUANT_OPS)} (got {dict(q.options)})"
        )
    dynamic = q.scheme == "dynamic"
    if not dynamic and (calibration is None or not len(calibration)):
        raise EdgevitError("executorch static INT8 needs calibration images (calibration >= 1)", "calibration")
    config = get_symmetric_quantization_config(is_per_channel=q.per_channel, is_dynamic=dynamic)
    quantizer = XNNPACKQuantizer()
    for op in ops:
        quantizer.set_operator_type(QUANT_OPS[op], config)
    prepared = prepare_pt2e(program.module(), quantizer)
    batch = sample.shape[0]
    images = calibration if calibration is not None and not dynamic else sample.numpy()
    for i in range(0, len(images) - batch + 1, batch):  # the exported graph has a static batch
        prepared(torch.from_numpy(np.ascontiguousarray(images[i : i + batch], dtype=np.float32)))
    converted = convert_pt2e(prepared)
    info = {
        "scheme": q.scheme,
        "tool": "executorch XNNPACKQuantizer (PT2E)",
        "symmetric": True,
        "per_channel": q.per_channel,
        "activations": "dynamic" if dynamic else "static int8",
        "ops": ops,
    }
    return torch.export.export(converted, (sample,)), info


def delegation_summary(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """How much of the lowered graph the delegates took, and the ops left to portable kernels.

    Counts come from executorch's `get_delegation_info` (nodes inside delegate calls vs nodes
    outside), leaving out `getitem` (tuple access, not an op that runs)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    names = {_op_type(n.name): _target_name(n) for n in graph_module.graph.nodes if n.op == "call_function"}
    ops = {k: v for k, v in info.delegation_by_operator.items() if k not in _STRUCTURAL}
    delegated = sum(v.delegated for v in ops.values())
    total = delegated + sum(v.non_delegated for v in ops.values())
    fallbacks = {names.get(k, k): v.non_delegated for k, v in sorted(ops.items()) if v.non_delegated}
    backends = sorted(
        {
            getattr(graph_module, n.target).backend_id
            for n in graph_module.graph.nodes
            if n.op == "get_attr" and n.name.startswith("lowered_module_")
        }
    )
    fraction = delegated / total if total else 0.0
    who = " + ".join(backends) or "no delegate"
    note = f"{who} took {delegated} of {total} ops ({fraction:.0%}) in {info.num_delegated_subgraphs} delegate call(s)"
    if fallbacks:
        note += "; fell back to portable kernels: " + ", ".join(f"{k} x{n}" for k, n in fallbacks.items())
    return {
        "backends": backends,
        "delegated_ops": delegated,
        "total_ops": total,
        "fraction": round(fraction, 4),
        "delegate_calls": info.num_delegated_subgraphs,
        "fallback_ops": fallbacks,
        "note": note,
    }


def _op_type(node_name: str) -> str:
    return re.sub(r"_[\d]+$", "", node_name)  # how get_delegation_info groups nodes


def _target_name(node: torch.fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))
