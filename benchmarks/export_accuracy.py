"""Export accuracy per family x target x precision on the embedded digits (32 px).

Trains (or takes, with --take FAMILY=RUN_DIR) DeiT-Ti, PVT-v2-b0 and the small ConvMixer,
exports each for every target at every precision the target offers (plus LiteRT full-integer
INT8), verifies each in its runtime and prints one table: export seconds, size, top-1 agreement
with PyTorch, max abs logit difference, runtime top-1 vs PyTorch top-1. Writes the rows as JSON.

    python benchmarks/export_accuracy.py --steps 300 --json benchmarks/results/export_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from _machine import write_json  # noqa: E402  (benchmarks/: the JSON with the machine it was measured on)

from edgevit.config import load_target  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.export.pipeline import export_run  # noqa: E402

# family -> (timm name, extra create kwargs). DeiT-Ti keeps its width/depth; patch 8 at 32 px
# (16 tokens) keeps training on 2 CPU cores to minutes.
FAMILIES = {
    "deit-ti": ("deit_tiny_distilled_patch16_224", {"patch_size": 8}),
    "pvt-v2-b0": ("pvt_v2_b0", {}),
    "convmixer": ("convmixer_256_8_ks5_p2", {}),
}
TARGETS = ["onnx", "openvino-cpu", "tflite-mobile", "jetson-orin", "coreml-ios"]


def train(run_dir: Path, name: str, extra: dict, steps: int, batch: int, lr: float) -> Path:
    """Plain cross-entropy training on digits (the distill engine's job; here only to get a real model)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from edgevit.data import build_datasets
    from edgevit.models.checkpoint import save_student
    from edgevit.models.students import create_student, student_kwargs

    data = {"spec": "digits", "img_size": 32, "batch_size": batch, "workers": 0}
    ds = build_datasets(data, None, crop_pct=1.0)
    x = torch.stack([ds.train[i][0] for i in range(len(ds.train))])
    y = torch.tensor([ds.train[i][1] for i in range(len(ds.train))])
    extra = dict(extra)
    kwargs = student_kwargs(name, len(ds.classes), 32, extra.pop("patch_size", None), 0.0, extra)
    torch.manual_seed(0)
    model = create_student(name, kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    print(f"trained {name}: {steps} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_name": name,
        "create_kwargs": kwargs,
        "class_names": ds.classes,
        "num_classes": len(ds.classes),
        "img_size": 32,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
        "crop_pct": 1.0,
        "data": data,
    }
    save_student(run_dir / "student.pt", model.eval(), meta)
    return run_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {', '.join(FAMILIES)}")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--take", action="append", default=[], metavar="FAMILY=RUN_DIR", help="use a trained run")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/results/export-runs"))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/export_accuracy.json"))
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    taken = dict(t.split("=", 1) for t in args.take)
    rows = []
    for family in args.families.split(","):
        name, extra = FAMILIES[family]
        run = (
            Path(taken[family])
            if family in taken
            else train(args.runs / family, name, extra, args.steps, args.batch, args.lr)
        )
        for target_name in args.targets.split(","):
            target = load_target(target_name)
            jobs = [(p, None) for p in target.precisions]
            if target.format == "tflite":
                jobs.append(("int8", "static" if target.quantization.scheme != "static" else "dynamic"))
            for precision, scheme in jobs:
                row = {
                    "family": family,
                    "target": target.name,
                    "precision": precision + (f"-{scheme}" if scheme else ""),
                }
                try:
                    r = export_run(run, target, precision, scheme=scheme)
                except EdgevitError as exc:
                    row["error"] = str(exc)
                    print(f"{family} {target.name} {row['precision']}: {exc}", file=sys.stderr)
                else:
                    v = r.verification
                    row.update(
                        seconds=round(r.seconds, 2),
                        size_bytes=r.artifact.size_bytes(),
                        runtime=v.runtime,
                        verified=v.verified,
                        agreement=v.agreement,
                        max_abs_diff=v.max_abs_diff,
                        top1=v.top1,
                        torch_top1=v.torch_top1,
                        note=v.note,
                    )
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(markdown(rows))
    write_json(args.json, {"cpus": os.cpu_count(), "steps": args.steps, "rows": rows})
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


def markdown(rows: list[dict]) -> str:
    out = [
        "| family | target | precision | export s | size KB | agree % | max abs diff | top-1 % (PyTorch) | check |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['family']} | {r['target']} | {r['precision']} | | | | | | error: {r['error'][:80]} |")
            continue
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.2f}"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        top1 = ("-" if r["top1"] is None else f"{r['top1']:.2f}") + f" ({r['torch_top1']:.2f})"
        check = "ok" if r["verified"] else ("not run here" if r["runtime"] is None else "FAILED")
        out.append(
            f"| {r['family']} | {r['target']} | {r['precision']} | {r['seconds']:.1f} | "
            f"{r['size_bytes'] / 1024:.0f} | {agree} | {diff} | {top1} | {check} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
