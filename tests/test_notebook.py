"""What a newcomer runs first: the README's first snippet, and docs/tour.ipynb top to bottom in a fresh
kernel with its pictures inline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.ipynb"
PICTURES = ("image/svg+xml", "image/png")


def test_the_tour_is_kept_in_git_without_outputs():
    notebook = nbformat.read(TOUR, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_tour_runs_top_to_bottom_and_shows_its_pictures_inline():
    pytest.importorskip("matplotlib", reason="the tour's gradient-norm plot needs the plot extra")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program draws the tour's graphs inline; install graphviz")
    notebook = nbformat.read(TOUR, as_version=4)
    # Run from docs/, as Jupyter does when the notebook is opened there; raises on the first failing cell.
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(TOUR.parent)}}).execute()
    shown = [
        kind
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs if output.output_type in ("display_data", "execute_result")
        for kind in PICTURES if kind in output.get("data", {})
    ]
    assert "image/svg+xml" in shown  # the graph views, drawn by Graphviz
    assert "image/png" in shown  # the gradient-norm plot, drawn by matplotlib
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert errors == []


def test_the_readme_first_snippet_runs_and_draws_all_30_steps(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A first look", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md (A first look)", "exec"), namespace)
    assert len(namespace["inputs"]) == 30 and len(namespace["states"]) == 31  # h_0 .. h_30: 30 steps
    written = list((tmp_path / "out").glob("steps.*"))
    assert written and written[0].stat().st_size > 0
