"""`edgevit compress`: the latency-budget search on a small real student, timed in ONNX Runtime.

The space (blocks dropped by measured usefulness, widths rounded), the search end to end (a search
stopped by an unreachable budget, resumed with a reachable one: nothing re-timed), and the bad
inputs, each one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import train_tiny_student

from edgevit.cli import main
from edgevit.errors import EdgevitError
from edgevit.models.checkpoint import load_student, save_student
from edgevit.runs import Ledger

pytest.importorskip("torch_pruning", reason="compress needs the [prune] extra")
pytest.importorskip("onnxruntime", reason="these searches time ONNX Runtime")

from edgevit.compress import compress  # noqa: E402
from edgevit.compress.latency import CACHE_FILE  # noqa: E402
from edgevit.compress.space import architectures, removal_order  # noqa: E402

SMALL = dict(  # 4 architectures x the ONNX target's 2 precisions; 1-epoch recoveries from the parent student
    depths=[1.0, 0.34],
    keeps=[1.0, 0.5],
    estimate_epochs=1,
    recover_epochs=1,
    finalists=1,
    recover_teacher="student",
    rounds=2,
    iterations=40,
    threads=1,
)


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/tiny: a 3-block DeiT (embed 64, 2 heads, patch 8, 32 px) trained briefly on digits."""
    extra = {"depth": 3, "embed_dim": 64, "num_heads": 2, "patch_size": 8}
    return train_tiny_student(tmp_path_factory.mktemp("runs") / "tiny", extra=extra, steps=200)


