"""Diagnostics of BPTT: step Jacobians against the analytic formula and finite differences,
gradient norms, clip events, where a NaN was born, and the verdict."""

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value, clip, diagnostics
from tinygrad_rnn.diagnostics import (
    clip_events,
    gradient_norms,
    step_jacobian,
    step_jacobian_norms,
    trace_nonfinite,
    verdict,
)
from tinygrad_rnn.recurrence import mark_cut


def _tanh_rnn(W, U, xs, h0, detach_after=None):
    """h_t = tanh(x_t @ U + h_{t-1} @ W), step t in scope "t=<t>"; returns [h_0, ..., h_T]."""
    states, h = [h0], h0
    for t, x_t in enumerate(xs, start=1):
        with tg.scope(f"t={t}"):
            h = (x_t @ U + h @ W).tanh()
        states.append(h)
        if detach_after == t:
            h = mark_cut(h.detach())
    return states


def _setup(batch=None, H=5, inputs=3, T=4, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    W = Value(rng.normal(0, scale / math.sqrt(H), (H, H)), name="W")
    U = Value(rng.normal(0, 1.0, (inputs, H)), name="U")
    shape = (T, inputs) if batch is None else (T, batch, inputs)
    xs = rng.normal(0, 0.5, shape)
    h0_shape = (H,) if batch is None else (batch, H)
    h0 = Value(rng.normal(0, 0.3, h0_shape), requires_grad=False)
    return W, U, xs, h0


def _analytic(h_t: np.ndarray, W: np.ndarray) -> np.ndarray:
    """d tanh(x U + h W) / dh = diag(1 - h_t^2) W^T (rows: units of h_t)."""
    return (1 - h_t**2)[..., :, None] * W.T


# ---- step_jacobian ----------------------------------------------------------------------------

def test_step_jacobian_equals_diag_one_minus_h_squared_times_W_transposed():
    W, U, xs, h0 = _setup()
    states = _tanh_rnn(W, U, xs, h0)
    for t in range(1, len(states)):
        np.testing.assert_allclose(step_jacobian(states[t], states[t - 1]), _analytic(states[t].data, W.data),
                                   rtol=1e-13, atol=1e-15)


def test_batched_step_jacobian_gives_each_batch_element_its_own_matrix():
    W, U, xs, h0 = _setup(batch=3)
    states = _tanh_rnn(W, U, xs, h0)
    J = step_jacobian(states[2], states[1])
    assert J.shape == (3, 5, 5)
    for b in range(3):
        np.testing.assert_allclose(J[b], _analytic(states[2].data[b], W.data), rtol=1e-13, atol=1e-15)
    assert not np.allclose(J[0], J[1])


def test_step_jacobian_agrees_with_central_differences():
    W, U, xs, h0 = _setup(batch=2, H=4, seed=5)
    states = _tanh_rnn(W, U, xs, h0)
    t, eps = 3, 1e-6
    x_t = xs[t - 1]

    def step(h_prev):
        return np.tanh(x_t @ U.data + h_prev @ W.data)

    h_prev = states[t - 1].data
    numeric = np.zeros((2, 4, 4))
    for b in range(2):
        for k in range(4):
            up, down = h_prev.copy(), h_prev.copy()
            up[b, k] += eps
            down[b, k] -= eps
            numeric[b, :, k] = (step(up)[b] - step(down)[b]) / (2 * eps)
    np.testing.assert_allclose(step_jacobian(states[t], states[t - 1]), numeric, rtol=1e-7, atol=1e-9)


def test_step_jacobian_from_a_constant_initial_state_is_not_zero():
    W, U, xs, h0 = _setup()
    assert h0.requires_grad is False
    states = _tanh_rnn(W, U, xs, h0)
    np.testing.assert_allclose(step_jacobian(states[1], h0), _analytic(states[1].data, W.data), rtol=1e-13)
    assert h0.requires_grad is False and W.requires_grad is True and U.requires_grad is True


def test_step_jacobian_is_zero_across_a_truncation_cut():
    W, U, xs, h0 = _setup(T=4)
    states = _tanh_rnn(W, U, xs, h0, detach_after=2)
    assert not np.any(step_jacobian(states[3], states[2]))
    norms = step_jacobian_norms(states)
    assert norms[2] == 0.0 and all(n > 0 for i, n in enumerate(norms) if i != 2)


def test_step_jacobian_of_scalar_states_is_one_by_one():
    w = Value(0.9)
    h0 = Value(0.2, requires_grad=False)
    h1 = (w * h0 + 0.1).tanh()
    np.testing.assert_allclose(step_jacobian(h1, h0), [[(1 - h1.data**2) * 0.9]], rtol=1e-15)


def test_step_jacobian_neither_runs_hooks_nor_disturbs_the_clip_records():
    W, U, xs, h0 = _setup(scale=3.0)
    states = _tanh_rnn(W, U, xs, h0)
    for h in states[1:]:
        h.register_hook(clip.clip_norm(1e-3))
    states[-1].sum().backward()
    before = clip_events(states)
    grads = [None if h.grad is None else h.grad.copy() for h in states]
    calls = []
    states[2].register_hook(lambda g: calls.append(g))
    J = step_jacobian(states[2], states[1])
    np.testing.assert_allclose(J, _analytic(states[2].data, W.data), rtol=1e-13)  # unit seeds not clipped
    assert calls == [] and clip_events(states) == before
    for h, g in zip(states, grads, strict=True):
        assert (h.grad is None and g is None) or np.array_equal(h.grad, g)


def test_step_jacobian_rejects_states_of_mismatched_shapes():
    with pytest.raises(ValueError, match=r"step_jacobian.*\(2, 3\).*\(3,\)"):
        step_jacobian(Value(np.zeros((2, 3))), Value(np.zeros(3)))


def test_step_jacobian_norms_are_the_largest_singular_value_over_the_batch():
    W, U, xs, h0 = _setup(batch=3, H=6, T=5, scale=2.0)
    states = _tanh_rnn(W, U, xs, h0)
    expected = [max(np.linalg.norm(_analytic(h.data[b], W.data), 2) for b in range(3)) for h in states[1:]]
    np.testing.assert_allclose(step_jacobian_norms(states), expected, rtol=1e-10)


def test_step_jacobian_norms_of_an_nn_rnn():
    from tinygrad_rnn import nn

    rng = np.random.default_rng(2)
    cell = nn.RNNCell(3, 4, rng=rng)
    inputs = rng.normal(size=(5, 2, 3))
    h0 = cell.initial_state(2)
    outputs, _ = nn.RNN(cell)(inputs, h0=h0)
    states = [h0, *outputs]
    W = cell.weight_hh.data  # PyTorch: h_t = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), dh_t/dh = diag(1-h^2) W_hh
    expected = [max(np.linalg.norm((1 - h.data[b] ** 2)[:, None] * W, 2) for b in range(2)) for h in outputs]
    np.testing.assert_allclose(step_jacobian_norms(states), expected, rtol=1e-10)


def test_step_jacobian_norms_of_an_nn_rnn_are_cut_by_truncation():
    from tinygrad_rnn import nn

    rng = np.random.default_rng(4)
    cell = nn.RNNCell(2, 3, rng=rng)
    outputs, _ = nn.RNN(cell, truncate=2)(rng.normal(size=(6, 1, 2)))
    norms = step_jacobian_norms(outputs)  # states h_1..h_6: steps 2..6
    assert [n == 0.0 for n in norms] == [False, True, False, True, False]


# ---- gradient norms, clip events, verdict -----------------------------------------------------

def test_gradient_norms_read_dot_grad_after_backward():
    W, U, xs, h0 = _setup()
    states = _tanh_rnn(W, U, xs, h0)
    assert gradient_norms(states) == [None] * len(states)
    states[-1].sum().backward()
    norms = gradient_norms(states)
    assert norms[0] is None  # h_0 is a constant
    assert norms[-1] == pytest.approx(math.sqrt(5))
    # Going back one step multiplies by the step Jacobian's transpose.
    g = (np.ones(5) * (1 - states[-1].data ** 2)) @ W.data.T
    assert norms[-2] == pytest.approx(float(np.linalg.norm(g)), rel=1e-13)


def test_clip_events_list_what_fired_per_step():
    W, U, xs, h0 = _setup(T=6, scale=4.0, seed=1)
    states = _tanh_rnn(W, U, xs, h0)
    threshold = 0.8
    for h in states[1:]:
        h.register_hook(clip.clip_norm(threshold))
    states[-1].sum().backward()
    events = clip_events(states)
    assert events[0] is None
    for event in events[1:]:
        assert event["fired"] == (event["norm_before"] > threshold)
        assert event["norm_after"] <= threshold * (1 + 1e-12) or not event["fired"]
    assert events[-1]["fired"] is True  # sqrt(5) > 0.8


def test_verdict_of_a_list_of_norms_still_works_and_is_deprecated():
    with pytest.deprecated_call(match="pass the rows of diagnostics.steps"):
        assert verdict([1e-5, 1e-2, 1.0]) == "vanishing"
        assert verdict([1e4, 10.0, 1.0]) == "exploding"
        assert verdict([2.0, 1.0, 0.5]) == "stable"
        assert verdict([None, 1e-6, 1.0]) == "vanishing"
        assert verdict([math.nan, 1.0]) == "exploding"
        assert verdict([1.0]) == "stable"
        assert verdict([0.0, 1.0]) == "vanishing"


def test_verdict_of_real_recurrences():
    rng = np.random.default_rng(0)
    H, T = 8, 40
    for scale, expected in ((0.3, "vanishing"), (1.0, None), (2.5, "exploding")):
        W = Value(rng.normal(0, 1, (H, H)))
        W.data = W.data * (scale / max(abs(np.linalg.eigvals(W.data))))
        h = Value(np.zeros(H), requires_grad=False)
        states = [h]
        for _ in range(T):
            h = h @ W + 0.01  # linear: the gradient scales like the spectral radius to the power T
            states.append(h)
        loss = states[-1].sum()
        loss.backward()
        if expected is not None:
            assert verdict(diagnostics.steps(loss, states)) == expected


# ---- trace_nonfinite --------------------------------------------------------------------------

def test_trace_nonfinite_finds_log_of_zero_forward_and_backward():
    x = Value(np.array([1.0, 0.0, 2.0]), name="x")
    with tg.scope("t=2"), np.errstate(divide="ignore"):
        y = (x * 1.0).log()
    loss = (y * 2.0).sum()
    report = trace_nonfinite(loss)
    assert report.forward.node is y and report.forward.node.op.name == "log"
    assert report.has_gradients is False and report.backward is None
    text = str(report)
    assert "log" in text and "t=2" in text and "(3,)" in text and "-Inf" not in text and "Inf" in text
    with np.errstate(divide="ignore", invalid="ignore"):
        loss.backward()
        report = trace_nonfinite(loss)
    assert report.backward.node is y and report.backward.position == 0
    assert "backward: log" in str(report)


def test_trace_nonfinite_finds_an_overflowing_exp():
    a = Value(np.array([1.0, 800.0]))
    with tg.scope("t=7"), np.errstate(over="ignore"):
        z = (a * 1.0 + 1.0).exp()
    out = (z * 0.5).tanh().sum()
    report = trace_nonfinite(out)
    assert report.forward.node is z and z.op.name == "exp"
    assert "exp in scope 't=7'" in str(report) and "801" in str(report)


def test_trace_nonfinite_finds_a_gradient_born_in_backward_only():
    x = Value(np.array([4.0, 0.0]))
    y = (x**0.5).sum()  # forward is finite; d sqrt(x)/dx = inf at 0
    with np.errstate(divide="ignore"):
        y.backward()
        report = trace_nonfinite(y)
    assert report.forward is None
    assert report.backward.node.op.name == "pow"
    assert "forward: all values finite" in str(report)


def test_trace_nonfinite_names_a_leaf_holding_nan_data():
    x = Value(np.array([1.0, np.nan]), name="inputs")
    report = trace_nonfinite((x * 2.0).sum())
    assert report.forward.node is x
    assert "leaf 'inputs'" in str(report) and "NaN" in str(report)


def test_trace_nonfinite_of_a_finite_graph_reports_nothing():
    x = Value(np.array([1.0, 2.0]))
    loss = (x.tanh() * 3.0).sum()
    loss.backward()
    report = trace_nonfinite(loss)
    assert not report
    assert str(report) == "forward: all values finite\nbackward: all gradients finite"


def test_plot_gradient_norms_draws_one_point_per_step_with_a_gradient(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.deprecated_call(match="a list of norms is deprecated"):
        figure = diagnostics.plot_gradient_norms([None, 1e-3, 1e-2, 1.0], path=tmp_path / "norms.png")
    (line,) = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 3]
    assert (tmp_path / "norms.png").stat().st_size > 0


def test_plot_steps_draws_the_rows_of_steps(tmp_path):
    pytest.importorskip("matplotlib")
    from tinygrad_rnn import nn

    cell = nn.RNNCell(2, 3, rng=0)
    outputs, states = nn.RNN(cell)(np.ones((6, 1, 2)), return_states=True)
    loss = outputs[-1].sum()
    loss.backward()
    rows = diagnostics.steps(loss, states)
    figure = diagnostics.plot_steps(rows, path=tmp_path / "steps.png")
    top, bottom = figure.axes
    (norms,) = top.get_lines()
    assert list(norms.get_ydata()) == [r.grad_norm for r in rows]
    gains, bounds = bottom.get_lines()[:2]
    assert list(gains.get_ydata()) == [r.gain for r in rows[1:]]
    assert list(bounds.get_ydata()) == [r.bound for r in rows[1:]]
    assert "gain" in gains.get_label() and (tmp_path / "steps.png").stat().st_size > 0
