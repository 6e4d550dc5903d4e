"""Images/s of one distillation step: student forward+backward plus the teacher's forward, or
plus a teacher-logit cache lookup instead. DeiT-Ti (distillation token) <- RegNetY-160, at 32 px
(patch 4) and 224 px (patch 16), fp32 and bf16 autocast, side by side in one run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/distill_throughput.py [--threads 2] [--steps 5]

Prints a table and writes benchmarks/results/distill_throughput.json. Random weights: speed only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import timm  # noqa: E402
import torch  # noqa: E402
from _machine import write_json  # noqa: E402  (benchmarks/: the JSON with the machine it was measured on)

from edgevit.distill.cache import TeacherCache  # noqa: E402
from edgevit.distill.losses import DistillationLoss  # noqa: E402
from edgevit.models.students import create_student, student_kwargs  # noqa: E402
from edgevit.models.teachers import Teacher  # noqa: E402
from edgevit.train.speed import Precision  # noqa: E402


def step_times(img: int, batch: int, precision: str, cached: bool, steps: int, teacher_name: str) -> list[float]:
    torch.manual_seed(0)
    name = "deit_tiny_distilled_patch16_224"
    student = create_student(name, student_kwargs(name, 10, img, None, 0.1))
    student.set_distilled_training(True)
    student.train()
    teacher = Teacher(
        [timm.create_model(teacher_name, num_classes=10)],
        [teacher_name],
        precision=Precision("bf16" if precision == "bf16" else "off"),
    )
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    loss_fn = DistillationLoss(torch.nn.CrossEntropyLoss(), "hard")
    x, y = torch.randn(batch, 3, img, img), torch.randint(0, 10, (batch,))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherCache(Path(tmp), topk=10, num_classes=10)
        if cached:  # fill one round as a first run would, then time the replays
            for _ in range(steps + 1):
                cache.put(0, teacher(x))
            cache.finish_round(0)
        times = []
        for i in range(steps + 1):  # the first step is warm-up
            t0 = time.perf_counter()
            t_logits = cache.get(0, i) if cached else teacher(x)
            with amp:
                loss = loss_fn(student(x), y, t_logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--teacher", default="regnety_160")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--out", default="benchmarks/results/distill_throughput.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for img in a.sizes:
        batch = 64 if img <= 64 else 16
        for precision in ("fp32", "bf16"):
            for cached in (False, True):
                t = statistics.median(step_times(img, batch, precision, cached, a.steps, a.teacher))
                rows.append(
                    {
                        "img": img,
                        "batch": batch,
                        "precision": precision,
                        "teacher": "cache" if cached else "live",
                        "step_ms": 1000 * t,
                        "img_s": batch / t,
                    }
                )
                print(f"  {img}px {precision} {'cache' if cached else 'live'}: {batch / t:.1f} img/s", flush=True)
    print(f"\nDeiT-Ti <- {a.teacher}, {a.threads} threads, median of {a.steps} steps (load: {os.getloadavg()[0]:.2f})")
    print(f"{'img':>4} {'batch':>5} {'precision':>9} {'teacher':>8} {'step ms':>9} {'img/s':>8} {'cache speed-up':>14}")
    for r in rows:
        live = next(
            q for q in rows if q["img"] == r["img"] and q["precision"] == r["precision"] and q["teacher"] == "live"
        )
        r["speedup_vs_live"] = live["step_ms"] / r["step_ms"]
        print(
            f"{r['img']:>4} {r['batch']:>5} {r['precision']:>9} {r['teacher']:>8} {r['step_ms']:>9.1f} "
            f"{r['img_s']:>8.1f} "
            f"{r['speedup_vs_live']:>13.2f}x"
        )
    out = Path(a.out)
    write_json(out, {"threads": a.threads, "teacher": a.teacher, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
