"""diagnostics.steps: every number (grad_norm, gain, bound) against an independent computation:
a hand-derived Elman BPTT, and central differences over each step map F_t and over the rest of the
recurrence, in numpy (tests/numpy_cells.py), for an Elman RNN with a strongly non-normal W_hh, an
LSTM, a GRU and custom cells (one with a two-part state, one that mixes batch rows)."""

import math

import numpy as np
import pytest
from numpy_cells import numpy_gru_cell, numpy_lstm_cell, numpy_rnn_cell, reference_steps

import tinygrad_rnn as tg
from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.clip import clip_norm
from tinygrad_rnn.diagnostics import StepRow, gradient_factor, verdict

RTOL = 1e-6  # central differences in float64


def _non_normal(H=6, seed=0):
    """0.5 I plus a large strictly upper-triangular part: every eigenvalue is 0.5 (spectral radius
    0.5 < 1) but the spectral norm is far above 1: the bound says "may explode", the truth vanishes."""
    rng = np.random.default_rng(seed)
    return 0.5 * np.eye(H) + np.triu(rng.normal(0, 1.5, (H, H)), k=1)


def _compare(rows, reference):
    assert [r.t for r in rows] == [r["t"] for r in reference]
    for row, ref in zip(rows, reference):
        assert row.grad_norm == pytest.approx(ref["grad_norm"], rel=RTOL, abs=1e-10), row.t
        if row.t >= 1:
            assert row.gain == pytest.approx(ref["gain"], rel=RTOL), row.t
            assert row.bound == pytest.approx(ref["bound"], rel=RTOL), row.t


def _flat(state):
    return np.concatenate([np.ravel(p.data) for p in (state if isinstance(state, tuple) else (state,))])


# ---- the Elman RNN, against hand-derived BPTT -----------------------------------------------------

def _elman(W_hh, T=20, B=2, inputs=3, loss_every_step=False, seed=1):
    H = W_hh.shape[0]
    cell = nn.RNNCell(inputs, H, rng=seed)
    cell.weight_hh.data = W_hh.copy()
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, inputs))
    targets = rng.normal(size=(T, B, H))
    outputs, states = nn.RNN(cell)(xs, h0=Value(rng.normal(size=(B, H)) * 0.3, requires_grad=False),
                                   return_states=True)
    picked = range(T) if loss_every_step else [T - 1]
    loss = sum(((outputs[t] - targets[t]) ** 2).sum() for t in picked)
    loss.backward()
    return cell, xs, targets, loss, states, list(picked)


@pytest.mark.parametrize("loss_every_step", [False, True], ids=["loss-at-end", "loss-every-step"])
def test_elman_numbers_equal_hand_derived_bptt_for_a_non_normal_w_hh(loss_every_step):
    W = _non_normal()
    assert max(abs(np.linalg.eigvals(W))) < 1 < np.linalg.norm(W, 2)
    cell, xs, targets, loss, states, picked = _elman(W, loss_every_step=loss_every_step)
    rows = diagnostics.steps(loss, states)
    h = [s.data for s in states]
    # delta_T = dL/dh_T; delta_{t-1} = (delta_t * (1 - h_t^2)) @ W_hh + dL_{t-1}/dh_{t-1}.
    T = len(h) - 1
    delta = [np.zeros_like(h[0]) for _ in h]
    for t in range(T, 0, -1):
        if t - 1 in picked:
            delta[t] = delta[t] + 2 * (h[t] - targets[t - 1])
        delta[t - 1] = (delta[t] * (1 - h[t] ** 2)) @ W
    for t in range(1, T + 1):
        J = (1 - h[t] ** 2)[:, :, None] * W  # J_b = diag(1 - h_b^2) W_hh, per batch row b
        sent = (delta[t] * (1 - h[t] ** 2)) @ W
        assert rows[t].grad_norm == pytest.approx(np.linalg.norm(delta[t]), rel=1e-12)
        assert rows[t].gain == pytest.approx(np.linalg.norm(sent) / np.linalg.norm(delta[t]), rel=1e-12)
        assert rows[t].bound == pytest.approx(max(np.linalg.norm(J[b], 2) for b in range(2)), rel=1e-12)
        assert rows[t].bound_method == "rows"
        assert rows[t].gain <= rows[t].bound * (1 + 1e-12)
    assert rows[0].grad_norm == pytest.approx(np.linalg.norm(delta[0]), rel=1e-12)
    assert all(r.bound > 1 for r in rows[1:])  # every bound says "may amplify" ...
    if not loss_every_step:
        assert rows[0].grad_norm / rows[-1].grad_norm < 1e-3  # ... while the gradient vanishes


