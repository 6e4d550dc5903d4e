"""The benchmark's pick: fastest timed row per target within the accuracy floor, and why not the others."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgevit.choose import pick
from edgevit.errors import EdgevitError


def rows() -> list[dict]:
    return [
        {"target": "pytorch", "format": "pytorch", "precision": "fp32", "top1": 83.9, "median_ms": 20.0},
        {"target": "onnx", "precision": "fp32", "top1": 83.9, "median_ms": 8.1},
        {"target": "onnx", "precision": "int8", "top1": 83.5, "median_ms": 7.0},
        # the fastest row of all, but 1.8 points below PyTorch: must not be picked
        {"target": "openvino-cpu", "precision": "int8", "top1": 82.1, "median_ms": 3.0},
        {"target": "openvino-cpu", "precision": "bf16", "top1": 83.8, "median_ms": 4.0},
        {"target": "openvino-cpu", "precision": "fp32", "top1": 83.9, "median_ms": 6.0},
        {
            "target": "coreml-ios",
            "precision": "fp16",
            "top1": None,
            "median_ms": None,
            "note": "not timed: the coreml runtime is not available here: Core ML prediction needs macOS",
        },
        {"target": "tflite-mobile", "precision": "int8", "top1": 80.0, "median_ms": 5.0},
    ]


def by_key(out: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["target"], r["precision"]): r for r in out}


def test_fastest_row_below_the_floor_is_not_picked() -> None:
    out = by_key(pick(rows(), max_drop=0.5))
    assert not out[("openvino-cpu", "int8")]["pick"]
    assert out[("openvino-cpu", "int8")]["why"] == "below the floor: 82.1 % < 83.4 % (PyTorch 83.9 - 0.5)"
    assert out[("openvino-cpu", "bf16")]["pick"] and out[("openvino-cpu", "bf16")]["why"].startswith("fastest within")
    assert out[("openvino-cpu", "fp32")]["why"] == "slower: 6.00 ms vs 4.00 ms (bf16)"
    assert out[("onnx", "int8")]["pick"] and out[("onnx", "fp32")]["why"] == "slower: 8.10 ms vs 7.00 ms (int8)"
    assert out[("pytorch", "fp32")]["pick"]  # the baseline is its own target, trivially within its floor


def test_a_wider_drop_lets_the_faster_row_in() -> None:
    out = by_key(pick(rows(), max_drop=2.0))
    assert out[("openvino-cpu", "int8")]["pick"] and not out[("openvino-cpu", "bf16")]["pick"]
    assert sum(r["pick"] for r in out.values() if r["target"] == "openvino-cpu") == 1


def test_untimed_and_unqualified_targets_say_so() -> None:
    out = by_key(pick(rows()))
    coreml = out[("coreml-ios", "fp16")]
    assert not coreml["pick"] and coreml["why"].startswith("not timed here: the coreml runtime is not available")
    assert "no row of this target qualifies" in coreml["why"]
    tfl = out[("tflite-mobile", "int8")]
    assert not tfl["pick"] and tfl["why"].startswith("below the floor: 80 % < 83.4 %")
    assert tfl["why"].endswith("no row of this target qualifies")


def test_min_accuracy_raises_the_floor_and_inputs_are_not_changed() -> None:
    given = rows()
    out = by_key(pick(given, max_drop=1.0, min_accuracy=83.85))
    assert not out[("openvino-cpu", "bf16")]["pick"] and out[("openvino-cpu", "fp32")]["pick"]
    assert out[("openvino-cpu", "bf16")]["why"] == "below the floor: 83.8 % < 83.85 % (--min-accuracy)"
    assert out[("onnx", "fp32")]["pick"]
    assert by_key(pick(given, min_accuracy=0.8385)) == out  # a fraction, as --min-accuracy reads it
    assert "pick" not in given[0]


def test_dataclass_rows_and_an_explicit_baseline() -> None:
    @dataclass
    class Row:
        target: str
        precision: str
        top1: float | None
        median_ms: float | None
        note: str = ""

    out = pick([Row("onnx", "fp32", 90.0, 5.0), Row("onnx", "int8", 89.0, 3.0)], max_drop=0.5, baseline_top1=90.0)
    assert [r["pick"] for r in out] == [True, False] and "(PyTorch 90 - 0.5)" in out[1]["why"]


def test_without_a_baseline_nothing_is_picked() -> None:
    out = pick([{"target": "onnx", "precision": "fp32", "top1": 90.0, "median_ms": 5.0}])
    assert not out[0]["pick"] and out[0]["why"].startswith("no PyTorch top-1")


@pytest.mark.parametrize("bad", [-0.1, 100.5, float("nan")])
def test_max_drop_out_of_range_is_one_line(bad: float) -> None:
    with pytest.raises(EdgevitError, match="max_drop must be between 0 and 100") as err:
        pick(rows(), max_drop=bad)
    assert "\n" not in str(err.value) and err.value.param == "max_drop"


def test_min_accuracy_out_of_range() -> None:
    with pytest.raises(EdgevitError, match="min_accuracy must be between 0 and 100"):
        pick(rows(), min_accuracy=120)


def test_most_accurate_within_a_budget_per_target() -> None:
    from edgevit.choose import most_accurate_within

    rows = [
        {"target": "cpu", "precision": "fp32", "top1": 80.0, "median_ms": 1.2},
        {"target": "cpu", "precision": "int8", "top1": 79.5, "median_ms": 0.4},
        {"target": "cpu", "precision": "fp16", "top1": 79.5, "median_ms": 0.3},  # same top-1, faster: wins the tie
        {"target": "phone", "precision": "fp32", "top1": 75.0, "median_ms": 2.0},
        {"target": "phone", "precision": "int8", "top1": None, "median_ms": 0.1},  # not verified: cannot qualify
    ]
    assert [(r["target"], r["precision"]) for r in most_accurate_within(rows, 0.5)] == [("cpu", "fp16")]
    assert [r["precision"] for r in most_accurate_within(rows, 5)] == ["fp32", "fp32"]
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(EdgevitError, match="budget_ms must be a latency in milliseconds above 0"):
            most_accurate_within(rows, bad)
