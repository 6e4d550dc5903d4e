"""The runs ledger as pandas frames, and the tables the reports show.

Reports read only the ledger (``runs/ledger.sqlite``) through :class:`edgevit.runs.Ledger`, which
checks the file and brings an older ledger to the current schema, so everything here is written for
schema v2. A runs folder without a ledger gives empty frames (a report never creates a ledger).
No torch here: a report runs where only pandas and matplotlib are installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from edgevit.runs import LEDGER_FILE, SCHEMA_VERSION, Ledger
from edgevit.vocab import BASELINE

SETTINGS = ("none", "hard", "soft", "self", "ensemble")  # the distillation study's settings, in order

COLUMNS: dict[str, list[str]] = {
    "runs": ["id", "name", "kind", "status", "reason", "parent", "path", "recipe", "summary", "created", "updated"],
    "evals": ["id", "run", "epoch", "split", "metrics", "created"],
    "exports": [
        "id",
        "run",
        "target",
        "format",
        "precision",
        "scheme",
        "method",
        "path",
        "size_bytes",
        "seconds",
        "verified",
        "agreement",
        "max_abs_diff",
        "top1",
        "note",
        "extra",
        "created",
    ],
    "profiles": [
        "id",
        "run",
        "export_id",
        "target",
        "format",
        "precision",
        "runtime",
        "device",
        "threads",
        "batch",
        "iterations",
        "warmup",
        "median_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "throughput",
        "peak_mem_mb",
        "load_ms",
        "extra",
        "created",
    ],
}
_JSON = {"recipe", "summary", "metrics", "extra"}


@dataclass
class LedgerData:
    """The four ledger tables and why they may be empty."""

    path: Path
    runs: pd.DataFrame
    evals: pd.DataFrame
    exports: pd.DataFrame
    profiles: pd.DataFrame
    version: int | None = None
    problem: str | None = None  # "No runs ledger at ...", "... has no runs yet"

    @property
    def empty(self) -> bool:
        return self.runs.empty and self.exports.empty and self.profiles.empty


# ------------------------------------------------------------------------------------ reading
def read_ledger(runs_dir: str | Path) -> LedgerData:
    """Every row of ``runs_dir/ledger.sqlite``; a missing or empty ledger gives empty frames and a `problem`."""
    path = Path(runs_dir) / LEDGER_FILE
    if not path.is_file() or path.stat().st_size == 0:
        frames = {t: pd.DataFrame(columns=c) for t, c in COLUMNS.items()}
        return LedgerData(
            path,
            **frames,
            problem=f"No runs ledger at {path}: nothing has been recorded in this "
            "runs folder yet (run `edgevit distill` first)",
        )
    led = Ledger(runs_dir)  # a damaged file is one EdgevitError line here
    rows = {"runs": led.runs(), "evals": led.evals(), "exports": led.exports(), "profiles": led.profiles()}
    data = LedgerData(
        path, **{t: _frame(t, r) for t, r in rows.items()}, version=SCHEMA_VERSION
    )  # Ledger() migrated it
    if data.empty:
        data.problem = f"The runs ledger {path} has no runs yet (run `edgevit distill` first)"
    return data


def _frame(table: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with every column of the table; JSON columns as dicts ({} for NULL)."""
    df = pd.DataFrame(rows, columns=COLUMNS[table])
    for col in _JSON & set(df.columns):
        df[col] = df[col].map(lambda v: v if isinstance(v, dict) else {})
    return df


