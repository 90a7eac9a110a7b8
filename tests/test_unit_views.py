"""The step numbers split by unit and by batch row (``diagnostics.steps(loss, states, by=...)``), and
the pictures that show them (``draw_steps(..., by=...)``, ``compare_steps``'s compact strips): every
number against an independent computation, a hand-derived IndRNN BPTT in numpy or central differences
over the recurrence (tests/numpy_cells.py), for IndRNN, an LSTM (state (h, c)), a GRU and a custom cell
whose two parts differ in width; with one loss at the end and a loss at every step."""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_gru_cell, numpy_lstm_cell, reference_steps

from tinygrad_rnn import Value, diagnostics, nn
from visualize import compare_steps, draw_steps, style
from visualize.step_view import COMPACT_RUNS, GAIN_DECADES, ZERO, compounded

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from cells import IndRNNCell  # noqa: E402

HAS_DOT = shutil.which("dot") is not None


# ---- IndRNN, against BPTT derived by hand -----------------------------------------------------------

def _indrnn(T=12, B=3, H=6, dead=(0, 1), every_step=False, seed=0):
    """An IndRNN whose units in ``dead`` have a bias so negative that relu never lets them through."""
    cell = IndRNNCell(2, H, rng=seed)
    cell.bias_ih.data[list(dead)] = -50.0
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, 2))
    readout = rng.normal(size=(T, B, H))
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    picked = range(T) if every_step else [T - 1]
    loss = sum((outputs[t] * readout[t]).sum() for t in picked)
    loss.backward()
    return cell, xs, readout, list(picked), loss, states


def _indrnn_by_hand(cell, xs, readout, picked):
    """delta_t per state and J_t^T delta_t per step: h_t = relu(x_t W^T + u h_{t-1} + b), so
    J_t = diag(u * [pre_t > 0]) and delta_{t-1} = u [pre_t > 0] delta_t + dL/dh_{t-1} directly."""
    W, u, b = cell.weight_ih.data, cell.weight_hh.data, cell.bias_ih.data
    T, B, H = len(xs), xs.shape[1], len(u)
    h, pre = [np.zeros((B, H))], [None]
    for x in xs:
        pre.append(x @ W.T + u * h[-1] + b)
        h.append(np.maximum(pre[-1], 0.0))
    delta, sent = [np.zeros((B, H)) for _ in range(T + 1)], [None] * (T + 1)
    for t in range(T, 0, -1):
        if t - 1 in picked:
            delta[t] = delta[t] + readout[t - 1]
        sent[t] = u * (pre[t] > 0) * delta[t]
        delta[t - 1] = sent[t].copy()
    return delta, sent


@pytest.mark.parametrize("every_step", [False, True], ids=["loss-at-end", "loss-every-step"])
@pytest.mark.parametrize("by, axis", [("unit", 0), ("row", 1)])
def test_indrnn_split_equals_hand_derived_bptt(every_step, by, axis):
    cell, xs, readout, picked, loss, states = _indrnn(every_step=every_step)
    delta, sent = _indrnn_by_hand(cell, xs, readout, picked)
    split = diagnostics.steps(loss, states, by=by)
    T = len(xs)
    assert split.grad_norm.shape == split.gain.shape == (T + 1, 6 if by == "unit" else 3)
    for t in range(T + 1):
        norms = np.linalg.norm(delta[t], axis=axis)
        np.testing.assert_allclose(split.grad_norm[t], norms, rtol=1e-12, atol=0)
        if t == 0:
            assert np.isnan(split.gain[0]).all()
            continue
        held = norms > 0
        np.testing.assert_allclose(split.gain[t][held], np.linalg.norm(sent[t], axis=axis)[held] / norms[held],
                                   rtol=1e-12)
        assert np.isnan(split.gain[t][~held]).all()
    assert split.multi_read == every_step


