"""The step view: every number it shows against an independent computation (a hand-derived Elman
BPTT, central differences in numpy), what its legend says, and its structure (cuts, clips, rows)."""

from __future__ import annotations

import html
import math
import re
import shutil

import numpy as np
import pytest
from numpy_cells import numpy_lstm_cell, reference_steps
from picture_helpers import scalar_rnn

from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.clip import clip_norm
from visualize import compare_steps, draw_steps, style


def _edges(source: str, prefix: str = "s") -> dict[int, str]:
    """t -> the attributes of the step-view edge s_{t-1} -> s_t."""
    edges = {}
    for line in source.splitlines():
        match = re.match(rf"\s*{prefix}[ng](\d+) -> {prefix}n(\d+) (.*)", line)
        if match:
            edges[int(match.group(2))] = match.group(3)
    return edges


def _label_numbers(attrs: str) -> tuple[float, float]:
    """(gain, bound) from an edge label ``<B>gain</B><BR/><FONT ...>≤bound</FONT>...``."""
    match = re.search(r"label=<<B>([-\d.e+]+)</B><BR/><FONT[^>]*>≤([-\d.e+]+)</FONT>", attrs)
    return float(match.group(1)), float(match.group(2))


def _weight_number(attrs: str) -> float:
    """||C_t|| from the edge label's third line ``<BR/><FONT ...>w number</FONT>``."""
    return float(re.search(r"<BR/><FONT[^>]*>w ([-\d.e+]+)</FONT>", attrs).group(1))


def _node_numbers(source: str, prefix: str = "s") -> dict[int, float]:
    found = re.findall(rf'^\s*{prefix}n(\d+) \[label=<<B>.*?</B><BR/><FONT POINT-SIZE="9">([-\d.e+]+)</FONT>',
                       source, flags=re.M)
    return {int(t): float(x) for t, x in found}


def _headline(source: str) -> str:
    """The line under the step view's title: its parts (L, length, state, end gradients, factor, verdict)."""
    caption = re.search(r'<FONT POINT-SIZE="14"><B>.*?</B></FONT><BR ALIGN="LEFT"/><FONT POINT-SIZE="10">(.*?)</FONT>',
                        source).group(1)
    return html.unescape(" · ".join(caption.split('<BR ALIGN="LEFT"/>')))


def _elman(T=15, H=5, seed=0, inputs=False):
    """A tanh RNN with 0.5 I + a large upper-triangular W_hh (spectral radius 0.5, norm > 1)."""
    rng = np.random.default_rng(seed)
    W = 0.5 * np.eye(H) + np.triu(rng.normal(0, 1.5, (H, H)), k=1)
    cell = nn.RNNCell(2, H, rng=seed)
    cell.weight_hh.data = W
    xs = rng.normal(size=(T, 1, 2))
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    target = rng.normal(size=(1, H))
    loss = ((outputs[-1] - target) ** 2).sum()
    loss.backward()
    return (W, target, loss, states, xs) if inputs else (W, target, loss, states)


def test_edges_show_the_gain_first_and_the_bound_under_it_as_hand_derived_bptt_gives_them():
    W, target, loss, states, xs = _elman(inputs=True)
    source = draw_steps(loss, states, digits=17).source
    h = [s.data[0] for s in states]
    delta = 2 * (h[-1] - target[0])  # dL/dh_T
    above_one = 0
    for t in range(len(h) - 1, 0, -1):
        sent = (delta * (1 - h[t] ** 2)) @ W  # (dh_t/dh_{t-1})^T delta_t, J_t = diag(1 - h_t^2) W_hh
        gain, bound = _label_numbers(_edges(source)[t])
        # C_t: step t's a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh gets da = delta (1 - h_t^2), so the
        # weights get da x_t^T and da h_{t-1}^T, each bias da.
        da = delta * (1 - h[t] ** 2)
        weights = np.linalg.norm(da) * math.sqrt(np.sum(xs[t - 1, 0] ** 2) + np.sum(h[t - 1] ** 2) + 2)
        assert _weight_number(_edges(source)[t]) == pytest.approx(weights, rel=1e-12)
        assert gain == pytest.approx(np.linalg.norm(sent) / np.linalg.norm(delta), rel=1e-12)
        assert bound == pytest.approx(np.linalg.norm((1 - h[t] ** 2)[:, None] * W, 2), rel=1e-12)
        assert gain <= bound * (1 + 1e-12)
        above_one += bound > 1
        delta = sent
    assert above_one > (len(h) - 1) / 2  # the bound says "could amplify" at most steps ...
    nodes = _node_numbers(source)
    assert nodes[0] == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert nodes[0] / nodes[len(h) - 1] < 1e-3  # ... while the gradient vanishes


