"""Recipes and targets: the shipped files load, bad fields fail in one line, CLI lists them."""

import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.config import Recipe, apply_overrides, list_recipes, list_targets, load_recipe, load_target
from edgevit.errors import EdgevitError

ROOT = Path(__file__).resolve().parents[1]


def edgevit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgevit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_shipped_recipes_and_targets_are_valid():
    recipes = {name: r for name, _, r in list_recipes()}
    assert {"quickstart", "deit_tiny_regnety160_hard"} <= set(recipes)
    assert all(isinstance(r, Recipe) for r in recipes.values())
    paper = recipes["deit_tiny_regnety160_hard"]
    assert (paper.epochs, paper.optim.lr, paper.optim.weight_decay, paper.optim.warmup_epochs) == (300, 5e-4, 0.05, 5)
    assert (paper.aug.mixup, paper.aug.cutmix, paper.aug.reprob, paper.student.drop_path) == (0.8, 1.0, 0.25, 0.1)
    assert paper.aug.auto_augment == "rand-m9-mstd0.5-inc1" and paper.distill.type == "hard"
    targets = {name: t for name, _, t in list_targets()}
    assert {"openvino-cpu", "tflite-mobile", "coreml-ios", "jetson-orin", "onnx"} <= set(targets)
    assert load_target("jetson").name == "jetson-orin"


def test_misspelt_field_names_file_field_and_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\noptim:\n  lrr: 0.1\n")
    with pytest.raises(EdgevitError) as e:
        load_recipe(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "optim.lrr" in msg and "did you mean 'lr'" in msg and "\n" not in msg


def test_wrong_type_and_unknown_names(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\n")
    with pytest.raises(EdgevitError, match=r"field 'epochs'.*'many'"):
        load_recipe(str(bad))
    with pytest.raises(EdgevitError, match="unknown target 'jetsn'.*jetson"):
        load_target("jetsn")
    with pytest.raises(EdgevitError, match="field 'distill.type'"):
        apply_overrides(load_recipe("quickstart")[0], {"distill.type": "medium"})


def test_a_bare_yaml_off_is_the_amp_setting_off(tmp_path):
    """YAML 1.1 reads `off` as false; `amp: off` must mean fp32, not a type error."""
    path = tmp_path / "off.yaml"
    path.write_text("amp: off\nteacher:\n  amp: off\n")
    recipe = load_recipe(str(path))[0]
    assert recipe.amp == recipe.teacher.amp == "off"
    path.write_text("amp: on\n")  # `on` is true: still a clear error, not bf16 or fp16 guessed
    with pytest.raises(EdgevitError, match=r"field 'amp'.*'auto', 'bf16', 'fp16' or 'off'"):
        load_recipe(str(path))


def test_cli_lists_and_fails_cleanly(tmp_path):
    out = edgevit("recipes")
    assert out.returncode == 0 and "quickstart" in out.stdout and "deit_tiny_regnety160_hard" in out.stdout
    out = edgevit("targets")
    assert out.returncode == 0
    for name in ("openvino-cpu", "tflite-mobile", "coreml-ios", "jetson-orin", "onnx"):
        assert name in out.stdout
    assert edgevit("--version").stdout.startswith("edgevit ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nstudnet: {name: x}\n")
    out = edgevit("distill", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "unknown field 'studnet'" in out.stderr and "did you mean 'student'" in out.stderr


def test_small_student_recipe_is_edge_sized_with_the_quickstarts_teacher():
    """recipes/small_student.yaml: at most 15 M MACs at 32 px, by edgevit's one counter; the
    quickstart's teacher, augmentation and optimiser (so a quickstart run's fine-tuned teacher is reused);
    its own epochs (what its 3-seed measurement supports)."""
    from edgevit.distill.pipeline import student_build
    from edgevit.models.students import count_macs, create_student

    small, quick = load_recipe("small_student")[0], load_recipe("quickstart")[0]
    assert (small.data.img_size, small.distill.type) == (32, "hard")
    same = ("teacher", "aug", "optim")
    assert [getattr(small, f) for f in same] == [getattr(quick, f) for f in same]
    student = create_student(*student_build(small, 10))
    assert count_macs(student, 32) <= 15e6