def test_dead_indrnn_units_get_exactly_zero_before_the_last_state_and_live_ones_do_not():
    cell, xs, readout, picked, loss, states = _indrnn(dead=(0, 3))
    split = diagnostics.steps(loss, states, by="unit")
    delta, _ = _indrnn_by_hand(cell, xs, readout, picked)
    dead_by_hand = [k for k in range(6) if not np.any(np.stack(delta[:-1])[:, :, k])]
    assert dead_by_hand[:2] == [0, 3]
    assert [k for k in range(6) if not split.grad_norm[:-1, k].any()] == dead_by_hand
    assert split.labels == tuple(f"unit {k}" for k in range(6))
    # where a unit holds a gradient all the way back to s_first, its gains multiply to the ratio of its
    # norms there and at the end (one loss at the end)
    checked = 0
    for k in range(6):
        held = split.grad_norm[:, k] > 0
        first = len(held) - int(np.argmin(held[::-1])) if not held.all() else 0
        if first < len(held) - 1:
            product = math.prod(split.gain[first + 1:, k])
            assert product == pytest.approx(split.grad_norm[first, k] / split.grad_norm[-1, k], rel=1e-10)
            checked += 1
    assert checked >= 2


# ---- LSTM, GRU and a custom cell, against central differences ---------------------------------------

def _columns(flat: np.ndarray, widths: list[int], B: int, by: str) -> np.ndarray:
    """A flat state vector [part 1 (B, w1), part 2 (B, w2), ...] split as StepSplit defines it."""
    pieces, start = [], 0
    for w in widths:
        pieces.append(flat[start:start + B * w].reshape(B, w))
        start += B * w
    matrix = np.concatenate(pieces, axis=1)  # (B, D): one row per batch row, the parts side by side
    return np.linalg.norm(matrix, axis=0 if by == "unit" else 1)


def _check_against(reference, split, widths, B, by):
    for row in reference:
        t = row["t"]
        norms = _columns(row["delta"], widths, B, by)
        np.testing.assert_allclose(split.grad_norm[t], norms, rtol=1e-6, atol=1e-9)
        if t >= 1:
            sent = _columns(row["jacobian"].T @ row["delta"], widths, B, by)
            held = norms > 1e-6
            np.testing.assert_allclose(split.gain[t][held], sent[held] / norms[held], rtol=1e-5)


def _run(cell, T=4, B=2, every_step=True, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, 2))
    start = cell.initial_state(B)
    h0 = tuple(Value(rng.normal(size=s.shape) * 0.5, requires_grad=False) for s in start) \
        if isinstance(start, tuple) else Value(rng.normal(size=start.shape) * 0.5, requires_grad=False)
    readout = rng.normal(size=(T, B, cell.hidden_size))
    outputs, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    picked = range(T) if every_step else [T - 1]
    loss = sum((outputs[t] * readout[t]).sum() for t in picked)
    loss.backward()
    return xs, readout, set(picked), loss, states


def _flat(state):
    return np.concatenate([np.ravel(p.data) for p in (state if isinstance(state, tuple) else (state,))])


def _lstm_reference(every_step: bool):
    """(loss, states, reference): an LSTMCell(2, 3) over a batch of 2 after backward, and its step
    numbers from its equations written again in numpy, by central differences."""
    cell = nn.LSTMCell(2, 3, rng=0)
    xs, readout, picked, loss, states = _run(cell, every_step=every_step)
    p, B, H = cell.state_dict(), 2, 3

    def step(x, s):
        h, c = numpy_lstm_cell(p, x, s[: B * H].reshape(B, H), s[B * H:].reshape(B, H))
        return np.concatenate([h.ravel(), c.ravel()])

    def losses(t, s):
        return float((s[: B * H].reshape(B, H) * readout[t - 1]).sum()) if t - 1 in picked else 0.0

    return loss, states, reference_steps(step, losses, xs, _flat(states[0]))