def test_elman_numbers_agree_with_central_differences():
    W = _non_normal(H=4, seed=3)
    cell, xs, targets, loss, states, _ = _elman(W, T=5, B=2)
    p = cell.state_dict()

    def step(x, s):
        return numpy_rnn_cell(p, x, s.reshape(2, 4))

    def losses(t, s):
        return float(((s.reshape(2, 4) - targets[t - 1]) ** 2).sum()) if t == 5 else 0.0

    _compare(diagnostics.steps(loss, states), reference_steps(step, losses, xs, _flat(states[0])))


def test_gains_multiply_exactly_to_the_ratio_of_the_end_gradients():
    for make in (lambda: nn.RNNCell(3, 5, rng=0), lambda: nn.LSTMCell(3, 5, rng=0), lambda: nn.GRUCell(3, 5, rng=0)):
        cell = make()
        rng = np.random.default_rng(2)
        outputs, states = nn.RNN(cell)(rng.normal(size=(25, 3, 3)), return_states=True)
        loss = (outputs[-1] * rng.normal(size=outputs[-1].shape)).sum()
        loss.backward()
        rows = diagnostics.steps(loss, states)
        product = math.prod(r.gain for r in rows[1:])
        assert product == pytest.approx(rows[0].grad_norm / rows[-1].grad_norm, rel=1e-10)
        assert gradient_factor(rows)[0] == pytest.approx(product, rel=1e-12)


# ---- LSTM and GRU: the whole state, against central differences ----------------------------------

def _run(cell, T=4, B=2, inputs=2, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, inputs))
    start = cell.initial_state(B)
    h0 = tuple(Value(rng.normal(size=s.shape) * 0.5, requires_grad=False) for s in start) \
        if isinstance(start, tuple) else Value(rng.normal(size=start.shape) * 0.5, requires_grad=False)
    readout = rng.normal(size=(B, cell.hidden_size))
    outputs, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    loss = (outputs[-1] * readout).sum()
    loss.backward()
    return xs, readout, loss, states


def test_lstm_numbers_treat_h_and_c_as_one_state():
    cell = nn.LSTMCell(2, 3, rng=0)
    xs, readout, loss, states = _run(cell)
    p = cell.state_dict()
    B, H = 2, 3

    def step(x, s):
        h, c = numpy_lstm_cell(p, x, s[: B * H].reshape(B, H), s[B * H :].reshape(B, H))
        return np.concatenate([h.ravel(), c.ravel()])

    def losses(t, s):
        return float((s[: B * H].reshape(B, H) * readout).sum()) if t == len(xs) else 0.0

    rows = diagnostics.steps(loss, states)
    reference = reference_steps(step, losses, xs, _flat(states[0]))
    _compare(rows, reference)
    # delta_T is dL/dh_T with nothing on c_T: the path c_T -> h_T belongs to step T itself, so the
    # gradient that .grad holds for c_T (which went through h_T) is not the gradient reaching it.
    assert np.allclose(reference[-1]["delta"][B * H :], 0.0)
    assert np.linalg.norm(states[-1][1].grad) > 0.01


