"""What an export leaves behind: files plus a manifest a device-side program can use alone."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError

MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """A deployable model. `files` are relative to `directory`; the first one is the model file.

    `manifest` holds format, precision, input shape, normalisation mean/std, class names, source
    checkpoint hash and tool versions, so a device-side program needs nothing else.
    """

    format: str
    precision: str
    directory: Path
    files: list[str]
    input_shape: list[int]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.directory / self.files[0]

    def size_bytes(self) -> int:
        total = 0
        for f in self.files:
            p = self.directory / f
            total += sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size
        return total

    def write_manifest(self) -> Path:
        data = {
            **self.manifest,
            "format": self.format,
            "precision": self.precision,
            "files": self.files,
            "input_shape": self.input_shape,
        }
        path = self.directory / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Artifact":
        directory = Path(directory)
        path = directory / MANIFEST
        fix = "export it again (edgevit export) or restore the folder"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EdgevitError(f"{directory} is not an export folder (no {MANIFEST}); {fix}") from None
        except (ValueError, UnicodeDecodeError):
            what = "empty" if path.stat().st_size == 0 else "not readable JSON (cut off or garbled)"
            raise EdgevitError(f"{path} is {what}; {fix}") from None
        if not isinstance(data, dict) or not {"format", "precision", "files", "input_shape"} <= set(data):
            raise EdgevitError(f"{path} is not an edgevit manifest (format/precision/files/input_shape missing); {fix}")
        return cls(
            format=data["format"],
            precision=data["precision"],
            directory=directory,
            files=list(data["files"]),
            input_shape=list(data["input_shape"]),
            manifest=data,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        return d
