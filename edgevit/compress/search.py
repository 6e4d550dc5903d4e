"""The compress stage: the most accurate pruned x precision candidate whose latency, measured on the
target, meets a budget -- a new run of kind `search` whose parent is the distilled run.

1. Architectures: a (depth, width) grid of the parent, pruned with Torch-Pruning (`space.py`).
2. Each gets a short recovery (`estimate_epochs`) from the run's teacher: its top-1 ranks it.
3. Precisions are screened on the largest and the smallest architecture: a float precision stays
   if it is the fastest float at either end, INT8 if it beats the fastest float at either end
   (slower and less exact on both ends, it cannot be a pick).
4. Every architecture x precision is exported, verified (its top-1 in the runtime) and timed on
   the target -- here or on the device -- unless the latency cache already has it.
5. Per budget, the `finalists` best-estimated architectures whose median leaves the margin the
   measured spread sets are recovered fully, exported again (an INT8 one through the accuracy-aware
   tuner, `int8: tune`) and re-timed side by side; the pick is the most accurate whose re-measured
   median meets the budget.

Everything lives under runs/<search>/candidates/<name>/ (a student.pt and its exports each, so any
candidate can be exported or profiled as a run); the pick of the first budget becomes the search
run's own student.pt and export. `resume=True` continues a killed search: built candidates,
exports and every latency in the cache are reused.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from edgevit import formats
from edgevit.choose import most_accurate_within
from edgevit.compress.latency import LatencyCache, device_key, margin, time_folders
from edgevit.compress.space import Arch, arch_key, architectures
from edgevit.config import CompressConfig, PruneConfig, Target, check_fields, load_target
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import EXPORTS_DIR, InputsCache, export_run
from edgevit.files import atomic_dir, atomic_path, read_json, write_json, write_text
from edgevit.models.checkpoint import STUDENT_FILE, load_student, save_student
from edgevit.paths import numbered_run_dir
from edgevit.profile.stage import Device, Timing
from edgevit.runs import Ledger, check_run_name

logger = logging.getLogger("edgevit.compress")
CANDIDATES = "candidates"
VERIFY_IMAGES = 2000
MIN_KEEP = 0.1  # the smallest width keep the grid extends to
EXTENSIONS = 3  # times the grid may grow at its small end when a budget is below every candidate
REMEASURES = 3  # final timings of the finalists, when a busy spell made every one miss its budget


@dataclass
class Row:
    """One explored (architecture, precision) point of the front."""

    candidate: str
    arch: str
    description: str
    macs: float
    params: int
    precision: str
    top1_estimate: float | None = None  # % in the runtime after the short recovery
    median_ms: float | None = None
    p90_ms: float | None = None
    spread: float | None = None
    cached: bool = False
    recovered_top1: float | None = None  # % in the runtime after full recovery (finalists)
    remeasured_ms: float | None = None  # the finalists' median, timed again at the end
    note: str = ""
    folder: str = ""


@dataclass
class Search:
    """The state of one search: its settings, what it has measured and where."""

    cfg: CompressConfig
    target: Target
    device: Device
    timing: Timing
    run_dir: Path
    cache: LatencyCache
    rows: list[Row] = field(default_factory=list)
    timed: int = 0
    reused: int = 0
    inputs: InputsCache = field(default_factory=lambda: InputsCache(VERIFY_IMAGES))

    def cache_key(self, row: Row) -> str:
        return self.cache.key(
            device_key(self.device),
            self.target.name,
            row.precision,
            self.timing.threads,
            self.timing.batch or 1,
            row.arch,
        )


# --------------------------------------------------------------------------------------- checks
def check_timeable(target: Target, device: Device) -> None:
    """One line when this target cannot be timed where asked, before any work."""
    fmt = formats.get(target.format)
    if device.local:
        if fmt.timer != "runtime":
            raise EdgevitError(
                f"{target.name} is timed by trtexec on its device, not here: give device ssh://user@host", "device"
            )
        ok, why = fmt.runtime_available()
        if not ok:
            raise EdgevitError(f"{target.name} cannot be timed here: {why}", "target")
        return
    from edgevit.profile.stage import ssh_runner

    ssh_runner(device, target).run(["true"], "connecting")  # unreachable or unknown host key: one line


def check_parent(parent_dir: Path) -> None:
    """The parent must be a finished run (a `running` or `failed` ledger row is not)."""
    rows = Ledger(parent_dir.parent).runs(parent_dir.name) if (parent_dir.parent / "ledger.sqlite").exists() else []
    if rows and rows[0]["status"] != "done":
        raise EdgevitError(
            f"run {parent_dir.name} is {rows[0]['status']}, not finished: finish it "
            f"(`edgevit distill --resume --out {parent_dir}`) before compressing it",
            "run",
        )


def _search_dir(parent_dir: Path, out: str | Path | None, resume: bool) -> Path:
    if resume and not out:
        raise EdgevitError("resume needs out: the folder of the search to continue", "resume")
    run_dir = Path(out) if out else numbered_run_dir(parent_dir.parent, f"{parent_dir.name}-search")
    check_run_name(run_dir.name)
    started = (run_dir / CANDIDATES).exists() or (run_dir / "search.json").exists()
    if resume and not started:
        raise EdgevitError(f"{run_dir} holds no search to resume: leave out resume to start one", "resume")
    if not resume and (started or (run_dir / STUDENT_FILE).exists()):
        raise EdgevitError(f"{run_dir} already holds a run: continue it with resume, or give another out", "out")
    return run_dir


# --------------------------------------------------------------------------------------- stage
def compress(
    run: str | Path,
    target: str | None = None,
    latency_budget_ms: float | list[float] | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    runs_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    progress: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Search pruned x precision candidates of a distilled run for the most accurate one within each
    latency budget, timed on `target`; a new run (kind `search`). Returns its summary.

    Args:
        run: a finished distill (or prune) run: its name in the runs folder, or its folder.
        target: the hardware target (name, alias or YAML path).
        latency_budget_ms: one budget or several (ms per image, the median on the target).
        out: the search's run folder (default: <runs>/<run>-search, numbered).
        resume: continue the search in `out`; nothing already built or timed is redone.
        options: the other `CompressConfig` fields (device: a URL, or a `Device` with SSH settings;
            threads, precisions, depths, keeps, round_to, estimate_epochs, recover_epochs, finalists,
            recover_teacher, max_drop, rounds, iterations, min_margin).

    Returns:
        The summary (also in summary.json and the ledger): per budget the pick and why, the counts
        of candidates timed and reused, the margin, and the wall time.
    """
    from edgevit.prune.pipeline import find_run

    dev = options.pop("device", None)
    given = {"target": target, "latency_budget_ms": latency_budget_ms, **options}
    if dev is not None:
        given["device"] = dev.url if isinstance(dev, Device) else dev
    cfg = check_fields(CompressConfig, {k: v for k, v in given.items() if v is not None}, "compress")
    if not cfg.target:
        raise EdgevitError("compress needs a target (a name from `edgevit targets`)", "target")
    if not cfg.latency_budget_ms:
        raise EdgevitError("compress needs latency_budget_ms: one or more budgets in ms, above 0", "latency_budget_ms")
    tgt = load_target(cfg.target)
    for p in cfg.precisions or []:
        if p not in tgt.precisions:
            raise EdgevitError(f"{tgt.name} offers {', '.join(tgt.precisions)}, not {p}", "precisions")
    from edgevit.profile.stage import _device_for

    device = _device_for(dev if isinstance(dev, Device) else Device(cfg.device), tgt)  # or the target's own
    check_timeable(tgt, device)
    parent_dir = find_run(run, runs_dir)
    check_parent(parent_dir)
    run_dir = _search_dir(parent_dir, out, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    timing = Timing(iterations=cfg.iterations, threads=cfg.threads or os.cpu_count() or 1)
    search = Search(cfg, tgt, device, timing, run_dir, LatencyCache(run_dir.parent))
    ledger = Ledger(run_dir.parent)
    with ledger.recording(
        run_dir.name, kind="search", path=run_dir, parent=parent_dir.name, recipe={"compress": cfg.model_dump()}
    ):
        summary = _search(search, parent_dir, ledger, log or logger.info, progress)
        ledger.record_run(run_dir.name, status="done", summary=summary)
    return summary


def _search(s: Search, parent_dir: Path, ledger: Ledger, log: Callable[[str], None], progress: Any) -> dict:
    from edgevit.data import build_datasets
    from edgevit.prune.pipeline import importance_batches, parent_recipe, recovery_recipe, recovery_teacher
    from edgevit.train import evaluate

    t0 = time.perf_counter()
    cfg = s.cfg
    student, meta = load_student(parent_dir)
    parent = parent_recipe(parent_dir)
    want_teacher = cfg.recover_teacher == "teacher" and (cfg.estimate_epochs or cfg.recover_epochs)
    if want_teacher and (parent is None or parent.distill.type == "none"):
        raise EdgevitError(
            f"run {parent_dir.name} has no teacher to recover from: use recover_teacher student or none",
            "recover_teacher",
        )
    prune_cfg = PruneConfig(recover_epochs=cfg.recover_epochs, recover_teacher=cfg.recover_teacher)
    recipe = recovery_recipe(parent, meta, prune_cfg, None)
    data = build_datasets(recipe.data, recipe.aug)
    plain = build_datasets(recipe.data, None, crop_pct=recipe.aug.crop_pct)
    parent_top1 = evaluate(student, data.val)["top1"]
    log(
        f"parent {parent_dir.name}: {parent_top1:.2f}% top-1; searching {s.target.name} with {s.timing.threads} threads"
    )
    who = cfg.recover_teacher if (cfg.estimate_epochs or cfg.recover_epochs) else "none"
    teacher, _, cache, rounds = recovery_teacher(who, parent, parent_dir, recipe, data, s.run_dir, log, progress)

    def recover(model: torch.nn.Module, epochs: int, folder: Path, label: str) -> None:
        from edgevit.prune.pipeline import recover as train

        if epochs:
            folder.mkdir(parents=True, exist_ok=True)
            train(model, teacher, recipe, data, epochs, folder, label, log, progress, cache, rounds)

    images = _val_tensors(plain.val)
    batches = importance_batches(plain, recipe.data.batch_size, recipe.seed)
    archs = _build(s, student, meta, images, batches, recover, evaluate, data, log)
    precisions = _screen(s, archs, log)  # its rows are the first of the front
    done = {(r.candidate, r.precision) for r in s.rows}
    for a in archs:
        s.rows += [_export_row(s, a, p, Path(a["folder"])) for p in precisions if (a["name"], p) not in done]
    _time(s, [r for r in s.rows if r.median_ms is None and not r.note], log)
    build = lambda depths, keeps: _build(s, student, meta, images, batches, recover, evaluate, data, log, depths, keeps)  # noqa: E731
    _extend(s, archs, precisions, build, student, log)
    for r in s.rows:
        _record(ledger, s, r, "search")
    m = margin([vars(r) for r in s.rows if r.spread is not None], cfg.min_margin)
    finals = _finalists(s, m)
    _recover_finalists(s, finals, archs, recover, student, meta, log)
    for attempt in range(1, REMEASURES + 1):  # a busy spell can make every finalist miss: measure again
        missed = [
            b for b in cfg.latency_budget_ms if attempt == 1 or _choose(s, b, finals[b], parent_top1, m)["pick"] is None
        ]
        if not missed:
            break
        _remeasure(s, [r for b in missed for r in finals[b]], log, attempt)
    budgets = [_choose(s, b, finals[b], parent_top1, m) for b in cfg.latency_budget_ms]
    for b in budgets:
        log(f"budget {b['budget_ms']:g} ms: {b['why']}")
    return _write(s, parent_dir, parent_top1, budgets, m, recipe, time.perf_counter() - t0)


def _val_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


def _build(
    s: Search, student, meta, images, batches, recover, evaluate, data, log, depths=None, keeps=None
) -> list[dict[str, Any]]:
    """Every architecture of the grid, built and briefly recovered once (candidate.json marks it done)."""
    root = s.run_dir / CANDIDATES
    done = {p.name for p in root.iterdir() if (p / "candidate.json").is_file()} if root.is_dir() else set()
    out = []
    for a in architectures(
        student,
        meta,
        depths or s.cfg.depths,
        keeps or s.cfg.keeps,
        images,
        batches,
        round_to=s.cfg.round_to,
        skip=done,
    ):
        folder = root / a.name
        if a.model is None:
            out.append(read_json(folder / "candidate.json", "search candidate", "delete its folder to rebuild it"))
            continue
        out.append(_candidate(a, folder, student, recover, evaluate, data, s.cfg.estimate_epochs, log))
    named = {a["name"] for a in out}
    for name in sorted(done - named):  # built by an earlier (extended) grid of this search: still explored
        info = read_json(root / name / "candidate.json", "search candidate", "delete its folder to rebuild it")
        out.append({**info, "extension": True})
    return out


def _candidate(a: Arch, folder: Path, student, recover, evaluate, data, epochs: int, log) -> dict[str, Any]:
    parent_arch = arch_key(a.model, int(a.meta["img_size"])) == arch_key(student, int(a.meta["img_size"]))
    model = copy.deepcopy(a.model)
    for p in model.parameters():
        p.grad = None
    if not parent_arch:
        recover(model, epochs, folder, f"estimate {a.name}")
    top1 = evaluate(model, data.val)["top1"]
    folder.mkdir(parents=True, exist_ok=True)
    save_student(folder / STUDENT_FILE, model, {**a.meta, "search_candidate": a.name})
    info = {
        "name": a.name,
        "arch": arch_key(model, int(a.meta["img_size"])),
        "description": a.description(),
        "depth": a.depth,
        "keep": a.keep,
        "macs": a.macs,
        "params": a.params,
        "top1_torch": top1,
        "parent_arch": parent_arch,
        "folder": str(folder),
    }
    write_json(folder / "candidate.json", info)  # last: its presence says the candidate is complete
    log(f"candidate {a.name}: {info['description']}, {a.macs / 1e6:.1f} M MACs, {top1:.2f}% after {epochs} epoch(s)")
    return info


def _export_row(s: Search, a: dict[str, Any], precision: str, folder: Path, count: bool = True) -> Row:
    """Export (or reuse) one candidate at one precision and verify it; the cache may hold its latency."""
    row = Row(a["name"], a["arch"], a["description"], a["macs"], a["params"], precision)
    art = folder / EXPORTS_DIR / s.target.name / precision
    try:
        if (art / "manifest.json").is_file():
            check = (read_json(art / "manifest.json", "export manifest", "delete the folder") or {}).get("verification")
        else:
            result = export_run(folder, s.target, precision, ledger=False, inputs=s.inputs)
            art, check = result.artifact.directory, result.verification.to_dict()
    except EdgevitError as exc:
        row.note = f"export failed: {exc}"
        logger.info("%s %s: %s", a["name"], precision, row.note)
        return row
    row.top1_estimate, row.folder = (check or {}).get("top1"), str(art)
    hit = s.cache.get(s.cache_key(row))
    if hit:
        row.median_ms, row.p90_ms, row.spread, row.cached = hit["median_ms"], hit["p90_ms"], hit["spread"], True
        s.reused += count
    return row


def _tuned_int8(s: Search, a: dict[str, Any], folder: Path) -> Row:
    """A finalist's INT8 through the accuracy-aware tuner, so the INT8 that competes for the pick keeps its
    accuracy (within int8_max_drop of its FP32); PTQ only estimated it. Reused when already tuned."""
    from edgevit.quantize import quantize

    row = Row(a["name"], a["arch"], a["description"], a["macs"], a["params"], "int8")
    tuned = folder / EXPORTS_DIR / s.target.name / "int8-tune"
    art = next((d for d in (tuned, tuned.with_name("int8-tune-missed")) if (d / "manifest.json").is_file()), None)
    try:
        if art is not None:  # a missed drop is kept under -missed: still this finalist's best INT8, measured
            check = (read_json(art / "manifest.json", "export manifest", "delete the folder") or {}).get("verification")
        else:
            result = quantize(folder, s.target, "tune", s.cfg.int8_max_drop, ledger=False, log=logger.info)
            art, check = result.artifact.directory, result.verification.to_dict()
    except EdgevitError as exc:
        row.note = f"int8 tune failed: {exc}"
        logger.info("%s int8: %s", a["name"], row.note)
        return row
    row.top1_estimate, row.folder = (check or {}).get("top1"), str(art)
    return row


def _extend(s: Search, archs: list[dict], precisions: list[str], build: Callable, student, log) -> None:
    """While a budget is below every timed candidate (plus the margin), add smaller architectures at the
    grid's small end -- half the fewest blocks, half the smallest keep -- and time them too."""
    for _ in range(EXTENSIONS):
        m = margin([vars(r) for r in s.rows if r.spread is not None], s.cfg.min_margin)
        times = [r.median_ms for r in s.rows if r.median_ms is not None]
        short = [b for b in s.cfg.latency_budget_ms if times and min(times) * (1 + m) > b]
        grid = _smaller(s.cfg.depths, s.cfg.keeps, _depth(student))
        if not short or grid is None:
            return
        log(f"budget(s) {short} ms below every candidate: adding depths {grid[0]} x keeps {grid[1]}")
        known = {a["name"] for a in archs}
        new = [a for a in build(*grid) if a["name"] not in known]
        archs += new
        s.cfg = s.cfg.model_copy(
            update={"depths": sorted({*s.cfg.depths, *grid[0]}), "keeps": sorted({*s.cfg.keeps, *grid[1]})}
        )
        s.rows += [_export_row(s, a, p, Path(a["folder"])) for a in new for p in precisions]
        _time(s, [r for r in s.rows if r.median_ms is None and not r.note], log)


def _depth(model) -> int | None:
    from edgevit.compress.space import n_blocks

    return n_blocks(model)


def _smaller(depths: list[float], keeps: list[float], n: int | None) -> tuple[list[float], list[float]] | None:
    """The grid's small corner and one step beyond it in depth and width, or None at the floor."""
    k_min = min(keeps)
    k_new = max(MIN_KEEP, round(k_min / 2, 2))
    d_min = min(depths)
    new_depths = [d_min]
    if n:
        fewest = max(1, round(d_min * n))
        if fewest > 1:
            new_depths.append(max(1, fewest // 2) / n)
    if k_new >= k_min and len(new_depths) == 1:
        return None
    return new_depths, sorted({k_min, k_new})


def _time(s: Search, rows: list[Row], log: Callable[[str], None]) -> None:
    """Time the rows the cache does not have, side by side, and add them to the cache."""
    if not rows:
        return
    log(f"timing {len(rows)} candidate(s) on {s.target.name} ({s.cfg.rounds} interleaved rounds)")
    entries = time_folders({s.cache_key(r): Path(r.folder) for r in rows}, s.target, s.device, s.timing, s.cfg.rounds)
    s.cache.put(entries)
    s.timed += len(entries)
    for r in rows:
        e = entries[s.cache_key(r)]
        r.median_ms, r.p90_ms, r.spread = e["median_ms"], e["p90_ms"], e["spread"]


def _screen(s: Search, archs: list[dict[str, Any]], log: Callable[[str], None]) -> list[str]:
    """The precisions worth searching, measured on the largest and the smallest architecture."""
    offered = list(s.cfg.precisions or s.target.precisions)
    if len(offered) == 1:
        return offered
    grid = [a for a in archs if not a.get("extension")]  # a resumed search screens as it first did
    ends = [grid[0], min(grid, key=lambda a: a["macs"])]
    ends = ends[:1] if ends[0]["name"] == ends[1]["name"] else ends
    rows = [_export_row(s, a, p, Path(a["folder"])) for a in ends for p in offered]
    _time(s, [r for r in rows if r.median_ms is None and not r.note], log)
    s.rows += rows
    keep: set[str] = set()
    for a in ends:
        timed = {r.precision: r.median_ms for r in rows if r.candidate == a["name"] and r.median_ms}
        floats = {p: ms for p, ms in timed.items() if p != "int8"}
        fastest = min(floats, key=floats.get) if floats else None
        keep |= {fastest} if fastest else set()
        if "int8" in timed and (fastest is None or timed["int8"] < floats[fastest]):
            keep.add("int8")
    chosen = [p for p in offered if p in keep] or offered
    log(f"precisions searched: {', '.join(chosen)} (of {', '.join(offered)}, timed on the largest and smallest)")
    return chosen


def _finalists(s: Search, m: float) -> dict[float, list[Row]]:
    """Per budget, the rows of the best-estimated architectures whose median leaves the margin."""
    out = {}
    timed = [r for r in s.rows if r.median_ms is not None and r.top1_estimate is not None]
    if not timed:
        raise EdgevitError(f"no candidate could be exported and timed on {s.target.name}", "target")
    fastest = min(timed, key=lambda r: r.median_ms)
    for budget in s.cfg.latency_budget_ms:
        fits = [r for r in timed if r.median_ms * (1 + m) <= budget]
        if not fits:
            raise EdgevitError(
                f"the fastest candidate found takes {fastest.median_ms:.3f} ms at {fastest.precision} "
                f"({fastest.description}); {budget:g} ms cannot be met on {s.target.name} with "
                f"{s.timing.threads} threads (margin {m:.0%})",
                "latency_budget_ms",
            )
        fits.sort(key=lambda r: (-r.top1_estimate, r.median_ms))
        chosen: list[Row] = []
        for r in fits:
            if r.candidate not in {c.candidate for c in chosen}:
                chosen.append(r)
            if len(chosen) == s.cfg.finalists:
                break
        out[budget] = chosen
    return out


def _recover_finalists(s: Search, finals, archs, recover, student, meta, log) -> None:
    """Full recovery of each finalist architecture (once), then its export at the finalist precision."""
    by_name = {a["name"]: a for a in archs}
    epochs = s.cfg.recover_epochs
    for rows in finals.values():
        for r in rows:
            a = by_name[r.candidate]
            folder = Path(a["folder"])
            if epochs and not a["parent_arch"]:
                folder = folder.with_name(f"{a['name']}-r{epochs}")
                if not (folder / STUDENT_FILE).is_file():
                    model, m = load_student(a["folder"])
                    recover(model.train(), epochs, folder, f"recover {a['name']}")
                    save_student(folder / STUDENT_FILE, model, {k: v for k, v in m.items() if k != "sha256"})
            tune = r.precision == "int8" and s.cfg.int8 == "tune" and formats.get(s.target.format).tuners
            done = _tuned_int8(s, a, folder) if tune else _export_row(s, a, r.precision, folder, count=False)
            r.recovered_top1, r.folder, r.note = done.top1_estimate, done.folder, done.note
            log(f"finalist {r.candidate} {r.precision}: {r.recovered_top1}% top-1 after {epochs} epochs")


def _remeasure(s: Search, rows: list[Row], log: Callable[[str], None], attempt: int = 1) -> None:
    """The finalists timed again, side by side, fresh (not from the cache): the pick's own numbers."""
    from edgevit.profile.stats import machine_load

    unique = {s.cache_key(r): r for r in rows if r.folder and not r.note}
    if not unique:
        return
    log(f"re-timing {len(unique)} finalist(s) (attempt {attempt} of {REMEASURES}, load {machine_load()})")
    entries = time_folders({k: Path(r.folder) for k, r in unique.items()}, s.target, s.device, s.timing, s.cfg.rounds)
    for r in rows:
        e = entries.get(s.cache_key(r))
        if e:
            r.remeasured_ms = e["median_ms"]


def _choose(s: Search, budget: float, rows: list[Row], parent_top1: float, margin_: float = 0.0) -> dict[str, Any]:
    """The most accurate finalist whose re-measured median meets the budget less the margin (else the
    budget itself), within the accuracy floor."""
    floor = parent_top1 - s.cfg.max_drop if s.cfg.max_drop is not None else None
    pool = [
        {"target": s.target.name, "top1": r.recovered_top1, "median_ms": r.remeasured_ms, "row": r}
        for r in rows
        if floor is None or (r.recovered_top1 or 0) >= floor
    ]
    best = most_accurate_within(pool, budget / (1 + margin_))  # the spread's margin kept, where one can be
    inside = not best
    best = best or most_accurate_within(pool, budget)
    if not best:
        why = "no finalist met the budget when re-measured" if pool else f"no finalist within {s.cfg.max_drop} points"
        return {"budget_ms": budget, "pick": None, "why": why, "finalists": [asdict(r) for r in rows]}
    r: Row = best[0]["row"]
    why = (
        f"pick {r.candidate} ({r.description}) at {r.precision}: {r.recovered_top1:.2f}% top-1, "
        f"{r.remeasured_ms:.3f} ms re-measured <= {budget:g} ms"
        + (f" (inside the {margin_:.0%} margin: no finalist left it free)" if inside else f" - {margin_:.0%} margin")
    )
    return {"budget_ms": budget, "pick": asdict(r), "why": why, "finalists": [asdict(x) for x in rows]}


def _record(ledger: Ledger, s: Search, r: Row, kind: str) -> None:
    if r.median_ms is None:
        return
    ledger.record_profile(
        s.run_dir.name,
        target=s.target.name,
        format=s.target.format,
        precision=r.precision,
        device=device_key(s.device),
        threads=s.timing.threads,
        batch=s.timing.batch or 1,
        median_ms=r.median_ms,
        p90_ms=r.p90_ms,
        extra={kind: {"candidate": r.candidate, "arch": r.arch, "macs": r.macs, "top1": r.top1_estimate}},
    )


def _write(s: Search, parent_dir: Path, parent_top1, budgets, m, recipe, seconds) -> dict[str, Any]:
    """search.json/csv, and the first budget's pick as the run's own student.pt and export."""
    first = budgets[0]["pick"]
    if first:
        src = Path(first["folder"]).parents[2]  # <candidate>/exports/<target>/<precision>
        with atomic_path(s.run_dir / STUDENT_FILE) as tmp:
            shutil.copyfile(src / STUDENT_FILE, tmp)
        with atomic_dir(s.run_dir / EXPORTS_DIR / s.target.name / first["precision"]) as tmp:
            shutil.copytree(first["folder"], tmp, dirs_exist_ok=True)
    write_text(s.run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    rows = [asdict(r) for r in s.rows]
    with atomic_path(s.run_dir / "search.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "parent": parent_dir.name,
        "target": s.target.name,
        "device": device_key(s.device),
        "threads": s.timing.threads,
        "val_top1_parent": parent_top1,
        "budgets": budgets,
        "val_top1": first["recovered_top1"] if first else None,
        "margin": m,
        "candidates": len({r.candidate for r in s.rows}),
        "timed": s.timed,
        "reused": s.reused,
        "wall_seconds": seconds,
        "path": str(s.run_dir),
    }
    write_json(s.run_dir / "search.json", {**summary, "config": s.cfg.model_dump(), "rows": rows})
    write_json(s.run_dir / "summary.json", summary)
    return summary
