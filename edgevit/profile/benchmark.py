"""`edgevit benchmark RUN [--targets all]`: export + verify + profile every target and precision.

Like Ultralytics' benchmark mode: one table (format, precision, size MB, top-1, agreement with
PyTorch, median and p90 latency, speed-up vs PyTorch FP32 eager timed in the same session),
written as CSV and JSON under runs/<run>/benchmark/ and row by row to the ledger. A target whose
runtime cannot run here (and has no SSH device) is exported and verified as far as possible and
its row says why it was not timed. `--min-accuracy` makes a missed top-1 floor a non-zero exit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.profile.command import (BASELINE, add_device_arguments, artifact_dir, profile_one, record,
                                     resolve_run)
from edgevit.profile.stats import machine_load

BENCH_DIR = "benchmark"
EXIT_BELOW_FLOOR = 1


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
    speedup: float | None = None  # PyTorch FP32 eager median / this median
    runtime: str = ""
    device: str = ""
    note: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, or run name under the runs folder")
    p.add_argument("--targets", default="all", help="'all' or comma-separated target names/aliases (default all)")
    p.add_argument("--precisions", default="all", help="'all' (each target's list) or comma-separated, e.g. fp32,int8")
    p.add_argument("--calibration", type=int, default=None, help="INT8 calibration images (default: the target's)")
    p.add_argument("--reuse-exports", action="store_true", help="time existing exports instead of exporting again")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="top-1 floor in %% (0-100; a value <= 1 is read as a fraction); exit 1 if a row misses it")
    add_device_arguments(p)


def _targets(spec: str) -> list[Any]:
    from edgevit.config import Target, list_targets, load_target

    if spec == "all":
        found = [t for _, _, t in list_targets() if isinstance(t, Target)]
        if not found:
            raise EdgevitError("no valid targets found (targets/*.yaml)")
        return found
    return [load_target(name.strip()) for name in spec.split(",") if name.strip()]


def _precisions(target: Any, spec: str) -> list[str]:
    if spec == "all":
        return list(target.precisions)
    wanted = [p.strip() for p in spec.split(",") if p.strip()]
    return [p for p in wanted if p in target.precisions]


def _export(run_dir: Path, target: Any, precision: str, args: argparse.Namespace) -> tuple[dict, str]:
    """(verification dict, note) for this export, exporting unless reusing one that exists."""
    folder = artifact_dir(run_dir, target.name, precision)
    if args.reuse_exports and (folder / "manifest.json").is_file():
        manifest = json.loads((folder / "manifest.json").read_text())
        return manifest.get("verification") or {}, "reused export"
    from edgevit.export.pipeline import export_run

    result = export_run(run_dir, target, precision=precision, calibration=args.calibration, ledger=True)
    return result.verification.to_dict(), ""


def _size_mb(folder: Path) -> float | None:
    from edgevit.artifact import Artifact

    try:
        return round(Artifact.load(folder).size_bytes() / 1e6, 2)
    except (OSError, KeyError, ValueError):
        return None


def benchmark(run_dir: Path, args: argparse.Namespace, log: Any = print) -> tuple[list[Row], dict[str, Any]]:
    """Every row of the table, and the session's context (baseline, threads, load)."""
    base, _ = profile_one(run_dir, BASELINE, None, argparse.Namespace(**{**vars(args), "device": None}))  # always here
    record(run_dir, BASELINE, base)
    rows = [Row(BASELINE, "pytorch", "fp32", median_ms=base.stats.median_ms, p90_ms=base.stats.p90_ms, speedup=1.0,
                agreement=100.0, runtime=base.runtime, device=base.device)]
    log(f"baseline: {base.summary_line()}")
    torch_top1: float | None = None
    for target in _targets(args.targets):
        for precision in _precisions(target, args.precisions):
            row = Row(target.name, target.format, precision)
            rows.append(row)
            try:
                check, row.note = _export(run_dir, target, precision, args)
            except EdgevitError as exc:
                row.note = f"export failed: {exc}"
                log(f"{target.name} {precision}: {row.note}")
                continue
            folder = artifact_dir(run_dir, target.name, precision)
            row.size_mb = _size_mb(folder)
            row.top1, row.agreement = check.get("top1"), check.get("agreement")
            torch_top1 = check.get("torch_top1", torch_top1)
            try:
                result, _ = profile_one(run_dir, target.name, precision, args)
            except EdgevitError as exc:
                row.note = "; ".join(filter(None, [row.note, f"not timed: {exc}"]))
                log(f"{target.name} {precision}: {row.note}")
                continue
            record(run_dir, target.name, result, folder)
            row.median_ms, row.p90_ms = result.stats.median_ms, result.stats.p90_ms
            row.speedup = base.stats.median_ms / result.stats.median_ms if result.stats.median_ms > 0 else None
            row.runtime, row.device = result.runtime, result.device
            log(f"{target.name} {precision}: {result.summary_line()}")
    rows[0].top1 = torch_top1
    context = {"run": run_dir.name, "baseline_median_ms": base.stats.median_ms, "threads": args.threads,
               "batch": args.batch or 1, "iterations": args.iterations, "warmup": args.warmup,
               "input": base.extra.get("input"), "load": machine_load(), "device": base.device,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return rows, context


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    head = f"{'target':<16} {'format':<9} {'prec':<5} {'size MB':>8} {'top-1 %':>8} {'agree %':>8} " \
           f"{'median ms':>10} {'p90 ms':>8} {'speed-up':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.target:<16} {r.format:<9} {r.precision:<5} {_fmt(r.size_mb, '8.2f')} {_fmt(r.top1, '8.2f')} "
                     f"{_fmt(r.agreement, '8.2f')} {_fmt(r.median_ms, '10.2f')} {_fmt(r.p90_ms, '8.2f')} "
                     f"{_fmt(r.speedup, '8.2f') + ('x' if r.speedup else ' ')}  {r.note[:90]}")
    return "\n".join(lines)


def write_outputs(run_dir: Path, rows: list[Row], context: dict[str, Any]) -> tuple[Path, Path]:
    out = run_dir / BENCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "benchmark.csv", out / "benchmark.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    json_path.write_text(json.dumps({"context": context, "rows": [asdict(r) for r in rows]}, indent=2, default=str))
    return csv_path, json_path


def below_floor(rows: list[Row], floor: float) -> list[Row]:
    """Rows with a measured top-1 under the floor (in %; a floor <= 1 is a fraction)."""
    floor = floor * 100 if floor <= 1 else floor
    return [r for r in rows if r.top1 is not None and r.top1 < floor]


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.runs_dir)
    if args.threads is None:  # one explicit thread count for every runtime, stated in the output
        args.threads = os.cpu_count() or 1
    rows, context = benchmark(run_dir, args)
    print()
    print(f"run {context['run']}: batch {context['batch']}, threads {context['threads'] or 'runtime default'}, "
          f"input {context['input']}; machine load {context['load']}")
    print(format_table(rows))
    csv_path, json_path = write_outputs(run_dir, rows, context)
    print(f"wrote {csv_path}, {json_path} and ledger rows in {run_dir.parent / 'ledger.sqlite'}")
    if args.min_accuracy is not None:
        missed = below_floor(rows, args.min_accuracy)
        if missed:
            names = ", ".join(f"{r.target}/{r.precision} ({r.top1:.2f}%)" for r in missed)
            print(f"edgevit: below the --min-accuracy floor of {args.min_accuracy}: {names}")
            return EXIT_BELOW_FLOOR
    return 0
