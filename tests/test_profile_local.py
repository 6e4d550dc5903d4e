"""Local profiling in every runtime that runs here, on a tiny exported student; plus the CLI.

Numbers are checked for existence and sanity only (positive, ordered), never for speed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgevit.cli import main  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.profile import runners  # noqa: E402
from edgevit.profile.runners import ProfileResult  # noqa: E402

TINY = {"num_classes": 10, "img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
# (target, precision) exported once for the module
EXPORTS = [("onnx", "fp32"), ("openvino-cpu", "fp32"), ("tflite-mobile", "fp32")]


def make_run(root: Path, name: str = "tiny") -> Path:
    """A run folder with a tiny DeiT student trained for zero steps (random weights are enough to time)."""
    import torch

    from edgevit.models.checkpoint import save_student
    from edgevit.models.students import create_student

    torch.manual_seed(0)
    model = create_student("deit_tiny_distilled_patch16_224", dict(TINY, drop_path_rate=0.0)).eval()
    run_dir = root / name
    run_dir.mkdir(parents=True)
    meta = {
        "model_name": "deit_tiny_distilled_patch16_224",
        "create_kwargs": dict(TINY, drop_path_rate=0.0),
        "class_names": [str(i) for i in range(10)],
        "num_classes": 10,
        "img_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 1.0,
        "data": {"spec": "digits", "img_size": 32, "batch_size": 64, "workers": 0},
    }
    save_student(run_dir / "student.pt", model, meta)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgevit.export.pipeline import export_run

    run = make_run(tmp_path_factory.mktemp("runs"))
    for target, precision in EXPORTS:
        export_run(run, target, precision=precision, ledger=True)
    # A Jetson artifact is an ONNX file that trtexec builds into an engine on the device: the
    # ONNX export relabelled stands in for it (the TensorRT exporter is not needed to test profiling).
    from edgevit.artifact import Artifact

    src = Artifact.load(run / "exports" / "onnx" / "fp32")
    dst = run / "exports" / "jetson-orin" / "fp16"
    shutil.copytree(src.directory, dst)
    Artifact("tensorrt", "fp16", dst, src.files, src.input_shape, {**src.manifest, "runtime": {}}).write_manifest()
    return run


def check_sane(r: ProfileResult, iterations: int, warmup: int) -> None:
    s = r.stats
    assert s.iterations == iterations and s.warmup == warmup
    assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.mean_ms > 0 and s.throughput > 0 and s.std_ms >= 0
    assert r.batch == 1 and r.input_shape == [1, 3, 32, 32]
    assert "seeded N(0,1)" in r.extra["input"]


@pytest.mark.parametrize(
    "target,precision,fmt",
    [("onnx", "fp32", "onnx"), ("openvino-cpu", "fp32", "openvino"), ("tflite-mobile", "fp32", "tflite")],
)
def test_each_runtime_profiles_its_artifact(run_dir: Path, target: str, precision: str, fmt: str) -> None:
    r = runners.profile_artifact(run_dir / "exports" / target / precision, threads=1, iterations=20, warmup=3)
    check_sane(r, 20, 3)
    assert r.format == fmt and r.threads == 1
    assert r.peak_mem_mb is None or r.peak_mem_mb >= 0
    assert r.extra["settings"]["threads"] == 1


def test_pytorch_baseline(run_dir: Path) -> None:
    r = runners.profile_student(run_dir / "student.pt", threads=1, iterations=20, warmup=3)
    check_sane(r, 20, 3)
    assert r.format == "pytorch" and r.precision == "fp32" and r.runtime.startswith("pytorch")


def test_same_input_for_every_runner() -> None:
    a, b = runners.make_input([1, 3, 8, 8]), runners.make_input([4, 3, 8, 8], batch=1)
    assert a.dtype.name == "float32" and (a == b).all()


def test_cli_profile_records_ledger_and_json(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from edgevit.runs import Ledger

    for target in ("pytorch", "openvino"):
        rc = main(
            [
                "profile",
                str(run_dir),
                "--target",
                target,
                "--precision",
                "fp32",
                "--threads",
                "1",
                "--iterations",
                "15",
                "--warmup",
                "2",
            ]
        )
        assert rc == 0
    out = capsys.readouterr().out
    assert "median" in out and "1 threads" in out and "machine load" in out
    rows = Ledger(run_dir.parent).profiles(run_dir.name)
    assert {r["target"] for r in rows} >= {"pytorch", "openvino-cpu"}
    row = rows[-1]
    assert row["median_ms"] > 0 and row["p99_ms"] >= row["median_ms"] and row["threads"] == 1
    # the row points at the export it timed; the PyTorch baseline times no export
    (export,) = [x for x in Ledger(run_dir.parent).exports(run_dir.name) if x["id"] == row["export_id"]]
    assert (export["target"], export["precision"]) == ("openvino-cpu", "fp32")
    assert Path(export["path"]).resolve() == Path(row["extra"]["artifact"]).resolve()
    assert all(r["export_id"] is None for r in rows if r["target"] == "pytorch")
    files = list((run_dir / "profiles").glob("openvino-cpu-fp32-*.json"))
    assert files and json.loads(files[0].read_text())["stats"]["median_ms"] > 0


def test_missing_runtime_is_one_line(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    # TensorRT's runtime (trtexec) is not installed here: one line, exit 2.
    rc = main(["profile", str(run_dir), "--target", "jetson", "--device", "local", "--iterations", "5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not available here" in err and "trtexec" in err
    with pytest.raises(EdgevitError, match="Core ML|not installed|macOS"):
        runners.check_runtime("coreml")


HIDE_OPENVINO = """
import sys
sys.modules["openvino"] = None  # import openvino now raises ModuleNotFoundError; find_spec says None
"""


def test_a_runtime_or_converter_that_is_not_installed_is_one_line_naming_the_package(
    run_dir: Path, tmp_path: Path
) -> None:
    """A machine without OpenVINO (hidden from imports here by a sitecustomize): profile, benchmark
    and export each end with one line that names what to install."""
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(HIDE_OPENVINO)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def edgevit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edgevit.cli", *args], capture_output=True, text=True, env=env, timeout=300
        )

    profile = edgevit("profile", str(run_dir), "--target", "openvino-cpu", "--precision", "fp32", "--iterations", "2")
    export = edgevit("export", str(run_dir), "--target", "openvino-cpu", "--precision", "fp16", "--no-ledger")
    for out, says in (
        (profile, "openvino is not installed (pip install openvino)"),
        (export, "export needs the package 'openvino'"),
    ):
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("edgevit: error")]
        assert out.returncode == 2 and "Traceback" not in out.stderr and len(lines) == 1, out.stderr[-2000:]
        assert says in lines[0], lines[0]
    assert not (run_dir / "exports" / "openvino-cpu" / "fp16").exists()


def test_missing_export_and_bad_option(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["profile", str(run_dir), "--target", "openvino", "--precision", "int8"])
    assert rc == 2 and "edgevit export" in capsys.readouterr().err
    rc = main(["profile", str(run_dir), "--target", "onnx", "--option", "novalue"])
    assert rc == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_benchmark_table_files_ledger_and_floor(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from edgevit.runs import Ledger

    common = [
        "benchmark",
        str(run_dir),
        "--targets",
        "onnx,openvino",
        "--precisions",
        "fp32",
        "--reuse-exports",
        "--threads",
        "1",
        "--iterations",
        "10",
        "--warmup",
        "2",
    ]
    assert main(common + ["--detail"]) == 0
    out = capsys.readouterr().out
    for word in ("pytorch", "onnx", "openvino-cpu", "speed-up", "median ms", "machine load"):
        assert word in out
    assert "wrote " in out and str(run_dir / "benchmark" / "benchmark.json") in out
    bench = json.loads((run_dir / "benchmark" / "benchmark.json").read_text())
    rows = {(r["target"], r["precision"]): r for r in bench["rows"]}
    assert rows[("pytorch", "fp32")]["speedup"] == 1.0
    for key in (("onnx", "fp32"), ("openvino-cpu", "fp32")):
        r = rows[key]
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["speedup"] > 0 and r["size_mb"] > 0
        assert r["agreement"] is not None and r["top1"] is not None
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
        ops = bench["detail"][f"{key[0]}/fp32"]  # --detail: the runtime's own profiler, slowest ops first
        assert 1 <= len(ops) <= 5 and all(o["ms"] >= 0 and o["op"] for o in ops), ops
        assert [o["ms"] for o in ops] == sorted((o["ms"] for o in ops), reverse=True)
        assert f"{key[0]}/fp32: {ops[0]['op']}" in out
    assert (run_dir / "benchmark" / "benchmark.csv").read_text().startswith("target,format,precision")
    profiles = Ledger(run_dir.parent).profiles(run_dir.name)
    assert {"pytorch", "onnx", "openvino-cpu"} <= {r["target"] for r in profiles}
    # each target's verdict is in the table, the JSON and the ledger (what reports read)
    assert len(bench["picks"]) == 2 and all(line.split(":")[0] in ("onnx", "openvino-cpu") for line in bench["picks"])
    for r in bench["rows"]:
        assert r["why"] and isinstance(r["pick"], bool) and r["load_ms"] > 0
    verdicts = [p["extra"]["benchmark"] for p in profiles if "benchmark" in (p["extra"] or {})]
    assert len(verdicts) >= 3 and all("why" in v for v in verdicts)
    # a random-weight student is far below a 99 % floor: the table still prints, the exit is 1
    assert main(common + ["--min-accuracy", "99"]) == 1
    assert "below the --min-accuracy floor" in capsys.readouterr().out


def test_the_device_agent_stays_light() -> None:
    """The SSH agent runs on boards with only numpy and a runtime: it must not pull in torch or the exporters."""
    import subprocess
    import sys

    code = (
        "import sys, edgevit.profile.agent, edgevit.runtimes, edgevit.profile.runners; "
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('edgevit.export') or m == 'timm'); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
