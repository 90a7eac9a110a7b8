"""An interactive page: the op, step and lag views of one recorded graph in a browser, in one file.

    from visualize.page import explore
    page = explore(loss, states, monitor=monitor)
    visualize.render(page, "bptt.html")      # or page.write("bptt.html")

The page is self-contained: its data and its script (``static/*.js``, written for this project, no
library) are inlined; it fetches nothing. Every number on it comes from the exporters the pictures
use (``export.graph_dict``, ``diagnostics.steps`` through the step view, ``diagnostics.lags`` through
the lag view) and every colour from ``style`` through the same view code, so the page and the
pictures cannot disagree. The script only lays the boxes out, and multiplies the path view's edge
factors along paths exactly as ``path_view.path_products`` does (the tests compare the two).

Why a script of our own rather than d3-graphviz or svg-pan-zoom: Graphviz cannot lay out a 100-step
LSTM's op graph quickly, and collapsing time steps to one box means laying the graph out again on
every click, in the browser. A layered layout per step is a few dozen lines; pan and zoom a few more.

Names and other text reach the page only as JSON data (with <, > and & escaped, so no string can
close the script element) and the script writes them with ``textContent``, never as markup.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import graphviz
import numpy as np

from tinygrad_rnn import diagnostics
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import time_step
from tinygrad_rnn.value import Value
from visualize import export, style
from visualize.labels import display_name, measure, op_symbol
from visualize.lag_view import _last, _shares, headline_lag, lag_decades
from visualize.op_view import OpPicture
from visualize.path_view import exact_norm
from visualize.step_view import GAIN_DECADES, _edge_attrs, _node_attrs, _run, _summary

__all__ = ["Page", "explore", "picture_page", "VIEWS"]

VIEWS = ("ops", "steps", "lags")
STATIC = Path(__file__).parent / "static"
SCRIPTS = ("core.js", "ops.js", "views.js")  # the page's frame, the op view, the step and lag views
FORMAT = "tinygrad_rnn.page/1"


class Page:
    """One HTML page: ``data`` (plain JSON-able dicts) drawn by the page's script."""

    def __init__(self, data: dict):
        self.data = data

    def html(self) -> str:
        script = "\n".join((STATIC / name).read_text(encoding="utf-8") for name in SCRIPTS)
        css = (STATIC / "page.css").read_text(encoding="utf-8")
        title = html.escape(style.clean(self.data.get("title") or "tinygrad_rnn", 200))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{title}</title><style>{css}</style></head><body>"
            f'<script type="application/json" id="page-data">{_script_json(self.data)}</script>'
            f"<script>{_inline_script(script)}</script></body></html>\n"
        )

    def write(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path


def _script_json(data) -> str:
    """JSON that no string can end early: <, > and & only ever occur inside JSON strings, where the
    \\u escapes mean the same characters to JSON.parse but nothing to the HTML parser."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline_script(script: str) -> str:
    if "</script" in script.lower() or "<!--" in script:
        raise ValueError("the page's script must not contain '</script' or '<!--': it is inlined in a script element")
    return script


def _op_graph(root, data_limit: int, source=None) -> dict:
    """graph_dict's nodes and edges, with what the op view draws for each: a node's label (its name,
    else its op's symbol) and an edge's colour, pen width and tooltip from OpPicture.edge_numbers."""
    graph = walk(root)
    data = export.graph_dict(root, data_limit)
    picture = OpPicture(graph)
    boxes: dict = {}  # time step -> its box; an unroll's steps in order, unrolls as they first appear
    for node in graph.nodes:
        step = time_step(node)
        if step is not None:
            boxes.setdefault(step.prefix, set()).add(step.t)
    order = {(prefix, t): i for i, (prefix, t) in enumerate((p, t) for p, ts in boxes.items() for t in sorted(ts))}
    for node, entry in zip(graph.nodes, data["nodes"]):
        entry["label"] = display_name(node) or (op_symbol(node.op) if node.op is not None else None)
        step = time_step(node)
        entry["box"] = None if step is None else order[step.prefix, step.t]
    data["boxes"] = [{"prefix": prefix, "t": t} for prefix, t in order]
    data["key"] = [_factor(x) for x in style.swatch_values(2.0)]
    for edge, entry in zip(graph.edges, data["edges"]):
        _label, _value, tip = picture.edge_numbers(edge)
        colour, width, _line = picture.edge_colour(edge)  # (off the scale where no gain is known: not x1)
        entry.update(colour=colour, width=float(width), tip=tip)
    roots = [i for i, node in enumerate(graph.nodes) if not graph.edges_from(node)]
    data["outputs"] = roots
    # The path view's number at a one-number output of a tensor graph is exact, ||d output / d source||:
    # one vjp per source, so made here for the sources a reader starts from: the weights and the named
    # inputs such as h0 (all 107 leaves of a 100-step LSTM would take 0.7 s), and the source asked for.
    exact = {}
    for i, node in enumerate(graph.nodes):
        if node is source or node.op is None and (node.requires_grad or node.name):
            for r in roots:
                if graph.nodes[r].size == 1:
                    exact[f"{i}:{r}"] = export._number(measure(lambda n=node, o=graph.nodes[r]: exact_norm(o, n)))
    data["exact_norms"] = exact
    return data


def _steps(loss, states, name: str | None) -> dict:
    """The step view's rows, colours and headline (step_view's own functions)."""
    run = _run(loss, states, name, "time", "explore")
    scale = style.magnitude_range(r.grad_norm for r in run.rows)
    rows = export.steps_list(run.rows)
    for row, entry in zip(run.rows, rows):
        entry["fill"] = _node_attrs(run, row, scale, "time", 2)["fillcolor"]
        if row.t > 0:
            attrs = _edge_attrs(run, row, 2, "time")
            entry.update(colour=attrs["color"], width=float(attrs.get("penwidth", 1.0)))
    headline, story = _summary(run, "time")
    if not isinstance(headline, str):  # the headline's parts, one per line of the picture
        headline = " · ".join(headline)
    return {"rows": rows, "letter": run.letter, "state": run.state, "headline": headline, "story": story,
            "scale": list(scale), "gain_key": [_factor(x, GAIN_DECADES) for x in style.swatch_values(GAIN_DECADES)],
            "norm_key": _magnitudes(*scale)}


def _lags(losses, states) -> dict:
    """The lag view's numbers and colours (lag_view's own functions)."""
    matrix = diagnostics.lags(losses, states)
    shares, kept = _shares(matrix)
    curve, counts = diagnostics.reach(matrix), diagnostics.reach_counts(matrix)
    decades = lag_decades(np.concatenate([shares[shares > 0], curve[np.isfinite(curve)]]))
    split = isinstance(losses, Value)
    data = export.lags_dict(matrix)
    data.update(
        rows=kept, names=[f"read at s{i}" if split else f"losses[{i}], t={_last(matrix[i])}" for i in kept],
        shares=export._clean(shares.tolist()),
        colours=[[style.colour(x, decades, power=1.0) if x > 0 else None for x in row] for row in shares],
        reach_colours=[style.colour(r, decades, power=1.0) if np.isfinite(r) and r > 0 else None for r in curve],
        scale=[style.scale(r, decades) if np.isfinite(r) and r > 0 else 0.0 for r in curve],
        decades=decades, headline_lag=headline_lag(curve, counts),
        key=[_factor(10.0**e, decades, 1.0) for e in range(-decades, decades + 1, max(1, math.ceil(decades / 4)))],
    )
    return data


# Colour keys as the pictures' legends give them: [label, colour] from shrinking to growing (or small to large).
def _factor(x: float, decades: float = 2.0, power: float = 0.5) -> list:
    return [f"×{style.number(x, 2)}", style.colour(x, decades, power)]


def _magnitudes(low: int, high: int) -> list:
    step = max(1, math.ceil((high - low) / 6))  # style.magnitude_row's swatches
    exponents = range(high, low - 1, -step)[::-1]
    return [[style.number(10.0**e, 2), style.magnitude_fill(10.0**e, low, high)] for e in exponents]


def _monitor(monitor) -> dict:
    """A Monitor's history, each iteration's ||delta_t|| shaded on one scale over all iterations."""
    data = export.monitor_dict(monitor)
    norms = [n for frame in monitor.step_grad_norms if frame for n in frame]
    low, high = style.magnitude_range(norms)
    data["fills"] = [[style.magnitude_fill(n, low, high) for n in frame] if frame else None
                     for frame in monitor.step_grad_norms]
    data["scale"], data["norm_key"] = [low, high], _magnitudes(low, high)
    return data


def explore(root, states=None, *, losses=None, monitor=None, view: str = "ops", source=None,
            title: str | None = None, name: str | None = None, data_limit: int = 16) -> Page:
    """The interactive page of everything ``root`` (a loss, after backward) was computed from.

    ``states`` [s_0, ..., s_T] add the step view and the lag view (``losses``: what the lag view
    splits, default ``root``); ``monitor`` (a ``diagnostics.Monitor``) adds a slider over its training
    iterations to the step view. ``view`` is the view the page opens on (one of VIEWS), ``source`` a
    Value whose paths to the loss it opens highlighted. Arrays of more than ``data_limit`` numbers are
    shown as their summary (min, max, mean, norm)."""
    if view not in VIEWS:
        raise ValueError(f"explore: view must be one of {', '.join(map(repr, VIEWS))}, got {view!r}")
    if view != "ops" and states is None:
        raise ValueError(f"explore: the {view} view needs the states [s_0, ..., s_T]")
    graph = _op_graph(root, data_limit, source)
    select = None
    if source is not None:
        select = next((i for i, node in enumerate(walk(root).nodes) if node is source), None)
        if select is None:
            raise ValueError(f"explore: source {source!r} is not among the nodes the root was computed from")
    data = {"format": FORMAT, "title": title, "view": view, "select": select, "graph": graph,
            "steps": None, "lags": None, "monitor": None}
    if states is not None:
        data["steps"] = _steps(root, states, name)
        data["lags"] = _lags(losses if losses is not None else root, states)
    if monitor is not None:
        data["monitor"] = _monitor(monitor)
    return Page(data)


def picture_page(picture: graphviz.Digraph, title: str | None = None) -> Page:
    """Any view's picture (a Digraph) as a page: its SVG with pan, zoom and search; its tooltips
    are the picture's own. Without Graphviz, the page says so and holds the DOT source as text."""
    try:
        svg = picture.pipe(format="svg").decode("utf-8")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as error:
        why = "Graphviz's dot program was not found" if isinstance(error, graphviz.ExecutableNotFound) else (
            "Graphviz's dot program failed on it")
        return Page({"format": FORMAT, "title": title, "svg": None, "source": picture.source,
                     "error": f"{why}, so here is the picture's DOT source instead: install Graphviz "
                              "(apt-get install graphviz, or brew install graphviz) and write the page again"})
    return Page({"format": FORMAT, "title": title, "svg": svg})