@pytest.mark.parametrize("every_step", [False, True], ids=["loss-at-end", "loss-every-step"])
@pytest.mark.parametrize("by", ["unit", "row"])
def test_lstm_split_into_h_and_c_units_agrees_with_central_differences(every_step, by):
    loss, states, reference = _lstm_reference(every_step)
    B, H = 2, 3
    split = diagnostics.steps(loss, states, by=by)
    _check_against(reference, split, [H, H], B, by)
    if by == "unit":
        assert split.labels == ("h[0]", "h[1]", "h[2]", "c[0]", "c[1]", "c[2]")
        assert split.parts == (("h", 0, 3), ("c", 3, 3))
        # c_T gets nothing from outside step T: the path c_T -> h_T is step T's own
        assert (split.grad_norm[-1, 3:] == 0).all()
    else:
        assert split.labels == ("row 0", "row 1")


def test_gru_split_by_unit_agrees_with_central_differences():
    cell = nn.GRUCell(2, 3, rng=1)
    xs, readout, picked, loss, states = _run(cell, T=5, every_step=False)
    p = cell.state_dict()

    def step(x, s):
        return numpy_gru_cell(p, x, s.reshape(2, 3))

    def losses(t, s):
        return float((s.reshape(2, 3) * readout[t - 1]).sum()) if t - 1 in picked else 0.0

    _check_against(reference_steps(step, losses, xs, _flat(states[0])), diagnostics.steps(loss, states, by="unit"),
                   [3], 2, "unit")


@pytest.mark.parametrize("by", ["unit", "row"])
def test_a_custom_cell_with_parts_of_two_widths_agrees_with_central_differences(by):
    rng = np.random.default_rng(4)
    W, V, P = (Value(rng.normal(0, 0.7, shape)) for shape in ((3, 3), (2, 3), (3, 2)))

    def cell(x, state):  # h' = tanh(x + h W + m V), m' = 0.9 m + h' P
        h, m = state
        h_next = (x + h @ W + m @ V).tanh()
        return h_next, m * 0.9 + h_next @ P

    xs = rng.normal(size=(4, 2, 3))
    h0 = (Value(rng.normal(size=(2, 3))), Value(rng.normal(size=(2, 2))))
    outputs, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    loss = (states[-1][1] ** 2).sum() + outputs[1].sum()
    loss.backward()

    def step(x, s):
        h, m = s[:6].reshape(2, 3), s[6:].reshape(2, 2)
        h_next = np.tanh(x + h @ W.data + m @ V.data)
        return np.concatenate([h_next.ravel(), (0.9 * m + h_next @ P.data).ravel()])

    def losses(t, s):
        return float((s[6:] ** 2).sum()) * (t == 4) + float(s[:6].sum()) * (t == 2)

    split = diagnostics.steps(loss, states, by=by)
    _check_against(reference_steps(step, losses, xs, _flat(states[0])), split, [3, 2], 2, by)
    if by == "unit":
        assert split.labels == ("part 1[0]", "part 1[1]", "part 1[2]", "part 2[0]", "part 2[1]")


@pytest.mark.parametrize("make", [lambda: nn.RNNCell(2, 4, rng=0), lambda: nn.LSTMCell(2, 4, rng=0),
                                  lambda: nn.GRUCell(2, 4, rng=0)], ids=["rnn", "lstm", "gru"])
def test_the_squares_of_a_split_add_up_to_the_step_views_norm(make):
    xs, readout, picked, loss, states = _run(make(), T=6, B=3)
    rows = diagnostics.steps(loss, states, bound=None)
    for by in ("unit", "row"):
        split = diagnostics.steps(loss, states, by=by)
        np.testing.assert_allclose(np.sqrt((split.grad_norm ** 2).sum(axis=1)), [r.grad_norm for r in rows],
                                   rtol=1e-12)


