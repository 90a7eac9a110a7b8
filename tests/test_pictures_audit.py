"""An audit of the pictures at their edges: T = 1 and 2, a loss at every time step, a frozen cell with
zero weights, a custom cell whose gain is exactly 1, gradients that overflow or are NaN, clipping at
every time step, and the pictures drawn before backward.

Each test compares a picture's number, colour or word with an independent computation or with the
picture's own legend; the audit's 16 defects are fixed, and their tests stay as regression tests.
"""

from __future__ import annotations

import html
import math
import re
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.clip import clip_norm
from visualize import compare_steps, draw_graph, draw_lags, draw_steps, style
from visualize.step_run import GAIN_DECADES
from visualize.strip_view import CUT

# ---- helpers -----------------------------------------------------------------------------------


def _unroll(cell, T, *, every=False, target=0.0, B=1, I=2, seed=0, hook=None):  # noqa: E741
    """outputs, states, losses and the loss backpropagated: (o - target)^2 summed, at the last time
    step only or at every one (``every``)."""
    x = np.random.default_rng(seed).standard_normal((T, B, I))
    outs, states = nn.RNN(cell, hidden_hook=hook)(x, return_states=True)
    losses = [((o - target) ** 2).sum() for o in outs]
    loss = losses[-1]
    if every:
        loss = losses[0]
        for part in losses[1:]:
            loss = loss + part
    loss.backward()
    return outs, states, losses, loss


def _zero_cell(hidden=3):
    cell = nn.RNNCell(2, hidden, rng=np.random.default_rng(0))
    for p in cell.parameters():
        p.data[...] = 0.0
    return cell


class Carry(nn.Module):
    """h' = h + k x W^T: the state is carried on whole, every gain exactly 1; k = 0 freezes the weights."""

    def __init__(self, k):
        self.w = Value(np.full((3, 2), 0.5))
        self.k = k

    def initial_state(self, batch_size=None):
        return Value(np.zeros((batch_size, 3)), requires_grad=False)

    def forward(self, x, h):
        return h + (x @ self.w.T) * self.k


def _plain(markup: str) -> str:
    """The visible text of a DOT source's labels, tags dropped and entities read."""
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def _step_edges(source: str) -> dict[int, str]:
    """t -> the attributes of the step view's edge s_{t-1} -> s_t."""
    edges = {}
    for line in source.splitlines():
        match = re.match(r"\s*s[ng](\d+) -> sn(\d+) (.*)", line)
        if match:
            edges[int(match.group(2))] = match.group(3)
    return edges


def _attr(attrs: str, name: str) -> str:
    return re.search(rf'\b{name}="?([^" ]+)"?', attrs).group(1)


def _fd_jacobian(cell, x, state, eps=1e-6):
    """d(new state)/d(state) of one step of ``cell`` by central differences, float64."""
    parts = state if isinstance(state, tuple) else (state,)
    flat = np.concatenate([np.asarray(p.data, dtype=np.float64).ravel() for p in parts])

    def step(vector):
        pieces, at = [], 0
        for p in parts:
            pieces.append(Value(vector[at:at + p.data.size].reshape(p.data.shape)))
            at += p.data.size
        out = cell(Value(x), tuple(pieces) if isinstance(state, tuple) else pieces[0])
        outs = out if isinstance(out, tuple) else (out,)
        return np.concatenate([np.asarray(o.data, dtype=np.float64).ravel() for o in outs])

    columns = []
    for j in range(flat.size):
        e = np.zeros(flat.size)
        e[j] = eps
        columns.append((step(flat + e) - step(flat - e)) / (2 * eps))
    return np.stack(columns, axis=1)


