"""`edgevit report [--runs DIR] [--notebook NAME] [--out FILE.html]`: the ledger as an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgevit.paths import default_runs_dir
from edgevit.report.build import NOTEBOOKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        "--runs-dir",
        dest="runs",
        type=Path,
        default=None,
        help="runs folder holding ledger.sqlite (default: $EDGEVIT_RUNS or ./runs)",
    )
    parser.add_argument(
        "--notebook",
        "-n",
        default=NOTEBOOKS[0],
        help=f"which report: {', '.join(NOTEBOOKS)}, or a .ipynb path (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        "-o",
        type=Path,
        default=None,
        help="HTML file to write (default: RUNS/reports/NOTEBOOK.html); PNGs and CSVs go to FILE_files/ beside it",
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        metavar="MS",
        help="latency budget: per target, the most accurate export whose median is within it",
    )
    parser.add_argument(
        "--select",
        action="append",
        default=None,
        metavar="RUN",
        help="draw this run's training curves (repeat; default: the newest runs)",
    )


def run(args: argparse.Namespace) -> int:
    from edgevit.report.build import report

    path = report(
        args.runs or default_runs_dir(),
        notebook=args.notebook,
        out=args.out,
        budget_ms=args.budget_ms,
        selected_runs=args.select,
    )
    print(f"wrote {path} (figures and tables in {path.with_name(path.stem + '_files')})")
    return 0
