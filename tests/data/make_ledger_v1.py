"""Write tests/data/ledger_v1.sqlite with the v1 ledger code (edgevit/runs.py at commit b3b6727).

    git show b3b6727:edgevit/runs.py > /tmp/runs_v1.py
    PYTHONPATH=$PWD python tests/data/make_ledger_v1.py /tmp/runs_v1.py tests/data/ledger_v1.sqlite

The rows are what the v1 stages wrote: distill (run + evals), export (one row per artifact folder,
precision = the folder name, e.g. ``int8-static``), profile (precision from the artifact's manifest,
the artifact folder in extra). Paths point into a temporary folder that no longer exists.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(v1_source: str, out: str) -> None:
    spec = importlib.util.spec_from_file_location("runs_v1", v1_source)
    v1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v1)
    assert v1.SCHEMA_VERSION == 1
    root = Path(tempfile.mkdtemp()) / "runs"
    led = v1.Ledger(root)

    def step() -> None:  # distinct millisecond timestamps, so "created at or before" is testable
        time.sleep(0.01)

    def export(target: str, fmt: str, folder: str) -> None:
        step()
        led.record_export(
            "deit-a",
            target=target,
            format=fmt,
            precision=folder,
            path=root / "deit-a" / "exports" / target / folder,
            size_bytes=1000,
            seconds=1.0,
            verified=True,
            agreement=99.5,
            max_abs_diff=1e-3,
            top1=71.0,
            note="",
        )

    def profile(target: str, fmt: str, precision: str, folder: str | None) -> None:
        step()
        extra = {"runtime_note": "v1"}
        if folder:
            extra["artifact"] = str(root / "deit-a" / "exports" / target / folder)
        led.record_profile(
            "deit-a",
            target=target,
            format=fmt,
            precision=precision,
            runtime=f"{fmt} rt",
            device="local (test)",
            threads=1,
            batch=1,
            iterations=10,
            warmup=2,
            median_ms=2.0,
            p90_ms=2.5,
            p99_ms=3.0,
            mean_ms=2.1,
            throughput=480.0,
            peak_mem_mb=12.0,
            extra=extra,
        )

    led.record_run(
        "deit-a",
        stage="distill",
        status="running",
        path=root / "deit-a",
        recipe={"epochs": 2, "student": {"name": "deit_tiny_patch16_224"}},
    )
    for epoch in (1, 2):
        led.record_eval("deit-a", epoch=epoch, split="val", metrics={"top1": 60.0 + epoch, "loss": 1.0 / epoch})
    led.record_run("deit-a", stage="distill", status="done", summary={"val_top1": 62.0, "epochs": 2})
    export("onnx", "onnx", "fp32")  # export 1
    profile("pytorch", "pytorch", "fp32", None)  # the PyTorch baseline: no export
    profile("onnx", "onnx", "fp32", "fp32")  # -> export 1
    export("onnx", "onnx", "fp32")  # export 2: a re-export
    profile("onnx", "onnx", "fp32", "fp32")  # -> export 2
    export("onnx", "onnx", "int8")  # export 3: plain int8 (scheme from its manifest)
    export("tflite-mobile", "tflite", "int8-static")  # export 4
    export("tflite-mobile", "tflite", "int8")  # export 5: plain int8, no manifest anywhere
    profile("tflite-mobile", "tflite", "int8", "int8-static")  # -> export 4, though 5 is newer
    profile("tflite-mobile", "tflite", "int8", "int8")  # -> export 5
    led.record_run("deit-b", stage="distill", status="running", path=root / "deit-b")  # interrupted
    led.record_eval("deit-b", epoch=1, split="val", metrics={"top1": 10.0})
    shutil.copyfile(led.path, out)  # every connection is closed: the WAL is checkpointed into the file
    shutil.rmtree(root.parent)


if __name__ == "__main__":
    main(*sys.argv[1:3])