def test_with_one_loss_at_the_end_the_edge_labels_multiply_to_the_ratio_of_the_end_gradients():
    _, _, loss, states = _elman(T=20)
    source = draw_steps(loss, states, digits=17).source
    product = math.prod(_label_numbers(attrs)[0] for attrs in _edges(source).values())
    nodes = _node_numbers(source)
    assert product == pytest.approx(nodes[0] / nodes[20], rel=1e-12)
    assert f"gains multiply to {style.number(product, 2)}" in source
    assert ("with one loss at the end, the gradient at time step t−1 is the gradient at time step t times the "
            "edge's label") in " ".join(re.split(r'<BR ALIGN="LEFT"/>', source))


def test_edges_are_coloured_by_the_gain_and_nodes_shaded_by_the_absolute_gradient_norm():
    _, _, loss, states = _elman()
    rows = diagnostics.steps(loss, states)
    source = draw_steps(loss, states).source
    scale = style.magnitude_range(r.grad_norm for r in rows)
    for t, attrs in _edges(source).items():  # coloured by what the gain compounds to over the 15 steps
        assert f'color="{style.colour(rows[t].gain ** 15, 3.0)}"' in attrs
    for row in rows:
        fill = re.search(rf'^\s*sn{row.t} \[.*fillcolor="(#[0-9a-f]{{6}})"', source, flags=re.M).group(1)
        assert fill == style.magnitude_fill(row.grad_norm, *scale)
    # The node legend names absolute values, never factors.
    node_row = re.search(r"node shade and number.*?</TABLE>", source).group(0)
    assert "×" not in node_row and f"10<SUP>{scale[0]}</SUP>".replace("-", "−") in node_row


def test_the_lstm_state_is_h_and_c_and_its_numbers_agree_with_central_differences():
    cell = nn.LSTMCell(2, 3, rng=0)
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(4, 2, 2))
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    readout = rng.normal(size=(2, 3))
    loss = (outputs[-1] * readout).sum()
    loss.backward()
    source = draw_steps(loss, states, digits=17).source
    assert "state s_t = (h_t, c_t)" in source and "all 2 batch rows" in source
    p = cell.state_dict()

    def step(x, s):
        h, c = numpy_lstm_cell(p, x, s[:6].reshape(2, 3), s[6:].reshape(2, 3))
        return np.concatenate([h.ravel(), c.ravel()])

    reference = reference_steps(step, lambda t, s: float((s[:6].reshape(2, 3) * readout).sum()) * (t == 4),
                                xs, np.zeros(12))
    for t, attrs in _edges(source).items():
        gain, bound = _label_numbers(attrs)
        assert gain == pytest.approx(reference[t]["gain"], rel=1e-6)
        assert bound == pytest.approx(reference[t]["bound"], rel=1e-6)
    for t, shown in _node_numbers(source).items():
        assert shown == pytest.approx(reference[t]["grad_norm"], rel=1e-6)


def test_a_run_clipped_at_every_step_is_marked_and_not_called_exploding():
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, 8, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=1.4, rng=rng)  # with tiny inputs, each step multiplies by 1.4
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    outputs, states = nn.RNN(cell, hidden_hook=clip_norm(1.0))(rng.normal(size=(20, 1, 2)) * 1e-5,
                                                               return_states=True)
    loss = (outputs[-1] * 10.0).sum()
    loss.backward()
    source = draw_steps(loss, states).source
    marked = sorted(int(t) for t in re.findall(r"^\s*sn(\d+) \[label=<[^\n]*✂", source, flags=re.M))
    rows = diagnostics.steps(loss, states)
    assert marked == [r.t for r in rows if r.clip is not None and r.clip.fired] and len(marked) > 15
    record = rows[marked[0]].clip
    assert f"{style.number(record.norm_before, 2)}→{style.number(record.norm_after, 2)}" in source
    summary = _headline(source)
    assert re.search(r"· stable \(10⁻³ ≤ [\d.]+ ≤ 10³\)$", summary), summary
    assert "✂ at" in summary and "exploding" not in summary


def test_truncated_boundaries_are_dotted_and_nothing_else():
    cell = nn.RNNCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell, truncate=2)(np.random.default_rng(0).normal(size=(6, 1, 2)), return_states=True)
    loss = sum((h * h).sum() for h in outputs)
    loss.backward()
    edges = _edges(draw_steps(loss, states).source)
    assert sorted(t for t, attrs in edges.items() if "dotted" in attrs) == [3, 5]


def test_long_sequences_wrap_into_rows_and_keep_every_step():
    loss, states, _ = scalar_rnn(steps=200, w=0.5)
    loss.backward()
    source = draw_steps(loss, states, per_row=25).source
    assert len(_edges(source)) == 200
    assert len(re.findall(r"^\s*sn\d+ \[", source, flags=re.M)) == 201
    assert len(re.findall(r"^\s*sg\d+ \[", source, flags=re.M)) == 7  # rows 2..8 continue from a copy


