"""Run an exported artifact in its own runtime: one `Predictor` interface over all of them.

`open_predictor(artifact, threads=None, **options)` returns a callable that takes float32 NCHW
images (already normalised, any batch size) and returns float32 logits. Verification and the
latency runners both use it, so what is verified is exactly what is timed. Which runtime opens an
artifact, and its options, is its format's business (`edgevit.formats.<format>.open_*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevit import formats
from edgevit.artifact import MANIFEST, Artifact
from edgevit.errors import EdgevitError
from edgevit.formats.base import Predictor
from edgevit.formats.tflite import LITERT_MODULES, litert_interpreter

__all__ = [
    "LITERT_MODULES",
    "Predictor",
    "import_runtime",
    "litert_interpreter",
    "open_predictor",
    "runs_here",
    "runtime_available",
]


def runtime_available(fmt: str) -> tuple[bool, str]:
    """Whether an artifact of this format can run here, and if not, why (one line)."""
    return formats.get(fmt).runtime_available()


def import_runtime(fmt: str) -> None:
    """Import a format's runtime now, so a load-time measurement does not time Python's imports."""
    if fmt in formats.FORMATS:
        formats.get(fmt).warm_up_runtime()


def runs_here(artifact: Artifact) -> tuple[bool, str]:
    """Whether this artifact (not just its format) can run here."""
    fmt = formats.get(artifact.format)
    ok, why = fmt.runtime_available()
    if ok and fmt.artifact_check is not None:
        reason = fmt.artifact_check(artifact)
        if reason:
            return False, reason
    return ok, why


def open_predictor(artifact: Artifact | str | Path, threads: int | None = None, **options: Any) -> Predictor:
    """Load an artifact in its runtime. `threads` None keeps the runtime's default; `options` are the
    runtime's own (see its format's opener), on top of those the export recorded in the manifest."""
    if not isinstance(artifact, Artifact):
        if not (Path(artifact) / MANIFEST).exists():
            raise EdgevitError(f"{artifact} is not an export folder (no {MANIFEST}); run `edgevit export` first")
        artifact = Artifact.load(artifact)
    fmt = formats.get(artifact.format)
    ok, why = fmt.runtime_available()
    if not ok:
        raise EdgevitError(f"cannot run {artifact.format} artifact {artifact.directory}: {why}")
    if threads is not None and threads < 1:
        raise EdgevitError(f"threads must be >= 1 (got {threads})", "threads")
    defaults = dict(artifact.manifest.get("runtime") or {})
    return fmt.open_predictor(artifact, threads, {**defaults, **options})
