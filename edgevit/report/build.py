"""`report(runs_dir, notebook)`: execute a shipped notebook headless on a runs folder, keep it as HTML.

The notebook runs in a fresh kernel (nbclient) with the parameters injected after its cell tagged
``parameters`` (papermill's convention, so papermill can run the same file). The HTML is
self-contained: plots are embedded PNGs and the page loads nothing from the network (no require.js,
MathJax or mermaid from a CDN), so it opens offline. The PNGs and CSVs go to ``<stem>_files/`` beside
it. Everything is written under temporary names and renamed into place at the end.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import edgevit
from edgevit.errors import EdgevitError
from edgevit.files import atomic_dir, write_text
from edgevit.paths import shipped

NOTEBOOKS = ("accuracy_latency_report", "distillation_study")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
CELL_TIMEOUT_S = 600

# The lab template, minus everything it would fetch from a CDN.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style>
  body.jp-Notebook { max-width: 1280px; margin: 0 auto; }
  .jp-RenderedHTMLCommon table { font-size: 12px; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { padding: 2px 6px; }
</style>{% endblock extra_css %}
"""


def notebook_source(name: str) -> str:
    """The notebook's JSON: a shipped one by name (package data, edgevit/notebooks), or any .ipynb by path."""
    if name.endswith(".ipynb") and Path(name).is_file():
        return Path(name).read_text()
    if name not in NOTEBOOKS:
        raise EdgevitError(f"unknown notebook {name!r}: choose one of {', '.join(NOTEBOOKS)} (or a .ipynb path)")
    path = shipped("notebooks") / f"{name}.ipynb"
    if not path.is_file():
        raise EdgevitError(f"notebook {path} is not installed with edgevit: reinstall edgevit")
    return path.read_text()


def inject_parameters(nb: Any, params: dict[str, Any]) -> Any:
    """Add a cell setting `params` right after the cell tagged 'parameters' (or first, if none is tagged)."""
    import nbformat

    code = "# Parameters injected by `edgevit report`\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(code, metadata={"tags": [INJECTED_TAG]})
    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    at = next((i + 1 for i, c in enumerate(cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])), 0)
    nb.cells = cells[:at] + [cell] + cells[at:]
    return nb


def _kernel_env() -> dict[str, str]:
    """The kernel imports the same edgevit as this process, installed or from a checkout."""
    env = dict(os.environ)
    here = str(Path(edgevit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["MPLBACKEND"] = "Agg"
    return env


def execute(nb: Any, workdir: Path) -> Any:
    """Run every cell in a fresh python3 kernel (this interpreter); a failing cell is one EdgevitError line."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    try:
        client.execute(env=_kernel_env())
    except CellExecutionError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel colours its traceback
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        raise EdgevitError(f"the report notebook failed: {last[:300]} (run it in Jupyter to see the cell)") from None
    except CellTimeoutError:
        raise EdgevitError(f"a report notebook cell ran over {CELL_TIMEOUT_S} s") from None
    return nb


def to_html(nb: Any, title: str) -> str:
    """Self-contained HTML (images embedded, no network), code cells hidden: a report, not a notebook."""
    import jinja2
    import nbconvert
    from nbconvert import HTMLExporter

    # nbconvert's templates are data files in <its env>/share/jupyter, which Jupyter's search path misses
    # when nbconvert comes from another environment (a venv with --system-site-packages): add that folder.
    here = Path(nbconvert.__file__).resolve().parents  # <env>/lib/pythonX.Y/site-packages/nbconvert
    shipped = next(
        (
            p / "share/jupyter/nbconvert/templates"
            for p in here
            if (p / "share/jupyter/nbconvert/templates/lab").is_dir()
        ),
        Path("/nonexistent"),
    )
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"edgevit.html.j2": _TEMPLATE})],
        template_file="edgevit.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
        extra_template_basedirs=[str(shipped)] if shipped.is_dir() else [],
        extra_template_paths=[str(shipped)] if shipped.is_dir() else [],
    )  # for 'lab/...'
    nb.metadata["title"] = title
    body, _ = exporter.from_notebook_node(nb)
    return body


def _default_out(runs_dir: Path, notebook: str) -> Path:
    return runs_dir / "reports" / f"{Path(notebook).stem}.html"


def report(
    runs_dir: str | Path,
    notebook: str = "accuracy_latency_report",
    out: str | Path | None = None,
    budget_ms: float | None = None,
    selected_runs: list[str] | None = None,
) -> Path:
    """Execute `notebook` on the ledger in `runs_dir`; returns the HTML's path.

    `budget_ms` names, per target, the most accurate export whose median latency is within it (and
    draws it on the plots); `selected_runs` picks whose training curves are drawn.

    Writes `out` (default `runs_dir/reports/<notebook>.html`) and `<stem>_files/` beside it with
    every figure as PNG and every table as CSV. An empty or missing ledger gives a short report.
    """
    import nbformat

    from edgevit.report.data import read_ledger

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise EdgevitError(
            f"runs folder {runs_dir} does not exist: give runs_dir, the folder holding ledger.sqlite", "runs_dir"
        )
    source = notebook_source(notebook)
    read_ledger(runs_dir)  # a damaged ledger fails here in one line, not inside the kernel
    out = Path(out) if out is not None else _default_out(runs_dir, notebook)
    if out.suffix.lower() not in (".html", ".htm"):
        raise EdgevitError(f"out {out}: give a .html file name", "out")
    if budget_ms is not None and not budget_ms > 0:
        raise EdgevitError(f"budget_ms {budget_ms}: give a latency budget in milliseconds above 0", "budget_ms")
    files = out.with_name(f"{out.stem}_files")
    title = f"edgevit {Path(notebook).stem.replace('_', ' ')}: {runs_dir.resolve().name}"
    with atomic_dir(files) as tmp:  # replaces an older report's files only when the notebook ran through
        nb = nbformat.reads(source, as_version=4)
        params = {"runs_dir": str(runs_dir.resolve()), "out_dir": str(tmp)}
        params.update(
            {k: v for k, v in (("latency_budget_ms", budget_ms), ("selected_runs", selected_runs)) if v is not None}
        )
        nb = execute(inject_parameters(nb, params), tmp)
        html = to_html(nb, title)
    write_text(out, html)
    return out
