"""Every closed vocabulary edgevit uses, defined once.

Each is a `Literal` type (what pydantic validates a recipe or target field against, and what a
type checker sees) and the tuple of its values (what a CLI's `choices=` and an error message list).
Formats are not here: they are whatever the format registry (`edgevit.formats`) holds.
"""

from __future__ import annotations

from typing import Literal, get_args

# dkd: decoupled KD (Zhao et al., 2022); feature: hard + intermediate features through projectors;
# attention: hard + a ViT teacher's attention maps (and value relations)
DistillType = Literal["none", "soft", "hard", "dkd", "feature", "attention"]
DISTILL_TYPES: tuple[str, ...] = get_args(DistillType)

Importance = Literal["taylor", "magnitude", "hessian"]
IMPORTANCES: tuple[str, ...] = get_args(Importance)

PruneAttention = Literal["dims", "heads", "both"]  # what attention loses: head dims, whole heads, or both
PRUNE_ATTENTION: tuple[str, ...] = get_args(PruneAttention)

PruneBy = Literal["macs", "params"]
PRUNE_BY: tuple[str, ...] = get_args(PruneBy)

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

Scheme = Literal["static", "dynamic", "weight-only"]  # how INT8 treats activations (weight-only: none)
SCHEMES: tuple[str, ...] = get_args(Scheme)

QuantMethod = Literal["ptq", "tune", "qat"]
QUANT_METHODS: tuple[str, ...] = get_args(QuantMethod)

Amp = Literal["auto", "bf16", "fp16", "off"]
AMPS: tuple[str, ...] = get_args(Amp)

RunKind = Literal["distill", "prune", "search"]  # the stages that write a new run (and record it in the ledger)
RUN_KINDS: tuple[str, ...] = get_args(RunKind)

BASELINE = "pytorch"  # the target, format and row name of the PyTorch FP32 eager baseline
