"""ExecuTorch export (XNNPACK delegate): tiny trained DeiT, PVT-v2 and ConvMixer run in executorch.runtime.

Each family is trained briefly (conftest.train_tiny_student) and exported once per module at fp32
and int8; the checks read the verification (real validation images, the real runtime) and the
manifest's delegation record.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny_student

from edgevit.artifact import Artifact
from edgevit.config import load_target
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import ExportResult, export_run, timed_export
from edgevit.export.verify import verify
from edgevit.profile.runners import ProfileResult, profile_artifact
from edgevit.runtimes import open_predictor

pytest.importorskip("executorch")

FAMILIES = {  # tiny enough to train and lower in seconds on 2 shared cores
    "deit": ("deit_tiny_distilled_patch16_224", None),
    "pvt": ("pvt_v2_b0", {"depths": (1, 1, 1, 1), "embed_dims": (16, 32, 64, 128), "num_heads": (1, 2, 4, 8)}),
    "convmixer": ("convmixer_256_8_ks5_p2", {"dim": 64, "depth": 2}),
}
_exports: dict[tuple[str, str], ExportResult] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> trained run folder, trained on first use."""
    root = tmp_path_factory.mktemp("runs")

    class Runs(dict):
        def __missing__(self, key: str) -> Path:
            name, extra = FAMILIES[key]
            self[key] = train_tiny_student(root / key, name, extra, steps=300 if key == "deit" else 200)
            return self[key]

    return Runs()


def exported(runs: dict[str, Path], family: str, precision: str) -> ExportResult:
    if (family, precision) not in _exports:
        _exports[(family, precision)] = export_run(runs[family], "executorch", precision, calibration=32, ledger=False)
    return _exports[(family, precision)]


# each family trains and lowers twice: ~1 min of CPU, minutes of wall time on a shared 2-core machine
@pytest.mark.parametrize(
    "family", ["deit", pytest.param("pvt", marks=pytest.mark.slow), pytest.param("convmixer", marks=pytest.mark.slow)]
)
def test_fp32_and_int8_run_in_executorch_and_agree(runs, family: str) -> None:
    fp32, int8 = exported(runs, family, "fp32"), exported(runs, family, "int8")
    for r in (fp32, int8):
        assert r.artifact.model_path.name == "model.pte" and r.artifact.manifest["target"] == "executorch-mobile"
        assert r.verification.runtime == "executorch", r.verification.note
    assert fp32.verification.torch_top1 > 60  # the student really learned something
    assert fp32.verification.agreement == 100.0 and fp32.verification.max_abs_diff < 1e-3, fp32.verification.note
    assert int8.verification.agreement >= 95.0, int8.verification.note
    q = int8.artifact.manifest["quantization"]
    assert q["scheme"] == "static" and q["per_channel"] and q["symmetric"] and q["ops"] == ["linear", "conv"]
    assert int8.artifact.size_bytes() < fp32.artifact.size_bytes()
    if family == "convmixer":  # a pure conv net: XNNPACK takes it whole, in one call
        d = fp32.artifact.manifest["delegation"]
        assert d["delegate_calls"] == 1 and d["fraction"] > 0.95, d["note"]


def test_manifest_records_what_the_delegate_took(runs) -> None:
    m = exported(runs, "deit", "fp32").artifact.manifest
    d = m["delegation"]
    assert m["backends"] == d["backends"] == ["XnnpackBackend"]
    assert 0 < d["delegated_ops"] < d["total_ops"] and d["fraction"] == round(d["delegated_ops"] / d["total_ops"], 4)
    assert sum(d["fallback_ops"].values()) == d["total_ops"] - d["delegated_ops"]
    # attention is rewritten to bmm/softmax/bmm and unbind to slice/reshape, which XNNPACK takes:
    # no masked-softmax or select/squeeze leftovers fall back
    assert not {
        "aten.where.self",
        "aten.any.dim",
        "aten.logical_not.default",
        "aten.bmm.default",
        "aten.squeeze_copy.dims",
    } & set(d["fallback_ops"])
    assert d["fraction"] > 0.8
    assert d["note"] in exported(runs, "deit", "fp32").verification.note  # the ledger's note names the fallbacks


def test_an_op_xnnpack_lacks_falls_back_and_is_named(tmp_path: Path) -> None:
    import torch

    class CumsumNet(torch.nn.Module):  # XNNPACK has no cumulative sum: it must run in a portable kernel
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 4, 4), torch.nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.cumsum(self.conv(x), dim=-1).flatten(1))

    torch.manual_seed(0)
    model, x = CumsumNet().eval(), torch.randn(1, 3, 32, 32)
    art, _ = timed_export("executorch", model, x, load_target("executorch"), "fp32", None, tmp_path, {})
    d = art.manifest["delegation"]
    assert d["fallback_ops"].get("aten.cumsum.default") == 1 and "aten.cumsum.default x1" in art.manifest["note"]
    assert 0 < d["fraction"] < 1 and d["delegated_ops"] >= 2  # conv and linear still went to XNNPACK
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    check = verify(art, images, reference.argmax(1), reference)  # a valid .pte: it runs and matches
    assert check.runtime == "executorch" and check.agreement == 100.0 and check.max_abs_diff < 1e-4
    assert "aten.cumsum.default" in check.note


