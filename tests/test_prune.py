"""Pruning on tiny real students: what shrinks, what must not, MAC targets, the checkpoint, export,
and the prune stage (new run, ledger row naming its parent, recovery by distillation)."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgevit.errors import EdgevitError
from edgevit.models.checkpoint import load_student, save_student
from edgevit.models.students import create_student, student_kwargs
from edgevit.prune.engine import (
    _attentions,
    classifiers,
    count,
    importance_signal,
    prune_channels,
    prune_model,
    structure,
)

X = torch.zeros(1, 3, 32, 32)


@pytest.fixture(scope="module")
def deit(trained_run: Path):
    model, meta = load_student(trained_run)
    return model, meta


def _batches(n: int = 2, size: int = 16, img: int = 32):
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, 3, img, img, generator=gen), torch.randint(0, 10, (size,), generator=gen)) for _ in range(n)
    ]


def _blocks(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "features"}


# ------------------------------------------------------------------------------------ engine
def test_deit_head_dims_and_mlp_shrink_to_the_asked_macs(deit) -> None:
    model, _ = deit
    before = structure(model)
    pruned, report = prune_model(model, X, 0.5, importance="magnitude")
    after = structure(pruned)
    assert 0.45 <= report.macs_after / report.macs_before <= 0.5
    for name, blk in _blocks(after).items():
        assert blk["heads"] == before[name]["heads"]  # dims mode keeps every head, each narrower
        assert blk["head_dim"] < before[name]["head_dim"] and blk["mlp_hidden"] < before[name]["mlp_hidden"]
    assert after["features"] == before["features"]  # the embedding width only with embed=True
    assert [c.out_features for c in classifiers(pruned)] == [10, 10]
    assert pruned.patch_embed.proj.in_channels == 3
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert structure(model) == before  # the student given is left as it was


def test_whole_heads_go_but_never_the_last_one(deit) -> None:
    model, _ = deit
    for isomorphic in (False, True):
        pruned, _ = prune_model(model, X, 0.45, importance="magnitude", attention="heads", isomorphic=isomorphic)
        heads = [a.num_heads for a in _attentions(pruned)]
        assert heads == [1, 1], heads  # 2 heads per block: at most one may go
        assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_embedding_width_shrinks_only_when_asked(deit) -> None:
    model, _ = deit
    pruned, report = prune_model(model, X, 0.5, by="params", importance="magnitude", embed=True)
    assert structure(pruned)["features"] < structure(model)["features"]
    assert pruned.cls_token.shape[-1] == pruned.pos_embed.shape[-1] == pruned.head.in_features
    assert [c.out_features for c in classifiers(pruned)] == [10, 10]
    assert 0.45 <= report.params_after / report.params_before <= 0.5


def _zero_half(model: torch.nn.Module, heads: bool) -> None:
    """Zero every other head dim (or the first head) and every other MLP unit, in all their weights."""
    with torch.no_grad():
        for a in _attentions(model):
            width = a.num_heads * a.head_dim
            dead = (
                list(range(a.head_dim))
                if heads
                else [h * a.head_dim + d for h in range(a.num_heads) for d in range(0, a.head_dim, 2)]
            )
            rows = [i + k * width for k in range(3) for i in dead]
            a.qkv.weight[rows] = 0
            a.qkv.bias[rows] = 0
            a.proj.weight[:, dead] = 0
        for blk in model.blocks:
            dead = list(range(0, blk.mlp.fc1.out_features, 2))
            blk.mlp.fc1.weight[dead] = 0
            blk.mlp.fc1.bias[dead] = 0
            blk.mlp.fc2.weight[:, dead] = 0


@pytest.mark.parametrize("attention", ["dims", "heads"])
def test_removed_channels_are_consistent_across_q_k_v_and_proj(deit, attention: str) -> None:
    """With half the dims (or a head) zeroed everywhere, pruning exactly those changes no output:
    q, k and v lose the same rows, proj the same columns, and the softmax temperature is kept."""
    model = copy.deepcopy(deit[0])
    _zero_half(model, heads=attention == "heads")
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        pruned = prune_channels(model, X, 0.5, "magnitude", attention=attention)
        assert torch.allclose(pruned(x), ref, atol=1e-5)
    assert all(b["mlp_hidden"] == 128 for b in _blocks(structure(pruned)).values())


def test_global_ranking_keeps_a_tenth_of_every_layer(deit) -> None:
    """A block whose MLP lives in two units ranks its other 254 below everything else; global
    (isomorphic) ranking would keep those two alone, and keeps a tenth of the layer instead."""
    model = copy.deepcopy(deit[0])
    with torch.no_grad():
        mlp = model.blocks[1].mlp
        mlp.fc1.weight[2:] *= 1e-4
        mlp.fc1.bias[2:] *= 1e-4
        mlp.fc2.weight[:, 2:] *= 1e-4
    pruned, _ = prune_model(model, X, 0.4, importance="magnitude", isomorphic=True)
    hidden = [b["mlp_hidden"] for b in _blocks(structure(pruned)).values()]
    assert hidden[1] == math.ceil(0.1 * 256) and hidden[0] > hidden[1], hidden


@pytest.mark.parametrize("kind", ["taylor", "hessian"])
def test_gradient_importances_rank_with_training_batches(deit, kind: str) -> None:
    model = copy.deepcopy(deit[0])
    importance_signal(model, _batches(), kind)
    assert all(p.grad is not None for p in model.blocks[0].parameters())
    if kind == "hessian":  # a diagonal Hessian estimate: mean squared per-sample gradients
        assert all((p.grad >= 0).all() for p in model.parameters() if p.grad is not None)
    pruned, report = prune_model(model, X, 0.6, importance=kind, isomorphic=True)
    assert 0.55 <= report.macs_after / report.macs_before <= 0.6
    assert all(p.grad is None for p in pruned.parameters())  # the scores do not travel with the student


def test_iterative_steps_reach_the_target_in_stages(deit) -> None:
    model, _ = deit
    base = count(model, X)[0]
    first, _ = prune_model(model, X, 0.75, importance="magnitude")
    second, _ = prune_model(first, X, 0.5 * base / count(first, X)[0], importance="magnitude")
    assert base > count(first, X)[0] > count(second, X)[0]
    assert 0.45 <= count(second, X)[0] / base <= 0.5


def test_pruned_deit_saves_and_loads_without_pickles(deit, tmp_path: Path) -> None:
    model, meta = deit
    pruned, _ = prune_model(model, X, 0.5, importance="magnitude", attention="both")
    save_student(tmp_path / "student.pt", pruned, {k: v for k, v in meta.items() if k not in ("structure", "sha256")})
    back, _ = load_student(tmp_path)
    assert structure(back) == structure(pruned)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), pruned.eval()(x))


def test_bad_options_fail_in_one_line(deit) -> None:
    model, _ = deit
    for kw, word in [
        ({"keep": 1.0}, "ratio"),
        ({"keep": 0.5, "importance": "l1"}, "importance"),
        ({"keep": 0.5, "by": "flops"}, "by must"),
    ]:
        with pytest.raises(EdgevitError, match=word) as err:
            prune_model(model, X, **kw)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ export
def _save_run(run: Path, model: torch.nn.Module, meta: dict) -> Path:
    run.mkdir(parents=True)
    save_student(run / "student.pt", model, {k: v for k, v in meta.items() if k not in ("structure", "sha256")})
    return run


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "openvino-cpu"])
def test_pruned_deit_exports_and_agrees(deit, tmp_path: Path, target: str) -> None:
    from edgevit.export.pipeline import export_run

    model, meta = deit
    pruned, _ = prune_model(model, X, 0.5, importance="magnitude", attention="both")
    v = export_run(_save_run(tmp_path / "pruned", pruned, meta), target, "fp32", ledger=False).verification
    assert v.verified and v.agreement == 100.0, v.note


FAMILIES = {"pvt_v2_b0": {"depths": (1, 1, 1, 1)}, "convmixer_256_8_ks5_p2": {"depth": 3, "dim": 64}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_pruned_pvt_and_convmixer_run_save_and_export(name: str, tmp_path: Path) -> None:
    from edgevit.export.pipeline import export_run

    kwargs = student_kwargs(name, 10, 32, None, 0.0, FAMILIES[name])
    torch.manual_seed(0)
    model = create_student(name, kwargs).eval()
    importance_signal(model, _batches(), "taylor")
    pruned, report = prune_model(model, X, 0.5, importance="taylor", attention="both")
    assert 0.45 <= report.macs_after / report.macs_before <= 0.5
    assert [c.out_features for c in classifiers(pruned)] == [10, 10]
    if name.startswith("pvt"):
        assert sum(a.num_heads for a in _attentions(pruned)) < sum(a.num_heads for a in _attentions(model))
        assert all(a.num_heads >= 1 for a in _attentions(pruned))
        assert pruned.backbone.patch_embed.proj.in_channels == 3
    else:
        assert pruned.backbone.stem[0].in_channels == 3
    meta = {
        "model_name": name,
        "create_kwargs": kwargs,
        "class_names": [str(i) for i in range(10)],
        "num_classes": 10,
        "img_size": 32,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 1.0,
        "data": {"spec": "digits", "img_size": 32},
    }
    run = _save_run(tmp_path / name.split("_")[0], pruned, meta)
    back, _ = load_student(run)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), pruned(x), atol=1e-6)
    for target in ("onnx", "openvino-cpu", "tflite-mobile"):
        v = export_run(run, target, "fp32", ledger=False).verification
        assert v.runtime is not None and v.max_abs_diff < 1e-3 and v.agreement >= 99.0, (target, v.note)


# ------------------------------------------------------------------------------------ the stage
TINY_RECIPE = {
    "name": "tiny",
    "epochs": 2,
    "seed": 0,
    "amp": "off",
    "channels_last": False,
    "data": {"spec": "digits", "img_size": 16, "batch_size": 64},
    "aug": {
        "auto_augment": None,
        "hflip": 0.0,
        "reprob": 0.0,
        "mixup": 0.0,
        "cutmix": 0.0,
        "crop_pct": 1.0,
        "scale": [0.6, 1.0],
    },
    "teacher": {"names": ["self"], "amp": "off", "channels_last": False},
    "student": {
        "name": "deit_tiny_distilled_patch16_224",
        "patch_size": 4,
        "drop_path": 0.0,
        "kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    },
    "optim": {"lr": 0.05, "warmup_epochs": 0},
    "distill": {"type": "hard", "cache_rounds": 1},  # epoch 2 replays round 0: the teacher-logit cache
    "prune": {"ratio": 0.5, "importance": "taylor", "recover_epochs": 1},
}


@pytest.fixture(scope="module")
def distilled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgevit distill tiny.yaml`: a real 2-epoch run (tiny DeiT from a `self` teacher) whose recipe's
    `prune:` section then prunes it and recovers it from that teacher for 1 epoch."""
    from edgevit.cli import main

    root = tmp_path_factory.mktemp("runs")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    assert main(["distill", str(root / "tiny.yaml"), "--out", str(root / "tiny")]) == 0
    return root / "tiny"


