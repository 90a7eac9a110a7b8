"""The op view of a recurrent cell: long unrolls wrap into rows about 2,000 px wide with no edge
between rows, gates are named from the cell's scopes, and no label shows a numpy repr."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from picture_helpers import HAS_DOT, cluster_members

from tinygrad_rnn import Value, nn
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import time_step
from visualize import draw_graph


def _lstm(steps=10, hidden=3):
    cell = nn.LSTMCell(2, hidden, rng=0)
    outputs, states = nn.RNN(cell)(np.random.default_rng(0).normal(size=(steps, 1, 2)), return_states=True)
    loss = (outputs[-1] ** 2).sum()
    loss.backward()
    return loss, states


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz dot is not installed")
def test_a_ten_step_lstm_op_view_wraps_into_rows_about_2000_pixels_wide():
    loss, _ = _lstm()
    source = draw_graph(loss).source
    layout = json.loads(subprocess.run(["dot", "-Tjson"], input=source.encode(), capture_output=True,
                                       check=True).stdout)
    x0, _, x1, _ = map(float, layout["bb"].split(","))
    assert (x1 - x0) * 96 / 72 < 2200  # pixels at 96 dpi; unwrapped it was 27,000
    rows = [o for o in layout["objects"] if o.get("name", "").startswith("cluster_row")]
    assert len(rows) == 11  # one step per row, and the loss after them


def test_a_value_used_in_a_later_row_is_drawn_there_again_and_no_edge_crosses_rows():
    loss, states = _lstm(steps=4)
    source = draw_graph(loss, per_row=2).source
    graph = walk(loss)
    h2, c2 = states[2]
    for node in (h2, c2):  # step 3 starts a new row and reads h_2 and c_2 from their copies
        assert re.search(rf"^\s*v{graph.index(node)}_r1 \[label=<.*↩", source, flags=re.M)
    rows = [ids for label, ids in cluster_members(source) if label == ""]
    shared = next(ids for label, ids in cluster_members(source) if "shared" in label)
    for line in source.splitlines():
        match = re.match(r"\s*(\w+) -> (\w+) ", line)
        if match and "invis" not in line:
            tail, head = match.groups()
            assert ({tail, head} <= shared) or any({tail, head} <= ids for ids in rows), line


def test_gates_are_named_so_the_forget_gate_edge_on_the_c_path_can_be_seen():
    loss, states = _lstm(steps=2)
    graph = walk(loss)
    source = draw_graph(loss).source
    (_, c1), (_, c2) = states[1], states[2]
    f2 = next(n for n in graph.nodes if n.name == "f" and time_step(n).t == 2)
    assert f2.op.name == "sigmoid"
    forget = next(e.child for e in graph.edges if e.parent is f2)
    assert forget.op.name == "mul" and any(p is c1 for p in forget.parents)  # f_2 * c_1, the c path
    assert any(p is forget for p in c2.parents)
    caption = re.search(rf"^\s*v{graph.index(f2)} \[label=<(.*?)> ", source, flags=re.M).group(1)
    assert "forget gate" in caption and "<B>f</B>" in caption
    for gate in ("input gate", "forget gate", "cell candidate", "output gate"):
        assert gate in source
    gru = nn.GRUCell(2, 3, rng=0)
    out, _ = nn.RNN(gru)(np.ones((2, 1, 2)))
    out[-1].sum().backward()
    source = draw_graph(out[-1].sum()).source
    for gate in ("reset gate", "update gate", "new gate"):
        assert gate in source


def test_no_label_shows_a_numpy_repr_and_fancy_indices_read_as_indices():
    logits = Value(np.random.default_rng(0).normal(size=(4, 3)), name="logits")
    loss = nn.cross_entropy(logits, np.array([0, 2, 1, 1]))
    loss.backward()
    mask = (logits * 1.0)[np.array([[True, False, True]] * 4)]
    source = draw_graph([loss, mask.sum()]).source
    assert "array(" not in source and "Ellipsis" not in source
    assert "[int array (4,), int array (4,)]" in source and "[bool mask (4, 3)]" in source
    rnn = draw_graph(_lstm(steps=1)[0]).source
    assert "[…, 3:6]" in rnn
