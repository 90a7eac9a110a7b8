"""What a newcomer runs first: the README's first snippet, and docs/tour.ipynb top to bottom in a fresh
kernel with its pictures inline. The tour is kept with its outputs, so a reader on GitHub sees its
pictures: running it again must give the same outputs (the same text; each graph's SVG the same words and
numbers, whatever Graphviz's version does to the layout; each plot the same picture), and without
Graphviz's dot it must say so in one line instead of a traceback."""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from test_readable_pictures import SMALLEST_TEXT, smallest_text_shown

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.ipynb"
PICTURES = ("image/svg+xml", "image/png")
sys.path.insert(0, str(ROOT / "docs"))
import make_tour  # noqa: E402  (docs/make_tour.py runs the tour and saves its outputs)


def _outputs(notebook) -> list[list]:
    return [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]


def _svg_text(svg: str) -> list[str]:
    """The words and numbers of a Graphviz SVG, sorted: what the code decided, not where dot put it."""
    return sorted(re.sub(r"\s+", " ", t).strip() for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S))


def _pixels(png_base64: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(png_base64))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _same(saved, fresh) -> str | None:
    """Why two outputs of one cell differ (None: they do not)."""
    if saved.output_type != fresh.output_type:
        return f"{saved.output_type} against {fresh.output_type}"
    if saved.output_type == "stream":
        return None if (saved.name, saved.text) == (fresh.name, fresh.text) else f"printed {fresh.text!r}"
    if sorted(saved.get("data", {})) != sorted(fresh.get("data", {})):
        return f"shown as {sorted(saved.data)} against {sorted(fresh.data)}"
    data, now = saved.get("data", {}), fresh.get("data", {})
    if data.get("text/plain") != now.get("text/plain"):
        return f"text {now.get('text/plain')!r}"
    if "image/svg+xml" in data and _svg_text(data["image/svg+xml"]) != _svg_text(now["image/svg+xml"]):
        return "a graph with other words or numbers"
    if "image/png" in data:
        old, new = _pixels(data["image/png"]), _pixels(now["image/png"])
        if old.shape != new.shape or np.abs(old - new).mean() > 0.002:
            return "another plot"
    return None


@pytest.fixture(scope="module")
def fresh_tour():
    pytest.importorskip("matplotlib", reason="the tour's gradient-norm plot needs the plot extra")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program draws the tour's graphs inline; install graphviz")
    return make_tour.execute()  # raises on the first failing cell


def test_the_tour_runs_top_to_bottom_and_shows_its_pictures_inline(fresh_tour):
    shown = [kind for outputs in _outputs(fresh_tour) for output in outputs
             for kind in PICTURES if kind in output.get("data", {})]
    assert shown.count("image/svg+xml") == 4  # the graph views, drawn by Graphviz
    assert shown.count("image/png") == 2  # the gradient-norm plots, drawn by matplotlib
    kinds = [output.output_type for outputs in _outputs(fresh_tour) for output in outputs]
    assert "error" not in kinds
    assert not any(o.get("name") == "stderr" for outputs in _outputs(fresh_tour) for o in outputs)


def test_the_tour_is_kept_with_the_outputs_the_code_gives_now(fresh_tour):
    saved = nbformat.read(TOUR, as_version=4)
    assert [c.source for c in saved.cells] == [c.source for c in fresh_tour.cells]
    differences = []
    for k, (old, new) in enumerate(zip(_outputs(saved), _outputs(fresh_tour)), 1):
        if len(old) != len(new):
            differences.append(f"code cell {k}: {len(old)} outputs saved, {len(new)} now")
        differences += [f"code cell {k}: {why}" for o, n in zip(old, new) if (why := _same(o, n))]
    assert differences == [], "run .venv/bin/python docs/make_tour.py and commit docs/tour.ipynb"
    assert [c.execution_count for c in saved.cells if c.cell_type == "code"] == list(range(1, 8))


def test_the_tours_saved_graphs_can_be_read_in_a_notebooks_column():
    graphs = [o.data["image/svg+xml"] for outputs in _outputs(nbformat.read(TOUR, as_version=4))
              for o in outputs if "image/svg+xml" in o.get("data", {})]
    assert len(graphs) == 4
    assert all(smallest_text_shown(svg) >= SMALLEST_TEXT for svg in graphs)


def test_without_dot_the_tour_says_so_in_one_line_for_each_graph(tmp_path):
    pytest.importorskip("matplotlib", reason="the tour's gradient-norm plot needs the plot extra")
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no dot on it (the kernel is started by its full path)
    import os

    notebook = make_tour.execute(env={**os.environ, "PATH": str(empty)})
    outputs = _outputs(notebook)
    printed = [o.text for o in outputs[0] if o.output_type == "stream"]
    assert len(printed) == 1 and printed[0].count("\n") == 1 and "install Graphviz" in printed[0]
    graphs = [o for cell in outputs for o in cell if o.output_type == "execute_result" and "Digraph" not in
              o.data.get("text/plain", "") and "image/png" not in o.data]
    assert len(graphs) == 4 and all(list(o.data) == ["text/plain"] for o in graphs)
    assert all(o.data["text/plain"] == printed[0].strip() for o in graphs)
    assert not any(o.output_type == "error" or o.get("name") == "stderr" for cell in outputs for o in cell)


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


def test_the_kernel_command_the_readme_gives_registers_this_python(tmp_path):
    import json
    import shlex
    import subprocess

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    command = re.search(r"`(\.venv/bin/python -m ipykernel install [^`]+)`", readme).group(1)
    args = shlex.split(command)[1:]
    assert args[:3] == ["-m", "ipykernel", "install"] and "--user" in args
    args[args.index("--user")] = f"--prefix={tmp_path}"  # not the user's own kernels
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / "tinygrad-rnn" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["display_name"] == "Python (tinygrad-rnn)"