def _val(run: Path, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from edgevit.data import build_datasets

    _, meta = load_student(run)
    ds = build_datasets(meta["data"], None, crop_pct=1.0).val
    xs, ys = zip(*(ds[i] for i in range(min(n, len(ds)))))
    return torch.stack(xs), torch.tensor(ys)


def test_the_block_that_does_nothing_is_removed_first(parent: Path) -> None:
    model, _ = load_student(parent)
    block = model.blocks[1]
    with torch.no_grad():  # both residual branches output zero: the block is the identity
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    assert removal_order(model, _val(parent))[0] == ("blocks", 1)


def test_architectures_drop_blocks_round_widths_and_save_exactly(parent: Path, tmp_path: Path) -> None:
    model, meta = load_student(parent)
    x, y = _val(parent)
    archs = list(architectures(model, meta, [1.0, 0.34], [1.0, 0.5], (x, y), [(x[:32], y[:32])], round_to=8))
    assert [a.name for a in archs] == ["d3-k100", "d3-k050", "d1-k100", "d1-k050"]
    assert archs[0].macs > archs[1].macs > archs[3].macs and archs[2].macs > archs[3].macs
    for a in archs:
        assert len(a.model.blocks) == a.depth
        if a.keep < 1:
            widths = [m.out_features for m in a.model.modules() if isinstance(m, torch.nn.Linear)]
            assert all(w % 8 == 0 for w in widths if w not in (10,)), widths  # 10: the classifiers
        save_student(tmp_path / "s.pt", a.model, a.meta)
        again, _ = load_student(tmp_path / "s.pt")
        with torch.no_grad():
            assert torch.equal(again(x[:4]), a.model.eval()(x[:4]))


def test_pvt_depth_is_searched_per_stage_and_saves_exactly(tmp_path: Path) -> None:
    from edgevit.compress.space import block_lists

    run = train_tiny_student(tmp_path / "pvt", "pvt_v2_b0", extra={"depths": (2, 1, 2, 1)}, steps=30)
    model, meta = load_student(run)
    x, y = _val(run, 64)
    order = removal_order(model, (x, y))
    assert len(order) == 6 - 4 and all(path.startswith("stages.") for path, _ in order)  # each stage keeps 1
    archs = list(architectures(model, meta, [1.0, 0.67], [1.0], (x, y), []))
    assert [a.name for a in archs] == ["d6-k100", "d4-k100"]
    small = archs[1]
    per_stage = [len(b) for b in block_lists(small.model).values()]
    assert sum(per_stage) == 4 and min(per_stage) == 1 and tuple(per_stage) == small.meta["create_kwargs"]["depths"]
    assert small.macs < archs[0].macs and small.description().startswith("blocks " + "-".join(map(str, per_stage)))
    assert [len(b) for b in block_lists(model).values()] == [2, 1, 2, 1]  # the parent keeps its blocks
    save_student(tmp_path / "s.pt", small.model, small.meta)
    again, _ = load_student(tmp_path / "s.pt")
    with torch.no_grad():
        assert torch.equal(again(x[:4]), small.model.eval()(x[:4]))


def test_search_stopped_by_an_unreachable_budget_resumes_without_timing_again(parent: Path, tmp_path: Path) -> None:
    out = parent.parent / "tiny-search"
    unreachable = r"the fastest candidate found takes .* ms at .*; 1e-05 ms cannot be met on onnx"
    with pytest.raises(EdgevitError, match=unreachable):
        compress(parent, "onnx", 1e-5, out=out, **SMALL)
    ledger = Ledger(parent.parent)
    row = ledger.runs("tiny-search")[0]
    assert row["kind"] == "search" and row["parent"] == "tiny" and row["status"] == "failed"
    assert "cannot be met" in row["reason"]
    assert not (out / "student.pt").exists() and not (out / "search.json").exists()
    cached = json.loads((parent.parent / CACHE_FILE).read_text())
    timed_first = len(cached)
    assert len({key.rsplit(" | ", 1)[1] for key in cached}) == 7  # the grid's 4, then 3 smaller ones
    assert {p.name for p in (out / "candidates").iterdir()} >= {"d1-k025", "d1-k012", "d1-k010"}
    assert {key.split(" | ")[2] for key in cached} == {"fp32", "int8"}  # the ends at both precisions

    with pytest.raises(EdgevitError, match="already holds a run"):
        compress(parent, "onnx", 100, out=out, **SMALL)
    s = compress(parent, "onnx", [100, 50], out=out, resume=True, **SMALL)
    assert s["timed"] == 0 and s["reused"] >= timed_first  # resumed: nothing timed again
    assert len(json.loads((parent.parent / CACHE_FILE).read_text())) == timed_first
    for b in s["budgets"]:
        pick = b["pick"]
        assert pick is not None and pick["remeasured_ms"] <= b["budget_ms"]
        finalists = [f for f in b["finalists"] if f["remeasured_ms"] <= b["budget_ms"]]
        assert pick["recovered_top1"] == max(f["recovered_top1"] for f in finalists)
    assert ledger.runs("tiny-search")[0]["status"] == "done"
    saved, _ = load_student(out)
    first = s["budgets"][0]["pick"]
    assert (out / "exports" / "onnx" / first["precision"] / "manifest.json").is_file()
    assert sum(p.numel() for p in saved.parameters()) == first["params"]
    result = json.loads((out / "search.json").read_text())
    assert {r["precision"] for r in result["rows"]} <= {"fp32", "int8"}
    assert {r["candidate"] for r in result["rows"]} >= {"d3-k100", "d1-k010"}  # the extended grid is explored too
    assert (out / "search.csv").read_text().count("\n") == len(result["rows"]) + 1
    profiles = [p for p in ledger.profiles("tiny-search") if "search" in (p.get("extra") or {})]
    assert len(profiles) >= len([r for r in result["rows"] if r["median_ms"] is not None])
    _the_report_draws_the_search(parent.parent, result, tmp_path)


def test_an_int8_finalist_is_tuned_for_accuracy_not_only_ptq(parent: Path) -> None:
    out = parent.parent / "tiny-int8-search"
    s = compress(parent, "onnx", 100, out=out, **{**SMALL, "depths": [0.34], "keeps": [0.5], "precisions": ["int8"]})
    pick = s["budgets"][0]["pick"]
    assert pick["precision"] == "int8" and Path(pick["folder"]).name in ("int8-tune", "int8-tune-missed")
    manifest = json.loads((out / "exports" / "onnx" / "int8" / "manifest.json").read_text())
    assert manifest["quantization"]["method"] == "tune" and manifest["quantization"]["max_drop"] == 0.5
    assert manifest["verification"]["top1"] == pick["recovered_top1"]
    ranked = json.loads(
        (out / "candidates" / pick["candidate"] / "exports" / "onnx" / "int8" / "manifest.json").read_text()
    )
    assert ranked["quantization"].get("method", "ptq") == "ptq"  # the explored candidate's plain PTQ ranked it


def _the_report_draws_the_search(runs: Path, result: dict, tmp_path: Path) -> None:
    """`edgevit report`'s search section, from the ledger alone: every timed point, each budget with its
    margin, the finalists and the pick where the search says they are."""
    from edgevit.report import data as D
    from edgevit.report import plots as P
    from edgevit.report import sections
    from edgevit.report.output import Output

    ledger = D.read_ledger(runs)
    (found,) = [x for x in D.searches(ledger) if x["run"] == "tiny-search"]
    explored, finalists = D.search_explored(ledger, "tiny-search"), D.search_finalists(found)
    timed = {(r["candidate"], r["precision"]) for r in result["rows"] if r["median_ms"] and r["top1_estimate"]}
    assert set(zip(explored["candidate"], explored["precision"])) == timed
    picks = D.search_picks(found)
    assert list(picks["budget_ms"]) == [100, 50] and picks["met"].all()
    assert list(finalists[finalists["pick"]]["candidate"]) == list(picks["pick"])
    ax = P.search_front(explored, finalists, found).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert {"budget 100 ms", "budget 50 ms", "pick for 100 ms", "pick for 50 ms"} <= set(labels)
    star = next(c for c, lab in zip(*ax.get_legend_handles_labels()) if lab == "pick for 50 ms")
    pick = found["budgets"][1]["pick"]
    assert star.get_offsets().tolist() == [[pick["remeasured_ms"], pick["recovered_top1"]]]
    out = Output(tmp_path / "report")
    sections.searches(ledger, out)
    assert {p.name for p in out.written} == {"search_tiny-search.png", "search_picks_tiny-search.csv"}


@pytest.mark.parametrize(
    "budget, message",
    [
        (0, "latency_budget_ms"),
        (-1, "latency_budget_ms"),
        ("abc", "latency_budget_ms"),
    ],
)
def test_bad_budgets_fail_in_one_line(parent: Path, budget, message: str) -> None:
    with pytest.raises(EdgevitError, match=message) as err:
        compress(parent, "onnx", budget)
    assert "\n" not in str(err.value)


def test_cli_bad_input_is_one_line_and_exit_2(parent: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compress", str(parent), "--target", "onnx", "--latency-budget", "abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--latency-budget" in err
    assert main(["compress", str(parent), "--target", "onnx"]) == 2
    assert "latency" in capsys.readouterr().err


def test_targets_and_runs_that_cannot_be_searched(parent: Path, tmp_path: Path) -> None:
    import sys

    cases = [
        (dict(target="onnx", device="ssh://nobody@127.0.0.1:1"), "127.0.0.1"),  # unreachable device
        (dict(target="jetson-orin"), "jetson.local"),  # TensorRT: its device, which is not there
    ]
    if sys.platform != "darwin":
        cases.append((dict(target="coreml-ios"), "cannot be timed here"))
    for kw, message in cases:
        with pytest.raises(EdgevitError, match=message) as err:
            compress(parent, latency_budget_ms=1.0, **kw)
        assert "\n" not in str(err.value)
    with pytest.raises(EdgevitError, match="no student.pt"):
        compress(tmp_path, "onnx", 1.0)
    runs = tmp_path / "runs"
    shutil.copytree(parent, runs / "broken")
    Ledger(runs).record_run("broken", kind="distill", status="failed", path=runs / "broken", reason="killed")
    with pytest.raises(EdgevitError, match="broken is failed, not finished"):
        compress(runs / "broken", "onnx", 1.0)
    with pytest.raises(EdgevitError, match="resume needs out"):
        compress(parent, "onnx", 1.0, resume=True)