def test_a_split_is_refused_in_words_a_user_can_act_on():
    _, _, _, _, loss, states = _indrnn()
    with pytest.raises(ValueError, match="by must be one of 'unit', 'row'"):
        diagnostics.steps(loss, states, by="units")
    h = [Value(np.zeros(3), requires_grad=False)]
    w = Value(np.eye(3) * 0.5)
    for _ in range(3):
        h.append((h[-1] @ w + 1.0).tanh())
    loss = h[-1].sum()
    loss.backward()
    with pytest.raises(ValueError, match="no batch axis"):
        diagnostics.steps(loss, h, by="row")
    assert diagnostics.steps(loss, h, by="unit").grad_norm.shape == (4, 3)


# ---- the split picture ------------------------------------------------------------------------------

def _cells(source: str) -> list[tuple[str, str]]:
    """(background colour, text) of every shaded cell of the split heatmap, in the order drawn."""
    return re.findall(r'<TD WIDTH="\d+" HEIGHT="\d+" BGCOLOR="(#[0-9a-f]{6})">(.*?)</TD>', source)


def test_the_split_picture_prints_each_units_norm_as_central_differences_give_it():
    loss, states, reference = _lstm_reference(every_step=True)
    B, H = 2, 3
    expected = np.array([_columns(r["delta"], [H, H], B, "unit") for r in reference]).T  # (units, states)
    source = draw_steps(loss, states, by="unit").source
    shown = _cells(source)
    assert len(shown) == expected.size
    for (colour, text), x in zip(shown, expected.ravel()):
        number = float(re.sub(r"<[^>]*>", "", text))
        assert number == pytest.approx(x, rel=0.05, abs=1e-9)  # printed to 2 significant digits
        if abs(x) < 1e-7:  # c_T: exactly 0 in the framework, marked apart from every size
            assert colour == ZERO and number == 0.0
    text = html.unescape(re.sub(r"<[^>]*>", " ", source))
    for said in ("over all 2 batch rows", "(h, c; unit k of each is its own row)", "leaves out the path",
                 "the loss reads several states", "0 of 6 units get exactly 0"):
        assert said in re.sub(r"\s+", " ", text), said


def test_the_split_picture_marks_dead_units_and_counts_them():
    cell, xs, readout, picked, loss, states = _indrnn(T=40, H=20, dead=(2, 5, 11))
    delta, _ = _indrnn_by_hand(cell, xs, readout, picked)
    norms = np.array([np.linalg.norm(d, axis=0) for d in delta]).T  # (units, states)
    source = draw_steps(loss, states, by="unit").source
    shown = _cells(source)
    scale = style.magnitude_range(norms[norms > 0].ravel())
    assert [c for c, _ in shown] == [ZERO if x == 0 else style.magnitude_fill(x, *scale) for x in norms.ravel()]
    zero = int((norms[:, 0] == 0).sum())
    assert zero >= 3
    assert f"{zero} of 20 units get exactly 0 at h" in html.unescape(source)
    # 41 states are too many columns to print numbers in: the cells are empty, and the legend says no more.
    assert all(text.strip() == "" for _, text in shown)
    assert "numbers printed" not in source


def test_the_legend_speaks_of_printed_numbers_only_when_the_cells_print_them():
    few = draw_steps(*_indrnn(T=6, H=4)[4:], by="unit").source
    many = draw_steps(*_indrnn(T=30, H=4)[4:], by="unit").source  # 31 columns: shaded, not numbered
    assert all(text.strip() for _, text in _cells(few)) and "numbers printed in the cells" in few
    assert not any(text.strip() for _, text in _cells(many)) and "numbers printed" not in many


def test_the_split_picture_by_row_shades_each_batch_row():
    cell, xs, readout, picked, loss, states = _indrnn(T=30, B=4, every_step=True)
    delta, _ = _indrnn_by_hand(cell, xs, readout, picked)
    norms = np.array([np.linalg.norm(d, axis=1) for d in delta]).T  # (rows, states)
    source = draw_steps(loss, states, by="row").source
    scale = style.magnitude_range(norms[norms > 0].ravel())
    assert [c for c, _ in _cells(source)] == [ZERO if x == 0 else style.magnitude_fill(x, *scale)
                                              for x in norms.ravel()]
    assert "over all its units" in source and "row 3" in source