def test_gru_numbers_agree_with_central_differences():
    cell = nn.GRUCell(2, 3, rng=1)
    xs, readout, loss, states = _run(cell, T=5)
    p = cell.state_dict()

    def step(x, s):
        return numpy_gru_cell(p, x, s.reshape(2, 3))

    def losses(t, s):
        return float((s.reshape(2, 3) * readout).sum()) if t == len(xs) else 0.0

    _compare(diagnostics.steps(loss, states), reference_steps(step, losses, xs, _flat(states[0])))


# ---- custom cells ----------------------------------------------------------------------------------

def _two_part_cell(W, V, P):
    """A state (h, m) of sizes 3 and 2: h' = tanh(x + h W + m V), m' = 0.9 m + h' P."""

    def cell(x, state):
        h, m = state
        h_next = (x + h @ W + m @ V).tanh()
        return h_next, m * 0.9 + h_next @ P

    return cell


def test_a_custom_cell_with_a_two_part_state_agrees_with_central_differences():
    rng = np.random.default_rng(4)
    W, V, P = (Value(rng.normal(0, 0.7, shape)) for shape in ((3, 3), (2, 3), (3, 2)))
    xs = rng.normal(size=(4, 2, 3))
    # m_0 * 0.9 is recorded only if m_0 needs a gradient: an op on constants alone leaves no node.
    h0 = (Value(rng.normal(size=(2, 3))), Value(rng.normal(size=(2, 2))))
    outputs, states = nn.RNN(_two_part_cell(W, V, P))(xs, h0=h0, return_states=True)
    loss = (states[-1][1] ** 2).sum() + outputs[1].sum()  # a loss on m_T and one on h_2
    loss.backward()

    def step(x, s):
        h, m = s[:6].reshape(2, 3), s[6:].reshape(2, 2)
        h_next = np.tanh(x + h @ W.data + m @ V.data)
        return np.concatenate([h_next.ravel(), (0.9 * m + h_next @ P.data).ravel()])

    def losses(t, s):
        return float((s[6:] ** 2).sum()) * (t == 4) + float(s[:6].sum()) * (t == 2)

    rows = diagnostics.steps(loss, states)
    _compare(rows, reference_steps(step, losses, xs, _flat(states[0])))
    assert all(r.bound_method == "rows" for r in rows[1:])


def test_a_cell_that_mixes_batch_rows_gets_the_whole_batch_jacobian():
    rng = np.random.default_rng(5)
    W = Value(rng.normal(0, 0.8, (3, 3)))

    def centred(x, h):  # subtracts the batch mean, as batch norm does: every row reads every other
        a = h @ W
        return (x + a - a.mean(axis=0, keepdims=True) * 0.5).tanh()

    xs = rng.normal(size=(4, 3, 3))
    h0 = Value(rng.normal(size=(3, 3)), requires_grad=False)
    outputs, states = nn.RNN(centred)(xs, h0=h0, return_states=True)
    readout = rng.normal(size=(3, 3))
    loss = (outputs[-1] * readout).sum()
    loss.backward()

    def step(x, s):
        a = s.reshape(3, 3) @ W.data
        return np.tanh(x + a - a.mean(axis=0, keepdims=True) * 0.5)

    def losses(t, s):
        return float((s.reshape(3, 3) * readout).sum()) if t == 4 else 0.0

    rows = diagnostics.steps(loss, states)
    _compare(rows, reference_steps(step, losses, xs, _flat(states[0])))
    assert all(r.bound_method == "full" for r in rows[1:])


def test_a_feed_forward_net_read_along_its_layers():
    """steps() needs no time: the states can be the activations of the layers of a deep net."""
    rng = np.random.default_rng(6)
    weights = [Value(rng.normal(0, 0.9 / math.sqrt(4), (4, 4))) for _ in range(5)]
    activations = [Value(rng.normal(size=(2, 4)), requires_grad=False)]
    for W in weights:
        activations.append((activations[-1] @ W).tanh())
    loss = activations[-1].sum()
    loss.backward()
    rows = diagnostics.steps(loss, activations)

    def layer(k, a):
        return np.tanh(a.reshape(2, 4) @ weights[k - 1].data)

    def losses(k, a):
        return float(a.sum()) if k == 5 else 0.0

    _compare(rows, reference_steps(layer, losses, list(range(1, 6)), _flat(activations[0])))


