"""Stages that a recipe chains, composed here in the core (not in the CLI), so the API and the CLI
run the same chain: `run_recipe` distils, then prunes and recovers when the recipe has a `prune:` section."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from edgevit.config import Recipe

logger = logging.getLogger("edgevit.chain")


def run_recipe(
    recipe: Recipe, run_dir: str | Path | None = None, *, resume: bool = False, progress: Any = None, log: Any = None
) -> dict[str, Any]:
    """Everything a recipe asks for, in order.

    Args:
        recipe: the validated recipe (`load_recipe`, `apply_overrides`).
        run_dir: the distill run's folder (default: runs/<recipe name>, numbered if taken).
        resume: continue the distill run in `run_dir` from its last checkpoint.
        progress: the trainer's progress hook (the CLI passes rich bars; None: no bars).
        log: a callable for one-line messages (default: the `edgevit.chain` logger).

    Returns:
        `{"distill": summary, "prune": summary or None}`; each summary is also in its run's
        summary.json and the ledger.
    """
    from edgevit.distill.pipeline import distill
    from edgevit.paths import default_runs_dir, numbered_run_dir

    log = log or logger.info
    run_dir = Path(run_dir) if run_dir is not None else numbered_run_dir(default_runs_dir(), recipe.name)
    summary = distill(recipe, run_dir, resume=resume, log=log, progress=progress)
    pruned = None
    if recipe.prune is not None and int(os.environ.get("RANK", "0")) == 0:  # under torchrun: rank 0 prunes
        from edgevit.prune.pipeline import prune

        pruned = prune(run_dir, **recipe.prune.model_dump(), log=log, progress=progress)
    return {"distill": summary, "prune": pruned}
