"""Options are checked in one place, before any file is read: the core's error names the parameter,
the CLI's names the flag, and each is one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.errors import EdgevitError


@pytest.mark.parametrize(
    "args, flag",
    [
        (["prune", "RUN", "--lr", "-1"], "--lr"),
        (["prune", "RUN", "--recover-epochs", "-3"], "--recover-epochs"),
        (["prune", "RUN", "--importance", "l1"], "--importance"),
        (["export", "RUN", "--target", "openvino-cpu", "--precision", "int8", "--calibration", "0"], "--calibration"),
        (["profile", "RUN", "--target", "openvino-cpu", "--threads", "-2"], "--threads"),
        (["profile", "RUN", "--target", "openvino-cpu", "--iterations", "0"], "--iterations"),
        (["profile", "RUN", "--target", "openvino-cpu", "--device", "ssh:/nohost"], "bad device"),
    ],
)
def test_cli_names_the_flag_in_one_line(args: list[str], flag: str, tmp_path: Path, capsys) -> None:
    from edgevit.cli import main

    missing = str(tmp_path / "no-such-run")  # the option is wrong too: the message must be about the option
    assert main([missing if a == "RUN" else a for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1 and "no-such-run" not in err, err


def test_a_recipe_field_in_a_message_reads_as_the_flag_that_sets_it() -> None:
    from edgevit.cli import _as_flag, _parser

    parser, _ = _parser(["distill"])
    exc = EdgevitError(
        "2 teacher(s) but 1 checkpoint(s): give one teacher.checkpoints entry per teacher.names entry, or none",
        ("teacher.checkpoints", "teacher.names"),
    )
    assert _as_flag(exc, parser, "distill") == (
        "2 teacher(s) but 1 checkpoint(s): give one --teacher-checkpoint entry per --teacher entry, or none"
    )
    assert _as_flag(EdgevitError("change data.img_size or the model", "data.img_size"), parser, "distill") == (
        "change --img-size or the model"
    )


def test_api_names_the_parameter(trained_run: Path) -> None:
    from edgevit.api import Timing, export, prune

    with pytest.raises(EdgevitError, match=r"^prune option warmup_epochs: ") as err:
        prune(trained_run, warmup_epochs=-1)
    assert err.value.param == "warmup_epochs"
    with pytest.raises(EdgevitError, match="threads must be") as err:
        Timing(threads=-2)
    assert err.value.param == "threads"
    before = sorted(trained_run.rglob("*"))  # the fixture's run is shared: other tests may have exported into it
    with pytest.raises(EdgevitError, match="calibration must be") as err:
        export(trained_run, "openvino-cpu", "int8", calibration=0)
    assert err.value.param == "calibration" and sorted(trained_run.rglob("*")) == before


def test_importing_the_api_imports_no_converter() -> None:
    code = (
        "import sys, edgevit.api; print(','.join(m for m in ('onnx', 'openvino', 'ai_edge_litert', 'litert_torch', "
        "'coremltools', 'executorch', 'nncf', 'torch_pruning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import edgevit.api imported {out}"


def test_target_format_is_checked_against_the_registry(tmp_path: Path) -> None:
    from edgevit.config import load_target

    bad = tmp_path / "board.yaml"
    bad.write_text("name: board\nformat: onx\n")
    with pytest.raises(EdgevitError, match=r"format.*unknown format 'onx'; known: onnx, openvino"):
        load_target(str(bad))