# ---- clipping, cuts, no gradient -----------------------------------------------------------------

def _exploding(clip=None, T=30, H=8, loss_every_step=False):
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, H, rng=rng)
    nn.init.orthogonal_(cell.weight_hh, gain=1.4, rng=rng)
    nn.init.zeros_(cell.bias_ih)
    nn.init.zeros_(cell.bias_hh)
    outputs, states = nn.RNN(cell, hidden_hook=None if clip is None else clip_norm(clip))(
        rng.normal(size=(T, 1, 2)) * 1e-5, return_states=True)
    picked = outputs if loss_every_step else outputs[-1:]
    loss = sum((h * h).sum() for h in picked)
    loss.backward()
    return loss, states


def test_a_run_clipped_at_every_step_is_held_not_exploding():
    loss, states = _exploding()
    plain = diagnostics.steps(loss, states)
    assert verdict(plain) == "exploding"
    loss, states = _exploding(clip=1.0)
    rows = diagnostics.steps(loss, states)
    assert verdict(rows) == "stable"
    assert all(r.gain > 1.3 for r in rows[1:])  # each step still amplifies what crosses it ...
    fired = [r for r in rows[1:-1] if r.clip is not None and r.clip.fired]
    assert len(fired) > 20 and all(r.grad_norm == pytest.approx(1.0) for r in fired)  # ... and is clipped back
    # With the clips folded in, the factor is again the ratio of the end gradients.
    factor, first, last = gradient_factor(rows)
    assert factor == pytest.approx(rows[first].grad_norm / rows[last].grad_norm, rel=1e-10)


def test_a_loss_at_every_step_cannot_hide_vanishing_gains():
    cell = nn.RNNCell(2, 6, rng=0)
    cell.weight_hh.data = cell.weight_hh.data * 0.3
    outputs, states = nn.RNN(cell)(np.random.default_rng(0).normal(size=(30, 1, 2)), return_states=True)
    loss = sum((h * h).sum() for h in outputs)
    loss.backward()
    rows = diagnostics.steps(loss, states)
    norms = [r.grad_norm for r in rows[1:]]
    assert max(norms) / min(norms) < 100  # each step's own loss keeps the gradient norms level ...
    with pytest.deprecated_call():
        assert verdict(norms) == "stable"  # ... which fooled the older rule on norms alone
    assert verdict(rows) == "vanishing"


def test_truncated_steps_are_cut_with_zero_gain_and_bound():
    rnn = nn.RNN(nn.LSTMCell(2, 3, rng=0), truncate=2)
    outputs, states = rnn(np.random.default_rng(0).normal(size=(6, 2, 2)), return_states=True)
    loss = sum(h.sum() for h in outputs)
    loss.backward()
    rows = diagnostics.steps(loss, states)
    assert [r.cut for r in rows] == [False, False, False, True, False, True, False]
    for r in rows:
        if r.cut:
            assert r.gain == 0.0 and r.bound == 0.0
    assert verdict(rows) != "vanishing"  # a cut is not a vanishing gradient


def test_rows_before_backward_have_bounds_but_no_gradients():
    cell = nn.RNNCell(2, 3, rng=0)
    _, states = nn.RNN(cell)(np.ones((3, 1, 2)), return_states=True)
    rows = diagnostics.steps(None, states)
    assert all(r.grad_norm is None and r.gain is None for r in rows)
    assert all(r.bound > 0 for r in rows[1:]) and rows[0].bound is None
    assert verdict(rows) == "no gradient"
    assert diagnostics.step_jacobian_norms(states) == [r.bound for r in rows[1:]]


def test_steps_asks_for_backward_first_when_the_loss_has_no_gradient():
    cell = nn.RNNCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell)(np.ones((3, 1, 2)), return_states=True)
    with pytest.raises(ValueError, match="backward"):
        diagnostics.steps(outputs[-1].sum(), states)


