"""Where shipped recipes and targets live, and the default runs folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _search_dirs(kind: str) -> list[Path]:
    dirs = [Path.cwd() / kind, REPO_ROOT / kind]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def recipes_dirs() -> list[Path]:
    return _search_dirs("recipes")


def targets_dirs() -> list[Path]:
    return _search_dirs("targets")


def default_runs_dir() -> Path:
    return Path(os.environ.get("EDGEVIT_RUNS", "runs"))


def numbered_run_dir(root: Path, base: str) -> Path:
    """root/base, or root/base-2, -3, ... when taken: a new run never lands in an old run's folder."""
    from edgevit.runs import check_run_name

    path, n = root / check_run_name(base), 2
    while path.exists():
        path, n = root / f"{base}-{n}", n + 1
    return path
