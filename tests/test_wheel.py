"""A non-editable install works: the wheel carries recipes, targets and notebooks, and an install of it
runs from an empty folder (recipes, targets, a one-epoch distill on the embedded default)."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """The project's wheel installed into a fresh venv that borrows this venv's dependencies
    (a .pth path entry: the editable install's own finder is not loaded from there)."""
    tmp = tmp_path_factory.mktemp("wheel")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("edgevit-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    target = next((venv / "lib").glob("python3*/site-packages"))
    (target / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    out = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return venv


def test_wheel_contains_the_shipped_data(wheel_venv: Path) -> None:
    (wheel,) = (wheel_venv.parent / "dist").glob("edgevit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for kind, ext in (("recipes", "yaml"), ("targets", "yaml")):
        shipped = {p.name for p in (ROOT / kind).glob(f"*.{ext}")}
        assert shipped and {n.rsplit("/", 1)[-1] for n in names if n.startswith(f"edgevit/{kind}/")} == shipped
    notebooks = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {n.rsplit("/", 1)[-1] for n in names if n.startswith("edgevit/notebooks/")} == notebooks


def test_installed_wheel_runs_from_an_empty_folder(wheel_venv: Path, tmp_path: Path) -> None:
    python = wheel_venv / "bin" / "python"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": ""}

    def edgevit(*args: str) -> subprocess.CompletedProcess:  # the console script the wheel installed
        return subprocess.run(
            [str(wheel_venv / "bin" / "edgevit"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    where = subprocess.run(
        [str(python), "-c", "import edgevit; print(edgevit.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert str(wheel_venv) in where.stdout, where.stdout + where.stderr  # the wheel, not the checkout
    recipes = edgevit("recipes")
    assert recipes.returncode == 0 and "quickstart" in recipes.stdout, recipes.stderr
    targets = edgevit("targets")
    assert targets.returncode == 0 and "openvino-cpu" in targets.stdout, targets.stderr
    run = edgevit("distill", "--epochs", "1", "--teacher-epochs", "1", "--img-size", "16", "--out", "runs/wheel")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "runs" / "wheel" / "student.pt").is_file() and "top-1" in run.stdout


def test_installed_wheel_runs_report(wheel_venv: Path, tmp_path: Path) -> None:
    """`edgevit report` from the wheel: its notebooks are package data, run in a kernel of that venv."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": ""}
    (tmp_path / "runs").mkdir()
    out = subprocess.run(
        [str(wheel_venv / "bin" / "edgevit"), "report", "--runs", "runs"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    html = (tmp_path / "runs" / "reports" / "accuracy_latency_report.html").read_text()
    assert "No runs ledger at" in html and "Accuracy and latency report" in html
