"""`edgevit report` on a ledger made by really running the pipeline (distill, export, profile) through
the CLI; the HTML checked for the ledger's numbers and opened in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from PIL import Image
from test_distill import ROOT, edgevit, write_recipe

from edgevit.report import data as D
from edgevit.report import sections
from edgevit.report.output import Output
from edgevit.runs import SCHEMA_VERSION, Ledger

NOTEBOOKS = ROOT / "notebooks"


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/: `hard` (distilled from a tiny teacher, exported to ONNX FP32, profiled with its PyTorch
    baseline), `none` (the same recipe without distillation) and `hard-pruned` (`hard` pruned to half
    its MACs, recovered one epoch, profiled in PyTorch)."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "runs"
    recipe = write_recipe(tmp, epochs=2)
    steps = [
        ("distill", recipe, "--out", root / "hard"),
        ("distill", recipe, "--distillation", "none", "--out", root / "none"),
        ("export", "hard", "--target", "onnx", "--precision", "fp32", "--runs", root),
        ("profile", "hard", "--target", "pytorch", "--runs-dir", root, "--iterations", "20", "--warmup", "2"),
        (
            "profile",
            "hard",
            "--target",
            "onnx",
            "--precision",
            "fp32",
            "--runs-dir",
            root,
            "--iterations",
            "20",
            "--warmup",
            "2",
        ),
        ("prune", "hard", "--ratio", "0.5", "--recover-epochs", "1", "--runs-dir", root, "--out", root / "hard-pruned"),
        ("profile", "hard-pruned", "--target", "pytorch", "--runs-dir", root, "--iterations", "20", "--warmup", "2"),
    ]
    for step in steps:
        out = edgevit(*step)
        assert out.returncode == 0, f"{step[0]}: {out.stderr[-2000:]}"
    return root


@pytest.fixture(scope="module")
def report_html(runs: Path) -> Path:
    out = edgevit("report", "--runs", runs, "--out", runs.parent / "out" / "report.html")
    assert out.returncode == 0, out.stderr[-3000:]
    path = runs.parent / "out" / "report.html"
    assert str(path) in out.stdout and path.is_file()
    return path


def _assets(html: Path) -> Path:
    return html.with_name(f"{html.stem}_files")


# ------------------------------------------------------------------------------------ the report
@pytest.mark.slow
def test_report_shows_the_ledgers_numbers(runs: Path, report_html: Path):
    led = Ledger(runs)
    html = report_html.read_text()
    hard, none = led.runs("hard")[0]["summary"], led.runs("none")[0]["summary"]
    (export,) = led.exports("hard")
    onnx = next(p for p in led.profiles("hard") if p["format"] == "onnx")
    base = next(p for p in led.profiles("hard") if p["format"] == "pytorch")
    for text in (
        "hard",
        "none",
        "resnet10t",
        "deit_tiny_distilled_patch16_224",
        f"{hard['val_top1']:.2f}",
        f"{none['val_top1']:.2f}",
        f"{export['top1']:.2f}",
        f"{onnx['median_ms']:.3f}",
        f"{base['median_ms']:.3f}",
        f"{base['median_ms'] / onnx['median_ms']:.2f}×",
        "Pareto front",
    ):
        assert text in html, text
    # the CSV beside it holds the same rows at full precision
    files = _assets(report_html)
    rows = (files / "run_hard.csv").read_text().splitlines()
    assert rows[0].startswith("target,format,precision") and len(rows) == 3  # header, PyTorch, ONNX FP32
    assert rows[1].startswith("pytorch,pytorch,fp32") and rows[2].startswith("onnx,onnx,fp32")
    assert str(onnx["median_ms"]) in rows[2] or f"{onnx['median_ms']:.6f}"[:7] in rows[2]


@pytest.mark.slow
def test_report_shows_what_pruning_bought(runs: Path, report_html: Path):
    led = Ledger(runs)
    (pruned,) = led.runs("hard-pruned")
    assert pruned["kind"] == "prune" and pruned["parent"] == "hard"
    html = report_html.read_text()
    assert "hard-pruned" in html and f"{pruned['summary']['val_top1']:.2f}" in html
    rows = (_assets(report_html) / "pruning.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("hard-pruned,hard,")
    _check_image((_assets(report_html) / "pruning.png").read_bytes(), min_bytes=10_000)


@pytest.mark.slow
def test_a_latency_budget_names_the_best_export_within_it(runs: Path, tmp_path: Path):
    onnx = next(p for p in Ledger(runs).profiles("hard") if p["format"] == "onnx")
    budget = onnx["median_ms"] * 1000  # every timed export fits: the most accurate one is named per target
    out = edgevit(
        "report", "--runs", runs, "--budget-ms", f"{budget:.3f}", "--select", "hard", "--out", tmp_path / "budget.html"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    html = (tmp_path / "budget.html").read_text()
    assert "Best top-1 within" in html and "best_under_budget" not in out.stderr
    rows = (tmp_path / "budget_files" / "best_under_budget.csv").read_text().splitlines()
    assert rows[0].startswith("target,run") and any(r.startswith("onnx,hard,") for r in rows[1:])
    bad = edgevit("report", "--runs", runs, "--budget-ms", "0", "--out", tmp_path / "zero.html")
    assert bad.returncode == 2 and "--budget-ms 0.0: give a latency budget" in bad.stderr


@pytest.mark.slow
def test_report_is_self_contained_with_real_images(report_html: Path):
    html = report_html.read_text()
    assert not re.search(r"""(src|href)=["']https?:""", html), "the report must open offline"
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    pngs = sorted(_assets(report_html).glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"accuracy_latency_onnx", "training_curves", "distillation_all"} <= names
    assert len(embedded) == len(pngs)
    for png in [p.read_bytes() for p in pngs] + [base64.b64decode(e) for e in embedded]:
        _check_image(png, min_bytes=10_000)


