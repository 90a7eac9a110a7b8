"""The gradient split by loss (lags, reach) and by step (contributions), each checked against an
independent computation: the state cut into fresh leaves at step k and plain backward (lags), finite
differences (one entry), and a cell with its own copy of the weights at every step (contributions)."""

import numpy as np
import pytest

from tinygrad_rnn import Value, diagnostics, grad, nn
from tinygrad_rnn.nn.cells import hidden_of

T, B, IN, H = 6, 2, 3, 4


class TwoPartCell(nn.Module):
    """A leaky integrator of the user's own: m_t = 0.8 m + 0.2 tanh(x W^T + h U^T), h_t = tanh(m_t) * g."""

    def __init__(self, rng):
        self.W = Value(rng.standard_normal((H, IN)) * 0.5)
        self.U = Value(rng.standard_normal((H, H)) * 0.8)
        self.g = Value(rng.uniform(0.5, 1.5, H))

    def forward(self, x, state):
        h, m = state
        m = 0.8 * m + 0.2 * (x @ self.W.T + h @ self.U.T).tanh()
        return (m.tanh() * self.g, m)


def make(kind, rng):
    if kind == "rnn":
        return nn.RNNCell(IN, H, rng=rng)
    if kind == "lstm":
        return nn.LSTMCell(IN, H, rng=rng)
    if kind == "gru":
        return nn.GRUCell(IN, H, rng=rng)
    return TwoPartCell(rng)


def initial(kind, rng):
    h0 = Value(rng.standard_normal((B, H)) * 0.5, name="h0")
    return (h0, Value(rng.standard_normal((B, H)) * 0.5, name="c0")) if kind in ("lstm", "two-part") else h0


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def step_losses(states, readout, targets):
    """L_t = sum((h_t V - y_t)^2) for t = 1..T: a loss at every step, each reading its own h_t."""
    return [((hidden_of(s) @ readout - y) ** 2).sum() for s, y in zip(states[1:], targets)]


def setup(kind, seed=0):
    rng = np.random.default_rng(seed)
    cell = make(kind, rng)
    xs = rng.standard_normal((T, B, IN))
    readout = rng.standard_normal((H, 2))
    targets = rng.standard_normal((T, B, 2))
    return cell, xs, readout, targets, initial(kind, rng)


def untied_delta(cell, xs, readout, targets, h0, i, k):
    """||delta_k^(i)|| by cutting the state at s_k into fresh leaves: the loss at step i (1-based)
    then reaches s_k only through steps k+1.. and its own readout, never through step k itself."""
    state = h0
    for t in range(k):
        state = cell(xs[t], state)
    leaves = [Value(p.data.copy()) for p in parts(state)]
    state = tuple(leaves) if len(leaves) > 1 else leaves[0]
    for t in range(k, i):
        state = cell(xs[t], state)
    loss = ((hidden_of(state) @ readout - targets[i - 1]) ** 2).sum()
    return float(np.sqrt(sum(np.sum(g**2) for g in grad(loss, leaves))))


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "two-part"])
def test_lags_equal_the_gradient_at_a_state_cut_into_fresh_leaves(kind):
    cell, xs, readout, targets, h0 = setup(kind)
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    losses = step_losses(states, readout, targets)
    matrix = diagnostics.lags(losses, states)
    assert matrix.shape == (T, T + 1)
    for i in range(1, T + 1):
        for k in range(T + 1):
            expected = untied_delta(cell, xs, readout, targets, h0, i, k) if k <= i else 0.0
            assert matrix[i - 1, k] == pytest.approx(expected, rel=1e-8, abs=1e-300)


