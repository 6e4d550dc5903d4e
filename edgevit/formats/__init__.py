"""The format registry: one `Format` per export format, each declared in its own module here.

A format's module holds everything edgevit knows about it -- its exporter, the runtime that runs it
here and how to open it, its precisions, INT8 quantizers, float-layer reader, per-op profiler, tool
versions and pip extra (see `Format`) -- and config validation, export, verify, quantize, profile
and benchmark all ask `get(name)`. Adding a format is adding one module to `BUILT_IN`, or calling
`register(Format(...))` at run time (a plug-in, or a test).

Only the standard library and numpy are imported here: the device agent uses this package on boards
without edgevit's dependencies; each format's functions import their converter or runtime when called.
"""

from __future__ import annotations

import importlib

from edgevit.errors import EdgevitError
from edgevit.formats.base import Format, Predictor

BUILT_IN = ("onnx", "openvino", "tflite", "coreml", "tensorrt", "executorch")
FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add (or replace) a format; every stage sees it from then on."""
    FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    FORMATS.pop(name, None)


def get(name: str) -> Format:
    """The format called `name`; an unknown name is one line listing the known ones."""
    if name not in FORMATS:
        raise EdgevitError(f"unknown format '{name}' (known: {', '.join(FORMATS)})", "format")
    return FORMATS[name]


def missing_package(fmt: str, package: str | None) -> EdgevitError:
    """The one line for a converter package that is not installed, naming the extra that installs it."""
    extra = FORMATS[fmt].extra if fmt in FORMATS else "all"
    return EdgevitError(
        f"{fmt} export needs the package '{package}': pip install 'edgevit[{extra}]' "
        f"(in a checkout: pip install -e '.[{extra}]')"
    )


for _name in BUILT_IN:
    register(importlib.import_module(f"edgevit.formats.{_name}").FORMAT)

__all__ = ["BUILT_IN", "FORMATS", "Format", "Predictor", "get", "missing_package", "register", "unregister"]
