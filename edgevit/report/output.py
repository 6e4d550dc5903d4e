"""Show a report's figures and tables in the notebook and keep them as files (PNG, CSV) beside the HTML."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

# column -> display format; CSVs keep full precision
FORMATS = {
    "size_MB": "{:.2f}",
    "top1_%": "{:.2f}",
    "agreement_%": "{:.2f}",
    "max_abs_diff": "{:.1e}",
    "median_ms": "{:.3f}",
    "p90_ms": "{:.3f}",
    "speedup_vs_pytorch_fp32": "{:.2f}×",
    "params_M": "{:.3f}",
    "MACs_G": "{:.3g}",
    "pytorch_top1_%": "{:.2f}",
    "train_s": "{:.0f}",
    "top1_mean_%": "{:.2f}",
    "top1_std_%": "{:.2f}",
    "gain_vs_none_pt": "{:+.2f}",
    "teacher_top1_%": "{:.2f}",
    "wall_s_mean": "{:.0f}",
    "none_top1_%": "{:.2f}",
    "best_top1_%": "{:.2f}",
    "gain_pt": "{:+.2f}",
    "top1_change_pt": "{:+.2f}",
    "speedup": "{:.2f}×",
    "wall_s": "{:.0f}",
    "threads": "{:.0f}",
    "epochs": "{:.0f}",
    "seed": "{:.0f}",
    "seeds": "{:.0f}",
}
HEADERS = {
    "top1_%": "top-1 %",
    "agreement_%": "agreement with PyTorch %",
    "median_ms": "median ms",
    "p90_ms": "p90 ms",
    "speedup_vs_pytorch_fp32": "speed-up vs PyTorch FP32",
    "size_MB": "size MB",
    "max_abs_diff": "max |diff|",
    "pick": "benchmark pick",
    "why": "why (benchmark)",
    "pytorch_top1_%": "PyTorch top-1 %",
    "params_M": "params M",
    "MACs_G": "MACs G",
    "top1_mean_%": "top-1 mean %",
    "top1_std_%": "± std",
    "per_seed_%": "per seed %",
    "gain_vs_none_pt": "vs none (pt)",
    "teacher_top1_%": "teacher top-1 %",
    "wall_s_mean": "wall s (mean)",
    "train_s": "train s",
}


def _cell(value: object) -> str:
    """Booleans as words in the HTML (the CSV keeps True/False)."""
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def styled(df: pd.DataFrame) -> pd.io.formats.style.Styler:
    """Rounded numbers with units in the headers, text left-aligned, numbers right-aligned, no index."""
    fmt = {c: FORMATS.get(c, _cell) for c in df.columns}
    text = [c for c in df.columns if c not in FORMATS and not pd.api.types.is_numeric_dtype(df[c])]
    return (
        df.style.format(fmt, na_rep="–")
        .format_index(lambda c: HEADERS.get(c, c.replace("_", " ")), axis=1)
        .set_properties(subset=text, **{"text-align": "left"})
        .set_table_styles([{"selector": "th", "props": [("text-align", "center")]}])
        .hide(axis="index")
    )


def slug(text: str) -> str:
    """A file name from any text (run names are already safe; targets and configs may not be)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[:80] or "item"


class Output:
    """Displays in the notebook (a no-op outside IPython) and writes `name.png` / `name.csv` to `out_dir`."""

    def __init__(self, out_dir: str | Path | None = None):
        self.dir = Path(out_dir) if out_dir else None
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def _display(self, obj: Any) -> None:
        try:
            from IPython.display import display
        except ImportError:  # used from a plain script: files only
            return
        display(obj)

    def markdown(self, text: str) -> None:
        try:
            from IPython.display import Markdown
        except ImportError:
            return
        self._display(Markdown(text))

    def figure(self, fig: Figure, name: str) -> bytes:
        """The figure as PNG: shown, and saved as `name.png`; the same bytes in both places."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, facecolor="white")
        png = buf.getvalue()
        self._write(f"{slug(name)}.png", png)
        try:
            from IPython.display import Image
        except ImportError:
            return png
        self._display(Image(data=png, format="png"))
        return png

    def table(
        self,
        df: pd.DataFrame,
        name: str,
        *,
        empty: str = "nothing recorded",
        show: bool = True,
        hide: list[str] | None = None,
    ) -> None:
        """Saved as `name.csv` (every column, full precision); shown rounded, with readable headers,
        without the index and without the `hide` columns."""
        if df.empty:
            if show:
                self.markdown(f"*{empty}*")
            return
        self._write(f"{slug(name)}.csv", df.to_csv(index=False).encode())
        if show:
            self._display(styled(df.drop(columns=hide or [])))

    def _write(self, name: str, data: bytes) -> None:
        if self.dir is None:
            return
        path = self.dir / name
        path.write_bytes(data)  # inside report()'s temporary folder, renamed into place as a whole
        self.written.append(path)