# ---- compare_steps: bands for a few short runs, strips for many --------------------------------------

def _elman_runs(count, T, H=4):
    runs, hand = {}, {}
    for i in range(count):
        rng = np.random.default_rng(i)
        cell = nn.RNNCell(2, H, rng=i)
        xs = rng.normal(size=(T, 2, 2))
        outputs, states = nn.RNN(cell)(xs, return_states=True)
        loss = outputs[-1].sum()
        loss.backward()
        runs[f"run {i}"] = (loss, states)
        # hand BPTT: delta_T = 1, delta_{t-1} = (delta_t * (1 - h_t^2)) @ W_hh
        W, h = cell.weight_hh.data, [np.asarray(s.data) for s in states]
        delta = [None] * (T + 1)
        delta[T] = np.ones_like(h[T])
        for t in range(T, 0, -1):
            delta[t - 1] = (delta[t] * (1 - h[t] ** 2)) @ W
        norms = [np.linalg.norm(d) for d in delta]
        hand[f"run {i}"] = (norms, [norms[t - 1] / norms[t] for t in range(1, T + 1)])
    return runs, hand


def _bars(source: str) -> list[set]:
    """The colours of each gain bar of the strips (white and the line at 1 left out), in order."""
    tables = re.findall(r'<TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0">(.*?)</TABLE></TD>',
                        source)
    return [set(re.findall(r'BGCOLOR="(#[0-9a-f]{6})"', t)) - {"#ffffff", style.INK} for t in tables]


def test_compare_steps_switches_to_strips_above_a_size_and_can_be_told_either_way():
    few, _ = _elman_runs(2, 5)
    many, _ = _elman_runs(COMPACT_RUNS + 1, 5)
    assert "strips [" not in compare_steps(few).source and "cluster_run0" in compare_steps(few).source
    assert "strips [" in compare_steps(many).source
    assert "strips [" in compare_steps(few, compact=True).source
    assert "cluster_run0" in compare_steps(many, compact=False).source
    long, _ = _elman_runs(2, 100)
    assert "strips [" in compare_steps(long).source  # 2 x 17 rows of 6 time steps


def test_the_strips_show_each_gain_and_the_product_as_hand_derived_bptt_gives_them():
    runs, hand = _elman_runs(COMPACT_RUNS + 1, 12)
    source = compare_steps(runs).source
    bars = _bars(source)
    assert len(bars) == len(runs) * 13
    gains = [g for _, run_gains in hand.values() for g in run_gains]
    decades = max(abs(math.log10(g)) for g in gains)
    for i, (_, run_gains) in enumerate(hand.values()):
        mine = bars[i * 13:(i + 1) * 13]
        assert mine[0] == set()  # s_0: no time step ends there
        assert [b.pop() for b in mine[1:]] == [style.colour(compounded(g, 12), GAIN_DECADES) for g in run_gains]
    text = html.unescape(source)
    assert f"×{style.number(10 ** -decades, 2)}" in text
    for label, (norms, _) in hand.items():
        factor = norms[0] / norms[-1]
        said = (f"gains multiply to {style.number(factor, 2)} ({style.number(factor ** (1 / 12), 2)} a time step)")
        assert said in text, label


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot program lays the picture out")
def test_nine_runs_of_a_hundred_time_steps_fit_a_column():
    runs, _ = _elman_runs(9, 100, H=3)
    svg = subprocess.run(["dot", "-Tsvg"], input=compare_steps(runs).source, capture_output=True, text=True,
                         check=True).stdout
    width, height = (float(x) for x in re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg).groups())
    assert width * 4 / 3 <= 1000 and height * 4 / 3 <= 1200