def test_step_rows_of_float32_states_are_computed():
    cell = nn.GRUCell(2, 3, rng=0, dtype=np.float32)
    outputs, states = nn.RNN(cell)(np.ones((4, 2, 2), np.float32), return_states=True)
    outputs[-1].sum().backward()
    rows = diagnostics.steps(None, states)
    assert all(isinstance(r, StepRow) for r in rows) and all(r.bound_method == "rows" for r in rows[1:])
    assert math.prod(r.gain for r in rows[1:]) == pytest.approx(rows[0].grad_norm / rows[-1].grad_norm, rel=1e-5)


def test_scalar_states_step_numbers_are_the_local_derivatives():
    w = Value(0.9)
    h = h0 = Value(0.2, requires_grad=False)
    states = [h0]
    for x in (0.5, -0.3, 0.8):
        with tg.scope(f"t={len(states)}"):
            h = (w * h + x).tanh()
        states.append(h)
    loss = h * 2.0
    loss.backward()
    rows = diagnostics.steps(loss, states)
    for t in range(1, 4):
        assert rows[t].bound == pytest.approx(abs(0.9 * (1 - states[t].data ** 2)), rel=1e-14)
        assert rows[t].gain == pytest.approx(rows[t].bound, rel=1e-14)  # 1 x 1: the gain is the derivative


def test_states_that_are_not_values_are_refused_with_their_position():
    with pytest.raises(TypeError, match=r"states\[1\].*ndarray"):
        diagnostics.steps(None, [Value(np.zeros(2)), np.zeros(2)])
    with pytest.raises(ValueError, match="same number of parts"):
        diagnostics.steps(None, [Value(np.zeros(2)), (Value(np.zeros(2)), Value(np.zeros(2)))])


def test_steps_of_a_blown_up_run_report_an_unknown_bound_instead_of_raising():
    import visualize
    from tinygrad_rnn import nn as tnn
    from tinygrad_rnn.diagnostics import steps as step_rows

    cell = tnn.RNNCell(2, 3)
    cell.weight_hh.data = np.full((3, 3), np.nan)
    outputs, states = tnn.RNN(cell)(np.ones((4, 1, 2)), return_states=True)
    loss = outputs[-1].sum()
    with np.errstate(invalid="ignore"):
        loss.backward()
        rows = step_rows(loss, states)
        source = visualize.draw_steps(loss, states).source
    assert len(rows) == 5 and all(np.isnan(row.bound) for row in rows[1:])
    assert "nan" in source.lower()


def test_an_lstm_clipped_on_h_folds_in_the_whole_states_clip_factor():
    rng = np.random.default_rng(3)
    cell = nn.LSTMCell(3, 4, rng=rng)
    cell.bias_hh.data[4:8] += 3.0  # an open forget gate: the gradient reaches back
    cell.weight_hh.data *= 4.0
    rnn = nn.RNN(cell, hidden_hook=clip_norm(0.05))
    outputs, states = rnn(rng.standard_normal((12, 2, 3)), return_states=True)
    loss = (outputs[-1] * rng.standard_normal((2, 4))).sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    assert any(r.clip is not None and r.clip.fired for r in rows)
    factor, first, last = gradient_factor(rows)
    assert factor == pytest.approx(rows[first].grad_norm / rows[last].grad_norm, rel=1e-9)


def test_a_gradient_that_vanishes_to_exactly_zero_is_vanishing_not_stable():
    h0 = Value(np.array([0.3]))
    h1 = (h0 * 1e6).tanh()  # saturated: tanh' underflows to exactly 0
    h2 = h1 * 1.0
    loss = h2.sum()
    loss.backward()
    rows = diagnostics.steps(loss, [h0, h1, h2])
    assert rows[0].grad_norm == 0.0 and rows[2].grad_norm == 1.0
    assert verdict(rows) == "vanishing"