# ---- regression checks that hold -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_step_numbers_against_central_differences(kind):
    """‖δ_t‖, gain_t and the bound ‖J_t‖₂ against J_t by central differences (float64): δ_T is the
    loss's gradient at s_T (0 for an LSTM's c_T, which the loss reaches only through h_T inside step
    T), δ_{t-1} = J_tᵀ δ_t."""
    rng = np.random.default_rng(1)
    cell = {"rnn": lambda: nn.RNNCell(2, 3, rng=rng), "lstm": lambda: nn.LSTMCell(2, 3, rng=rng),
            "gru": lambda: nn.GRUCell(2, 3, rng=rng)}[kind]()
    T = 3
    x = np.random.default_rng(0).standard_normal((T, 1, 2))
    outs, states = nn.RNN(cell, hoist=False)(x, return_states=True)
    loss = (outs[-1] ** 2).sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    delta = 2 * np.asarray(outs[-1].data, dtype=np.float64).ravel()
    if kind == "lstm":
        delta = np.concatenate([delta, np.zeros(3)])
    norms, gains, bounds = [np.linalg.norm(delta)], [], []
    for t in range(T, 0, -1):
        J = _fd_jacobian(cell, x[t - 1], states[t - 1])
        back = J.T @ delta
        gains.append(np.linalg.norm(back) / np.linalg.norm(delta))
        bounds.append(np.linalg.svd(J, compute_uv=False)[0])
        delta = back
        norms.append(np.linalg.norm(delta))
    np.testing.assert_allclose([r.grad_norm for r in rows], norms[::-1], rtol=1e-7)
    np.testing.assert_allclose([r.gain for r in rows[1:]], gains[::-1], rtol=1e-7)
    np.testing.assert_allclose([r.bound for r in rows[1:]], bounds[::-1], rtol=1e-7)
    # the picture's edge label is the gain (bold), the bound the small grey ≤
    edges = _step_edges(draw_steps(loss, states).source)
    for t in range(1, T + 1):
        label = edges[t]
        assert f"<B>{style.number(rows[t].gain, 2)}</B>" in label
        assert f"≤{style.number(rows[t].bound, 2)}" in label


@pytest.mark.parametrize("T", [1, 2, 7])
def test_headline_product_is_the_end_ratio(T):
    """One loss at the end: the headline's "gains multiply to" is ‖δ_0‖ / ‖δ_T‖, and the edge colour is
    the legend's colour of gain^T."""
    _, states, _, loss = _unroll(nn.RNNCell(2, 3, rng=np.random.default_rng(0)), T)
    rows = diagnostics.steps(loss, states)
    source = draw_steps(loss, states).source
    ratio = rows[0].grad_norm / rows[T].grad_norm
    assert f"gains multiply to {style.number(ratio, 2)}" in _plain(source)
    for t, attrs in _step_edges(source).items():
        assert _attr(attrs, "color") == style.colour(rows[t].gain ** T, GAIN_DECADES)


@pytest.mark.parametrize("T", [1, 2, 30])
def test_gain_exactly_one(T):
    """A cell that carries its state on whole (every gain exactly 1) is stable, never vanishing; the same
    cell with its weights cut off (k = 0) is frozen, at every length; at the end or at every time step."""
    for every in (False, True):
        _, states, _, loss = _unroll(Carry(1.0), T, every=every, target=1.0)
        rows = diagnostics.steps(loss, states)
        assert all(r.gain == 1.0 for r in rows[1:])
        text = _plain(draw_steps(loss, states).source)
        assert "stable (10⁻³ ≤ 1 ≤ 10³)" in text and "vanishing" not in text.split("verdict (")[0]
        _, states, _, loss = _unroll(Carry(0.0), T, every=every, target=1.0)
        text = _plain(draw_steps(loss, states).source)
        assert "frozen: its time steps gave the weights at most 0" in text


def test_loss_at_every_step_caption_does_not_multiply():
    """With a loss at every time step the caption never says the gains multiply to the ends, and
    what it says the last read reaches is the lag view's share."""
    _, states, losses, loss = _unroll(nn.RNNCell(2, 3, rng=np.random.default_rng(0)), 4, every=True)
    text = _plain(draw_steps(loss, states).source)
    assert "multiply to" not in text.split("edge label")[0]
    assert "The loss reads 4 states" in text
    lags = diagnostics.lags(losses, states)
    share = lags[-1, 0] / lags[-1, 4]
    assert f"the read at h₄ alone reaches h₀ × {style.number(share, 2)}" in text


def test_zero_weight_cell_vanishes_exactly():
    """A frozen cell with zero weights (J_t = 0): δ_{T-1} is exactly 0, and the verdict says why."""
    _, states, _, loss = _unroll(_zero_cell(), 5, target=1.0)
    rows = diagnostics.steps(loss, states)
    assert rows[4].grad_norm == 0.0 and rows[5].gain == 0.0
    assert "vanishing (a state on the way back got exactly 0)" in _plain(draw_steps(loss, states).source)


# ---- defects ---------------------------------------------------------------------------------


