"""Does half the MACs give half the time? Unpruned vs pruned students, side by side, batch 1.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/prune_latency.py [--run runs/quickstart [--pruned RUN]]
        [--keep 0.5] [--threads 1,2] [--rounds 12] [--out benchmarks/results/prune_latency.json]

Models: DeiT-Ti/224 (timm `deit_tiny_distilled_patch16_224`, 1000 classes, random weights seed 0)
pruned to --keep of its MACs with edgevit's pruner (magnitude importance: latency does not depend
on the weights), and, with --run, a distilled run's student pruned the same way (or the student of
an `edgevit prune` run given with --pruned). Each model runs in PyTorch FP32 eager, OpenVINO
(FP32 and the openvino-cpu target's tuned INT8) and LiteRT (FP32 and dynamic-range INT8), exported
with edgevit's own format modules and timed interleaved in rounds (`edgevit.profile.stats`), so a
shared machine's load falls evenly on every row. Each export's agreement with its own model's
PyTorch FP32 output is measured (photo crops for DeiT-Ti/224, the validation split for a run).

Prints per thread count: median ms, MACs, time ratio pruned/unpruned next to the MAC ratio, and
the issue's goal (pruned DeiT-Ti/224 at OpenVINO's best precision >= 10x unpruned PyTorch FP32).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: spinning OpenMP starves 2 cores

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import write_json  # noqa: E402  (benchmarks/: the JSON with the machine it was measured on)
from latency import Variant, build_model, export_variant, open_variant, photo_crops  # noqa: E402

from edgevit.profile.runners import device_description, make_input  # noqa: E402
from edgevit.profile.stats import interleaved, machine_load, summarize  # noqa: E402

# the rows, exported and opened exactly as benchmarks/latency.py does (its Variant, export_variant, open_variant)
VARIANTS = [
    Variant("pytorch", "pytorch", "fp32"),
    Variant("openvino", "openvino", "fp32", "openvino-cpu"),
    Variant("openvino", "openvino", "int8", "openvino-cpu"),
    Variant("litert", "litert", "fp32", "tflite-mobile"),
    Variant("litert", "litert", "int8", "tflite-mobile", scheme="dynamic"),
]
AGREEMENT_FLOOR = 90.0  # a precision below this agreement with its FP32 model is not "best"


def deit224() -> tuple[Any, np.ndarray, np.ndarray]:
    return build_model(), photo_crops(64, seed=1), photo_crops(128, seed=2)


def from_run(run: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    from edgevit.export.pipeline import RunInputs

    inputs = RunInputs.load(run, verify_images=500)
    return inputs.model.eval(), inputs.calibration(64), inputs.val_x


def pruned_copy(model: Any, example: Any, keep: float) -> Any:
    from edgevit.prune.engine import prune_model

    pruned, _ = prune_model(model, example, keep, by="macs", importance="magnitude", log=print)
    return pruned.eval()


def macs(model: Any, shape: list[int]) -> float:
    import torch

    from edgevit.prune.engine import count

    return count(model, torch.zeros(shape))[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="a distilled run whose student is timed unpruned and pruned too")
    p.add_argument("--pruned", type=Path, help="an `edgevit prune` run of --run (default: prune --run here)")
    p.add_argument("--keep", type=float, default=0.5, help="MACs kept when pruning here (default 0.5)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prune_latency.json")
    a = p.parse_args(argv)
    import torch

    models: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    model, calib, evalset = deit224()
    models["deit-ti/224"] = (model, calib, evalset)
    models["deit-ti/224 pruned"] = (pruned_copy(model, torch.from_numpy(calib[:1].copy()), a.keep), calib, evalset)
    if a.run:
        model, calib, evalset = from_run(a.run)
        models[f"{a.run.name}"] = (model, calib, evalset)
        if a.pruned:
            from edgevit.export.pipeline import RunInputs

            pruned = RunInputs.load(a.pruned, verify_images=1).model.eval()
        else:
            pruned = pruned_copy(model, torch.from_numpy(calib[:1].copy()), a.keep)
        models[f"{a.run.name} pruned"] = (pruned, calib, evalset)

    work = Path(tempfile.mkdtemp(prefix="prune-latency-"))
    rows: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    for name, (model, calib, evalset) in models.items():
        shape = [1, *calib.shape[1:]]
        with torch.inference_mode():
            ref = np.concatenate(
                [model(torch.from_numpy(evalset[i : i + 32])).numpy() for i in range(0, len(evalset), 32)]
            )
        info[name] = {"macs": macs(model, shape), "params": sum(p.numel() for p in model.parameters()), "shape": shape}
        print(f"{name}: {info[name]['macs'] / 1e6:.1f} M MACs, {info[name]['params'] / 1e6:.2f} M params", flush=True)
        for v in VARIANTS:
            folder = (
                export_variant(v, model, calib, work / name.replace(" ", "-").replace("/", "_"), True)
                if v.target
                else None
            )
            fn = open_variant(v, folder, model, 1)
            agree = float(
                (
                    np.concatenate([fn(evalset[i : i + 1]) for i in range(len(evalset))]).argmax(1) == ref.argmax(1)
                ).mean()
                * 100
            )
            rows.append(
                {
                    "model": name,
                    "runtime": v.runtime,
                    "precision": v.precision,
                    "agreement_pct": round(agree, 2),
                    "folder": str(folder) if folder else None,
                    "variant": v,
                }
            )
    results: dict[str, Any] = {
        "context": {
            "device": device_description(),
            "keep": a.keep,
            "rounds": a.rounds,
            "calls_per_round": a.calls,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "models": info,
        },
        "rows": [],
    }
    for t in [int(x) for x in a.threads.split(",")]:
        fns = {}
        for r in rows:
            model = models[r["model"]][0]
            fns[(r["model"], r["runtime"], r["precision"])] = open_variant(
                r["variant"], Path(r["folder"]) if r["folder"] else None, model, t
            )
        inputs = {m: make_input(info[m]["shape"]) for m in models}
        # interleaved() feeds one input to every variant: wrap each so it gets its own model's shape
        wrapped = {f"{k[0]}|{k[1]}|{k[2]}": (lambda _x, f=f, x=inputs[k[0]]: f(x)) for k, f in fns.items()}
        before = machine_load()
        wall, cpu = interleaved(wrapped, None, a.rounds, a.calls, a.warmup)
        after = machine_load()
        for r in rows:
            key = f"{r['model']}|{r['runtime']}|{r['precision']}"
            s = summarize(wall[key], batch=1, warmup=a.warmup)
            results["rows"].append(
                {
                    **{k: v for k, v in r.items() if k != "variant"},
                    "threads": t,
                    "median_ms": round(s.median_ms, 3),
                    "p90_ms": round(s.p90_ms, 3),
                    "cpu_ms": round(float(np.median(cpu[key])), 3),
                    "macs": info[r["model"]]["macs"],
                    "load_before": before,
                    "load_after": after,
                }
            )
        print_table([r for r in results["rows"] if r["threads"] == t], t, before, after)
    results["goals"] = goals(results["rows"])
    for g in results["goals"]:
        print(
            f"{g['threads']} thread(s): {g['goal']}: {g['ratio']:.2f}x -> "
            + ("met" if g["met"] else f"MISSED by {round((1 - g['ratio'] / g['target']) * 100, 1)}%")
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, results)
    print(f"wrote {a.out}")
    return 0


def _unpruned(rows: list[dict], r: dict) -> dict | None:
    if not r["model"].endswith(" pruned"):
        return None
    base = r["model"][: -len(" pruned")]
    return next(
        (
            u
            for u in rows
            if u["model"] == base
            and u["runtime"] == r["runtime"]
            and u["precision"] == r["precision"]
            and u["threads"] == r["threads"]
        ),
        None,
    )


def print_table(rows: list[dict], t: int, before: str, after: str) -> None:
    print(f"\n== batch 1, {t} thread(s); load before {before}, after {after}")
    print(
        f"{'model':<22} {'runtime':<9} {'prec':<5} {'M MACs':>7} {'agree %':>8} {'median ms':>10} {'cpu ms':>8} "
        f"{'time ratio':>10} {'MAC ratio':>9}"
    )
    for r in rows:
        u = _unpruned(rows, r)
        tr = f"{r['median_ms'] / u['median_ms']:10.2f}" if u else f"{'':>10}"
        mr = f"{r['macs'] / u['macs']:9.2f}" if u else f"{'':>9}"
        print(
            f"{r['model']:<22} {r['runtime']:<9} {r['precision']:<5} {r['macs'] / 1e6:7.1f} {r['agreement_pct']:8.1f} "
            f"{r['median_ms']:10.2f} {r['cpu_ms']:8.2f} {tr} {mr}"
        )
    print("time ratio: pruned / unpruned median, same runtime and precision (0.5 = half the MACs gave half the time)")


def goals(rows: list[dict]) -> list[dict]:
    """Pruned DeiT-Ti/224 at OpenVINO's fastest precision within the agreement floor vs unpruned PyTorch FP32."""
    out = []
    for t in sorted({r["threads"] for r in rows}):
        base = next(
            (r for r in rows if r["threads"] == t and r["model"] == "deit-ti/224" and r["runtime"] == "pytorch"), None
        )
        ov = [
            r
            for r in rows
            if r["threads"] == t
            and r["model"] == "deit-ti/224 pruned"
            and r["runtime"] == "openvino"
            and r["agreement_pct"] >= AGREEMENT_FLOOR
        ]
        if base and ov:
            best = min(ov, key=lambda r: r["median_ms"])
            ratio = round(base["median_ms"] / best["median_ms"], 2)
            out.append(
                {
                    "threads": t,
                    "goal": f"pruned DeiT-Ti/224, OpenVINO {best['precision']} >= 10x unpruned PyTorch FP32",
                    "ratio": ratio,
                    "target": 10.0,
                    "met": ratio >= 10.0,
                }
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
