"""The docs a user reads stay true: the generated reference and results pages match the code and
the committed results, the field references list every field, the README stays short and its links
resolve. (The CLI reference imports every command, ~10 s: `.ci/run` regenerates and diffs it.)"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _gen()


def test_generated_pages_are_up_to_date():
    stale = [rel for rel, text in gen.pages(fast=True).items() if (ROOT / "docs" / rel).read_text() != text]
    assert not stale, f"out of date (run `python docs/gen.py`): {stale}"


@pytest.mark.parametrize(("model", "page"), [("Recipe", "recipe.md"), ("Target", "target.md")])
def test_field_reference_lists_every_field(model, page):
    from edgevit import config

    text = (ROOT / "docs" / "reference" / page).read_text()
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in text.splitlines() if line.startswith("| `")]
    assert sorted(r[0].strip().strip("`") for r in rows) == sorted(gen.all_fields(getattr(config, model)))
    assert all(len(r) == 5 and all(c.strip() for c in r) for r in rows)  # name, type, default, allowed, description


def test_every_results_table_comes_from_json():
    results = gen.load_results()
    assert results, "no benchmarks/results/*.*.json"
    for r in results:
        assert r["machine"].get("cpu") and r["sections"], r["_file"]
    pages = "".join(
        (ROOT / "docs" / "results").joinpath(f"{b}.md").read_text() for b in {r["benchmark"] for r in results}
    )
    for r in results:
        for s in r["sections"]:
            for b in s["blocks"]:
                if "table" in b:
                    assert gen._table(b["table"]) in pages


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_000
    assert "## Installation" in readme
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [t for t in links if not re.match(r"[a-z]+://", t) and not (ROOT / t).exists()]
    assert not missing, missing


def test_readme_test_command_is_the_ci_one():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install = next(line for line in ci if line.startswith("python3 -m venv .venv"))
    pytest_line = next(line for line in ci if line.startswith(".venv/bin/python -m pytest"))
    assert f"{install} && {pytest_line}" in readme
    assert shlex.split(pytest_line)[:3] == [".venv/bin/python", "-m", "pytest"]


def test_no_docs_page_repeats_a_section():
    """A page edited by script must keep each heading once (an empty-match replace once interleaved a
    section between every character of docs/install.md, and the site still built)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        headings = [line for line in page.read_text().splitlines() if re.match(r"#{1,3} \S", line)]
        repeated = {h for h in headings if headings.count(h) > 1}
        assert not repeated, f"{page.relative_to(ROOT)} repeats {sorted(repeated)[:3]}"