def test_legend_rule_holds_where_a_clip_fired():
    cell = nn.RNNCell(2, 2, nonlinearity="identity", bias=False, rng=np.random.default_rng(0))
    cell.weight_hh.data[...] = 2.0 * np.eye(2)
    x = np.random.default_rng(0).standard_normal((4, 1, 2))
    outs, states = nn.RNN(cell, hidden_hook=clip_norm(1.0))(x, return_states=True)
    loss = outs[-1].sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    # the picture's own numbers contradict the rule at t = 4: ‖δ_3‖ = 1, ‖δ_4‖ × gain_4 = 2
    assert rows[3].clip.fired
    assert math.isclose(rows[3].grad_norm, 1.0) and math.isclose(rows[4].grad_norm * rows[4].gain, 2.0)
    notes = [_plain(n) for n in re.findall(r'<FONT POINT-SIZE="9" COLOR="#7a7a7a">(.*?)</FONT></TD>',
                                           draw_steps(loss, states).source)]
    rule = [n for n in notes if "× gain" in n]
    assert all("clip" in n or "✂" in n for n in rule), rule


def test_no_gradient_anywhere_is_not_stable():
    cell = nn.RNNCell(2, 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((3, 1, 2))
    outs, states = nn.RNN(cell)(x, return_states=True)
    loss = (outs[-1] * 0.0).sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    assert all(r.grad_norm == 0.0 for r in rows)
    caption = _plain(draw_steps(loss, states).source).split("edge label")[0]
    assert "stable" not in caption, caption


def _nan_run():
    """A 3-step tanh RNN whose gradient turns nan at s_2 (a hook), backpropagated: (loss, states)."""
    cell = nn.RNNCell(2, 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((3, 1, 2))
    outs, states = nn.RNN(cell)(x, return_states=True)
    states[2].register_hook(lambda g: g * np.nan)
    loss = (outs[-1] ** 2).sum()
    with np.errstate(all="ignore"):
        loss.backward()
    return loss, states


def test_nan_gain_is_not_drawn_as_times_one():
    loss, states = _nan_run()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        rows = diagnostics.steps(loss, states)
        source = draw_steps(loss, states).source
    assert math.isnan(rows[2].gain)
    assert _attr(_step_edges(source)[2], "color") != style.colour(1.0, GAIN_DECADES)


def test_strips_nan_gain_is_not_a_cut():
    loss, states = _nan_run()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        source = compare_steps({"nan run": (loss, states)}, compact=True).source
    assert not any(r.cut for r in diagnostics.steps(loss, states, bound=None))
    assert CUT not in source


def test_op_view_no_gradient_edge_is_not_times_one():
    _, _, _, loss = _unroll(nn.RNNCell(2, 3, rng=np.random.default_rng(0)), 1)  # h_0 = 0: W_hh gets exactly 0
    source = draw_graph(loss).source
    edges = [line for line in source.splitlines() if "(no gradient)" in line and "->" in line]
    assert edges
    for line in edges:
        assert _attr(line, "color") != style.colour(1.0)


def test_op_view_before_backward_does_not_colour_a_bound_as_a_factor():
    cell = nn.RNNCell(2, 3, rng=np.random.default_rng(0))
    x = np.random.default_rng(0).standard_normal((2, 1, 2))
    outs, _ = nn.RNN(cell)(x, return_states=True)
    loss = (outs[-1] ** 2).sum()  # no backward
    source = draw_graph(loss).source
    edges = [line for line in source.splitlines() if "->" in line and "‖J‖" in line]
    assert edges  # tensor edges labelled with their bound
    colours = {_attr(line, "color") for line in edges}
    assert len(colours) == 1, f"tensor edges without a gain coloured by their bound: {sorted(colours)}"


def test_lag_view_zero_share_is_not_the_scale_end():
    _, states, losses, _ = _unroll(_zero_cell(), 5, every=True, target=1.0)
    curve = diagnostics.reach(diagnostics.lags(losses, states))
    assert (curve[1:] == 0.0).all()
    source = draw_lags(losses, states).source
    assert "≤×10" in _plain(source) or "exactly 0" in _plain(source)


def test_lag_headline_does_not_claim_a_reach_of_zero():
    _, states, losses, _ = _unroll(_zero_cell(), 5, every=True, target=1.0)
    title = _plain(draw_lags(losses, states).source)
    match = re.search(r"median reach (\d+) time steps? back .*?: ([-+.e0-9]+)", title)
    assert match
    assert not (int(match.group(1)) > 0 and match.group(2) == "0"), match.group(0)


@pytest.mark.parametrize("view", ["ops", "steps", "lags"])
def test_one_time_step_is_singular(view):
    _, states, losses, loss = _unroll(nn.RNNCell(2, 3, rng=np.random.default_rng(0)), 1)
    picture = {"ops": lambda: draw_graph(loss), "steps": lambda: draw_steps(loss, states),
               "lags": lambda: draw_lags(losses, states)}[view]()
    assert not re.search(r"\b1 time steps\b", _plain(picture.source))


def test_unit_view_shows_the_state_the_loss_reads():
    T = 151
    _, states, _, loss = _unroll(nn.RNNCell(2, 2, rng=np.random.default_rng(0)), T)
    split = diagnostics.steps(loss, states, by="unit")
    source = draw_steps(loss, states, by="unit").source
    scale = style.magnitude_range(split.grad_norm[np.isfinite(split.grad_norm)].ravel())
    row = re.search(r"unit 0</FONT></TD>(.*?)</TR>", source).group(1)
    last = re.findall(r'BGCOLOR="(#[0-9a-f]{6})"', row)[-1]
    # the last column should show s_T (or a block that holds it: its largest, ‖δ_T‖ in a vanishing run)
    assert split.grad_norm[T, 0] == np.nanmax(split.grad_norm[:, 0])
    assert last == style.magnitude_fill(split.grad_norm[T, 0], *scale)


def test_unit_view_legend_one_batch_row_wording():
    _, states, _, loss = _unroll(nn.RNNCell(2, 2, rng=np.random.default_rng(0)), 2)
    assert "of one unit, (one batch row)" not in _plain(draw_steps(loss, states, by="unit").source)


def test_step_view_zero_node_is_not_the_lowest_swatch():
    _, states, _, loss = _unroll(_zero_cell(), 3, every=True, target=1.0)
    rows = diagnostics.steps(loss, states)
    assert rows[0].grad_norm == 0.0
    scale = style.magnitude_range(r.grad_norm for r in rows)
    source = draw_steps(loss, states).source
    fill = re.search(r'\bsn0 \[.*?fillcolor="(#[0-9a-f]{6})"', source).group(1)
    assert fill != style.magnitude_fill(10.0 ** scale[0], *scale)


def test_large_finite_gradient_is_not_shown_as_inf():
    cell = nn.RNNCell(2, 2, nonlinearity="identity", bias=False, rng=np.random.default_rng(0))
    cell.weight_hh.data[...] = 1e100 * np.eye(2)
    x = np.random.default_rng(0).standard_normal((2, 1, 2))
    outs, states = nn.RNN(cell)(x, return_states=True)
    loss = outs[-1].sum()  # about 1e100: finite; the gradient reaching h_0 is 1e200 per unit: finite
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        loss.backward()
        assert np.isfinite(np.asarray(states[1].grad)).all()
        true = np.linalg.norm(np.asarray(states[1].grad) / 1e100) * 1e100  # the gradient at h_1, scaled: finite
        rows = diagnostics.steps(loss, states)
        caption = _plain(draw_steps(loss, states).source).split("edge label")[0]
    assert math.isfinite(true)
    assert all(math.isfinite(r.grad_norm) for r in rows), [r.grad_norm for r in rows]
    assert "inf" not in caption and "nan" not in caption, caption


def test_plot_steps_shows_zero_gains():
    pytest.importorskip("matplotlib")
    _, states, _, loss = _unroll(_zero_cell(), 5, target=1.0)
    rows = diagnostics.steps(loss, states)
    assert all(r.gain == 0.0 for r in rows[5:]) and rows[5].bound == 0.0
    figure = diagnostics.plot_steps(rows)
    bottom = figure.axes[1]
    shown = sum(len(line.get_xdata()) for line in bottom.get_lines() if str(line.get_label()).startswith("gain"))
    words = " ".join(t.get_text() for ax in figure.axes for t in ax.texts)
    assert shown >= 1 or "0" in words


def test_lags_stop_at_each_state_when_a_state_is_made_straight_from_the_last():
    """h' = h + f(x): s_t's op reads s_t-1 itself. The lag matrix's [i, k] is the gradient loss i alone
    sends to s_k (grad's), not that counted again for every later state; the step view of the summed
    loss likewise."""
    outs, states, losses, _ = _carry_run()
    matrix = diagnostics.lags(losses, states)
    for i, loss in enumerate(losses):
        alone = tg.grad(loss, states[1:])
        np.testing.assert_allclose(matrix[i, 1:], [np.linalg.norm(g) for g in alone], rtol=1e-12)
    total = sum(losses[1:], losses[0])
    total.backward()
    rows = diagnostics.steps(total, states)
    expected = [np.linalg.norm(g) for g in tg.grad(total, states[1:])]
    np.testing.assert_allclose([r.grad_norm for r in rows[1:]], expected, rtol=1e-12)


def _carry_run():
    cell = Carry(1.0)
    x = np.random.default_rng(0).standard_normal((3, 2, 2))
    outs, states = nn.RNN(cell)(x, return_states=True)
    return outs, states, [(o ** 2).sum() for o in outs], cell
