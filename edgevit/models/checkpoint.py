"""The student file (`student.pt`): weights plus the structure needed to rebuild them, no pickles.

A student is rebuilt as `create_student(model_name, create_kwargs)`. A student whose layers changed
shape after it was built (pruned heads, a narrower MLP, fewer channels) also records, per module,
the plain attributes that differ from that fresh build (Linear.out_features, Attention.num_heads /
head_dim / attn_dim, LayerNorm.normalized_shape, ...). Loading builds the fresh model, applies those
attributes, gives every parameter and buffer its saved shape and loads the weights strictly. So
whatever Torch-Pruning changed comes back, and the file loads with `weights_only=True`.

Format 2 adds `format`, `version` and `structure` to format 1 (weights + create_kwargs), which
still loads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.files import read_torch, torch_save
from edgevit.models.students import create_student

STUDENT_FILE = "student.pt"
FORMAT, VERSION = "edgevit-student", 2
_PLAIN = (bool, int, float, str)
# Run modes and implementation switches, not structure: never recorded, never restored.
_NOT_STRUCTURE = {"training", "distilled_training", "fused_attn", "grad_checkpointing"}


def _plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def _attributes(module: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k not in _NOT_STRUCTURE and _plain(v)}


def fresh_model(model_name: str, create_kwargs: dict[str, Any], device: str = "meta") -> nn.Module:
    """The student as `create_student` builds it (on the meta device: shapes only, no RNG use)."""
    with torch.device(device):
        return create_student(model_name, dict(create_kwargs))


def structure_of(model: nn.Module, model_name: str, create_kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per module, the plain attributes that differ from a fresh build (empty for an unchanged model)."""
    fresh = dict(fresh_model(model_name, create_kwargs).named_modules())
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        ref = fresh.get(name)
        if ref is None or type(ref) is not type(module):
            raise EdgevitError(
                f"cannot save this student: module '{name or 'the model'}' is not what "
                f"{model_name} builds (only widths, heads and channels may change)"
            )
        theirs = _attributes(ref)
        diff = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in _attributes(module).items() if theirs.get(k) != v
        }
        if diff:
            out[name] = diff
    return out


def rebuild(
    model_name: str,
    create_kwargs: dict[str, Any],
    structure: dict[str, dict[str, Any]],
    state_dict: dict[str, torch.Tensor],
) -> nn.Module:
    """A fresh student, reshaped by `structure` and the tensors' shapes, with `state_dict` loaded."""
    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep the caller's RNG stream
        model = create_student(model_name, dict(create_kwargs))
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise EdgevitError(f"the checkpoint's structure names a module '{name}' that {model_name} does not have")
        for key, value in attrs.items():
            old = getattr(modules[name], key, None)
            setattr(modules[name], key, tuple(value) if isinstance(old, tuple) else value)
    for key, tensor in state_dict.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue  # load_state_dict names it below
        if leaf in module._parameters and module._parameters[leaf] is not None:
            if module._parameters[leaf].shape != tensor.shape:
                module._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            if module._buffers[leaf].shape != tensor.shape:
                module._buffers[leaf] = torch.empty_like(tensor)
    model.load_state_dict(state_dict)
    return model


def save_student(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write the deployable student atomically: weights, structure and what export needs."""
    model = getattr(model, "module", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    structure = structure_of(model, meta["model_name"], meta["create_kwargs"])
    torch_save({**meta, "format": FORMAT, "version": VERSION, "structure": structure, "state_dict": state}, path)


def load_student(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a student saved by `save_student` (format 1 or 2) in eval mode, with its metadata
    (model_name, create_kwargs, class_names, img_size, mean, std, ..., sha256)."""
    path = Path(path)
    if path.is_dir():
        path = path / STUDENT_FILE
    if not path.exists():
        raise EdgevitError(
            f"{path} does not exist: run `edgevit distill` first or pass a run folder that has {STUDENT_FILE}"
        )
    blob = read_torch(path, "edgevit student checkpoint", "re-create it with `edgevit distill` (or restore a copy)")
    if not isinstance(blob, dict) or "state_dict" not in blob or "model_name" not in blob:
        raise EdgevitError(f"{path} is not an edgevit student checkpoint (no model_name/state_dict)")
    if blob.get("version", 1) > VERSION:
        raise EdgevitError(
            f"{path} is student format {blob['version']}; this edgevit reads up to {VERSION}: upgrade edgevit"
        )
    try:
        model = rebuild(blob["model_name"], blob["create_kwargs"], blob.get("structure") or {}, blob["state_dict"])
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc)[:200])
        raise EdgevitError(f"{path}: weights do not fit {blob['model_name']}: {detail}") from None
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return model.eval(), meta