def test_compare_steps_draws_one_band_per_run_in_order_on_one_scale():
    loss_a, states_a, _ = scalar_rnn(steps=5, w=0.3)
    loss_a.backward()
    loss_b, states_b, _ = scalar_rnn(steps=5, w=1.5)
    loss_b.backward()
    source = compare_steps({"first": (loss_a, states_a), "second": (loss_b, states_b, "c")}).source
    assert sorted(re.findall(r"subgraph cluster_run(\d+) \{", source)) == ["0", "1"]
    assert "<B>first</B>" in source and "<B>second</B>" in source and "c₅" in source
    rows = diagnostics.steps(loss_a, states_a) + diagnostics.steps(loss_b, states_b)
    scale = style.magnitude_range(r.grad_norm for r in rows)
    fill = re.search(r'^\s*r1n5 \[.*fillcolor="(#[0-9a-f]{6})"', source, flags=re.M).group(1)
    assert fill == style.magnitude_fill(diagnostics.steps(loss_b, states_b)[5].grad_norm, *scale)


def test_the_layer_axis_draws_the_layers_of_a_deep_net():
    rng = np.random.default_rng(3)
    activations = [Value(rng.normal(size=(4, 6)), requires_grad=False)]
    for _ in range(8):
        activations.append((activations[-1] @ Value(rng.normal(0, 0.3, (6, 6)))).tanh())
    loss = activations[-1].sum()
    loss.backward()
    source = draw_steps(loss, activations, axis="layer").source
    assert "8 layers" in source and "a₈" in source and "what layer l did to the gradient" in source
    assert "time runs" not in source and "step t" not in source and "steps" not in source
    rows = diagnostics.steps(loss, activations)
    for t, attrs in _edges(source, "s").items():
        assert _label_numbers(attrs)[0] == float(style.number(rows[t].gain, 2))
    with pytest.raises(ValueError, match="axis"):
        draw_steps(loss, activations, axis="depth")


def test_the_step_view_needs_two_states():
    with pytest.raises(ValueError, match="T >= 1"):
        draw_steps(None, [Value(1.0)])


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot to lay the picture out")
@pytest.mark.parametrize("runs", [0, 1, 3])
def test_wrapped_rows_read_top_to_bottom_in_both_views(runs):
    import json
    import subprocess

    def run(seed):
        outputs, states = nn.RNN(nn.RNNCell(2, 3))(np.random.default_rng(seed).standard_normal((60, 1, 2)),
                                                    return_states=True)
        loss = outputs[-1].sum()
        loss.backward()
        return loss, states

    if runs == 0:
        dot, firsts = draw_steps(*run(0), per_row=25), ["sn0", "sg25", "sg50"]
    else:
        dot = compare_steps({f"run {i}": run(i) for i in range(runs)}, per_row=25)
        firsts = [name for i in range(runs) for name in (f"r{i}n0", f"r{i}g25", f"r{i}g50")]
    laid_out = json.loads(subprocess.run(["dot", "-Tjson"], input=dot.source, capture_output=True, text=True,
                                         check=True).stdout)
    height = {o["name"]: float(o["pos"].split(",")[1]) for o in laid_out["objects"] if "pos" in o}
    ys = [height[name] for name in firsts]
    assert ys == sorted(ys, reverse=True), "each row (and each run) below the one before"


def test_a_comparison_of_row_wise_and_whole_batch_bounds_says_both():
    from tinygrad_rnn.nn.batchnorm_rnn import BNRNNCell

    def run(cell):
        rng = np.random.default_rng(0)
        h0 = Value(0.5 * rng.standard_normal((4, 3)), requires_grad=False)
        outputs, states = nn.RNN(cell)(rng.standard_normal((3, 4, 2)), h0=h0, return_states=True)
        loss = outputs[-1].sum()
        loss.backward()
        return loss, states

    source = compare_steps({"plain": run(nn.RNNCell(2, 3)), "batch norm": run(BNRNNCell(2, 3))}).source
    assert "the largest over batch rows, or the whole batch" in source


def test_a_loss_at_every_step_is_said_and_the_caption_follows_the_last_read_alone():
    from test_split import preserved_direction_run

    total, losses, states = preserved_direction_run()
    total.backward()
    source = draw_steps(total, states).source
    assert "The loss reads 30 states" in source and "gains multiply to" not in source
    assert "the read at h₃₀ alone reaches h₀ × 1" in source and "see the lag view (draw_lags)" in source
    assert "· stable" in source and "vanishing" not in source.split("verdict (diagnostics.verdict)")[0]
    assert "with one loss at the end" not in source and "draw_lags(losses, states) shows every read" in source
    # ... and it does not claim the product rule, which fails here: each read adds its own gradient.
    rows = diagnostics.steps(total, states)
    assert "the labels do not multiply to" in source
    assert math.prod(r.gain for r in rows[1:]) < 1e-20 < rows[0].grad_norm / rows[-1].grad_norm
    # What the caption says, independently: the last loss alone, cut at h_0, reaches it whole.
    assert diagnostics.lags(losses, states)[-1, 0] == pytest.approx(1.0, rel=1e-12)


