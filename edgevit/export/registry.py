"""One table of export formats (like ultralytics' exporter table): format -> module.

Each module defines `export(model, sample, target, precision, calibration, out_dir, meta) ->
Artifact`, `PRECISIONS` (what it can produce) and `TOOLS` (distributions whose versions go into
the manifest). Modules are imported only when used, so a missing converter only hurts its format.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgevit.errors import EdgevitError

# format -> (module, pip extra that installs its converter)
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("edgevit.export.onnx", "onnx"),
    "openvino": ("edgevit.export.openvino", "openvino"),
    "tflite": ("edgevit.export.tflite", "tflite"),
    "coreml": ("edgevit.export.coreml", "coreml"),
    "tensorrt": ("edgevit.export.tensorrt", "tensorrt"),
    "executorch": ("edgevit.export.executorch", "executorch"),
}


def format_module(fmt: str) -> ModuleType:
    """The module that exports `fmt`; a missing converter is one line naming the pip extra."""
    if fmt not in FORMATS:
        raise EdgevitError(f"unknown export format '{fmt}' (known: {', '.join(FORMATS)})")
    name, _extra = FORMATS[fmt]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise missing_package(fmt, exc.name) from None


def missing_package(fmt: str, package: str | None) -> EdgevitError:
    """The one line for a converter package that is not installed, naming the extra that installs it."""
    extra = FORMATS[fmt][1] if fmt in FORMATS else "all"
    return EdgevitError(
        f"{fmt} export needs the package '{package}': pip install 'edgevit[{extra}]' "
        f"(in a checkout: pip install -e '.[{extra}]')"
    )
