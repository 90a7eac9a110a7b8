"""Writing a picture to a file: svg, png or pdf by the file's suffix, with Graphviz's ``dot``; html
for the interactive page (visualize/page.py).

Where ``dot`` is missing the picture is not lost and the failure is not silent: the DOT source is
written next to the requested file and one line on stderr says how to install Graphviz and how to
finish the job by hand.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import graphviz

from visualize.page import Page, picture_page
from visualize.style import INSTALL_HINT

__all__ = ["render", "FORMATS", "INSTALL_HINT"]

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".html": "html"}
SOURCE_SUFFIXES = (".dot", ".gv")


def render(graph: graphviz.Digraph | Page, path) -> Path:
    """Lay ``graph`` out with ``dot`` and write it to ``path`` (.svg, .png or .pdf; .dot or .gv
    writes the source). Returns the path written: ``path``, or the ``.dot`` file beside it when
    Graphviz is not installed (a one-line note on stderr says so). A ``.html`` path gets one
    self-contained page: the interactive one for a Page (``visualize.explore``), the picture with pan,
    zoom and search for a Digraph."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".html":
        return (graph if isinstance(graph, Page) else picture_page(graph)).write(path)
    if isinstance(graph, Page):
        raise ValueError(f"render: an interactive page is written as .html, not {path.name!r}")
    if suffix in SOURCE_SUFFIXES:
        return _write_source(graph, path)
    if suffix not in FORMATS:
        raise ValueError(
            f"render: cannot tell the picture format of {path.name!r} from its suffix; "
            f"use one of {', '.join(FORMATS)} (or .dot for the Graphviz source)"
        )
    if shutil.which("dot") is None:
        return _fallback(graph, path)
    try:
        picture = graph.pipe(format=FORMATS[suffix])
    except graphviz.ExecutableNotFound:
        return _fallback(graph, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(picture)
    return path


def _write_source(graph: graphviz.Digraph, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(graph.source, encoding="utf-8")
    return path


def _fallback(graph: graphviz.Digraph, path: Path) -> Path:
    source = _write_source(graph, path.with_suffix(".dot"))
    print(
        f"visualize.render: Graphviz's dot program was not found, so the graph source went to {source} "
        f"instead of {path.name}; install Graphviz ({INSTALL_HINT}), then run "
        f"dot -T{FORMATS[path.suffix.lower()]} {source} -o {path}",
        file=sys.stderr,
    )
    return source