def _has(value: Any) -> bool:
    """Not None and not NaN: pandas gives either for an SQL NULL, depending on the column."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# ------------------------------------------------------------------------------------ runs
def summary_of(data: LedgerData, run: str) -> dict[str, Any]:
    row = data.runs[data.runs["name"] == run]
    return dict(row.iloc[-1]["summary"]) if len(row) else {}


def recipe_of(data: LedgerData, run: str) -> dict[str, Any]:
    row = data.runs[data.runs["name"] == run]
    return dict(row.iloc[-1]["recipe"]) if len(row) else {}


def run_names(data: LedgerData) -> list[str]:
    """Runs in the order they were created, then runs that only have exports or profiles."""
    names = list(data.runs["name"])
    for frame in (data.exports, data.profiles, data.evals):
        names += [n for n in frame["run"] if n not in names]
    return list(dict.fromkeys(names))


def teachers_text(summary: dict, recipe: dict) -> str:
    """'resnet18 (96.7 %)', several joined with ' + '; '-' for no distillation."""
    if (summary.get("distillation") or recipe.get("distill", {}).get("type")) == "none":
        return "-"
    teachers = summary.get("teachers") or [{"name": n} for n in recipe.get("teacher", {}).get("names", [])]
    parts = []
    for t in teachers:
        t = t if isinstance(t, dict) else {"name": str(t)}
        acc = t.get("val_top1")
        parts.append(f"{t.get('name', '?')}" + (f" ({acc:.1f} %)" if isinstance(acc, (int, float)) else ""))
    return " + ".join(parts) or "-"


def run_overview(data: LedgerData) -> pd.DataFrame:
    """One row per run: what it is and what it reached in PyTorch."""
    rows = []
    for _, r in data.runs.iterrows():
        s, rec = r["summary"], r["recipe"]
        rows.append(
            {
                "run": r["name"],
                "kind": r["kind"],
                "status": r["status"],
                "parent": r["parent"],
                "student": s.get("student") or rec.get("student", {}).get("name"),
                "teachers": teachers_text(s, rec),
                "distillation": setting_of(s, rec)[1],
                "epochs": s.get("epochs") or rec.get("epochs"),
                "seed": rec.get("seed"),
                "params_M": s.get("params_m"),
                "MACs_G": s.get("macs_g"),
                "pytorch_top1_%": s.get("val_top1"),
                "train_s": s.get("train_seconds"),
                "reason": r["reason"],
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "run",
            "kind",
            "status",
            "parent",
            "student",
            "teachers",
            "distillation",
            "epochs",
            "seed",
            "params_M",
            "MACs_G",
            "pytorch_top1_%",
            "train_s",
            "reason",
        ],
    )
    return _drop_empty(out, keep=["run", "kind", "status", "student", "pytorch_top1_%"])


def run_facts(data: LedgerData, run: str) -> dict[str, Any]:
    """The heading of a run's table: teachers, student, distillation, size, PyTorch top-1."""
    s, rec = summary_of(data, run), recipe_of(data, run)
    row = data.runs[data.runs["name"] == run]
    r: Any = row.iloc[-1] if len(row) else {}
    facts = {
        "kind": r.get("kind"),
        "status": r.get("status"),
        "parent": r.get("parent"),
        "reason": r.get("reason"),
        "student": s.get("student") or rec.get("student", {}).get("name"),
        "teachers": teachers_text(s, rec),
        "distillation": setting_of(s, rec)[1],
        "data": _data_text(rec),
        "epochs": s.get("epochs") or rec.get("epochs"),
        "params": None if s.get("params_m") is None else f"{s['params_m']:.3f} M",
        "MACs": None if s.get("macs_g") is None else _macs_text(s["macs_g"]),
        "PyTorch top-1": None if s.get("val_top1") is None else f"{s['val_top1']:.2f} %",
    }
    return {k: v for k, v in facts.items() if _has(v) and v != ""}


def _macs_text(gmacs: float) -> str:
    return f"{gmacs:.3f} G" if gmacs >= 1 else f"{gmacs * 1000:.1f} M"


def _data_text(recipe: dict) -> str | None:
    d = recipe.get("data") or {}
    return f"{d['spec']} at {d.get('img_size', '?')} px" if d.get("spec") else None


