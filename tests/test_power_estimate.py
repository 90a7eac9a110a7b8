"""steps(bound="power"): ||J_t||_2 by a few power iterations started from delta_t. Power iteration
approaches the norm from below, so the number is an estimate between the gain and the norm, never a
bound: checked against the SVD, on a linear recurrence whose norm is known, and in the words used."""

import math

import numpy as np
import pytest

from tinygrad_rnn import Value, diagnostics, nn
from tinygrad_rnn.diagnostics.steps import POWER_ITERATIONS, bound_text, power_estimate


def _linear(W, T=6, B=2, seed=0):
    """h_t = h_{t-1} W^T: every step's Jacobian is W itself (per batch row), so ||J_t||_2 = ||W||_2."""
    rng = np.random.default_rng(seed)
    states = [Value(rng.normal(size=(B, W.shape[0])), requires_grad=True)]
    weight = Value(W)
    for _ in range(T):
        states.append(states[-1] @ weight.T)
    loss = (states[-1] * Value(rng.normal(size=states[-1].shape))).sum()
    loss.backward()
    return loss, states


def _known(norm=3.0, H=5, seed=1):
    """A matrix with singular values norm, 2, 1, 0.5, 0.1 in random directions."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(H, H)))
    v, _ = np.linalg.qr(rng.normal(size=(H, H)))
    return u @ np.diag([norm, 2.0, 1.0, 0.5, 0.1]) @ v.T


def _lstm(T=8, B=3, seed=0):
    cell = nn.LSTMCell(3, 4, rng=seed)
    rng = np.random.default_rng(seed)
    outputs, states = nn.RNN(cell)(rng.normal(size=(T, B, 3)), return_states=True)
    loss = sum((o * o).sum() for o in outputs)
    loss.backward()
    return loss, states


def test_the_estimate_lies_between_the_gain_and_the_svd_norm():
    for loss, states in (_linear(_known()), _lstm()):
        svd = diagnostics.steps(loss, states)
        for iterations in (0, 1, 3, POWER_ITERATIONS):
            power = diagnostics.steps(loss, states, bound="power", iterations=iterations)
            for exact, estimate in zip(svd[1:], power[1:]):
                assert exact.gain <= estimate.bound <= exact.bound * (1 + 1e-12), (iterations, exact.t)
                assert estimate.bound_method == "power" and estimate.iterations == iterations


def test_no_iteration_gives_the_gain_itself_and_more_iterations_never_less():
    # One batch row: with several, each row starts from its own part of delta_t and the largest row's
    # gain (at least the batch's) is where it starts.
    loss, states = _lstm(B=1)
    previous = [r.gain for r in diagnostics.steps(loss, states)[1:]]
    for iterations in (0, 1, 2, 5, 10):
        estimates = [r.bound for r in diagnostics.steps(loss, states, bound="power", iterations=iterations)[1:]]
        if iterations == 0:
            assert estimates == pytest.approx(previous, rel=1e-12)
        assert all(e >= p * (1 - 1e-12) for e, p in zip(estimates, previous))
        previous = estimates


def test_the_estimate_converges_to_a_norm_known_in_advance():
    W = _known(norm=3.0)
    loss, states = _linear(W)
    errors = []
    for iterations in (1, 3, 10, 40):
        rows = diagnostics.steps(loss, states, bound="power", iterations=iterations)
        errors.append(max(3.0 - r.bound for r in rows[1:]))
    assert all(e >= -1e-12 for e in errors)  # from below, never above
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-12  # (2/3)^(2k) shrinks it
    assert errors[0] > 1e-3  # one iteration is not there yet: a few iterations are an estimate


def test_power_estimate_of_a_matrix_alone():
    W = _known(norm=3.0)
    start = np.ones((1, 5))
    assert power_estimate(W[None], start, 0) == pytest.approx(np.linalg.norm(W.T @ np.ones(5)) / math.sqrt(5))
    assert power_estimate(W[None], start, 60) == pytest.approx(3.0, rel=1e-12)
    assert power_estimate(np.stack([W, 2 * W]), np.ones((2, 5)), 60) == pytest.approx(6.0, rel=1e-12)
    assert power_estimate(np.zeros((1, 5, 5)), start, 5) == 0.0
    assert math.isnan(power_estimate(np.full((1, 2, 2), np.nan), None, 5))


def test_the_words_say_estimate_with_the_count_and_never_call_it_a_bound():
    loss, states = _lstm()
    power = diagnostics.steps(loss, states, bound="power", iterations=7)
    words = bound_text(power)
    assert words.startswith("‖J_t‖₂ ≈ by 7 power iterations from δ_t, ≥ the gain")
    assert "not a bound" in words and "the bound" not in words
    assert "SVD" in bound_text(diagnostics.steps(loss, states))


def test_no_bound_leaves_every_other_number_as_it_is():
    loss, states = _lstm()
    with_bound, without = diagnostics.steps(loss, states), diagnostics.steps(loss, states, bound=None)
    assert all(r.bound is None and r.bound_method is None for r in without)
    strip = lambda r: (r.grad_norm, r.gain, r.direct, r.last_read, r.contribution, r.cut, r.clip)
    assert [strip(r) for r in with_bound] == [strip(r) for r in without]
    assert diagnostics.verdict(without) == diagnostics.verdict(with_bound)


def test_a_bound_method_that_does_not_exist_is_refused():
    loss, states = _lstm(T=2)
    with pytest.raises(ValueError, match="bound must be 'svd', 'power' or None"):
        diagnostics.steps(loss, states, bound="lanczos")
    with pytest.raises(ValueError, match="iterations must be a whole number"):
        diagnostics.steps(loss, states, bound="power", iterations=-1)
