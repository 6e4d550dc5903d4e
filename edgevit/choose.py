"""The selection rules, in one pure module (no I/O, no runtimes), used by benchmark, report and compress.

- `pick`: per target, the fastest timed artifact whose top-1 stays within the accuracy floor: the
  PyTorch FP32 top-1 minus `max_drop` points (and at least `min_accuracy`, if given). Every row comes
  back with `pick` (bool) and `why` (one line), so a table can say not only what was chosen but why
  each other row was not.
- `most_accurate_within`: per target, the most accurate row whose median latency is within a latency
  budget (ties: the faster) -- the question a user with a budget asks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

from edgevit.errors import EdgevitError
from edgevit.vocab import BASELINE


def pick(
    rows: list[Any], max_drop: float = 0.5, min_accuracy: float | None = None, *, baseline_top1: float | None = None
) -> list[dict[str, Any]]:
    """Copies of `rows` (dicts or dataclasses with target, precision, top1 %, median_ms, note) with
    `pick` and `why` set. `baseline_top1` defaults to the top-1 of the row whose target or format is
    'pytorch'. `min_accuracy` is in % (a value <= 1 is read as a fraction, as --min-accuracy is)."""
    if not isinstance(max_drop, (int, float)) or math.isnan(max_drop) or not 0 <= max_drop <= 100:
        raise EdgevitError(f"max_drop must be between 0 and 100 top-1 points (got {max_drop})", "max_drop")
    if min_accuracy is not None:
        if math.isnan(min_accuracy) or not 0 <= min_accuracy <= 100:
            raise EdgevitError(f"min_accuracy must be between 0 and 100 (%) (got {min_accuracy})", "min_accuracy")
        min_accuracy = min_accuracy * 100 if min_accuracy <= 1 else min_accuracy
    out = [dict(asdict(r) if is_dataclass(r) else r) for r in rows]
    if baseline_top1 is None:
        baseline_top1 = next((r.get("top1") for r in out if BASELINE in (r.get("target"), r.get("format"))), None)
    floor, rule = _floor(baseline_top1, max_drop, min_accuracy)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in out:
        groups[str(r.get("target"))].append(r)
    for group in groups.values():
        _mark(group, floor, rule)
    return out


def _floor(baseline: float | None, max_drop: float, min_accuracy: float | None) -> tuple[float | None, str]:
    """The top-1 a row needs, and how it was set (for the `why` line)."""
    candidates = []
    if baseline is not None:
        candidates.append((round(baseline - max_drop, 6), f"PyTorch {_pct(baseline)} - {_pct(max_drop)}"))
    if min_accuracy is not None:
        candidates.append((min_accuracy, "--min-accuracy"))
    if not candidates:
        return None, "no PyTorch top-1 to measure the drop against"
    return max(candidates, key=lambda c: c[0])


def _mark(group: list[dict[str, Any]], floor: float | None, rule: str) -> None:
    for r in group:
        r["pick"], r["why"] = False, _reject(r, floor, rule)
    ok = [r for r in group if r["why"] is None]
    if not ok:
        for r in group:
            r["why"] += "; no row of this target qualifies"
        return
    best = min(ok, key=lambda r: r["median_ms"])
    best["pick"] = True
    best["why"] = f"fastest within the floor: {best['median_ms']:.2f} ms, {_pct(best['top1'])} % >= {_pct(floor)} %"
    for r in ok:
        if r is not best:
            r["why"] = f"slower: {r['median_ms']:.2f} ms vs {best['median_ms']:.2f} ms ({best.get('precision')})"


def _reject(r: Mapping[str, Any], floor: float | None, rule: str) -> str | None:
    """Why a row cannot be picked at all, or None if it qualifies."""
    note = str(r.get("note") or "").strip()
    if r.get("median_ms") is None:
        reason = note.split("not timed: ", 1)[-1] if note else "no latency measured"
        return f"not timed here: {reason}"
    if floor is None:
        return rule
    if r.get("top1") is None:
        return f"no top-1 measured here{': ' + note if note else ''}"
    if r["top1"] < floor:
        return f"below the floor: {_pct(r['top1'])} % < {_pct(floor)} % ({rule})"
    return None


def _pct(v: float) -> str:
    """83.40 -> '83.4', 83.35 -> '83.35': enough digits to see why two values differ."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def most_accurate_within(rows: list[Mapping[str, Any]], budget_ms: float, *, top1: str = "top1") -> list[dict]:
    """Per target (in first-seen order), the row with the highest `top1` among those whose `median_ms`
    is within `budget_ms` (ties: the lower median); rows without both numbers cannot qualify."""
    if not isinstance(budget_ms, (int, float)) or math.isnan(budget_ms) or budget_ms <= 0:
        raise EdgevitError(f"budget_ms must be a latency in milliseconds above 0 (got {budget_ms})", "budget_ms")
    best: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        acc, ms = row.get(top1), row.get("median_ms")
        if not _number(acc) or not _number(ms) or ms > budget_ms:
            continue
        held = best.get(row["target"])
        if held is None or (acc, -ms) > (held[top1], -held["median_ms"]):
            best[row["target"]] = row
    return [dict(r) for r in best.values()]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