# ------------------------------------------------------------------------------------ exports + profiles
def _latest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest row per key (rows are in id order, so the last one wins)."""
    if df.empty:
        return df
    key = ["|".join(map(str, row)) for row in df[keys].itertuples(index=False)]
    return df.assign(_k=key).drop_duplicates("_k", keep="last").drop(columns="_k")


def profiles_linked(data: LedgerData) -> pd.DataFrame:
    """Profiles with a `baseline` flag (PyTorch, no export) and the benchmark's pick and reason."""
    p = data.profiles.copy()
    if p.empty:
        return p.assign(baseline=pd.Series(dtype=bool))
    p["baseline"] = [not _has(e) and BASELINE in (f, t) for e, f, t in zip(p["export_id"], p["format"], p["target"])]
    p["pick"] = p["extra"].map(lambda x: (x.get("benchmark") or {}).get("pick"))
    p["why"] = p["extra"].map(lambda x: (x.get("benchmark") or {}).get("why"))
    return p


def _baseline_for(profile: pd.Series, base: pd.DataFrame) -> pd.Series | None:
    """The PyTorch FP32 timing to compare with: same run and device, same threads and batch when there is one."""
    mine = base[base["run"] == profile["run"]]
    for keys in (["device", "threads", "batch"], ["device", "batch"], ["device"]):
        m = mine
        for k in keys:
            m = m[m[k].map(str) == str(profile[k])]
        if len(m):
            return m.iloc[-1]
    return None


TABLE_COLUMNS = [
    "target",
    "format",
    "precision",
    "scheme",
    "method",
    "size_MB",
    "top1_%",
    "agreement_%",
    "max_abs_diff",
    "verified",
    "median_ms",
    "p90_ms",
    "speedup_vs_pytorch_fp32",
    "pick",
    "why",
    "runtime",
    "device",
    "threads",
    "note",
]


def export_rows(data: LedgerData, run: str | None = None) -> pd.DataFrame:
    """One row per export (newest per target/precision/scheme/method) and device+threads it was timed on,
    with the PyTorch FP32 baseline first; `run` None gives every run's rows with a `run` column."""
    ex = _latest(data.exports, ["run", "target", "precision", "scheme", "method"])
    prof = profiles_linked(data)
    base = prof[prof["baseline"]] if len(prof) else prof
    timed = _latest(prof[~prof["baseline"]], ["export_id", "device", "threads", "batch"]) if len(prof) else prof
    rows = []
    for name in [run] if run is not None else run_names(data):
        top1 = summary_of(data, name).get("val_top1")
        for _, b in _latest(base[base["run"] == name], ["device", "threads", "batch"]).iterrows() if len(base) else []:
            rows.append(
                {
                    "run": name,
                    "target": BASELINE,
                    "format": BASELINE,
                    "precision": "fp32",
                    "top1_%": top1,
                    "agreement_%": 100.0,
                    "median_ms": b["median_ms"],
                    "p90_ms": b["p90_ms"],
                    "speedup_vs_pytorch_fp32": 1.0,
                    "runtime": b["runtime"],
                    "device": b["device"],
                    "threads": b["threads"],
                    "pick": b["pick"],
                    "why": b["why"],
                    "profile_id": b["id"],
                }
            )
        for _, e in ex[ex["run"] == name].iterrows():
            common = {
                "run": name,
                "target": e["target"],
                "format": e["format"],
                "precision": e["precision"],
                "scheme": e["scheme"],
                "method": e["method"],
                "size_MB": e["size_bytes"] / 1e6 if _has(e["size_bytes"]) else None,
                "top1_%": e["top1"],
                "agreement_%": e["agreement"],
                "max_abs_diff": e["max_abs_diff"],
                "verified": None if not _has(e["verified"]) else bool(e["verified"]),
                "note": e["note"] if _has(e["note"]) and e["note"] else None,
                "export_id": e["id"],
            }
            mine = timed[timed["export_id"] == e["id"]] if len(timed) else timed
            if mine.empty:
                rows.append(common)
            for _, p in mine.iterrows():
                b = _baseline_for(p, base) if len(base) else None
                speed = b["median_ms"] / p["median_ms"] if b is not None and p["median_ms"] else None
                rows.append(
                    {
                        **common,
                        "median_ms": p["median_ms"],
                        "p90_ms": p["p90_ms"],
                        "speedup_vs_pytorch_fp32": speed,
                        "pick": p["pick"],
                        "why": p["why"],
                        "runtime": p["runtime"],
                        "device": p["device"],
                        "threads": p["threads"],
                        "profile_id": p["id"],
                    }
                )
    cols = ["run", *TABLE_COLUMNS, "export_id", "profile_id"]
    out = pd.DataFrame(rows, columns=cols)
    out["pick"] = out["pick"].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v))
    return out


