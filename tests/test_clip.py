"""Gradient clipping: per-node hooks (clip_norm, clip_value, record) and PyTorch's global
clip_grad_norm_ / clip_grad_value_."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import tinygrad_rnn as tg
from tinygrad_rnn import Value, clip
from tinygrad_rnn.clip import clip_grad_norm_, clip_grad_value_, clip_norm, clip_value

finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)
gradients = arrays(np.float64, st.integers(1, 12), elements=finite)


def _backward_through_hook(gradient: np.ndarray, hook) -> tuple[Value, Value]:
    """x -> y = x * 1 with ``hook`` attached to y; backward seeds y with ``gradient``."""
    x = Value(np.zeros_like(gradient))
    y = x * 1.0
    y.register_hook(hook)
    y.backward(gradient)
    return x, y


# ---- clip_norm ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(gradients, st.floats(1e-3, 1e3))
def test_clip_norm_leaves_norm_min_of_norm_and_threshold_with_direction_kept(gradient, max_norm):
    x, _ = _backward_through_hook(gradient, clip_norm(max_norm))
    before, after = np.linalg.norm(gradient), np.linalg.norm(x.grad)
    assert after == pytest.approx(min(before, max_norm), rel=1e-12, abs=1e-300)
    if before > 0:
        cosine = float(x.grad @ gradient) / (after * before)
        assert cosine == pytest.approx(1.0, abs=1e-12)


def test_clip_norm_records_before_after_and_fired_on_its_node():
    x, y = _backward_through_hook(np.array([3.0, 4.0]), clip_norm(1.0))
    assert y.notes["clip"] == {"norm_before": 5.0, "norm_after": pytest.approx(1.0, rel=1e-15), "fired": True}
    np.testing.assert_allclose(x.grad, [0.6, 0.8], rtol=1e-15)
    _, y = _backward_through_hook(np.array([0.3, 0.4]), clip_norm(1.0))
    assert y.notes["clip"] == {"norm_before": pytest.approx(0.5), "norm_after": pytest.approx(0.5), "fired": False}


def test_clip_norm_keeps_other_notes_on_the_node():
    x = Value(np.ones(2))
    y = x * 1.0
    y.notes = {"truncated": True}
    y.register_hook(clip_norm(0.5))
    y.sum().backward()
    assert y.notes["truncated"] is True and y.notes["clip"]["fired"] is True


def test_clip_norm_keeps_float32_gradients_float32():
    x = Value(np.zeros(3, dtype=np.float32))
    y = x * np.float32(1.0)
    y.register_hook(clip_norm(0.1))
    y.backward(np.full(3, 2.0, dtype=np.float32))
    assert x.grad.dtype == np.float32
    assert float(np.linalg.norm(x.grad)) == pytest.approx(0.1, rel=1e-6)


def test_clip_norm_on_a_scalar_gradient_clamps_its_magnitude():
    x = Value(1.0)
    y = x * 7.0
    y.register_hook(clip_norm(2.0))
    (y * -5.0).backward()
    assert x.grad == pytest.approx(-2.0 * 7.0)


def test_clip_norm_leaves_a_non_finite_gradient_alone_and_says_so():
    x, y = _backward_through_hook(np.array([np.inf, 1.0]), clip_norm(1.0))
    assert np.isinf(x.grad[0]) and x.grad[1] == 1.0
    assert y.notes["clip"]["fired"] is False and math.isinf(y.notes["clip"]["norm_before"])


def test_clip_norm_under_create_graph_stays_differentiable():
    # L = sum(x^2 * 2): dL/dy = 2 on y = x^2 (norm 2 sqrt(2)), clipped to norm 1: dL/dx = 2x / sqrt(2).
    x = Value(np.array([0.5, -1.5]))
    y = x * x
    y.register_hook(clip_norm(1.0))
    (y * 2.0).sum().backward(create_graph=True)
    assert isinstance(x.grad, Value)
    np.testing.assert_allclose(x.grad.data, 2 * x.data / math.sqrt(2), rtol=1e-14)
    (second,) = tg.grad(x.grad.sum(), [x])
    np.testing.assert_allclose(second, [2 / math.sqrt(2)] * 2, rtol=1e-12)


def test_plain_register_hook_clips_and_keeps_the_record_on_the_hook():
    hook = clip_norm(1.0)
    x = Value(np.zeros(2))
    y = x * 1.0
    y.register_hook(hook)
    y.backward(np.array([6.0, 8.0]))
    np.testing.assert_allclose(x.grad, [0.6, 0.8], rtol=1e-15)
    assert hook.last == {"norm_before": 10.0, "norm_after": pytest.approx(1.0), "fired": True}


def test_a_shared_hook_records_on_the_node_the_engine_is_running_hooks_for():
    shared = clip_norm(1.0)
    x = Value(np.zeros(2))
    a, b = x * 1.0, x * 2.0
    a.register_hook(shared)
    b.register_hook(shared)
    (a * np.array([3.0, 4.0]) + b * np.array([0.1, 0.1])).sum().backward()
    assert a.notes["clip"]["fired"] is True and a.notes["clip"]["norm_before"] == 5.0
    assert b.notes["clip"]["fired"] is False


def test_clip_hooks_reject_a_non_positive_threshold():
    with pytest.raises(ValueError, match="clip_norm"):
        clip_norm(0.0)
    with pytest.raises(ValueError, match="clip_value"):
        clip_value(-1.0)


# ---- clip_value and record ---------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(gradients, st.floats(1e-3, 1e3))
def test_clip_value_bounds_every_element_and_keeps_those_inside(gradient, bound):
    x, y = _backward_through_hook(gradient, clip_value(bound))
    assert np.all(np.abs(x.grad) <= bound)
    inside = np.abs(gradient) <= bound
    np.testing.assert_array_equal(x.grad[inside], gradient[inside])
    np.testing.assert_array_equal(x.grad[~inside], np.sign(gradient[~inside]) * bound)
    assert y.notes["clip"]["fired"] == bool(np.any(~inside))


def test_clip_value_on_a_scalar_gradient():
    x = Value(2.0)
    y = x * 1.0
    y.register_hook(clip_value(0.5))
    (y * -3.0).backward()
    assert x.grad == -0.5
    assert y.notes["clip"] == {"norm_before": 3.0, "norm_after": 0.5, "fired": True}


def test_record_appends_each_gradient_norm_in_backward_order_and_changes_nothing():
    norms = []
    x = Value(np.array([1.0, 2.0]))
    h1 = x * 2.0
    h2 = h1 * 3.0
    for h in (h1, h2):
        h.register_hook(clip.record(norms))
    h2.sum().backward()
    assert norms == [pytest.approx(math.sqrt(2)), pytest.approx(3 * math.sqrt(2))]
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


# ---- per-step clipping through time -------------------------------------------------------------

def _unroll(W, xs, hook_for_step=None):
    """h_t = tanh(x_t + h_{t-1} @ W) from h_0 = 0; loss = sum(h_T)."""
    h = Value(np.zeros(W.shape[0]), requires_grad=False)
    states = []
    for t, x_t in enumerate(xs, start=1):
        with tg.scope(f"t={t}"):
            h = (x_t + h @ W).tanh()
        if hook_for_step is not None:
            h.register_hook(hook_for_step())
        states.append(h)
    states[-1].sum().backward()
    return states


def test_per_step_clipping_changes_only_steps_whose_norm_exceeded_the_threshold():
    rng = np.random.default_rng(3)
    H, T = 6, 12
    W = Value(rng.normal(0, 2.5 / math.sqrt(H), (H, H)))  # gradients grow going back in time
    xs = rng.normal(0, 0.1, (T, H))
    plain = [np.linalg.norm(s.grad) for s in _unroll(W, xs)]
    threshold = float(np.median(plain))
    W.grad = None
    states = _unroll(W, xs, lambda: clip_norm(threshold))

    # The same recurrence by hand: walk back, clipping dL/dh_t where it is too long.
    g, expected, fired = np.ones(H), [], []
    for t in reversed(range(T)):
        norm = np.linalg.norm(g)
        fired.append(norm > threshold)
        g = g * (threshold / norm) if norm > threshold else g
        expected.append(g)
        g = (g * (1 - states[t].data ** 2)) @ W.data.T
    expected.reverse()
    fired.reverse()

    assert 0 < sum(fired) < T
    for t, state in enumerate(states):
        record = state.notes["clip"]
        assert record["fired"] == fired[t]
        np.testing.assert_allclose(state.grad, expected[t], rtol=1e-12, atol=1e-15)
        if record["fired"]:
            assert record["norm_after"] == pytest.approx(threshold, rel=1e-12)
        else:
            assert record["norm_after"] == record["norm_before"]
    last_fired = max(t for t in range(T) if fired[t])
    for t in range(last_fired + 1, T):  # nearer the loss than any clip: untouched
        assert np.linalg.norm(states[t].grad) == pytest.approx(plain[t], rel=1e-12)


def test_rnn_hidden_hook_clips_every_step_and_records_on_each_hidden_state():
    from tinygrad_rnn import nn
    from tinygrad_rnn.diagnostics import clip_events

    cell = nn.RNNCell(3, 5, rng=np.random.default_rng(0))
    cell.weight_hh.data = cell.weight_hh.data * 8.0
    inputs = np.random.default_rng(1).normal(size=(10, 2, 3))
    outputs, _ = nn.RNN(cell, hidden_hook=clip_norm(0.5))(inputs)
    outputs[-1].sum().backward()
    assert all(np.linalg.norm(h.grad) <= 0.5 * (1 + 1e-12) for h in outputs)
    events = clip_events(outputs)
    assert all(event is not None for event in events)
    assert events[-1]["fired"] is True and events[-1]["norm_before"] == pytest.approx(math.sqrt(10))


# ---- global clipping -------------------------------------------------------------------------

def _params_with_grads(*grads):
    params = []
    for g in grads:
        p = Value(np.zeros_like(np.asarray(g, dtype=np.float64)))
        p.grad = np.array(g, dtype=np.float64) if np.ndim(g) else float(g)
        params.append(p)
    return params


def test_clip_grad_norm_treats_all_gradients_as_one_vector():
    a, b = _params_with_grads([3.0, 4.0], [12.0])  # total norm sqrt(9 + 16 + 144) = 13
    total = clip_grad_norm_([a, b], 6.5)
    assert total == 13.0
    coefficient = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3.0 * coefficient, 4.0 * coefficient], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [12.0 * coefficient], rtol=1e-15)


def test_clip_grad_norm_below_the_threshold_changes_nothing_and_returns_the_norm():
    a, b = _params_with_grads([0.3, 0.4], 1.2)
    assert clip_grad_norm_([a, b], 5.0) == pytest.approx(1.3, rel=1e-15)
    np.testing.assert_array_equal(a.grad, [0.3, 0.4])
    assert b.grad == 1.2


def test_clip_grad_norm_with_inf_norm_uses_the_largest_element():
    a, b = _params_with_grads([1.0, -7.0], [[3.0, 2.0]])
    total = clip_grad_norm_([a, b], 3.5, norm_type=math.inf)
    assert total == 7.0
    coefficient = 3.5 / (7.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [coefficient, -7.0 * coefficient], rtol=1e-15)
    np.testing.assert_allclose(b.grad, [[3.0 * coefficient, 2.0 * coefficient]], rtol=1e-15)


def test_clip_grad_norm_with_one_norm_sums_absolute_values():
    a, b = _params_with_grads([1.0, -2.0], [-3.0])
    assert clip_grad_norm_([a, b], 100.0, norm_type=1) == 6.0


def test_clip_grad_norm_skips_parameters_without_gradient_and_accepts_one_value():
    (a,) = _params_with_grads([6.0, 8.0])
    unused = Value(np.ones(3))
    assert clip_grad_norm_([a, unused], 1.0) == 10.0
    assert unused.grad is None
    (single,) = _params_with_grads([6.0, 8.0])
    assert clip_grad_norm_(single, 1.0) == 10.0
    assert np.linalg.norm(single.grad) == pytest.approx(1.0, rel=1e-6)
    assert clip_grad_norm_([unused], 1.0) == 0.0


def test_clip_grad_norm_rebinds_gradients_instead_of_changing_shared_arrays():
    shared = np.array([30.0, 40.0])
    a, b = Value(np.zeros(2)), Value(np.zeros(2))
    a.grad = b.grad = shared
    total = clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(50.0 * math.sqrt(2))
    np.testing.assert_array_equal(shared, [30.0, 40.0])
    assert a.grad is not shared and b.grad is not shared


def test_clip_grad_norm_nonfinite_total_raises_when_asked():
    a, b = _params_with_grads([1.0, np.nan], [2.0])
    with pytest.raises(RuntimeError, match="non-finite|nan"):
        clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(b.grad, [2.0])  # nothing was scaled


def test_clip_grad_norm_nonfinite_total_scales_by_it_otherwise_as_pytorch_does():
    a, b = _params_with_grads([1.0, np.nan], [2.0])
    assert math.isnan(clip_grad_norm_([a, b], 1.0))
    assert np.all(np.isnan(a.grad)) and np.all(np.isnan(b.grad))
    c, d = _params_with_grads([1.0, np.inf], [2.0])
    assert clip_grad_norm_([c, d], 1.0) == math.inf
    np.testing.assert_array_equal(d.grad, [0.0])  # coefficient 1 / inf = 0
    assert c.grad[0] == 0.0 and math.isnan(c.grad[1])  # inf * 0


def test_clip_grad_norm_after_a_real_backward_pass():
    rng = np.random.default_rng(0)
    W, b = Value(rng.normal(size=(3, 3))), Value(rng.normal(size=3))
    (((rng.normal(size=(4, 3)) @ W + b).tanh() * 10.0) ** 2).sum().backward()
    expected_total = math.sqrt(np.sum(W.grad**2) + np.sum(b.grad**2))
    W_grad, b_grad = W.grad.copy(), b.grad.copy()
    assert clip_grad_norm_([W, b], 0.25) == pytest.approx(expected_total, rel=1e-14)
    coefficient = 0.25 / (expected_total + 1e-6)
    np.testing.assert_allclose(W.grad, W_grad * coefficient, rtol=1e-14)
    np.testing.assert_allclose(b.grad, b_grad * coefficient, rtol=1e-14)


def test_clip_grad_value_clamps_every_gradient_without_touching_shared_arrays():
    shared = np.array([-3.0, 0.5, 2.0])
    a, b = Value(np.zeros(3)), Value(1.0)
    a.grad, b.grad = shared, -4.0
    unused = Value(np.zeros(2))
    clip_grad_value_([a, b, unused], 1.0)
    np.testing.assert_array_equal(a.grad, [-1.0, 0.5, 1.0])
    assert b.grad == -1.0 and unused.grad is None
    np.testing.assert_array_equal(shared, [-3.0, 0.5, 2.0])
