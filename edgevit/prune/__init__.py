"""Structured pruning of a distilled student (Torch-Pruning), then recovery by distillation."""

from edgevit.prune.engine import prune_model
from edgevit.prune.pipeline import prune

__all__ = ["prune", "prune_model"]