def test_a_lag_entry_equals_central_finite_differences_of_the_cut_state():
    cell, xs, readout, targets, h0 = setup("rnn", seed=3)
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    matrix = diagnostics.lags(step_losses(states, readout, targets), states)
    i, k = T, 2
    state = h0
    for t in range(k):
        state = cell(xs[t], state)
    base = state.data.copy()

    def loss_from(h):
        s = Value(h)
        for t in range(k, i):
            s = cell(xs[t], s)
        return float(((s.data @ readout - targets[i - 1]) ** 2).sum())

    eps, fd = 1e-6, np.zeros_like(base)
    for index in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[index] += eps
        down[index] -= eps
        fd[index] = (loss_from(up) - loss_from(down)) / (2 * eps)
    assert matrix[i - 1, k] == pytest.approx(np.linalg.norm(fd), rel=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_one_summed_loss_splits_into_the_rows_of_its_terms(kind):
    cell, xs, readout, targets, h0 = setup(kind, seed=1)
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    losses = step_losses(states, readout, targets)
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    by_read = diagnostics.lags(total, states)
    assert by_read.shape == (T + 1, T + 1)
    np.testing.assert_array_equal(by_read[0], 0.0)  # nothing reads s_0 directly
    np.testing.assert_allclose(by_read[1:], diagnostics.lags(losses, states), rtol=1e-12)


def test_a_loss_at_the_end_gives_the_step_views_gradients():
    cell, xs, readout, targets, h0 = setup("lstm", seed=2)
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    loss = step_losses(states, readout, targets)[-1]
    loss.backward()
    rows = diagnostics.steps(loss, states)
    np.testing.assert_allclose(diagnostics.lags([loss], states)[0], [r.grad_norm for r in rows], rtol=1e-12)
    assert diagnostics.reads(rows) == [T]


def test_max_lag_leaves_the_far_entries_uncomputed():
    cell, xs, readout, targets, h0 = setup("rnn")
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    losses = step_losses(states, readout, targets)
    full, near = diagnostics.lags(losses, states), diagnostics.lags(losses, states, max_lag=2)
    last = near[-1]
    np.testing.assert_allclose(last[T - 2:], full[-1, T - 2:], rtol=1e-12)
    assert np.isnan(last[: T - 2]).all()


def test_reach_is_the_median_ratio_over_losses_at_each_lag():
    matrix = np.array([[1.0, 4.0, 0.0], [1.0, 4.0, 8.0], [0.0, 0.0, 0.0]])  # loss 0 reads s_1, loss 1 s_2
    np.testing.assert_allclose(diagnostics.reach(matrix), [1.0, np.median([0.5, 0.25]), 0.125])


def test_a_cut_stops_every_losses_reach():
    cell, xs, readout, targets, h0 = setup("rnn")
    _, states = nn.RNN(cell, truncate=3)(xs, h0=h0, return_states=True)
    matrix = diagnostics.lags(step_losses(states, readout, targets), states)
    assert (matrix[-1, :4] == 0).all() and (matrix[-1, 4:] > 0).all()  # step 4 starts from a detached s_3


def untied_contributions(kind, seed):
    """dL/dW per step from a cell that has its own copy of every weight at every step."""
    cell, xs, readout, targets, h0 = setup(kind, seed)
    names = [n for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "W", "U", "g") if hasattr(cell, n)]
    copies = []
    state = h0
    for t in range(T):
        own = make(kind, np.random.default_rng(seed))
        for name in names:
            setattr(own, name, Value(getattr(cell, name).data.copy()))
        copies.append(own)
        state = own(xs[t], state)
    loss = ((hidden_of(state) @ readout - targets[-1]) ** 2).sum()
    loss.backward()
    return {name: [getattr(c, name).grad for c in copies] for name in names}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "two-part"])
