"""Training images/s of `edgevit distill` with OpenMP threads that sleep (OMP_WAIT_POLICY=PASSIVE)
or that spin a while first (libgomp's default, no variable), on an idle machine and on a busy one,
side by side in one run: the measurement behind the wait policy `edgevit distill` picks at start.

    python benchmarks/wait_policy.py [--epochs 4] [--repeats 2] [--conditions idle spin1 spin2 twin]

Conditions: `idle` (nothing else running), `spin1` / `spin2` (one / two pure-Python busy loops beside
the run: another job holding one core / both), `twin` (two identical runs at once, as two users'
jobs on one box). Each run is `edgevit distill --distillation none` on the quickstart recipe for a
few epochs (the student's train step: the hot loop of every distill); policies alternate within a
condition so drift hits both. img/s: the median of the run's per-epoch `train_img_s` after the first
epoch. Runs call the distill stage from Python (the CLI would pick the policy itself), with the
variable set or removed. Prints a table, writes benchmarks/results/wait_policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import load_average, machine_id, write_results

POLICIES = ("PASSIVE", "unset", "spin10000")  # spinN: no OMP_WAIT_POLICY, GOMP_SPINCOUNT=N (libgomp's default: 300000)
SPIN = "import time\nt = time.time() + 3600\nwhile time.time() < t: pass\n"
DISTILL = """import sys
from edgevit.config import apply_overrides, load_recipe
from edgevit.distill.pipeline import distill
recipe, _ = load_recipe("quickstart")
recipe = apply_overrides(recipe, {"epochs": int(sys.argv[1]), "distill.type": "none"})
distill(recipe, sys.argv[2], log=lambda m: None)
"""


SECTION_TEXT = (
    "`python benchmarks/wait_policy.py --epochs {epochs} --repeats {repeats}`: `edgevit distill --distillation "
    "none` on the quickstart recipe, img/s the median of each run's epochs after the first, policies in "
    "alternation. `PASSIVE`: threads sleep; `unset`: libgomp's default (spin ~300,000 rounds, then sleep); "
    "`spin10000`: `GOMP_SPINCOUNT=10000`. Conditions: idle; `spin1` / `spin2`: one / two busy Python loops "
    "beside the run; `twin`: two identical runs at once."
)


def verdict(rows: list[dict], base: str) -> str:
    """One sentence from the ratios: how much spinning gains idle and costs busy, against `base`."""
    ratio = {r["condition"]: r["ratio_to_" + base] for r in rows}
    spin = [p for p in next(iter(ratio.values())) if p != base]
    idle = ratio.get("idle", {})
    busy = [x for c, by in ratio.items() if c != "idle" for p, x in by.items() if p in spin]
    parts = []
    if idle:
        parts.append(f"idle, spinning ran at {min(idle[p] for p in spin):.2f}-{max(idle[p] for p in spin):.2f}x {base}")
    if busy:
        parts.append(f"with another job on the cores at {min(busy):.2f}-{max(busy):.2f}x")
    return ("; ".join(parts) + ".") if parts else ""


def _env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin")
    elif policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    return env


def _distill(policy: str, epochs: int, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", DISTILL, str(epochs), str(out)]
    return subprocess.Popen(cmd, env=_env(policy), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _img_s(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["train_img_s"] for r in rows if r.get("stage") == "student"][1:]
    return statistics.median(rates)


def one(condition: str, policy: str, epochs: int, work: Path, tag: str) -> list[float]:
    """img/s of the run(s) under `condition`, all with `policy` (a twin's runs share it)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range({"spin1": 1, "spin2": 2}.get(condition, 0))
    ]
    try:
        if spinners:
            time.sleep(2)
        outs = [work / f"{tag}-{i}" for i in range(2 if condition == "twin" else 1)]
        procs = [_distill(policy, epochs, o) for o in outs]
        for p, o in zip(procs, outs):
            _, err = p.communicate()
            if p.returncode:
                raise SystemExit(f"distill into {o} failed ({p.returncode}): {err.strip().splitlines()[-1:]}")
        return [_img_s(o) for o in outs]
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--conditions", nargs="+", default=["idle", "spin1", "spin2", "twin"])
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), help="PASSIVE, ACTIVE, unset or spinN")
    ap.add_argument("--out", default="benchmarks/results/wait_policy.json")
    a = ap.parse_args()
    load_before = load_average()
    t0 = time.perf_counter()
    table: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="wait_policy-") as tmp:
        work = Path(tmp)
        one("idle", "PASSIVE", 2, work, "warm-up")  # first run fills the speed memo (precision, layout)
        for condition in a.conditions:
            table[condition] = {p: [] for p in a.policies}
            for r in range(a.repeats):
                order = a.policies if r % 2 == 0 else a.policies[::-1]
                for policy in order:
                    load = load_average()
                    rates = one(condition, policy, a.epochs, work, f"{condition}-{policy}-{r}")
                    table[condition][policy] += rates
                    print(
                        f"{condition:<6} {policy:<9} repeat {r}: {[round(x) for x in rates]} img/s (load {load})",
                        flush=True,
                    )
    base = a.policies[0]
    print(f"\n{'condition':<9} " + " ".join(f"{p + ' img/s':>16}" for p in a.policies) + f"   (ratios to {base})")
    rows = []
    for condition, by in table.items():
        med = {p: statistics.median(v) for p, v in by.items()}
        rows.append(
            {
                "condition": condition,
                "median_img_s": med,
                "ratio_to_" + base: {p: m / med[base] for p, m in med.items()},
                "runs": by,
            }
        )
        print(f"{condition:<9} " + " ".join(f"{med[p]:>9.1f} ({med[p] / med[base]:.2f}x)" for p in a.policies))
    columns = ["condition", *(f"{p} img/s" for p in a.policies), *(f"{p} / {base}" for p in a.policies[1:])]
    table_rows = [
        [
            r["condition"],
            *(f"{r['median_img_s'][p]:.0f}" for p in a.policies),
            *(f"{r['ratio_to_' + base][p]:.2f}" for p in a.policies[1:]),
        ]
        for r in rows
    ]
    results = {
        "benchmark": "wait_policy",
        "sections": [
            {
                "title": "Training img/s by OpenMP wait policy, idle and busy",
                "blocks": [
                    {"text": SECTION_TEXT.format(epochs=a.epochs, repeats=a.repeats)},
                    {"text": verdict(rows, base)},
                    {
                        "table": {
                            "columns": columns,
                            "rows": table_rows,
                            "align": ["left"] + ["right"] * (len(columns) - 1),
                        }
                    },
                ],
            }
        ],
        "script": "benchmarks/wait_policy.py",
        "context": {
            "epochs": a.epochs,
            "repeats": a.repeats,
            "policies": a.policies,
            "seconds": round(time.perf_counter() - t0),
        },
        "rows": rows,
    }
    path = write_results(Path(a.out), results, load_before, machine_id())
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