@pytest.mark.slow
def test_a_recipe_distills_prunes_and_recovers(distilled_run: Path) -> None:
    from edgevit.runs import Ledger

    child = distilled_run.parent / "tiny-prune50"
    s = json.loads((child / "summary.json").read_text())
    assert child.parent == distilled_run.parent
    row = Ledger(child.parent).runs(child.name)[0]
    assert (row["kind"], row["status"], row["parent"]) == ("prune", "done", "tiny")
    assert 0.45 <= s["macs_after"] / s["macs_before"] <= 0.5
    for key in ("val_top1_parent", "val_top1_pruned", "val_top1", "params_before", "params_after"):
        assert s[key] is not None
    assert s["teachers"][0]["name"] == "self" and (child / "teachers").is_dir()
    assert s["cache"]["hits"] > 0 and s["cache"]["misses"] == 0  # recovered on the parent's cached logits
    model, meta = load_student(child)
    assert meta["parent"] == "tiny" and meta["pruning"]["ratio"] == 0.5
    assert count(model, torch.zeros(1, 3, 16, 16))[0] == s["macs_after"] == s["macs_g"] * 1e9  # one MAC counter
    recipe = yaml.safe_load((child / "recipe.yaml").read_text())
    assert recipe["prune"]["recover_teacher"] == "teacher" and recipe["epochs"] == 2


