"""The benchmark stage: export, verify and time every target and precision of a run, and name what
to ship on each target.

`benchmark(run, ...)` exports each (target, precision) -- the student, images and PyTorch's logits
loaded once -- verifies it in its runtime, then times every artifact that runs here together with
the PyTorch FP32 baseline, interleaved in rounds (as benchmarks/latency.py does: on a shared machine
one-after-another timing charges each runtime with whatever load ran during its turn). Artifacts for
a remote device are timed there over SSH; the rest say why they were not timed. Each row gets load
time (open + first inference) and peak memory where the runtime runs here, and each target's pick:
the fastest row within `max_drop` top-1 points of PyTorch FP32 (edgevit/choose.py), with the
reason every other row lost. Writes runs/<run>/benchmark/benchmark.{csv,json} and ledger rows.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgevit.choose import pick
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import InputsCache, check_calibration
from edgevit.export.targets import TargetExport, export_targets, resolve_targets
from edgevit.files import atomic_path, write_json
from edgevit.profile.runners import ProfileResult, device_description, input_description
from edgevit.profile.side_by_side import check_rounds, time_artifacts
from edgevit.profile.stage import BASELINE, Device, Timing, artifact_dir, profile_artifact_on, record, resolve_run
from edgevit.profile.stats import machine_load

BENCH_DIR = "benchmark"
ROUNDS = 10
logger = logging.getLogger("edgevit.profile")


@dataclass
class Row:
    target: str
    format: str
    precision: str
    size_mb: float | None = None
    top1: float | None = None  # % on the run's validation split, in the target's runtime
    agreement: float | None = None  # % top-1 shared with PyTorch
    median_ms: float | None = None
    p90_ms: float | None = None
    speedup: float | None = None  # PyTorch FP32 eager median / this median, timed in the same rounds
    load_ms: float | None = None  # opening the model plus its first inference
    peak_mem_mb: float | None = None
    runtime: str = ""
    device: str = ""
    note: str = ""
    pick: bool = False
    why: str = ""


@dataclass
class BenchmarkResult:
    rows: list[Row]
    context: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    detail: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _precisions(target: Any, spec: str | list[str]) -> list[str]:
    """The precisions of `spec` this target offers ('all': every one); the others are skipped here."""
    if spec == "all":
        return list(target.precisions)
    wanted = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    return [p for p in wanted if p in target.precisions]


def _size_mb(folder: Path) -> float | None:
    from edgevit.artifact import Artifact

    try:
        return round(Artifact.load(folder).size_bytes() / 1e6, 2)
    except (OSError, KeyError, ValueError):
        return None


def _row(job: TargetExport, log: Callable[[str], None]) -> Row:
    """A table row from one export job: its size and verification, or why the export failed."""
    row = Row(job.target.name, job.target.format, job.precision, note="reused export" if job.reused else "")
    if job.error is not None:
        row.note = f"export failed: {job.error}"
        log(f"{row.target} {row.precision}: {row.note}")
        return row
    check = job.verification
    row.size_mb, row.top1, row.agreement = _size_mb(job.folder), check.get("top1"), check.get("agreement")
    if not check.get("verified") and check.get("note"):
        row.note = "; ".join(filter(None, [row.note, check["note"]]))
    return row


def _runs_here(row: Row, folder: Path) -> bool:
    """Timed here by its own runtime (not by a device tool such as trtexec), and that runtime is installed."""
    from edgevit import formats
    from edgevit.profile.runners import load_artifact
    from edgevit.runtimes import runs_here

    if row.note.startswith("export failed") or formats.get(row.format).timer != "runtime":
        return False
    return runs_here(load_artifact(folder))[0]


def benchmark(
    run: str | Path,
    targets: str | list[str] = "all",
    precisions: str | list[str] = "all",
    *,
    max_drop: float = 0.5,
    min_accuracy: float | None = None,
    timing: Timing | None = None,
    device: Device | None = None,
    calibration: int | None = None,
    reuse_exports: bool = False,
    rounds: int = ROUNDS,
    detail: bool = False,
    log: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Every row of the table with each target's pick, and the session's context (baseline, threads, load)."""
    timing = timing or Timing(threads=os.cpu_count() or 1)
    device = device or Device()
    pick([], max_drop, min_accuracy)  # bad --max-drop / --min-accuracy fail before any work
    check_calibration(calibration)
    run_dir = resolve_run(run)
    log = log or logger.info
    check_rounds(rounds)
    tlist = resolve_targets(targets)
    inputs, rows, torch_top1, folders = InputsCache(), [], None, {}
    for target in tlist:
        for job in export_targets(
            run_dir,
            [target],
            _precisions(target, precisions),
            calibration=calibration,
            reuse=reuse_exports,
            inputs=inputs,
        ):
            rows.append(_row(job, log))
            folders[f"{target.name}/{job.precision}"] = job.folder
            torch_top1 = job.verification.get("torch_top1", torch_top1)
    by_name = {t.name: t for t in tlist}
    base = Row(BASELINE, "pytorch", "fp32", top1=torch_top1, agreement=100.0, speedup=1.0)
    timed = _time_local(run_dir, base, rows, folders, timing, rounds, log) if device.local else {}
    for row in rows:
        key = f"{row.target}/{row.precision}"
        if not row.note.startswith("export failed") and key not in timed:
            measured = _time_remote_or_say_why(
                run_dir, row, by_name[row.target], timing, log, None if device.local else device
            )
            if measured is not None:
                timed[key] = measured
    if base.median_ms:
        for row in rows:
            if row.median_ms:
                row.speedup = base.median_ms / row.median_ms
    all_rows = [Row(**r) for r in pick([base] + rows, max_drop, min_accuracy, baseline_top1=torch_top1)]
    for row in all_rows:  # the ledger's profile rows carry the verdict, so reports can show the picks
        key = BASELINE if row.target == BASELINE else f"{row.target}/{row.precision}"
        if key in timed:
            result, folder = timed[key]
            result.extra["benchmark"] = {"pick": row.pick, "why": row.why, "max_drop": max_drop}
            record(run_dir, row.target, result, folder)
    context = {
        "run": run_dir.name,
        "baseline_median_ms": base.median_ms,
        "threads": timing.threads,
        "batch": timing.batch or 1,
        "iterations": timing.iterations,
        "warmup": timing.warmup,
        "rounds": rounds,
        "max_drop": max_drop,
        "min_accuracy": min_accuracy,
        "torch_top1": torch_top1,
        "input": input_description([timing.batch or 1, 3, "H", "W"]),
        "load": machine_load(),
        "device": device_description(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result = BenchmarkResult(all_rows, context)
    if detail:
        result.detail = _detail(run_dir, [r for r in all_rows if r.median_ms and r.target != BASELINE], timing, log)
    result.files = write_outputs(run_dir, result)
    return result


def _time_local(
    run_dir: Path,
    base: Row,
    rows: list[Row],
    folders: dict[str, Path],
    timing: Timing,
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, tuple[ProfileResult, Path | None]]:
    """The baseline and every artifact that runs here, timed side by side: key -> (result, its folder)."""
    by_key = {f"{r.target}/{r.precision}": r for r in rows}
    here = {k: folders[k] for k, r in by_key.items() if _runs_here(r, folders[k])}
    results = time_artifacts(here, timing, rounds, baseline=run_dir)
    timed: dict[str, tuple[ProfileResult, Path | None]] = {}
    for key, result in results.items():
        row = base if key == BASELINE else by_key[key]
        row.median_ms, row.p90_ms, row.load_ms, row.peak_mem_mb = (
            result.stats.median_ms,
            result.stats.p90_ms,
            result.load_ms,
            result.peak_mem_mb,
        )
        row.runtime, row.device = result.runtime, result.device
        timed[key] = (result, here.get(key))
        log(f"{row.target} {row.precision}: {result.summary_line()}")
    return timed


def _time_remote_or_say_why(
    run_dir: Path, row: Row, target: Any, timing: Timing, log: Callable[[str], None], device: Device | None = None
) -> tuple[ProfileResult, Path] | None:
    """A row this machine cannot run: time it on the device (the one given, else the target's own
    SSH device), or say why not."""
    from edgevit.profile.stage import _device_for

    folder = artifact_dir(run_dir, row.target, row.precision)
    try:  # locally this raises with the reason (no trtexec, no macOS, runtime not installed)
        result = profile_artifact_on(folder, target, device or _device_for(Device(), target), timing)
    except EdgevitError as exc:
        row.note = "; ".join(filter(None, [row.note, f"not timed: {exc}"]))
        log(f"{row.target} {row.precision}: {row.note}")
        return None
    row.median_ms, row.p90_ms, row.runtime, row.device = (
        result.stats.median_ms,
        result.stats.p90_ms,
        result.runtime,
        result.device,
    )
    log(f"{row.target} {row.precision}: {result.summary_line()}")
    return result, folder


def _detail(run_dir: Path, rows: list[Row], timing: Timing, log: Callable[[str], None]) -> dict[str, list[dict]]:
    """The five ops that take the most time in each timed artifact, from its runtime's own profiler."""
    from edgevit.profile.detail import top_ops

    out: dict[str, list[dict]] = {}
    for row in rows:
        key = f"{row.target}/{row.precision}"
        try:
            out[key] = top_ops(artifact_dir(run_dir, row.target, row.precision), threads=timing.threads, n=5)
        except EdgevitError as exc:
            out[key] = [{"error": str(exc)}]
            log(f"{key}: no per-op detail ({exc})")
    return out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'target':<17} {'format':<10} {'prec':<12} {'size MB':>8} {'top-1 %':>8} {'agree %':>8} "
        f"{'median ms':>10} {'p90 ms':>8} {'speed-up':>9} {'load ms':>8} {'mem MB':>7}  pick / why"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = ("PICK: " if r.pick else "") + r.why
        lines.append(
            f"{r.target:<17} {r.format:<10} {r.precision:<12} {_fmt(r.size_mb, '8.2f')} {_fmt(r.top1, '8.2f')} "
            f"{_fmt(r.agreement, '8.2f')} {_fmt(r.median_ms, '10.2f')} {_fmt(r.p90_ms, '8.2f')} "
            f"{_fmt(r.speedup, '8.2f') + ('x' if r.speedup else ' ')} {_fmt(r.load_ms, '8.0f')} "
            f"{_fmt(r.peak_mem_mb, '7.0f')}  {verdict[:110]}"
        )
    return "\n".join(lines)


def picks(rows: list[Row]) -> list[str]:
    """One line per target: what to ship there and why (or that nothing qualifies)."""
    out = []
    for target in dict.fromkeys(r.target for r in rows if r.target != BASELINE):
        group = [r for r in rows if r.target == target]
        chosen = next((r for r in group if r.pick), None)
        out.append(
            f"{target}: ship {chosen.format} {chosen.precision} -- {chosen.why}"
            if chosen
            else f"{target}: no pick -- {group[0].why}"
        )
    return out


def write_outputs(run_dir: Path, result: BenchmarkResult) -> list[Path]:
    out = run_dir / BENCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "benchmark.csv", out / "benchmark.json"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(result.rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in result.rows)
    write_json(
        json_path,
        {
            "context": result.context,
            "rows": [asdict(r) for r in result.rows],
            "picks": picks(result.rows),
            "detail": result.detail,
        },
    )
    return [csv_path, json_path]


def below_floor(rows: list[Row], floor: float) -> list[Row]:
    """Rows with a measured top-1 under the floor (in %; a floor <= 1 is a fraction)."""
    floor = floor * 100 if floor <= 1 else floor
    return [r for r in rows if r.top1 is not None and r.top1 < floor]
