"""The notebooks' sections: each takes the ledger frames and an Output, and shows its tables and figures.

Kept here rather than in the notebooks so the notebooks stay a few lines per section and this code
is tested without a kernel (`Output(dir)` writes the same PNGs and CSVs a notebook run does).
"""

from __future__ import annotations

import pandas as pd

from edgevit.report import data as D
from edgevit.report import plots as P
from edgevit.report.output import Output, slug

MAX_CURVES = 10  # runs in the training-curve figure when none are selected: the newest


def intro(ledger: D.LedgerData, out: Output) -> None:
    """Which ledger this is and what it holds, or that it holds nothing."""
    if ledger.problem:
        out.markdown(f"**{ledger.problem}.** The sections below stay empty until runs are recorded.")
        return
    version = f" (schema v{ledger.version})" if ledger.version else ""
    out.markdown(
        f"Ledger `{ledger.path}`{version}: **{len(ledger.runs)}** runs, **{len(ledger.evals)}** "
        f"epoch evaluations, **{len(ledger.exports)}** exports, **{len(ledger.profiles)}** timings."
    )


def runs(ledger: D.LedgerData, out: Output) -> None:
    """The overview of all runs, then one table per run: PyTorch and every export with its timing."""
    out.table(D.run_overview(ledger), "runs", empty="No runs recorded.")
    for name in D.run_names(ledger):
        facts = D.run_facts(ledger, name)
        line = " · ".join(f"{k}: **{v}**" for k, v in facts.items())
        out.markdown(f"### Run `{name}`\n\n{line}")
        table = D.run_table(ledger, name)
        same = ["device"] if "device" in table and table["device"].dropna().nunique() == 1 else []
        if same:
            out.markdown(f"Timed on {table['device'].dropna().iloc[0]}.")
        out.table(
            table,
            f"run_{name}",
            hide=same,
            empty="No exports or timings recorded for this run (`edgevit benchmark RUN` makes them).",
        )


def accuracy_latency(ledger: D.LedgerData, out: Output, budget_ms: float | None = None) -> pd.DataFrame:
    """Per target: the scatter with its Pareto front, then the front as a table; returns the points."""
    pts = D.points(ledger)
    if pts.empty:
        out.markdown(
            "*No export has both a runtime top-1 and a latency yet: `edgevit export` then "
            "`edgevit profile`, or `edgevit benchmark RUN`, record both.*"
        )
        return pts
    for target in dict.fromkeys(pts["target"]):
        out.markdown(f"### Target `{target}`")
        out.figure(P.accuracy_latency(pts, target, budget_ms), f"accuracy_latency_{target}")
        out.table(D.pareto_table(pts, target), f"pareto_{target}")
    if budget_ms is not None:
        out.markdown(f"### Best top-1 within {budget_ms:g} ms (median), per target")
        out.table(
            D.best_under_budget(pts, budget_ms), "best_under_budget", empty=f"No export runs within {budget_ms:g} ms."
        )
    return pts


def searches(ledger: D.LedgerData, out: Output) -> list[dict]:
    """Each latency-budget search: what it explored, its finalists, its budgets and picks; returns them."""
    found = D.searches(ledger)
    if not found:
        out.markdown("*No latency-budget search recorded (`edgevit compress RUN --target T --latency-budget MS`).*")
    for s in found:
        out.markdown(f"### Search `{s['run']}` (from `{s.get('parent')}`) on `{s.get('target')}`")
        explored, finalists = D.search_explored(ledger, s["run"]), D.search_finalists(s)
        out.figure(P.search_front(explored, finalists, s), f"search_{s['run']}")
        out.table(D.search_picks(s), f"search_picks_{s['run']}")
    return found


def training(ledger: D.LedgerData, out: Output, selected: list[str] | None = None) -> None:
    """Loss components and top-1 per epoch for the selected runs (default: the newest runs with evals)."""
    frame = D.curves(ledger, selected)
    names = list(dict.fromkeys(frame["run"]))
    if selected is None and len(names) > MAX_CURVES:
        out.markdown(f"*The newest {MAX_CURVES} of {len(names)} runs; set `selected_runs` for others.*")
        names = names[-MAX_CURVES:]
    if not names:
        out.markdown("*No per-epoch evaluations recorded.*")
        return
    out.figure(P.training_curves(frame, names), "training_curves")
    out.table(frame[frame["run"].isin(names)], "training_curves", show=False)


def distillation(ledger: D.LedgerData, out: Output, dataset: str | None = None) -> pd.DataFrame:
    """Distilled vs not distilled (and every other setting), mean ± std over seeds, per comparable config."""
    runs_ = D.distillation_runs(ledger, dataset)
    summary = D.settings_summary(runs_)
    if summary.empty:
        out.markdown("*No finished distillation runs recorded.*")
        return summary
    gains = D.distillation_gains(summary)
    if gains.empty:
        out.markdown(
            "*No config has both a run without distillation and a distilled run yet, so the gain "
            "cannot be measured (`edgevit distill --distillation none` with the same recipe).*"
        )
    else:
        for _, g in gains.iterrows():
            out.markdown(
                f"**{g['config']}**: {g['best_setting']} reached **{g['best_top1_%']:.2f} %** vs "
                f"**{g['none_top1_%']:.2f} %** without distillation (**{g['gain_pt']:+.2f} pt**)."
            )
    one = summary["config"].nunique() == 1  # then the config is said once, above, not on every row
    out.table(summary, f"distillation_{slug(dataset or 'all')}", hide=["config"] if one else None)
    out.figure(P.settings_bars(summary, runs_), f"distillation_{slug(dataset or 'all')}")
    return summary


def pruning(ledger: D.LedgerData, out: Output) -> pd.DataFrame:
    """Each pruned run against its parent: size, compute, latency and accuracy."""
    pairs = D.pruning_pairs(ledger)
    if pairs.empty:
        out.markdown("*No pruned runs recorded (runs of kind `prune` with a parent).*")
        return pairs
    out.table(pairs, "pruning")
    out.figure(P.pruning_bars(pairs), "pruning")
    return pairs


def study_curves(ledger: D.LedgerData, out: Output, dataset: str | None = None) -> None:
    """Held-out top-1 per epoch, mean over seeds per setting: how fast each setting learns."""
    runs_ = D.distillation_runs(ledger, dataset)
    frame = D.curves(ledger, list(runs_["run"]))
    if frame.empty or "val_top1" not in frame:
        out.markdown("*No per-epoch evaluations recorded for these runs.*")
        return
    for config, grp in runs_.groupby("config", sort=False):
        out.figure(P.settings_curves(frame, grp), f"study_curves_{config}")
