"""Pictures: assertions on the DOT text, so they hold without Graphviz installed.

The numbers on a picture are checked against hand-derived local derivatives and against central
differences in float64; the structure (clusters per time step, shared parameters, cut and clipped
steps) against the graph that was recorded; the escaping against a small DOT tokenizer.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from picture_helpers import HAS_DOT, attribute_lists, cluster_members, dot_tokens, edge_labels, scalar_rnn

from tinygrad_rnn import Value, nn
from tinygrad_rnn.clip import clip_norm
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import time_step
from visualize import GraphTooLarge, draw_graph, draw_path, draw_steps, render, style, to_json
from visualize.cli import main as cli_main

# ---- helpers -----------------------------------------------------------------------------------


def hand_local_derivatives(child) -> list[float]:
    """The textbook d(child)/d(input k) for a scalar child, from its data alone."""
    name, y = child.op.name, child.data
    args = [p.data for p in child.parents]
    a = args[0]
    b = args[1] if len(args) > 1 else None
    table = {
        "add": lambda: [1.0, 1.0], "sub": lambda: [1.0, -1.0], "mul": lambda: [b, a],
        "div": lambda: [1.0 / b, -a / b**2], "neg": lambda: [-1.0], "tanh": lambda: [1.0 - y * y],
        "sigmoid": lambda: [y * (1.0 - y)], "exp": lambda: [y], "log": lambda: [1.0 / a],
        "pow": lambda: [child.op.exponent * a ** (child.op.exponent - 1)], "relu": lambda: [float(a > 0)],
        "abs": lambda: [float(np.sign(a))],
    }
    return table[name]()


# ---- op view: numbers on edges ------------------------------------------------------------------


def test_scalar_edge_labels_equal_hand_derived_local_derivatives():
    a, b = Value(0.7, name="a"), Value(-1.3, name="b")
    y = (a * b + a / b - (-a)).tanh() + a.sigmoid() * b.exp() + (a**3).log() - (b * b).abs() + (a - b).relu()
    y.backward()
    graph = walk(y)
    labels = edge_labels(draw_graph(y, digits=17).source)
    assert len(labels) == len(graph.edges)  # every edge labelled
    for parent_index, child_index, label in labels:
        child, parent = graph.nodes[child_index], graph.nodes[parent_index]
        expected = [d for d, p in zip(hand_local_derivatives(child), child.parents) if p is parent]
        assert any(abs(float(label) - d) <= 1e-12 for d in expected), (child.op.name, label, expected)


def test_scalar_edge_labels_match_central_differences():
    def forward(w_value):
        w = Value(w_value, name="w")
        return w, ((0.2 - w * 0.3).tanh() * w).sigmoid()  # the sub edge has derivative -1

    w, out = forward(0.8)
    graph = walk(out)
    labels = {(p, c): float(label) for p, c, label in edge_labels(draw_graph(out, digits=17).source)}
    # The chain rule over the picture's labels rebuilds d out / d w; compare with float64 differences.
    total = {w: 1.0}
    for edge in graph.edges:
        if edge.parent in total:
            key = (graph.index(edge.parent), graph.index(edge.child))
            total[edge.child] = total.get(edge.child, 0.0) + total[edge.parent] * labels[key]
    eps = 1e-6
    numeric = (forward(0.8 + eps)[1].data - forward(0.8 - eps)[1].data) / (2 * eps)
    assert abs(total[out] - numeric) < 1e-8


def test_compact_op_view_puts_each_op_in_its_output_box_with_the_same_edge_labels():
    loss, _, _ = scalar_rnn(steps=3)
    loss.backward()
    graph = walk(loss)
    source = draw_graph(loss, compact=True, digits=17).source
    assert not re.search(r"^\s*o\d+ \[", source, flags=re.M)  # no separate op nodes
    found = re.findall(r"^\s*v(\d+)(?:_[tr]\d+)?\s*->\s*v(\d+)\s*\[label=<(.*?)>\s+\w+=", source, flags=re.M)
    assert len(found) == len(graph.edges)
    for parent_index, child_index, label in found:
        child, parent = graph.nodes[int(child_index)], graph.nodes[int(parent_index)]
        expected = [d for d, p in zip(hand_local_derivatives(child), child.parents) if p is parent]
        assert any(abs(float(label) - d) <= 1e-12 for d in expected)


def test_tensor_edges_show_jacobian_norm_and_observed_gain():
    rng = np.random.default_rng(0)
    W = Value(rng.normal(size=(4, 4)), name="W")
    h = Value(rng.normal(size=(1, 4)), name="h")
    out = (h @ W).tanh().sum()
    before = draw_graph(out).source
    edge_labels = re.findall(r"->.*?\[label=<(.*?)> ", before)
    assert edge_labels and all("‖J‖" in label and "gain" not in label for label in edge_labels)
    out.backward()
    source = draw_graph(out).source
    sigma = np.linalg.norm(W.data, 2)  # d(h @ W)/dh has the norm of W's largest singular value
    assert f"‖J‖ {style.number(sigma, 3)}" in source
    assert "gain" in source


# ---- op view: structure -------------------------------------------------------------------------


def _step_clusters(source: str) -> list[set]:
    """The node ids of each time-step cluster, in time order (t = 1 first)."""
    found = {int(re.search(r"t = (\d+)", label).group(1)): ids for label, ids in cluster_members(source)
             if "t = " in label}
    assert sorted(found) == list(range(1, len(found) + 1))
    return [found[t] for t in sorted(found)]


def test_one_cluster_per_time_step():
    loss, states, _ = scalar_rnn(steps=5)
    source = draw_graph(loss).source
    graph = walk(loss)
    steps = _step_clusters(source)
    assert len(steps) == 5
    for index, node in enumerate(graph.nodes):
        if node.scope:
            t = time_step(node).t
            assert f"v{index}" in steps[t - 1], (node, t)
    for t in range(1, 6):  # each input x_t sits in the step that reads it
        x = next(i for i, n in enumerate(graph.nodes) if n.name == f"x_{t}")
        assert f"v{x}" in steps[t - 1]


def test_shared_parameter_drawn_once_with_a_use_in_every_step():
    loss, _, (w, _, _) = scalar_rnn(steps=3)
    loss.backward()
    source = draw_graph(loss).source
    graph = walk(loss)
    index = graph.index(w)
    shared = [ids for label, ids in cluster_members(source) if "shared parameters" in label]
    assert len(shared) == 1 and f"v{index}" in shared[0]
    assert len(re.findall(rf"^\s*v{index} \[", source, flags=re.M)) == 1  # drawn once
    assert all(f"v{index}_t{t}" in ids for t, ids in enumerate(_step_clusters(source), 1))
    assert "shared by 3 steps" in source
    # Each step's share of the gradient, shown on its copy, adds up to the total w.grad.
    shares = [float(x) for x in re.findall(rf'v{index}_t\d+ \[label=<.*?grad ([-\d.e]+)<', source)]
    assert len(shares) == 3 and sum(shares) == pytest.approx(w.grad, rel=1e-3)


def test_colour_scale_is_cool_below_one_grey_at_one_warm_above():
    def rgb(hex_colour):
        return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))

    r, g, b = rgb(style.colour(1.0))
    assert r == g == b
    for small in (0.5, 0.1, 1e-3, 0.0):
        r, _, b = rgb(style.colour(small))
        assert b > r
    for big in (2.0, 10.0, 1e3, float("inf")):
        r, _, b = rgb(style.colour(big))
        assert r > b
    widths = [float(style.pen_width(x)) for x in (1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 10.0, 1e2)]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_edge_colour_and_width_follow_the_local_derivative():
    x = Value(2.0, name="x")
    small, big = x * 0.05, x * 20.0
    source = draw_graph([small, big]).source
    graph = walk([small, big])
    attrs = {}
    for line in source.splitlines():
        match = re.match(r"\s*v(\d+) -> o(\d+) .*color=\"(#[0-9a-f]{6})\".*penwidth=([\d.]+)", line)
        if match and graph.nodes[int(match.group(1))] is x:
            attrs[graph.nodes[int(match.group(2))]] = (match.group(3), float(match.group(4)))
    assert attrs[small][0] == style.colour(0.05) and attrs[big][0] == style.colour(20.0)
    assert attrs[small][1] < attrs[big][1]
    assert "×0.01" in source and "×100" in source  # the legend explains the scale


def test_clipping_is_marked_where_the_hook_fired():
    cell = nn.RNNCell(2, 3, rng=0)
    inputs = np.random.default_rng(1).normal(size=(3, 1, 2))
    outputs, _ = nn.RNN(cell)(inputs)
    outputs[1].register_hook(clip_norm(1e-6))  # fires
    outputs[0].register_hook(clip_norm(1e6))  # does not fire
    loss = (outputs[-1] * outputs[-1]).sum()
    loss.backward()
    source = draw_graph(loss).source
    graph = walk(loss)
    marked = [int(i) for i in re.findall(r"^\s*v(\d+) \[label=<[^\n]*✂ clipped", source, flags=re.M)]
    assert [graph.nodes[i] for i in marked] == [outputs[1]]


def test_op_view_refuses_huge_graphs_and_points_to_the_step_view():
    x = Value(1.0)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    with pytest.raises(GraphTooLarge, match="draw_steps"):
        draw_graph(y)
    with pytest.raises(GraphTooLarge):
        draw_path(y, x)
    assert "digraph" in draw_graph(y, max_nodes=10_000).source


# ---- escaping -----------------------------------------------------------------------------------

NASTY = 'a "quoted" <b>bold</b> {brace} back\\slash\\ \n newline ] [color=red] ; } digraph { x -> y'


NODE_ATTRIBUTES = {"label", "tooltip", "color", "fillcolor", "fontcolor", "fontsize", "height", "width", "margin",
                   "shape", "style", "penwidth", "peripheries", "group"}


def _check_no_injection(name: str) -> None:
    x = Value(1.5, name=name)
    y = (x * 2.0).tanh()
    y.name = name
    y.backward()
    source = draw_graph(y).source
    tokens = dot_tokens(source)
    nodes = attribute_lists(tokens)
    graph = walk(y)
    for index in range(len(graph.nodes)):
        keys = nodes[f"v{index}"]
        assert keys[0] == "label" and "tooltip" in keys
        assert set(keys) <= NODE_ATTRIBUTES and len(keys) == len(set(keys))  # nothing injected
    for kind, text in tokens:
        if kind == "html":  # every HTML label is well-formed markup: text cannot close it early
            ElementTree.fromstring(f"<root>{text}</root>")
    braces = [t for k, t in tokens if k == "punct" and t in "{}"]
    assert braces.count("{") == braces.count("}")


def test_names_with_quotes_brackets_braces_backslashes_newlines_cannot_break_the_dot_text():
    _check_no_injection(NASTY)
    x = Value(1.0, name=NASTY)
    source = draw_graph(x * 3.0).source
    assert "&lt;b&gt;bold&lt;/b&gt;" in source and "&quot;quoted&quot;" in source
    assert all("<b>bold" not in text for kind, text in dot_tokens(source) if kind == "html")


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=25))
def test_any_name_stays_inside_its_label(name):
    _check_no_injection(name)


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
def test_dot_accepts_nasty_names_and_shows_them_literally():
    x = Value(1.0, name=NASTY)
    y = x * 3.0
    svg = subprocess.run(["dot", "-Tsvg"], input=draw_graph(y).source, capture_output=True, text=True, check=True)
    assert "&lt;b&gt;bold&lt;/b&gt;" in svg.stdout  # the tag shows as text, it is not markup
    assert "Error" not in svg.stderr


# ---- output -------------------------------------------------------------------------------------


def test_to_json_holds_every_node_and_edge_with_its_local_gradient():
    a = Value(0.5, name="a")
    y = (a * 3.0).tanh()
    y.backward()
    data = json.loads(to_json(y))
    graph = walk(y)
    assert len(data["nodes"]) == len(graph.nodes) and len(data["edges"]) == len(graph.edges)
    by_id = {n["id"]: n for n in data["nodes"]}
    for edge in data["edges"]:
        child, parent = by_id[edge["child"]], by_id[edge["parent"]]
        if child["op"] == "mul" and parent["name"] == "a":
            assert edge["derivative"] == 3.0
        if child["op"] == "tanh":
            assert abs(edge["derivative"] - (1 - np.tanh(1.5) ** 2)) < 1e-15
    assert by_id[graph.index(a)]["grad"] == pytest.approx(3 * (1 - np.tanh(1.5) ** 2))


def test_to_json_says_where_the_graph_was_cut_and_what_a_clip_did():
    cell = nn.RNNCell(2, 3, rng=0)
    outputs, _ = nn.RNN(cell, truncate=1, hidden_hook=clip_norm(1e-3))(np.ones((2, 1, 2)))
    outputs[-1].sum().backward()
    nodes = json.loads(to_json(outputs[-1]))["nodes"]
    assert sum(n["cut"] for n in nodes) == 1
    (clipped,) = [n for n in nodes if n["clip"] is not None]
    assert clipped["clip"]["fired"] is True and clipped["clip"]["norm_after"] == pytest.approx(1e-3)


def test_to_json_writes_non_finite_numbers_as_null():
    x = Value(0.0, name="x")
    with np.errstate(divide="ignore"):
        y = x.log()  # -inf
    text = to_json(y)
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["nodes"][-1]["data"] is None


def test_render_without_dot_writes_the_source_and_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    loss, _, _ = scalar_rnn(steps=2)
    written = render(draw_graph(loss), tmp_path / "picture.svg")
    assert written == tmp_path / "picture.dot" and "digraph" in written.read_text(encoding="utf-8")
    assert not (tmp_path / "picture.svg").exists()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "apt-get install graphviz" in lines[0] and "brew install graphviz" in lines[0]


def test_render_rejects_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.svg"):
        render(draw_graph(Value(1.0) * 2.0), tmp_path / "picture.jpeg")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
def test_render_writes_svg_when_dot_is_present(tmp_path):
    loss, states, _ = scalar_rnn(steps=3)
    loss.backward()
    for picture, name in ((draw_graph(loss), "ops.svg"), (draw_steps(loss, states), "steps.svg")):
        written = render(picture, tmp_path / name)
        assert written == tmp_path / name and "<svg" in written.read_text(encoding="utf-8")


@pytest.mark.parametrize("cell, view", [("rnn", "ops"), ("lstm", "path"), ("gru", "steps")])
def test_command_line_renders_each_view(tmp_path, cell, view, capsys):
    out = tmp_path / f"{cell}_{view}.dot"
    code = cli_main(["render", "--cell", cell, "--steps", "3", "--hidden", "3", "--init", "orthogonal",
                     "--radius", "0.9", "--view", view, "-o", str(out)])
    assert code == 0 and out.read_text(encoding="utf-8").startswith("digraph")
    assert str(out) in capsys.readouterr().out


def test_command_line_refuses_a_huge_op_view_and_suggests_steps(tmp_path, capsys):
    code = cli_main(["render", "--steps", "20", "--view", "ops", "--max-nodes", "50", "-o", str(tmp_path / "x.dot")])
    assert code == 2 and "--view steps" in capsys.readouterr().err


def test_an_edge_no_gradient_reached_shows_no_gain_rather_than_zero():
    x = Value(np.array([30.0, 40.0]))
    y = (x * 1e3).tanh()  # saturated: tanh' is exactly 0, so nothing reaches x * 1e3
    (y * 2.0).sum().backward()
    edges = {e.child.op.name + str(e.position): e for e in walk(y).edges}
    assert edges["tanh0"].observed_gain() == 0.0  # the tanh edge stopped a real gradient
    assert edges["mul0"].observed_gain() is None  # after it, nothing flowed: 0/0
    source = draw_graph(y * 2.0).source
    assert "gain – (no gradient)" in source


def test_a_picture_shown_inline_without_dot_is_one_line_not_an_error(monkeypatch):
    import graphviz

    from visualize import style

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    shown = style.base_digraph("x")._repr_mimebundle_()
    assert list(shown) == ["text/plain"] and "dot program is missing" in shown["text/plain"]
    assert "\n" not in shown["text/plain"]