def run_table(data: LedgerData, run: str) -> pd.DataFrame:
    """The per-run table: PyTorch first, then each export; columns nobody filled are left out."""
    rows = export_rows(data, run).drop(columns=["run", "export_id", "profile_id"])
    return _drop_empty(rows, keep=["target", "format", "precision", "top1_%", "median_ms"])


def _drop_empty(df: pd.DataFrame, keep: list[str]) -> pd.DataFrame:
    return df[[c for c in df.columns if c in keep or df[c].notna().any()]]


# ------------------------------------------------------------------------------------ accuracy vs latency
def points(data: LedgerData) -> pd.DataFrame:
    """Exports with both a runtime top-1 and a latency: the scatter's points, with a label and the parent's point."""
    rows = export_rows(data)
    pts = rows[(rows["target"] != BASELINE) & rows["top1_%"].notna() & rows["median_ms"].notna()].copy()
    if pts.empty:
        return pts.assign(label=pd.Series(dtype=str), parent=None, parent_point=None)
    pts["label"] = [_point_label(r) for _, r in pts.iterrows()]
    parents = dict(zip(data.runs["name"], data.runs["parent"]))
    pts["parent"] = pts["run"].map(parents)
    pts["parent_point"] = [_parent_point(r, pts) for _, r in pts.iterrows()]
    return pts.reset_index(drop=True)


def _point_label(r: pd.Series) -> str:
    how = "-".join(str(v) for v in (r["precision"], r["scheme"], r["method"]) if _has(v) and v)
    return f"{r['run']} · {how}"


def _parent_point(r: pd.Series, pts: pd.DataFrame) -> tuple[float, float] | None:
    """Where the parent run sits on the same target and device: same precision, else its FP32."""
    if not _has(r["parent"]):
        return None
    mine = pts[(pts["run"] == r["parent"]) & (pts["target"] == r["target"]) & (pts["device"] == r["device"])]
    for prec in (r["precision"], "fp32"):
        m = mine[mine["precision"] == prec]
        if len(m):
            return float(m.iloc[0]["median_ms"]), float(m.iloc[0]["top1_%"])
    return None


def pareto_mask(latency: pd.Series, accuracy: pd.Series) -> pd.Series:
    """True for points no other point beats: nothing is at least as fast and as accurate, and better in one."""
    lat, acc = latency.to_numpy(float), accuracy.to_numpy(float)
    keep = [not any((lat <= lat[i]) & (acc >= acc[i]) & ((lat < lat[i]) | (acc > acc[i]))) for i in range(len(lat))]
    return pd.Series(keep, index=latency.index)


def pareto_table(pts: pd.DataFrame, target: str) -> pd.DataFrame:
    """The front for one target, fastest first: the best accuracy for a budget is the last row within it."""
    t = pts[pts["target"] == target]
    front = t[pareto_mask(t["median_ms"], t["top1_%"])].sort_values("median_ms")
    return front[
        [
            "median_ms",
            "p90_ms",
            "top1_%",
            "run",
            "format",
            "precision",
            "scheme",
            "method",
            "size_MB",
            "device",
            "threads",
        ]
    ].pipe(_drop_empty, keep=["median_ms", "top1_%", "run", "format", "precision"])