@pytest.mark.slow
def test_recovery_from_the_unpruned_student_regains_accuracy(trained_run: Path, tmp_path: Path) -> None:
    """The conftest student (~80 % top-1) with a recipe of light augmentation: pruned hard, then
    3 epochs of distillation from itself unpruned."""
    import shutil

    from edgevit.prune import prune

    run = tmp_path / "runs" / "deit-tiny"
    shutil.copytree(trained_run, run)
    recipe = {
        **TINY_RECIPE,
        "data": {"spec": "digits", "img_size": 32, "batch_size": 64},
        "student": {**TINY_RECIPE["student"], "patch_size": 8},
        "prune": None,
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    s = prune(
        run, 0.7, importance="magnitude", recover_epochs=3, recover_teacher="student", lr=0.02, log=lambda _m: None
    )
    assert s["teachers"][0]["name"].startswith("run:") and Path(s["path"]).name == "deit-tiny-prune70"
    assert s["val_top1"] > s["val_top1_pruned"] + 5, {k: s[k] for k in ("val_top1_pruned", "val_top1")}


@pytest.mark.slow
def test_iterative_stage_steps_without_recovery(trained_run: Path, tmp_path: Path) -> None:
    from edgevit.prune import prune

    s = prune(
        trained_run,
        0.5,
        importance="magnitude",
        steps=3,
        recover_epochs=0,
        recover_teacher="none",
        out=tmp_path / "it",
        log=lambda _m: None,
    )
    macs = [step["macs_after"] for step in s["steps"]]
    assert len(macs) == 3 and macs[0] > macs[1] > macs[2]
    assert 0.45 <= s["macs_after"] / s["macs_before"] <= 0.5


def test_stage_bad_input_is_one_line(trained_run: Path, tmp_path: Path) -> None:
    from edgevit.prune import prune

    cases = [
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": 1.5}, "ratio"),
        ({"importance": "l2"}, "importance"),
        ({"recover_teacher": "ta"}, "recover_teacher"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"lr": -1.0}, "lr"),
    ]
    for kw, word in cases:
        with pytest.raises(EdgevitError, match=word) as err:
            prune(trained_run, **{"ratio": 0.5, **kw}, out=tmp_path / "x")
        assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgevitError, match="has no student.pt"):
        prune(tmp_path / "empty", 0.5)
    with pytest.raises(EdgevitError, match="no teacher to recover from"):
        prune(trained_run, 0.5, recover_epochs=1, recover_teacher="teacher", out=tmp_path / "t", log=lambda _m: None)