def test_a_frozen_gru_is_called_frozen_with_what_its_steps_gave_the_weights():
    from test_split import frozen_gru

    _, loss, states = frozen_gru(40.0)
    rows = diagnostics.steps(loss, states)
    source = draw_steps(loss, states).source
    share = style.number(max(r.contribution / r.grad_norm for r in rows[1:]), 2)
    assert f"frozen: its time steps gave the weights at most {share} × the gradient they carried (&lt; 10⁻⁶)" in source
    assert "stable" not in source.split("verdict (diagnostics.verdict)")[0]


def test_a_gain_is_coloured_by_what_it_compounds_to_over_the_drawn_length():
    T = 100
    cell = nn.RNNCell(1, 1, bias=False, nonlinearity="identity")
    cell.weight_hh.data, cell.weight_ih.data = np.array([[0.94]]), np.zeros((1, 1))
    outputs, states = nn.RNN(cell)(np.zeros((T, 1, 1)), h0=Value(np.ones((1, 1))), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    attrs = _edges(draw_steps(loss, states).source)[50]
    assert _label_numbers(attrs)[0] == pytest.approx(0.94, rel=1e-12)
    assert f'color="{style.colour(0.94**T, 3.0)}"' in attrs
    assert style.scale(0.94**T, 3.0) < -0.85  # 0.002 over 100 steps: nearly the full blue of 10^-3


def test_the_verdicts_thresholds_are_printed_on_the_picture():
    _, _, loss, states = _elman()
    source = draw_steps(loss, states).source
    legend = " ".join(re.split(r'<BR ALIGN="LEFT"/>', source))
    assert "less than 10⁻³" in legend and "more than 10³" in legend and "10⁻⁶ × ‖δ" in legend


def test_a_run_longer_than_the_contribution_limit_says_it_leaves_w_and_frozen_out(monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("tinygrad_rnn.diagnostics.steps"), "CONTRIBUTION_LIMIT", 10)
    monkeypatch.setattr(diagnostics, "CONTRIBUTION_LIMIT", 10)
    _, _, loss, states = _elman(T=15)
    rows = diagnostics.steps(loss, states)
    assert all(r.contribution is None for r in rows)
    source = draw_steps(loss, states).source
    assert "(w and frozen are left out beyond 10 time steps)" in " ".join(source.split('<BR ALIGN="LEFT"/>'))
    assert ">w " not in source


def _one_step(weight: float):
    """h_1 = weight * h_0, L = h_1: one time step whose gain is |weight| (the verdict's factor)."""
    cell = nn.RNNCell(1, 1, bias=False, nonlinearity="identity")
    cell.weight_hh.data, cell.weight_ih.data = np.array([[weight]]), np.zeros((1, 1))
    outputs, states = nn.RNN(cell)(np.zeros((1, 1, 1)), h0=Value(np.ones((1, 1))), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    return loss, states


@pytest.mark.parametrize("weight, said", [
    (0.00096, "gains multiply to 0.00096 · vanishing (0.00096 < 10⁻³)"),
    (0.000996, "vanishing (0.000996 < 10⁻³)"),  # not "0.001 < 10⁻³", which would read as false
    (0.0023, "gains multiply to 0.0023 · stable (10⁻³ ≤ 0.0023 ≤ 10³)"),
    (1003.0, "exploding (1003 > 10³)"),  # not "1e+03 > 10³"
    (2500.0, "exploding (2.5e+03 > 10³)"),
])
def test_the_headline_gives_the_verdict_with_the_rule_that_gave_it(weight, said):
    loss, states = _one_step(weight)
    assert diagnostics.verdict(diagnostics.steps(loss, states)) == said.split(" (")[0].split("· ")[-1]
    assert said in _headline(draw_steps(loss, states).source)


def test_the_time_axis_says_time_step_for_t_never_plain_step():
    _, _, loss, states = _elman()
    for source in (draw_steps(loss, states).source, compare_steps({"a": (loss, states)}).source):
        shown = re.sub(r"<[^>]*>", " ", source)  # the visible text and the tooltips
        shown = shown.replace("time step", "").replace("step_view", "").replace("step_compare", "")
        assert re.findall(r"\bsteps?\b", shown.replace("step view", "")) == []
    assert "15 time steps" in _headline(draw_steps(loss, states).source)
