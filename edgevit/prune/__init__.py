"""Structured pruning of a distilled student (Torch-Pruning), then recovery by distillation.

`prune` (the stage) and `prune_model` (the engine) load on first use, so the CLI can name a
missing `torch-pruning` in one line instead of failing on import."""

from typing import Any

__all__ = ["prune", "prune_model"]


def __getattr__(name: str) -> Any:
    if name == "prune":
        from edgevit.prune.pipeline import prune

        return prune
    if name == "prune_model":
        from edgevit.prune.engine import prune_model

        return prune_model
    raise AttributeError(f"module 'edgevit.prune' has no attribute {name!r}")
