"""Where recipes and targets are found, and the default runs folder.

The shipped recipes and targets are package data (edgevit/recipes and edgevit/targets, links to the
top-level folders in a source checkout), read through importlib.resources so a wheel install finds
them too; a recipes/ or targets/ folder in the working directory adds to them and wins on a name clash.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def shipped(kind: str) -> Path:
    """The folder of shipped `kind` files (recipes, targets, notebooks) inside the installed package."""
    return Path(str(resources.files("edgevit") / kind))


def _search_dirs(kind: str) -> list[Path]:
    out: list[Path] = []
    for d in (Path.cwd() / kind, shipped(kind)):
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


def resolve_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A run folder given as a path, or as a run name inside the runs folder."""
    from edgevit.errors import EdgevitError

    path = Path(run)
    if path.is_dir():
        return path.resolve()
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    if (root / str(run)).is_dir():
        return (root / str(run)).resolve()
    known = sorted(p.name for p in root.iterdir() if (p / "student.pt").exists()) if root.is_dir() else []
    raise EdgevitError(
        f"no run '{run}' (not a folder, not in {root}; runs with a student: {', '.join(known) or 'none'})"
    )
