"""Run docs/tour.ipynb top to bottom in a fresh kernel and save it with its outputs, so that a reader on
GitHub sees its pictures: ``python docs/make_tour.py``. tests/test_notebook.py runs it again the same
way and checks that the saved outputs are what the current code gives.

The kernel is the notebook's own Python 3 kernel as this Python sees it (run it with .venv/bin/python),
started in docs/, as Jupyter does when the notebook is opened there. No timings are recorded, so a run
that changes nothing changes no byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TOUR = Path(__file__).resolve().parent / "tour.ipynb"


def execute(path: Path = TOUR, **kernel) -> nbformat.NotebookNode:
    """The notebook at ``path`` run top to bottom (raises on the first failing cell). ``kernel``: passed
    to the kernel's start, such as ``env`` for its environment variables."""
    notebook = nbformat.read(path, as_version=4)
    _warm_font_cache()
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(**kernel)
    return steady(notebook)


def _warm_font_cache() -> None:
    """matplotlib's font list built before the kernel starts: on a fresh machine its first import says
    "Matplotlib is building the font cache" on stderr, an output the saved notebook does not have."""
    try:
        import matplotlib.font_manager  # noqa: F401  (builds and saves the cache when it is missing)
    except ImportError:
        pass


def steady(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Without what changes from run to run: how a stream was cut into messages, and the address in
    an object's text form (``<visualize.style.Picture at 0x7f...>``, shown where the picture cannot be)."""
    for cell in notebook.cells:
        # One print may reach the notebook as two stream messages (the kernel flushes when it likes):
        # consecutive pieces of one stream are joined, as Jupyter shows them.
        joined = []
        for output in cell.get("outputs", []):
            if joined and output.output_type == "stream" and joined[-1].output_type == "stream" and (
                    joined[-1].name == output.name):
                joined[-1].text += output.text
            else:
                joined.append(output)
        if "outputs" in cell:
            cell.outputs = joined
        for output in cell.get("outputs", []):
            if "text/plain" in output.get("data", {}):
                output.data["text/plain"] = re.sub(r" at 0x[0-9a-f]+>", ">", output.data["text/plain"])
    return notebook


def main() -> None:
    notebook = execute()
    nbformat.write(notebook, TOUR)
    size = TOUR.stat().st_size // 1024
    print(f"wrote {TOUR.relative_to(TOUR.parents[1])} with its outputs ({size} KB)")


if __name__ == "__main__":
    main()