def test_dynamic_int8_needs_no_calibration(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "dyn.yaml"
    path.write_text("name: dyn\nformat: executorch\nprecisions: [int8]\nquantization:\n  scheme: dynamic\n")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 64), torch.nn.GELU(), torch.nn.Linear(64, 10)
    ).eval()
    art, _ = timed_export(
        "executorch", model, torch.randn(1, 3, 8, 8), load_target(str(path)), "int8", None, tmp_path, {}
    )
    assert art.manifest["quantization"]["activations"] == "dynamic" and art.manifest["backends"] == ["XnnpackBackend"]
    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    out = open_predictor(art, threads=1)(x)
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.99 and not np.array_equal(out, reference)


def test_attention_rewrites_match_torch() -> None:
    import torch

    from edgevit.export.executorch import _attention, _unbind

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.rand(5, 5, generator=g) > 0.3
    sdpa = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(_attention(q, k, v), sdpa(q, k, v))
    torch.testing.assert_close(_attention(q, k, v, scale=0.3), sdpa(q, k, v, scale=0.3))
    torch.testing.assert_close(_attention(q, k, v, attn_mask=mask), sdpa(q, k, v, attn_mask=mask))
    qkv = torch.randn(3, 2, 4, 5, generator=g).permute(2, 0, 1, 3)  # non-contiguous, as timm's is
    for dim in (0, 1, -1):
        assert all(torch.equal(a, b) for a, b in zip(_unbind(qkv, dim), qkv.unbind(dim), strict=True))


def test_profile_reports_load_time_and_threads(runs) -> None:
    art = exported(runs, "deit", "int8").artifact
    r = profile_artifact(art, threads=1, iterations=5, warmup=1)
    assert r.runtime == "executorch" and r.load_ms is not None and r.load_ms > 0
    assert r.extra["settings"]["threadpool"] == 1 and r.extra["settings"]["delegates"] == "XnnpackBackend"
    assert ProfileResult.from_dict(r.to_dict()).load_ms == r.load_ms  # survives the SSH agent's JSON
    old = r.to_dict()
    del old["load_ms"]  # a record from before load_ms existed
    assert ProfileResult.from_dict(old).load_ms is None and "load " in r.summary_line()


def test_predictors_keep_their_own_thread_counts(runs) -> None:
    """The pool is process-wide and XNNPACK keeps the pool a program was loaded with: alternating two
    predictors used to run one of them on a freed pool (wrong outputs, or a segfault)."""
    from executorch.extension.pybindings import portable_lib

    art = Artifact.load(exported(runs, "deit", "fp32").artifact.directory)
    one, two = open_predictor(art, threads=1), open_predictor(art, threads=2)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    reference = two(x)
    for _ in range(20):
        assert np.allclose(two(x), reference, atol=1e-4) and portable_lib._threadpool_get_thread_count() == 2
        assert np.allclose(one(x), reference, atol=1e-4) and portable_lib._threadpool_get_thread_count() == 1


def test_runtimes_module_stays_free_of_torch() -> None:
    code = "import sys, edgevit.runtimes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


@pytest.mark.slow
def test_core_ml_delegate_lowers_on_linux_but_runs_only_on_apple(runs, tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    target = tmp_path / "et-coreml.yaml"
    target.write_text(
        "name: et-coreml\nformat: executorch\nprecisions: [fp32]\nruntime:\n  delegates: [coreml, xnnpack]\n"
    )
    r = export_run(runs["convmixer"], str(target), "fp32", ledger=False)
    assert "CoreMLBackend" in r.artifact.manifest["backends"] and r.artifact.model_path.stat().st_size > 1000
    assert not r.verification.verified and "CoreMLBackend" in r.verification.note


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "yaml,message",
    [
        ("precisions: [fp32]\nruntime:\n  delegates: [tpu]\n", "runtime.delegates must list some of xnnpack, coreml"),
        ("precisions: [int8]\nruntime:\n  delegates: [coreml]\n", "Core ML delegate is fp32-only"),
        ("precisions: [int8]\nquantization:\n  scheme: weight-only\n", "schemes static and dynamic"),
        (
            "precisions: [int8]\nquantization:\n  options:\n    ops: [linear, softmax]\n",
            "takes only ops: a list of linear",
        ),
        ("precisions: [fp32]\ndynamic_batch: true\n", "static batch"),
    ],
)
def test_bad_target_is_one_line(tmp_path: Path, yaml: str, message: str) -> None:
    import torch

    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nformat: executorch\n" + yaml)
    target = load_target(str(path))
    with pytest.raises(EdgevitError, match=message) as err:
        timed_export(
            "executorch",
            torch.nn.Conv2d(3, 4, 3),
            torch.zeros(1, 3, 8, 8),
            target,
            target.precisions[0],
            np.zeros((1, 3, 8, 8), np.float32),
            tmp_path,
            {},
        )
    assert "\n" not in str(err.value)