def _check_image(png: bytes, min_bytes: int) -> None:
    assert len(png) > min_bytes
    img = Image.open(io.BytesIO(png))
    img.verify()
    img = Image.open(io.BytesIO(png)).convert("L")
    assert img.width > 300 and img.height > 200
    colours = img.getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 20 or not colours, "the image is (nearly) one colour"
    dark = sum(n for n, v in colours if v < 128) / (img.width * img.height)
    assert dark > 0.005, "no text or lines drawn"


@pytest.mark.slow
def test_distillation_study_notebook_runs_on_the_ledger(runs: Path):
    out = edgevit("report", "--runs", runs, "--notebook", "distillation_study")
    assert out.returncode == 0, out.stderr[-3000:]
    html = (runs / "reports" / "distillation_study.html").read_text()
    led = Ledger(runs)
    hard, none = (led.runs(n)[0]["summary"]["val_top1"] for n in ("hard", "none"))
    gain = f"{hard - none:+.2f} pt"
    assert gain in html and f"{hard:.2f} %" in html and "hard α=0.5 from resnet10t" in html
    csv = (runs / "reports" / "distillation_study_files" / "distillation_digits.csv").read_text()
    assert "none" in csv and "hard" in csv


@pytest.mark.slow
def test_report_opens_in_headless_chromium(report_html: Path, tmp_path: Path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it)")
    shot = tmp_path / "report.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        report_html.resolve().as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), out.stderr[-3000:]
    # Chromium logs every console message (errors, uncaught exceptions) as ...:CONSOLE:...; a static
    # report has no script of its own that should say anything.
    console = [ln for ln in out.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console
    _check_image(shot.read_bytes(), min_bytes=50_000)
    img = Image.open(shot).convert("L")
    top, bottom = img.crop((0, 0, 1280, 1200)), img.crop((0, 1200, 1280, 2400))
    for part in (top, bottom):  # text and tables at the top, a plot further down: neither half blank
        assert part.getextrema()[0] < 100


# ------------------------------------------------------------------------------------ bad input, empty ledger
def test_empty_runs_folder_gives_a_short_report(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    out = edgevit("report", "--runs", tmp_path / "runs", "--out", tmp_path / "r.html")
    assert out.returncode == 0, out.stderr[-3000:]
    html = (tmp_path / "r.html").read_text()
    assert "No runs ledger at" in html and "No runs recorded." in html
    assert not (tmp_path / "runs" / "ledger.sqlite").exists()  # a report never creates or migrates a ledger
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--runs", "{tmp}/missing"], "runs folder {tmp}/missing does not exist"),
        (["--runs", "{tmp}", "--notebook", "accuracy_latency"], "unknown notebook 'accuracy_latency'"),
        (["--runs", "{tmp}", "--out", "{tmp}/report.pdf"], "give a .html file name"),
        (["--runs", "{tmp}/notsqlite"], "is not an SQLite database"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "notsqlite").mkdir()
    (tmp_path / "notsqlite" / "ledger.sqlite").write_text("not a database")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = edgevit("report", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert message.replace("{tmp}", str(tmp_path)) in out.stderr


# ------------------------------------------------------------------------------------ frames from the ledger
DEVICE = "local (test CPU, 2 CPUs)"


def _run(
    led: Ledger,
    name: str,
    top1: float,
    params: float,
    parent: str | None = None,
    kind: str = "distill",
    distillation: str = "hard",
    seed: int = 0,
) -> None:
    """A finished run as the stages record it (rows written through the Ledger API, not by the stages:
    several seeds of real training would take minutes; the `runs` fixture has the real ones)."""
    teachers = [] if distillation == "none" else [{"name": "resnet18", "val_top1": 97.0}]
    recipe = {
        "seed": seed,
        "epochs": 3,
        "data": {"spec": "digits", "img_size": 32},
        "student": {"name": "deit_tiny_distilled_patch16_224", "kwargs": {"depth": 2}},
        "distill": {"type": distillation, "alpha": 0.5, "tau": 1.0},
    }
    summary = {
        "student": "deit_tiny_distilled_patch16_224",
        "teachers": teachers,
        "distillation": distillation,
        "epochs": 3,
        "val_top1": top1,
        "params_m": params,
        "macs_g": params / 40,
    }
    led.record_run(name, kind=kind, status="done", parent=parent, recipe=recipe, summary=summary)
    for epoch in (1, 2, 3):
        led.record_eval(
            name,
            epoch=epoch,
            metrics={
                "top1": top1 * epoch / 3,
                "loss": 2.0 / epoch,
                "lr": 1e-3,
                "train_loss": 1.8 / epoch,
                "train_task_loss": 1.5 / epoch,
                "train_distill_loss": 0.5 / epoch,
            },
        )


def _export(
    led: Ledger, run: str, precision: str, top1: float, ms: float, scheme: str | None = None, pick: bool = False
) -> None:
    eid = led.record_export(
        run,
        target="onnx",
        format="onnx",
        precision=precision,
        scheme=scheme,
        method="ptq" if scheme else None,
        path=f"runs/{run}/exports/onnx/{precision}",
        size_bytes=1_000_000,
        verified=True,
        agreement=99.0,
        top1=top1,
    )
    led.record_profile(
        run,
        target="onnx",
        format="onnx",
        precision=precision,
        export_id=eid,
        runtime="onnxruntime",
        device=DEVICE,
        threads=2,
        batch=1,
        median_ms=ms,
        p90_ms=ms * 1.1,
        extra={"benchmark": {"pick": pick, "why": "fastest within 0.5 pt" if pick else ""}},
    )


@pytest.fixture()
def v2_runs(tmp_path: Path) -> Path:
    led = Ledger(tmp_path / "runs")
    _run(led, "base", 84.0, 2.0)
    _run(led, "base-s1", 82.0, 2.0, seed=1)
    _run(led, "plain", 76.0, 2.0, distillation="none")
    _run(led, "small", 81.0, 1.0, parent="base", kind="prune")
    for run, scale in (("base", 1.0), ("small", 0.5)):
        led.record_profile(
            run,
            target="pytorch",
            format="pytorch",
            precision="fp32",
            runtime="pytorch eager",
            device=DEVICE,
            threads=2,
            batch=1,
            median_ms=4.0 * scale,
            p90_ms=4.4 * scale,
        )
        _export(led, run, "fp32", 84.0 if run == "base" else 81.0, 3.0 * scale)
        _export(led, run, "int8", 83.5 if run == "base" else 80.0, 2.0 * scale, scheme="static", pick=run == "base")
    return tmp_path / "runs"


def test_v2_ledger_frames(v2_runs: Path):
    data = D.read_ledger(v2_runs)
    assert data.version == SCHEMA_VERSION and data.problem is None
    table = D.run_table(data, "base")
    assert list(table["target"]) == ["pytorch", "onnx", "onnx"]
    assert list(table["speedup_vs_pytorch_fp32"]) == pytest.approx([1.0, 4.0 / 3.0, 2.0])
    assert list(table["pick"]) == [None, False, True] and list(table["scheme"].fillna("-")) == ["-", "-", "static"]
    pts = D.points(data)
    small_int8 = pts[(pts["run"] == "small") & (pts["precision"] == "int8")].iloc[0]
    assert small_int8["parent_point"] == (2.0, 83.5)  # linked to the parent's INT8 export
    front = D.pareto_table(pts, "onnx")  # base int8 (2.0 ms, 83.5) is beaten by nothing; small int8 is fastest
    assert list(zip(front["run"], front["precision"])) == [
        ("small", "int8"),
        ("small", "fp32"),
        ("base", "int8"),
        ("base", "fp32"),
    ]
    assert D.best_under_budget(pts, 1.9).iloc[0][["run", "precision"]].tolist() == ["small", "fp32"]
    curves = D.curves(data)
    assert {"val_top1", "train_loss", "train_task_loss", "train_distill_loss", "lr"} <= set(curves.columns)
    summary = D.settings_summary(D.distillation_runs(data, "digits"))
    hard = summary[summary["setting"] == "hard"].iloc[0]
    assert hard["seeds"] == 2 and hard["top1_mean_%"] == pytest.approx(83.0)
    assert hard["top1_std_%"] == pytest.approx(1.41421356, rel=1e-6) and hard["gain_vs_none_pt"] == pytest.approx(7.0)
    pairs = D.pruning_pairs(data)
    assert pairs.iloc[0][["pruned", "parent"]].tolist() == ["small", "base"]
    assert pairs.iloc[0]["speedup"] == pytest.approx(2.0) and pairs.iloc[0]["top1_change_pt"] == pytest.approx(-3.0)


def test_sections_write_every_figure_and_table(v2_runs: Path, tmp_path: Path):
    data = D.read_ledger(v2_runs)
    out = Output(tmp_path / "files")
    sections.runs(data, out)
    sections.accuracy_latency(data, out, budget_ms=1.9)
    sections.training(data, out)
    sections.distillation(data, out, "digits")
    sections.pruning(data, out)
    names = {p.name for p in out.written}
    assert {
        "runs.csv",
        "run_base.csv",
        "run_small.csv",
        "accuracy_latency_onnx.png",
        "pareto_onnx.csv",
        "best_under_budget.csv",
        "training_curves.png",
        "training_curves.csv",
        "distillation_digits.csv",
        "distillation_digits.png",
        "pruning.csv",
        "pruning.png",
    } <= names
    for png in (tmp_path / "files").glob("*.png"):
        _check_image(png.read_bytes(), min_bytes=10_000)


# ------------------------------------------------------------------------------------ notebooks, packaging
@pytest.mark.parametrize("name", ["accuracy_latency_report", "distillation_study"])
def test_notebooks_are_committed_without_outputs(name: str):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "runs_dir" in params[0].source and "out_dir" in params[0].source
