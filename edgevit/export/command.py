"""`edgevit export RUN --target NAME`: export, verify in the target's runtime, print one table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevit.paths import resolve_run

PRECISION_CHOICES = ("fp32", "fp16", "bf16", "int8", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run name (under --runs) or run folder holding student.pt")
    parser.add_argument(
        "--target",
        "-t",
        required=True,
        help="target name or alias (e.g. jetson), a YAML path, a comma-separated list, or 'all'",
    )
    parser.add_argument(
        "--precision",
        "-p",
        choices=PRECISION_CHOICES,
        help="default: the target's own; 'all': every precision the target offers",
    )
    parser.add_argument("--calibration", type=int, metavar="N", help="training images for INT8 calibration")
    parser.add_argument(
        "--scheme",
        choices=("static", "dynamic", "weight-only"),
        help="INT8 scheme instead of the target's (written to <precision>-<scheme>/)",
    )
    parser.add_argument(
        "--dynamic-batch", action="store_true", default=None, help="dynamic batch axis (ONNX, OpenVINO)"
    )
    parser.add_argument(
        "--verify-images",
        type=int,
        default=2000,
        metavar="N",
        help="validation images to verify on (default 2000; the whole split if smaller)",
    )
    parser.add_argument(
        "--runs-dir",
        "--runs",
        dest="runs",
        type=Path,
        default=None,
        help="runs folder (default: $EDGEVIT_RUNS or ./runs)",
    )
    parser.add_argument("--no-ledger", action="store_true", help="do not record the export in the runs ledger")


def run(args: argparse.Namespace) -> int:
    from edgevit.console import converter_output_on_stderr
    from edgevit.export.pipeline import check_calibration
    from edgevit.export.targets import export_targets, resolve_targets

    check_calibration(args.calibration)  # options first, so the message names what was typed
    run_dir = resolve_run(args.run, args.runs)
    targets = resolve_targets(args.target)
    with converter_output_on_stderr():
        done = export_targets(
            run_dir,
            targets,
            args.precision,
            calibration=args.calibration,
            scheme=args.scheme,
            dynamic_batch=args.dynamic_batch,
            verify_images=args.verify_images,
            ledger=not args.no_ledger,
        )
    if len(done) == 1 and done[0].error is not None:
        raise done[0].error
    rows = [(job.target.name, job.result) for job in done if job.result is not None]
    if rows:
        print(table(rows))
        print(f"artifacts in {run_dir / 'exports'}")
    failures = [job for job in done if job.error is not None]
    for job in failures:
        print(f"edgevit: error: {job.target.name}/{job.precision}: {job.error}", file=sys.stderr)
    return 1 if failures else 0


def table(rows: list) -> str:
    """target | precision | runtime | export s | size | agreement | max diff | top-1 (PyTorch) | check."""
    head = (
        "target",
        "precision",
        "runtime",
        "export s",
        "size MB",
        "agree %",
        "max |diff|",
        "top-1 % (torch)",
        "check",
    )
    lines = []
    for name, r in rows:
        v = r.verification
        lines.append(
            (
                name,
                r.artifact.precision
                if r.artifact.directory.name == r.artifact.precision
                else r.artifact.directory.name,
                v.runtime or "-",
                f"{r.seconds:.1f}",
                f"{r.artifact.size_bytes() / 1e6:.2f}",
                "-" if v.agreement is None else f"{v.agreement:.2f}",
                "-" if v.max_abs_diff is None else f"{v.max_abs_diff:.2e}",
                ("-" if v.top1 is None else f"{v.top1:.2f}") + f" ({v.torch_top1:.2f})",
                "ok" if v.verified else ("not run here" if v.runtime is None else "FAILED"),
            )
        )
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head, *lines])