def best_under_budget(pts: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    """Per target, the most accurate point whose median latency is within the budget (edgevit.choose's rule)."""
    from edgevit.choose import most_accurate_within

    cols = ["target", "run", "format", "precision", "scheme", "method", "top1_%", "median_ms", "p90_ms"]
    chosen = most_accurate_within(pts.to_dict("records"), budget_ms, top1="top1_%")
    return pd.DataFrame(chosen, columns=pts.columns)[cols].pipe(_drop_empty, keep=["target", "run", "top1_%"])


# ------------------------------------------------------------------------------------ training curves
def _metric_name(key: str, split: str, metrics: dict) -> str:
    """v2 names: val_top1, val_loss, train_loss, train_task_loss, train_distill_loss, train_top1, lr, ...

    Prefixed keys are kept; the train loss components are train_ wherever they appear; v1 stored
    the val split's numbers bare (top1, loss), v2 stores a bare loss next to its components.
    """
    if key.startswith(("train_", "val_")) or key == "lr":
        return key
    if key in ("task_loss", "distill_loss", "img_s", "seconds"):
        return f"train_{key}"
    if key == "loss" and ("task_loss" in metrics or "distill_loss" in metrics):
        return "train_loss"
    return f"{split or 'val'}_{key}"


def curves(data: LedgerData, runs: list[str] | None = None) -> pd.DataFrame:
    """One row per run and epoch, one column per metric (train_loss, train_task_loss, val_top1, ...)."""
    ev = data.evals
    if runs is not None:
        ev = ev[ev["run"].isin(runs)]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for _, e in ev.iterrows():
        if e["epoch"] is None:
            continue
        row = rows.setdefault((e["run"], int(e["epoch"])), {"run": e["run"], "epoch": int(e["epoch"])})
        for k, v in (e["metrics"] or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[_metric_name(k, e["split"], e["metrics"])] = float(v)
    out = pd.DataFrame(list(rows.values()))
    if out.empty:
        return pd.DataFrame(columns=["run", "epoch"])
    return out.sort_values(["run", "epoch"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------ distillation, pruning
def setting_of(summary: dict, recipe: dict) -> tuple[str, str]:
    """(setting, detail): setting is one of SETTINGS; detail names teachers, alpha and tau."""
    d = recipe.get("distill") or {}
    kind = summary.get("distillation") or d.get("type") or "none"
    names = [t.get("name") if isinstance(t, dict) else str(t) for t in summary.get("teachers") or []]
    names = names or list((recipe.get("teacher") or {}).get("names") or [])
    if kind == "none":
        return "none", "none"
    setting = "self" if "self" in names else "ensemble" if len(names) > 1 else kind
    knobs = f"τ={d['tau']:g}" if kind == "soft" and "tau" in d else f"α={d['alpha']:g}" if "alpha" in d else ""
    return setting, " ".join(filter(None, [kind, knobs, "from", " + ".join(names) or "?"]))


def _config_text(summary: dict, recipe: dict) -> str:
    """What must match for runs to be compared: student (and its size), data, image size, epochs."""
    st = recipe.get("student") or {}
    kw = ", ".join(f"{k}={v}" for k, v in sorted((st.get("kwargs") or {}).items()))
    student = (summary.get("student") or st.get("name") or "?") + (f" ({kw})" if kw else "")
    return f"{student}, {_data_text(recipe) or '?'}, {summary.get('epochs') or recipe.get('epochs')} epochs"


def distillation_runs(data: LedgerData, dataset: str | None = None) -> pd.DataFrame:
    """Finished distill runs with their setting, comparable-config label, seed and top-1."""
    rows = []
    for _, r in data.runs.iterrows():
        s, rec = r["summary"], r["recipe"]
        if (_has(r["kind"]) and r["kind"] != "distill") or r["status"] != "done" or s.get("val_top1") is None:
            continue
        if dataset is not None and (rec.get("data") or {}).get("spec") != dataset:
            continue
        setting, detail = setting_of(s, rec)
        rows.append(
            {
                "config": _config_text(s, rec),
                "setting": setting,
                "detail": detail,
                "seed": rec.get("seed"),
                "run": r["name"],
                "top1_%": s["val_top1"],
                "wall_s": s.get("wall_seconds"),
                "teacher_top1_%": _mean([t.get("val_top1") for t in s.get("teachers") or [] if isinstance(t, dict)]),
            }
        )
    out = pd.DataFrame(
        rows, columns=["config", "setting", "detail", "seed", "run", "top1_%", "wall_s", "teacher_top1_%"]
    )
    order = out["setting"].map({s: i for i, s in enumerate(SETTINGS)})
    return (
        out.assign(_o=order)
        .sort_values(["config", "_o", "detail", "seed"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def _mean(values: list[Any]) -> float | None:
    v = [x for x in values if isinstance(x, (int, float))]
    return sum(v) / len(v) if v else None


def settings_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per config and setting (std blank with one seed), with the gain over `none`."""
    if runs.empty:
        return pd.DataFrame(
            columns=[
                "config",
                "setting",
                "detail",
                "seeds",
                "top1_mean_%",
                "top1_std_%",
                "per_seed_%",
                "gain_vs_none_pt",
                "teacher_top1_%",
                "wall_s_mean",
            ]
        )
    g = runs.groupby(["config", "setting", "detail"], sort=False)
    out = g.agg(
        seeds=("top1_%", "size"),
        top1_mean=("top1_%", "mean"),
        top1_std=("top1_%", "std"),
        teacher=("teacher_top1_%", "mean"),
        wall=("wall_s", "mean"),
    ).reset_index()
    out["per_seed_%"] = [", ".join(f"{v:.2f}" for v in grp["top1_%"]) for _, grp in g]
    none = out[out["setting"] == "none"].set_index("config")["top1_mean"]
    out["gain_vs_none_pt"] = [
        m - none[c] if c in none.index and s != "none" else None
        for c, s, m in zip(out["config"], out["setting"], out["top1_mean"])
    ]
    out["order"] = out["setting"].map({s: i for i, s in enumerate(SETTINGS)})
    out = out.sort_values(["config", "order", "detail"]).drop(columns="order")
    out = out.rename(
        columns={
            "top1_mean": "top1_mean_%",
            "top1_std": "top1_std_%",
            "teacher": "teacher_top1_%",
            "wall": "wall_s_mean",
        }
    )
    return out[
        [
            "config",
            "setting",
            "detail",
            "seeds",
            "top1_mean_%",
            "top1_std_%",
            "per_seed_%",
            "gain_vs_none_pt",
            "teacher_top1_%",
            "wall_s_mean",
        ]
    ].reset_index(drop=True)


def distillation_gains(summary: pd.DataFrame) -> pd.DataFrame:
    """Configs that have both a `none` and a distilled setting: what the best distillation bought."""
    rows = []
    for config, grp in summary.groupby("config", sort=False):
        none, dist = grp[grp["setting"] == "none"], grp[grp["setting"] != "none"]
        if none.empty or dist.empty:
            continue
        best = dist.sort_values("top1_mean_%", ascending=False).iloc[0]
        rows.append(
            {
                "config": config,
                "none_top1_%": none.iloc[0]["top1_mean_%"],
                "best_setting": best["detail"],
                "best_top1_%": best["top1_mean_%"],
                "gain_pt": best["gain_vs_none_pt"],
            }
        )
    return pd.DataFrame(rows, columns=["config", "none_top1_%", "best_setting", "best_top1_%", "gain_pt"])


def pruning_pairs(data: LedgerData) -> pd.DataFrame:
    """Each pruned run next to its parent: params, MACs, PyTorch top-1 and PyTorch FP32 latency."""
    base = profiles_linked(data)
    base = base[base["baseline"]] if len(base) else base
    rows = []
    for _, r in data.runs[(data.runs["kind"] == "prune") & data.runs["parent"].notna()].iterrows():
        child, parent = r["summary"], summary_of(data, r["parent"])
        ms = {n: _median_baseline(base, n) for n in (r["parent"], r["name"])}
        rows.append(
            {
                "pruned": r["name"],
                "parent": r["parent"],
                "params_M_parent": parent.get("params_m"),
                "params_M_pruned": child.get("params_m"),
                "MACs_G_parent": parent.get("macs_g"),
                "MACs_G_pruned": child.get("macs_g"),
                "top1_%_parent": parent.get("val_top1"),
                "top1_%_pruned": child.get("val_top1"),
                "pytorch_ms_parent": ms[r["parent"]],
                "pytorch_ms_pruned": ms[r["name"]],
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "pruned",
            "parent",
            "params_M_parent",
            "params_M_pruned",
            "MACs_G_parent",
            "MACs_G_pruned",
            "top1_%_parent",
            "top1_%_pruned",
            "pytorch_ms_parent",
            "pytorch_ms_pruned",
        ],
    )
    num = out.columns[2:]
    out[num] = out[num].apply(pd.to_numeric, errors="coerce")
    out["top1_change_pt"] = out["top1_%_pruned"] - out["top1_%_parent"]
    out["speedup"] = out["pytorch_ms_parent"] / out["pytorch_ms_pruned"]
    return out


def _median_baseline(base: pd.DataFrame, run: str) -> float | None:
    mine = base[base["run"] == run] if len(base) else base
    return float(mine.iloc[-1]["median_ms"]) if len(mine) else None


# ------------------------------------------------------------------------------------ latency-budget searches
def searches(data: LedgerData) -> list[dict[str, Any]]:
    """Each finished `edgevit compress` run's summary (target, budgets with pick and finalists, margin)."""
    done = data.runs[(data.runs["kind"] == "search") & (data.runs["status"] == "done")]
    return [{**r["summary"], "run": r["name"]} for _, r in done.iterrows() if r["summary"].get("budgets")]


def search_explored(data: LedgerData, run: str) -> pd.DataFrame:
    """Every (architecture, precision) a search timed: its median and its short-recovery top-1 estimate."""
    cols = ["candidate", "precision", "macs", "median_ms", "top1_%"]
    prof = data.profiles[data.profiles["run"] == run]
    rows = [
        [e["search"]["candidate"], prec, e["search"]["macs"], ms, e["search"]["top1"]]
        for prec, ms, e in zip(prof["precision"], prof["median_ms"], prof["extra"])
        if "search" in e and _has(ms) and _has(e["search"].get("top1"))
    ]
    return pd.DataFrame(rows, columns=cols).drop_duplicates(["candidate", "precision"], keep="last")


def search_finalists(summary: dict[str, Any]) -> pd.DataFrame:
    """Per budget, each recovered finalist re-measured at the end, and whether it is that budget's pick."""
    cols = ["budget_ms", "candidate", "precision", "remeasured_ms", "recovered_top1_%", "pick"]
    rows = []
    for b in summary.get("budgets", []):
        pick = b.get("pick") or {}
        for f in b.get("finalists", []):
            if _has(f.get("remeasured_ms")) and _has(f.get("recovered_top1")):
                chosen = (f["candidate"], f["precision"]) == (pick.get("candidate"), pick.get("precision"))
                rows.append(
                    [b["budget_ms"], f["candidate"], f["precision"], f["remeasured_ms"], f["recovered_top1"], chosen]
                )
    return pd.DataFrame(rows, columns=cols)


def search_picks(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per budget: what the search picked, measured how, and why."""
    cols = ["budget_ms", "pick", "precision", "description", "remeasured_ms", "recovered_top1_%", "met", "why"]
    rows = []
    for b in summary.get("budgets", []):
        p = b.get("pick") or {}
        ms = p.get("remeasured_ms")
        rows.append(
            [
                b["budget_ms"],
                p.get("candidate"),
                p.get("precision"),
                p.get("description"),
                ms,
                p.get("recovered_top1"),
                _has(ms) and ms <= b["budget_ms"],
                b.get("why"),
            ]
        )
    return pd.DataFrame(rows, columns=cols)
