"""Matplotlib figures for the reports, built from the frames in :mod:`edgevit.report.data`.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state), so a notebook or a script can
make many without leaking them; :class:`edgevit.report.output.Output` saves and shows them.
"""

from __future__ import annotations

import math
from itertools import cycle

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from edgevit.report.data import SETTINGS, pareto_mask

MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}
PRECISION_NAMES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


def _figure(width: float = 8.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def _colours(names: list[str]) -> dict[str, str]:
    palette = cycle([f"C{i}" for i in range(10)])
    return {n: next(palette) for n in dict.fromkeys(names)}


def _pad(ax, xs: list[float], ys: list[float]) -> None:
    """Room around the points so labels at the edges stay inside the axes."""
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or max(hi * 0.2, 0.1)
    ax.set_xlim(max(0.0, lo - 0.15 * span), hi + 0.45 * span)
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 2.0
    ax.set_ylim(lo - 0.2 * span, hi + 0.25 * span)


def accuracy_latency(points: pd.DataFrame, target: str, budget_ms: float | None = None) -> Figure:
    """Top-1 in the target's runtime against median latency for one target: every export, the Pareto
    front as a staircase (the best accuracy within each latency budget), derived runs linked to their parent."""
    pts = points[points["target"] == target]
    fig = _figure()
    ax = fig.add_subplot()
    colours = _colours(list(pts["run"]))
    for (run, prec), grp in pts.groupby(["run", "precision"], sort=False):
        ax.scatter(
            grp["median_ms"],
            grp["top1_%"],
            s=70,
            marker=MARKERS.get(prec, "X"),
            color=colours[run],
            edgecolor="black",
            linewidth=0.6,
            zorder=3,
        )
    for run, colour in colours.items():  # one legend entry per run (colour) and per precision (marker)
        ax.scatter([], [], s=70, marker="o", color=colour, edgecolor="black", linewidth=0.6, label=f"run {run}")
    for prec in dict.fromkeys(pts["precision"]):
        ax.scatter(
            [],
            [],
            s=70,
            marker=MARKERS.get(prec, "X"),
            color="white",
            edgecolor="black",
            linewidth=0.8,
            label=PRECISION_NAMES.get(prec, str(prec)),
        )
    for _, r in pts.iterrows():
        if isinstance(r["parent_point"], tuple):
            ax.annotate(
                "",
                xy=(r["median_ms"], r["top1_%"]),
                xytext=r["parent_point"],
                zorder=2,
                arrowprops={"arrowstyle": "->", "color": "0.45", "linestyle": "--", "linewidth": 1.0},
            )
    front = pts[pareto_mask(pts["median_ms"], pts["top1_%"])].sort_values("median_ms")
    if len(front):
        xs = [*front["median_ms"], ax.get_xlim()[1] * 10]
        ys = [*front["top1_%"], front["top1_%"].iloc[-1]]
        ax.step(xs, ys, where="post", color="black", linewidth=1.4, alpha=0.7, zorder=1, label="Pareto front")
    if pts["parent_point"].notna().any():
        ax.plot([], [], color="0.45", linestyle="--", label="derived from parent run")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="firebrick", linestyle=":", linewidth=1.3, label=f"budget {budget_ms:g} ms")
    _pad(ax, list(pts["median_ms"]) + ([budget_ms] if budget_ms else []), list(pts["top1_%"]))
    devices = ", ".join(sorted({str(d) for d in pts["device"].dropna()}))
    ax.set_title(f"{target}: accuracy vs latency" + (f"\n{devices}" if devices else ""), fontsize=11)
    ax.set_xlabel("median latency per batch (ms) — lower is better")
    ax.set_ylabel(f"top-1 in the {target} runtime (%) — higher is better")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    _place_labels(ax, list(pts["median_ms"]), list(pts["top1_%"]), list(pts["label"]))
    return fig


