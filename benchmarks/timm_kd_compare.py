"""Training throughput (images/s) of timm's reference train.py with knowledge distillation vs
`edgevit distill`, side by side in one run: same data, student, teacher, augmentation and batch.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/timm_kd_compare.py [--epochs 3] [--repeats 2] [--threads 2]
        [--aug deit|light] [--workers 0] [--precision fp32|bf16|defaults] [--kd token|feature]
        [--timm-git DIR --timm-rev REV | --train-py PATH]

Student: 6-layer DeiT-Tiny with distillation token, patch 8, 32 px, 10 classes. Teacher: ResNet-18,
random weights (offline; the step cost does not depend on them), hard token distillation
(timm: --kd-model-name resnet18 --kd-distill-type token --kd-token-distill-type hard), no teacher
fine-tune. --precision: `fp32` (default) runs both in fp32 with PyTorch's fused attention, no
channels_last, no teacher-logit cache (the same live-teacher loop in both; edgevit's optimizer uses
PyTorch's fused AdamW kernel, timm's the foreach one); `bf16` runs both under bf16 autocast (timm: --amp
--amp-dtype bfloat16; edgevit: amp bf16), still fused attention, no channels_last and no cache;
`defaults` runs each tool as a user gets it (timm: fp32; edgevit: amp/channels_last/fused_attn "auto",
which measure and keep what is faster here, and its teacher-logit cache, which only replays after
cache_rounds epochs). Data: the
embedded digits split (edgevit's own train/val split) written once as a PNG ImageFolder, read by both.

timm's train.py is not in the pip package: it is taken from a timm git snapshot (or --train-py).
Its KD teacher is built by timm.task.distillation.DistillationTeacher with pretrained=True, and
train.py has no flag to avoid the download, so train.py runs through a shim (this file, first
argument `_timm_train`) that forces pretrained=False on that one create_model call; train.py itself
runs unmodified.

img/s: timm's own per-epoch average (the `(avg s, N/s)` of the epoch's last `Train:` log line:
batch / mean step time, data loading included); edgevit's `train_img_s` (stage "student") from the
run's metrics.jsonl. Evaluation, checkpoints and start-up are outside both. Per run: the median over
the epochs after the first. The tools run in alternation (timm, edgevit, timm, ...) so machine load
hits both. Prints a table and writes benchmarks/results/timm_kd_compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _machine import write_json  # benchmarks/: the JSON with the machine it was measured on

STUDENT = "deit_tiny_distilled_patch16_224"
KD = {  # --kd: what each tool distils. token: DeiT's hard label on the distillation token, in both.
    # feature: timm's FeatureDistillationTask (pooled pre-logit features, a linear projector, MSE) vs
    # edgevit's `feature` (teacher stage maps <-> student blocks through projectors, + hard): each tool's
    # own feature distillation from a live teacher (a feature loss cannot replay a logit cache)
    "token": {"timm": ["--kd-distill-type", "token", "--kd-token-distill-type", "hard"], "edgevit": "hard"},
    "feature": {"timm": ["--kd-distill-type", "feature"], "edgevit": "feature"},
}
AUG = {  # DeiT's defaults (timm/DeiT), or the quickstart recipe's light augmentation
    "deit": dict(
        auto_augment="rand-m9-mstd0.5-inc1",
        hflip=0.5,
        scale=[0.08, 1.0],
        color_jitter=0.3,
        reprob=0.25,
        mixup=0.8,
        cutmix=1.0,
        smoothing=0.1,
    ),
    "light": dict(
        auto_augment=None,
        hflip=0.0,
        scale=[0.8, 1.0],
        color_jitter=0.0,
        reprob=0.0,
        mixup=0.0,
        cutmix=0.0,
        smoothing=0.1,
    ),
}
TIMM_EPOCH = re.compile(r"Train: (\d+) \[\s*(\d+)/(\d+) .*\(\s*[\d.]+s,\s*([\d.]+)/s\)")


def timm_train_shim(train_py: str, args: list[str]) -> None:
    """Run timm's train.py as __main__, its KD teacher built with random weights instead of downloaded ones."""
    import runpy

    import timm.task.distillation as kd

    create = kd.create_model

    def random_init(*a, **kw):
        kw["pretrained"] = False
        kw.pop("pretrained_cfg_overlay", None)
        return create(*a, **kw)

    kd.create_model = random_init
    sys.argv = [train_py, *args]
    sys.path.insert(0, str(Path(train_py).parent))
    runpy.run_path(train_py, run_name="__main__")