def test_contributions_equal_untied_copies_and_add_up_to_the_gradient(kind):
    seed = 5
    expected = untied_contributions(kind, seed)
    cell, xs, readout, targets, h0 = setup(kind, seed)
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    loss = ((hidden_of(states[-1]) @ readout - targets[-1]) ** 2).sum()
    loss.backward()
    for name, per_step in expected.items():
        param = getattr(cell, name)
        got = diagnostics.contributions(loss, states, param)
        assert len(got) == T
        for c, e in zip(got, per_step):
            np.testing.assert_allclose(c, e, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(sum(got), param.grad, rtol=1e-10, atol=1e-14)


def test_contributions_leave_out_what_reached_the_weight_outside_the_steps():
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(IN, H, rng=rng)
    xs = rng.standard_normal((T, B, IN))
    _, states = nn.RNN(cell)(xs, return_states=True)
    outside = (states[-1] @ cell.weight_hh).sum()  # the weight read once more, after the steps
    outside.backward()
    got = diagnostics.contributions(outside, states, cell.weight_hh)
    np.testing.assert_allclose(cell.weight_hh.grad - sum(got), np.broadcast_to(states[-1].data.sum(0)[:, None], (H, H)),
                               rtol=1e-10)


def test_contributions_ask_for_backward_first():
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(IN, H, rng=rng)
    _, states = nn.RNN(cell)(rng.standard_normal((T, B, IN)), return_states=True)
    loss = states[-1].sum()
    with pytest.raises(ValueError, match="backward"):
        diagnostics.contributions(loss, states, cell.weight_hh)


# ---- what the verdict says for a loss at every step and for a frozen cell ----------------------

def preserved_direction_run(steps=30):
    """A linear RNN keeping e_1 exactly (eigenvalue 1) and shrinking the rest by 0.1 a step. Losses at
    steps 1..T-1 read only the shrinking directions, heavily; the last loss reads e_1 only."""
    weight = np.diag([1.0, 0.1, 0.1])
    cell = nn.RNNCell(1, 3, bias=False, nonlinearity="identity")
    cell.weight_hh.data, cell.weight_ih.data = weight, np.zeros((3, 1))
    h0 = Value(np.array([[1.0, 1.0, 1.0]]))
    _, states = nn.RNN(cell)(np.zeros((steps, 1, 1)), h0=h0, return_states=True)
    losses = [(s * np.array([0.0, 1e3, 1e3])).sum() for s in states[1:-1]] + [(states[-1] * np.array([1.0, 0, 0])).sum()]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total, losses, states


def test_per_step_losses_do_not_make_a_last_loss_that_reaches_back_whole_look_vanishing():
    total, losses, states = preserved_direction_run()
    total.backward()
    rows = diagnostics.steps(total, states)
    gains = [r.gain for r in rows[1:-1]]
    assert np.median(gains) == pytest.approx(0.1, rel=1e-3)  # the mixed gradient shrinks at every step
    assert len(diagnostics.reads(rows)) == len(states) - 1
    matrix = diagnostics.lags(losses, states)
    assert matrix[-1, 0] / matrix[-1, -1] == pytest.approx(1.0, rel=1e-12)  # the last loss: whole at h_0
    factor, first, last = diagnostics.gradient_factor(rows)
    assert (factor, first, last) == (pytest.approx(1.0, rel=1e-12), 0, len(states) - 1)
    assert diagnostics.verdict(rows) == "stable"


def frozen_gru(gate_bias):
    rng = np.random.default_rng(0)
    cell = nn.GRUCell(IN, H, rng=rng)
    cell.bias_ih.data[H:2 * H] = gate_bias  # PyTorch's gate order r, z, n: z = 1 keeps h_{t-1}
    h0 = Value(rng.standard_normal((B, H)))
    _, states = nn.RNN(cell)(rng.standard_normal((T, B, IN)), h0=h0, return_states=True)
    loss = (states[-1] ** 2).sum()
    loss.backward()
    return cell, loss, states


def test_a_gru_with_its_update_gate_stuck_at_one_is_frozen_not_stable():
    cell, loss, states = frozen_gru(40.0)
    rows = diagnostics.steps(loss, states)
    assert all(r.gain == pytest.approx(1.0, abs=1e-12) for r in rows[1:])
    assert np.linalg.norm(cell.weight_hh.grad) < 1e-12 * np.linalg.norm(states[0].grad)
    assert diagnostics.weight_share(rows) < diagnostics.FROZEN
    assert diagnostics.verdict(rows) == "frozen"


def test_the_same_gru_with_a_working_gate_is_not_frozen():
    _, loss, states = frozen_gru(0.0)
    rows = diagnostics.steps(loss, states)
    assert diagnostics.weight_share(rows) > 1e-3
    assert diagnostics.verdict(rows) in ("stable", "vanishing")


def test_a_loss_that_reads_inside_a_step_is_refused_not_dropped():
    cell, xs, readout, targets, h0 = setup("two-part")
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    inner = states[3][0].parents[0]  # tanh(m_3), inside step 3, not a part of the state
    with pytest.raises(ValueError, match="lags: .* made inside a step but not a state"):
        diagnostics.lags([(inner**2).sum()], states)


def test_a_loss_that_is_not_a_value_needing_a_gradient_is_named():
    cell, xs, readout, targets, h0 = setup("rnn")
    _, states = nn.RNN(cell)(xs, h0=h0, return_states=True)
    with pytest.raises(TypeError, match=r"lags: losses\[1\] must be a Value that needs a gradient, got 3.0"):
        diagnostics.lags([states[1].sum(), 3.0], states)