def search_front(explored: pd.DataFrame, finalists: pd.DataFrame, summary: dict) -> Figure:
    """One `edgevit compress` search: every timed candidate at its short-recovery estimate (grey), the
    recovered finalists at their re-measured medians, each budget with the margin kept under it, and
    each budget's pick (a star) - so a user sees what was explored, and why the pick won."""
    fig = _figure()
    ax = fig.add_subplot()
    for prec, grp in explored.groupby("precision", sort=False):
        ax.scatter(
            grp["median_ms"],
            grp["top1_%"],
            s=40,
            marker=MARKERS.get(prec, "X"),
            color="0.75",
            edgecolor="0.35",
            linewidth=0.5,
            zorder=2,
            label=f"explored {PRECISION_NAMES.get(prec, prec)} (estimate)",
        )
    margin = float(summary.get("margin") or 0.0)
    colours = _colours([str(b["budget_ms"]) for b in summary.get("budgets", [])])
    for b in summary.get("budgets", []):
        budget, colour = float(b["budget_ms"]), colours[str(b["budget_ms"])]
        ax.axvline(budget, color=colour, linestyle=":", linewidth=1.3, label=f"budget {budget:g} ms")
        ax.axvspan(budget * (1 - margin), budget, color=colour, alpha=0.08, zorder=0)
        mine = finalists[finalists["budget_ms"] == b["budget_ms"]]
        for chosen, grp in mine.groupby("pick"):
            ax.scatter(
                grp["remeasured_ms"],
                grp["recovered_top1_%"],
                s=260 if chosen else 70,
                marker="*" if chosen else "o",
                color=colour,
                edgecolor="black",
                linewidth=0.7,
                zorder=4,
                label=f"pick for {budget:g} ms" if chosen else f"finalists for {budget:g} ms (recovered)",
            )
    parent = summary.get("val_top1_parent")
    if parent is not None:
        ax.axhline(parent, color="black", linestyle="--", linewidth=1.0, alpha=0.6, label=f"parent {parent:.2f}%")
    xs = [*explored["median_ms"], *finalists["remeasured_ms"], *(b["budget_ms"] for b in summary.get("budgets", []))]
    ys = [*explored["top1_%"], *finalists["recovered_top1_%"], *([parent] if parent is not None else [])]
    _pad(ax, [float(x) for x in xs], [float(y) for y in ys])
    if xs and max(xs) > 20 * min(xs):  # budgets far from the points: a log axis keeps both readable
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    threads = summary.get("threads")
    ax.set_title(
        f"search {summary.get('run', '')}: {summary.get('target', '')} on {summary.get('device', '')}, "
        f"{threads} thread{'' if threads == 1 else 's'}\n(shaded: the {margin:.0%} margin kept under each budget)",
        fontsize=10,
    )
    ax.set_xlabel("median latency per batch (ms), timed in the target's runtime")
    ax.set_ylabel("top-1 in the runtime (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    return fig


# label offsets in points, tried in turn until the label overlaps no point and no earlier label
_OFFSETS = [
    (6, 5, "left"),
    (6, -11, "left"),
    (-6, 5, "right"),
    (-6, -11, "right"),
    (6, 15, "left"),
    (6, -21, "left"),
    (-6, 15, "right"),
    (-6, -21, "right"),
]


def _place_labels(ax, xs: list[float], ys: list[float], texts: list[str]) -> None:
    """Label each point where it does not cover another label or point (first free spot of a few)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(ax.figure).get_renderer()
    ax.figure.draw(renderer)  # settle the layout so the extents below are where the PNG will have them
    taken = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    taken = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in taken]
    for x, y, text in sorted(zip(xs, ys, texts), key=lambda t: (-t[1], t[0])):
        for i, (dx, dy, ha) in enumerate(_OFFSETS):
            label = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                fontsize=8,
                zorder=4,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7},
            )
            box = label.get_window_extent(renderer)
            if i == len(_OFFSETS) - 1 or not any(box.overlaps(t) for t in taken):
                taken.append(box)
                break
            label.remove()


CURVE_PANELS = [
    ("train_loss", "total loss (train)"),
    ("train_task_loss", "task loss (train)"),
    ("train_distill_loss", "distillation loss (train)"),
    ("val_loss", "loss (held-out)"),
    ("val_top1", "top-1 (held-out, %)"),
    ("train_top1", "top-1 (train, augmented, %)"),
]


def training_curves(frame: pd.DataFrame, runs: list[str]) -> Figure:
    """Loss components and accuracy per epoch, one panel per metric the ledger has, one line per run."""
    c = frame[frame["run"].isin(runs)]
    panels = [(col, title) for col, title in CURVE_PANELS if col in c and c[col].notna().any()]
    cols = 2 if len(panels) > 1 else 1
    rows = max(1, math.ceil(len(panels) / cols))
    fig = _figure(11.0, 0.8 + 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = _colours(runs)
    for ax, (col, title) in zip(axes, panels):
        for run in runs:
            r = c[c["run"] == run].sort_values("epoch")
            if r[col].notna().any():
                ax.plot(r["epoch"], r[col], marker="o", markersize=3, color=colours[run], label=run)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("%" if "top1" in col else "loss")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if panels:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="run")
    fig.suptitle("Training curves per epoch (from the ledger's evaluations)", fontsize=11)
    return fig


def settings_bars(summary: pd.DataFrame, runs: pd.DataFrame, title: str = "Distillation settings") -> Figure:
    """Mean top-1 per setting with ± std error bars and every seed as a dot, one panel per config."""
    configs = list(dict.fromkeys(summary["config"]))
    fig = _figure(9.0, 1.0 + 3.2 * max(1, len(configs)))
    axes = fig.subplots(max(1, len(configs)), 1, squeeze=False)[:, 0]
    colours = {s: f"C{i}" for i, s in enumerate(SETTINGS)}
    for ax, config in zip(axes, configs):
        s = summary[summary["config"] == config].reset_index(drop=True)
        ys = range(len(s))
        ax.barh(
            list(ys),
            s["top1_mean_%"],
            xerr=s["top1_std_%"].fillna(0),
            capsize=4,
            alpha=0.75,
            color=[colours.get(v, "C7") for v in s["setting"]],
            edgecolor="black",
            linewidth=0.5,
        )
        for y, (_, row) in zip(ys, s.iterrows()):
            seeds = runs[(runs["config"] == config) & (runs["detail"] == row["detail"])]["top1_%"]
            ax.scatter(seeds, [y] * len(seeds), color="black", s=14, zorder=3)
            std = f" ± {row['top1_std_%']:.2f}" if pd.notna(row["top1_std_%"]) else ""
            ax.text(
                row["top1_mean_%"],
                y + 0.32,
                f" {row['top1_mean_%']:.2f}{std} % (n={row['seeds']})",
                fontsize=8,
                va="center",
            )
        ax.set_yticks(
            list(ys),
            [
                f"{r['setting']}: {r['detail']}" if r["detail"] != r["setting"] else r["setting"]
                for _, r in s.iterrows()
            ],
            fontsize=8,
        )
        ax.invert_yaxis()
        lo = min(s["top1_mean_%"].min() - (s["top1_std_%"].fillna(0).max() or 0), runs["top1_%"].min())
        ax.set_xlim(0.0 if lo < 30 else lo - 10, min(100.0, s["top1_mean_%"].max() + 15))
        ax.set_xlabel("held-out top-1 (%), bar = mean over seeds, dots = seeds")
        ax.set_title(config, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return fig


def settings_curves(frame: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """Held-out top-1 per epoch for one config: per setting the mean over seeds, a band of ± std."""
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot()
    colours = {s: f"C{i}" for i, s in enumerate(SETTINGS)}
    order = {s: i for i, s in enumerate(SETTINGS)}
    groups = sorted(runs.groupby(["setting", "detail"], sort=False), key=lambda g: (order.get(g[0][0], 99), g[0][1]))
    for (setting, detail), grp in groups:
        c = frame[frame["run"].isin(grp["run"])].groupby("epoch")["val_top1"].agg(["mean", "std", "count"])
        if c.empty:
            continue
        colour = colours.get(setting, "C7")
        ax.plot(c.index, c["mean"], marker="o", markersize=3, color=colour, label=f"{detail} (n={len(grp)})")
        std = c["std"].fillna(0)
        ax.fill_between(c.index, c["mean"] - std, c["mean"] + std, color=colour, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title(f"{runs['config'].iloc[0]}\nmean over seeds, band = ± std", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pruning_bars(pairs: pd.DataFrame) -> Figure:
    """Each pruned run relative to its parent (parent = 1): params, MACs, PyTorch latency, and top-1."""
    fig = _figure(9.0, 1.2 + 2.2 * max(1, len(pairs)))
    axes = fig.subplots(max(1, len(pairs)), 1, squeeze=False)[:, 0]
    for ax, (_, p) in zip(axes, pairs.iterrows()):
        names, ratios = [], []
        for label, key in (
            ("params (M)", "params_M"),
            ("MACs (G)", "MACs_G"),
            ("PyTorch FP32 latency (ms)", "pytorch_ms"),
            ("top-1 (%)", "top1_%"),
        ):
            a, b = p[f"{key}_parent"], p[f"{key}_pruned"]
            if pd.notna(a) and pd.notna(b) and a:
                names.append(f"{label}\n{a:.3g} → {b:.3g}")
                ratios.append(b / a)
        ax.barh(names, ratios, color=["C0", "C1", "C2", "C3"][: len(names)], alpha=0.8)
        ax.axvline(1.0, color="black", linewidth=1)
        for y, r in enumerate(ratios):
            ax.text(r, y, f" {r:.2f}×", va="center", fontsize=8)
        ax.set_xlim(0, max([1.2, *ratios]) * 1.15)
        ax.set_xlabel("pruned / unpruned (1.0 = parent)")
        ax.set_title(f"{p['pruned']} (pruned from {p['parent']})", fontsize=9)
        ax.invert_yaxis()
    return fig