def test_cli_prints_one_line_for_bad_input(trained_run: Path, tmp_path: Path, capsys) -> None:
    from edgevit.cli import main

    for args, word in [(["--ratio", "2"], "ratio"), (["--importance", "l1"], "importance")]:
        assert main(["prune", str(trained_run), *args, "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert word in err and len(err.strip().splitlines()) == 1, err
    assert main(["prune", str(tmp_path / "none")]) == 2
    assert "has no student.pt" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_cli_prunes_and_prints_before_and_after(trained_run: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgevit.cli",
            "prune",
            str(trained_run),
            "--ratio",
            "0.5",
            "--importance",
            "magnitude",
            "--recover-epochs",
            "0",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "parent" in r.stdout and "pruned" in r.stdout, r.stdout
    assert 0.45 <= float(re.search(r"MACs x(\d\.\d+)", r.stdout).group(1)) <= 0.5, r.stdout
    assert (tmp_path / "cli" / "student.pt").is_file()


def test_recipe_prune_section_is_validated(tmp_path: Path) -> None:
    from edgevit.config import load_recipe

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**TINY_RECIPE, "prune": {"ratio": 0.3, "steps": 2, "recover_teacher": "student"}}))
    assert load_recipe(str(good))[0].prune.steps == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY_RECIPE, "prune": {"ratio": 0.5, "importanse": "taylor"}}))
    with pytest.raises(EdgevitError, match="did you mean 'importance'"):
        load_recipe(str(bad))


@pytest.mark.slow
def test_the_api_runs_a_recipe_like_the_cli(tmp_path: Path) -> None:
    """`edgevit.api.run_recipe` distils and then prunes what the recipe's `prune:` section asks for."""
    from edgevit.api import load_recipe, run_recipe

    (tmp_path / "tiny.yaml").write_text(
        yaml.safe_dump(
            {**TINY_RECIPE, "epochs": 1, "distill": {"type": "hard"}, "prune": {"ratio": 0.5, "recover_epochs": 0}}
        )
    )
    done = run_recipe(load_recipe(str(tmp_path / "tiny.yaml"))[0], tmp_path / "tiny")
    child = Path(done["prune"]["path"])
    assert child == tmp_path / "tiny-prune50" and (child / "student.pt").is_file()
    assert (
        done["distill"]["val_top1"] is not None
        and 0.45 <= done["prune"]["macs_after"] / done["prune"]["macs_before"] <= 0.5
    )