def write_digits(root: Path) -> None:
    """edgevit's digits train/val split (32 px) as train/<class>/*.png and validation/<class>/*.png."""
    from edgevit.data import build_datasets

    ds = build_datasets({"spec": "digits", "img_size": 32})
    shutil.rmtree(root, ignore_errors=True)
    for split, d in (("train", ds.train), ("validation", ds.val)):
        for i, (img, y) in enumerate(zip(d.images, d.labels)):
            path = root / split / ds.classes[y] / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)


def train_py_source(a: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """(train.py path, where it came from)."""
    if a.train_py:
        return Path(a.train_py), a.train_py
    if not a.timm_git:
        raise SystemExit(
            "timm_kd_compare: give --train-py PATH (timm's train.py) or --timm-git DIR (a clone of "
            "https://github.com/huggingface/pytorch-image-models)"
        )
    git = ["git", "-C", a.timm_git]  # a clone or a bare repository
    commit = subprocess.run([*git, "rev-parse", a.timm_rev], capture_output=True, text=True, check=True).stdout.strip()
    path = work / "train.py"
    path.write_text(
        subprocess.run([*git, "show", f"{commit}:train.py"], capture_output=True, text=True, check=True).stdout
    )
    return path, f"{a.timm_git} @ {commit}"


def timm_cmd(a: argparse.Namespace, train_py: Path, data: Path, out: Path, name: str) -> list[str]:
    g = AUG[a.aug]
    return [
        sys.executable,
        __file__,
        "_timm_train",
        str(train_py),
        "--data-dir",
        str(data),
        "--train-split",
        "train",
        "--val-split",
        "validation",
        "--device",
        "cpu",
        "--model",
        STUDENT,
        "--num-classes",
        "10",
        "--img-size",
        "32",
        "--model-kwargs",
        "depth=6",
        "patch_size=8",
        "img_size=32",
        "--drop-path",
        "0.1",
        "--kd-model-name",
        "resnet18",
        *KD[a.kd]["timm"],
        "--task-loss-weight",
        "0.5",
        "-b",
        str(a.batch),
        "--epochs",
        str(a.epochs),
        "-j",
        str(a.workers),
        "--seed",
        "0",
        "--opt",
        "adamw",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.05",
        "--sched",
        "cosine",
        "--warmup-epochs",
        "1",
        "--warmup-lr",
        "1e-6",
        "--min-lr",
        "1e-5",
        *(["--aa", g["auto_augment"]] if g["auto_augment"] else []),
        "--train-interpolation",
        "bicubic",
        "--hflip",
        str(g["hflip"]),
        "--scale",
        *map(str, g["scale"]),
        "--color-jitter",
        str(g["color_jitter"]),
        "--reprob",
        str(g["reprob"]),
        "--mixup",
        str(g["mixup"]),
        "--cutmix",
        str(g["cutmix"]),
        "--smoothing",
        str(g["smoothing"]),
        *(["--amp", "--amp-dtype", "bfloat16"] if a.precision == "bf16" else []),
        "--output",
        str(out),
        "--experiment",
        name,
        "--checkpoint-hist",
        "1",
    ]


def edgevit_cmd(a: argparse.Namespace, data: Path, out: Path, name: str) -> list[str]:
    amp = {"fp32": "off", "bf16": "bf16", "defaults": "auto"}[a.precision]
    layout = "auto" if a.precision == "defaults" else False
    recipe = {
        "name": "timm-kd-compare",
        "epochs": a.epochs,
        "seed": 0,
        "amp": amp,
        "channels_last": layout,
        "fused_attn": "auto" if a.precision == "defaults" else True,
        "data": {"spec": str(data), "img_size": 32, "batch_size": a.batch, "workers": a.workers},
        "aug": {**AUG[a.aug], "crop_pct": 0.875},
        "teacher": {
            "names": ["resnet18"],
            "pretrained": False,
            "finetune_epochs": 0,
            "amp": amp,
            "channels_last": layout,
        },
        "student": {"name": STUDENT, "patch_size": 8, "drop_path": 0.1, "kwargs": {"depth": 6}},
        "distill": {
            "type": KD[a.kd]["edgevit"],
            "alpha": 0.5,
            "cache_teacher": "auto" if a.precision == "defaults" and a.kd == "token" else False,
        },
        "optim": {
            "opt": "adamw",
            "lr": 1e-3,
            "lr_base_batch": a.batch,
            "weight_decay": 0.05,
            "warmup_epochs": 1,
            "warmup_lr": 1e-6,
            "min_lr": 1e-5,
        },
    }
    path = out / f"{name}.yaml"
    path.write_text(json.dumps(recipe, indent=1))  # JSON is YAML
    edgevit = shutil.which("edgevit", path=str(Path(sys.executable).parent)) or "edgevit"
    return [edgevit, "distill", str(path), "--out", str(out / name)]


def run_one(tool: str, cmd: list[str], log: Path, env: dict[str, str], metrics: Path | None) -> dict:
    load, t0 = os.getloadavg()[0], time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{tool} failed (exit {rc}); see {log}:\n" + "".join(log.read_text().splitlines(True)[-15:]))
    if tool == "timm":
        rates = [
            float(m[4])
            for m in map(TIMM_EPOCH.search, log.read_text().splitlines())
            if m and int(m[2]) == int(m[3]) - 1
        ]  # the epoch's last step carries its average
    else:
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        rates = [r["train_img_s"] for r in rows if r["stage"] == "student"]
    later = rates[1:] or rates
    return {
        "tool": tool,
        "epoch_img_s": rates,
        "median_img_s": statistics.median(later),
        "wall_s": wall,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "log": str(log),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each tool, in alternation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--aug", choices=sorted(AUG), default="deit")
    ap.add_argument("--precision", choices=["fp32", "bf16", "defaults"], default="fp32")
    ap.add_argument("--kd", choices=sorted(KD), default="token", help="token (hard) or feature distillation")
    ap.add_argument(
        "--omp-wait-policy",
        choices=["PASSIVE", "ACTIVE", "unset"],
        default="PASSIVE",
        help="OpenMP wait policy for both tools; unset: none in the environment (each tool's own)",
    )
    ap.add_argument(
        "--timm-git",
        metavar="DIR",
        help="a timm git clone (git clone https://github.com/huggingface/"
        "pytorch-image-models) whose train.py at --timm-rev is used",
    )
    ap.add_argument("--timm-rev", default="HEAD")
    ap.add_argument("--train-py", help="a timm train.py to use instead of the git snapshot's")
    ap.add_argument("--work", default="/tmp/kd")
    ap.add_argument("--out", default="benchmarks/results/timm_kd_compare.json")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    train_py, source = train_py_source(a, work)
    data = work / "digits"
    write_digits(data)
    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")
    runs.mkdir(parents=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
        "OMP_WAIT_POLICY": a.omp_wait_policy,
        "HF_HUB_OFFLINE": "1",
    }
    if a.omp_wait_policy == "unset":  # each tool as a user starts it: timm gets libgomp's default, edgevit sets its own
        del env["OMP_WAIT_POLICY"]
    results = []
    for i in range(a.repeats):
        for tool in ("timm", "edgevit"):
            name = f"{tool}-{i}"
            cmd = timm_cmd(a, train_py, data, runs, name) if tool == "timm" else edgevit_cmd(a, data, runs, name)
            r = run_one(tool, cmd, runs / f"{name}.log", env, runs / name / "metrics.jsonl")
            results.append({**r, "cmd": cmd})
            print(
                f"  {name}: {', '.join(f'{x:.1f}' for x in r['epoch_img_s'])} img/s per epoch "
                f"(wall {r['wall_s']:.0f} s, load {r['load_before']:.2f})",
                flush=True,
            )
    med = {t: statistics.median(r["median_img_s"] for r in results if r["tool"] == t) for t in ("timm", "edgevit")}
    ratio = med["edgevit"] / med["timm"]
    load = os.getloadavg()
    print(
        f"\nDeiT-Ti/8 (6 layers, 32 px) <- ResNet-18 {a.kd} KD, batch {a.batch}, {a.aug} aug, {a.threads} threads, "
        f"{a.workers} workers, precision {a.precision}, OMP_WAIT_POLICY {a.omp_wait_policy}; "
        f"timm train.py from {source}"
    )
    print(f"{'tool':>8} {'run':>4} {'epochs':>6} {'img/s per epoch':>28} {'median*':>8} {'wall s':>7}")
    for i, r in enumerate(results):
        per = " ".join(f"{x:.1f}" for x in r["epoch_img_s"])
        print(
            f"{r['tool']:>8} {i // 2:>4} {len(r['epoch_img_s']):>6} {per:>28} {r['median_img_s']:>8.1f} "
            f"{r['wall_s']:>7.0f}"
        )
    print("* median over the epochs after the first")
    print(f"median img/s: timm {med['timm']:.1f}, edgevit {med['edgevit']:.1f}; ratio edgevit/timm {ratio:.2f}")
    print(f"load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    out = Path(a.out)
    write_json(
        out,
        {
            "epochs": a.epochs,
            "batch": a.batch,
            "threads": a.threads,
            "workers": a.workers,
            "aug": a.aug,
            "precision": a.precision,
            "kd": a.kd,
            "omp_wait_policy": a.omp_wait_policy,
            "timm_train_py": source,
            "median_img_s": med,
            "ratio": ratio,
            "loadavg": load,
            "runs": results,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_timm_train":
        timm_train_shim(sys.argv[2], sys.argv[3:])
    else:
        main()
