"""`export_targets`: one run exported for many targets and precisions -- the loop that `export --target
all`, `benchmark` and the latency-budget search share.

The student, validation images and PyTorch's logits are loaded once for all jobs (`InputsCache`).
A job that fails is recorded (ledger row, `TargetExport.error`) and the rest go on; the caller
decides whether one failure fails the whole command.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.artifact import MANIFEST
from edgevit.config import Target, list_targets, load_target
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import EXPORTS_DIR, ExportResult, InputsCache, check_calibration, export_run

logger = logging.getLogger("edgevit.export")


@dataclass
class TargetExport:
    """One (target, precision) job: its export (or the manifest of a reused one), or why it failed."""

    target: Target
    precision: str
    folder: Path
    result: ExportResult | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    reused: bool = False
    error: EdgevitError | None = None


def resolve_targets(spec: str | Target | list[str | Target]) -> list[Target]:
    """'all' (every valid target file), a name/alias/path, a comma-separated list, or a list of those."""
    if spec == "all":
        found = [(name, t) for name, _, t in list_targets()]
        bad = [f"{name}: {t}" for name, t in found if isinstance(t, str)]
        if bad:
            raise EdgevitError(f"invalid target file {bad[0]}", "targets")
        if not found:
            raise EdgevitError("no valid targets found (targets/*.yaml)", "targets")
        return [t for _, t in found]
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, Target) else spec
    return [t if isinstance(t, Target) else load_target(t.strip()) for t in items if isinstance(t, Target) or t.strip()]


def plan(targets: list[Target], precisions: str | list[str] | None) -> list[tuple[Target, str]]:
    """(target, precision) jobs: None is each target's own precision, 'all' every one it offers; a named
    precision a target does not offer is skipped (logged) when there are several targets, and refused
    by the export when there is one."""
    jobs = []
    wanted = [p.strip() for p in precisions.split(",")] if isinstance(precisions, str) else precisions
    for t in targets:
        if precisions is None:
            jobs.append((t, t.precision))
        elif precisions == "all":
            jobs += [(t, p) for p in t.precisions]
        else:
            for p in wanted:
                if p in t.precisions or len(targets) == 1:
                    jobs.append((t, p))
                else:
                    logger.info("skip %s: it offers %s, not %s", t.name, ", ".join(t.precisions), p)
    return jobs


def export_targets(
    run: str | Path,
    targets: str | Target | list[str | Target] = "all",
    precisions: str | list[str] | None = None,
    *,
    calibration: int | None = None,
    scheme: str | None = None,
    dynamic_batch: bool | None = None,
    verify_images: int = 2000,
    ledger: bool = True,
    reuse: bool = False,
    inputs: InputsCache | None = None,
) -> list[TargetExport]:
    """Export and verify `run` for every (target, precision) job; failures are recorded, not raised.

    Args:
        run: the run folder (holding student.pt).
        targets: 'all', a target name/alias/path, a comma-separated list, or a list of names or Targets.
        precisions: None (each target's own), 'all', or precisions (comma-separated or a list).
        calibration: training images for INT8 calibration (default: each target's own count).
        scheme: INT8 scheme instead of the targets' (static|dynamic|weight-only).
        dynamic_batch: dynamic batch axis where the format has one.
        verify_images: validation images each export is verified on.
        ledger: record each export (and each failure) in the runs ledger.
        reuse: keep an export that is already in place (its manifest's verification) instead of redoing it.
        inputs: a shared InputsCache (the student and images loaded once across calls).

    Returns:
        One TargetExport per job, in order.
    """
    check_calibration(calibration)
    run_dir = Path(run)
    jobs = plan(resolve_targets(targets), precisions)
    inputs = inputs or InputsCache(verify_images)
    done = []
    for target, precision in jobs:
        folder = run_dir / EXPORTS_DIR / target.name / precision
        job = TargetExport(target, precision, folder)
        if reuse and (folder / MANIFEST).is_file():
            job.reused, job.verification = True, json.loads((folder / MANIFEST).read_text()).get("verification") or {}
            done.append(job)
            continue
        logger.info("exporting %s for %s (%s, %s) ...", run_dir.name, target.name, target.format, precision)
        try:
            job.result = export_run(
                run_dir,
                target,
                precision,
                calibration=calibration,
                ledger=ledger,
                scheme=scheme,
                dynamic_batch=dynamic_batch,
                inputs=inputs,
            )
        except EdgevitError as exc:
            job.error = exc
            logger.debug("%s %s: export failed: %s", target.name, precision, exc)  # the caller reports it
        else:
            job.folder, job.verification = job.result.artifact.directory, job.result.verification.to_dict()
        done.append(job)
    return done
