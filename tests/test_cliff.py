"""Pascanu's one-unit cliff model: its loss is the recurrence written out in plain Python, its gradient
agrees with central finite differences and with the hand-derived forward-mode recursion, and the
surface really has a wall."""

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest

from tinygrad_rnn.problems import (
    cliff_loss,
    cliff_loss_and_grad,
    cliff_loss_grid,
    cliff_loss_slice,
    cliff_states,
    cliff_wall,
)


def plain_loss(w, b, steps=50, x0=0.5, target=0.7):
    x = x0
    for _ in range(steps):
        x = w / (1 + math.exp(-x)) + b
    return (x - target) ** 2


def forward_mode(w, b, steps=50, x0=0.5, target=0.7):
    """dx_t/dw = s + w s' dx_{t-1}/dw and dx_t/db = 1 + w s' dx_{t-1}/db, s = sigmoid(x_{t-1})."""
    x, dw, db = x0, 0.0, 0.0
    for _ in range(steps):
        s = 1 / (1 + math.exp(-x))
        dw, db = s + w * s * (1 - s) * dw, 1 + w * s * (1 - s) * db
        x = w * s + b
    return 2 * (x - target) * dw, 2 * (x - target) * db


POINTS = [(1.0, 0.0), (3.0, -1.3), (8.0, -3.0), (8.0, -5.0), (-4.0, 2.0)]


@pytest.mark.parametrize("w,b", POINTS)
def test_loss_is_the_recurrence_written_out(w, b):
    assert cliff_loss(w, b).item() == pytest.approx(plain_loss(w, b), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("w,b", POINTS)
def test_gradient_matches_central_finite_differences(w, b, steps):
    _, dw, db = cliff_loss_and_grad(w, b, steps=steps)
    eps = 1e-6
    numeric_w = (plain_loss(w + eps, b, steps) - plain_loss(w - eps, b, steps)) / (2 * eps)
    numeric_b = (plain_loss(w, b + eps, steps) - plain_loss(w, b - eps, steps)) / (2 * eps)
    assert dw == pytest.approx(numeric_w, rel=1e-5, abs=1e-7)
    assert db == pytest.approx(numeric_b, rel=1e-5, abs=1e-7)


def test_gradient_on_the_wall_is_huge_and_still_matches_finite_differences():
    # With T = 10 the wall at w = 8 is about 0.02 wide in b; its steepest point is found by search.
    bs = np.linspace(-4.6, -4.4, 2001)
    _, _, db = cliff_loss_and_grad(np.full_like(bs, 8.0), bs, steps=10)
    b = float(bs[np.argmax(np.abs(db))])
    _, dw, db_wall = cliff_loss_and_grad(8.0, b, steps=10)
    eps = 1e-7
    numeric = (plain_loss(8.0, b + eps, 10) - plain_loss(8.0, b - eps, 10)) / (2 * eps)
    assert abs(db_wall) > 1000
    assert db_wall == pytest.approx(numeric, rel=1e-4)
    assert (dw, db_wall) == pytest.approx(forward_mode(8.0, b, 10), rel=1e-9)


def test_gradient_is_the_hand_derived_forward_mode_recursion_everywhere_on_a_grid():
    ws, bs = np.meshgrid(np.linspace(-5, 15, 9), np.linspace(-8, 4, 7))
    losses, dw, db = cliff_loss_and_grad(ws, bs)
    for i in np.ndindex(ws.shape):
        expected_w, expected_b = forward_mode(ws[i], bs[i])
        assert losses[i] == pytest.approx(plain_loss(ws[i], bs[i]), rel=1e-12, abs=1e-14)
        assert dw[i] == pytest.approx(expected_w, rel=1e-9, abs=1e-12)
        assert db[i] == pytest.approx(expected_b, rel=1e-9, abs=1e-12)


def test_grid_has_one_row_per_b_and_one_column_per_w():
    ws, bs = np.array([1.0, 5.0, 9.0]), np.array([-3.0, 0.0])
    grid = cliff_loss_grid(ws, bs, steps=20)
    assert grid.shape == (2, 3)
    for i, b in enumerate(bs):
        for j, w in enumerate(ws):
            assert grid[i, j] == pytest.approx(plain_loss(w, b, 20), rel=1e-12, abs=1e-14)


def test_slice_runs_from_start_to_end():
    s, points, losses = cliff_loss_slice((8.0, -6.0), (8.0, -2.0), num=5, steps=10)
    np.testing.assert_allclose(s, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(points[:, 1], [-6, -5, -4, -3, -2])
    np.testing.assert_allclose(losses, [plain_loss(8.0, b, 10) for b in points[:, 1]], rtol=1e-12)


def test_the_wall_separates_two_attractors_across_a_thin_strip():
    # w = 8: below the wall x_T settles near b (low attractor), above it near w + b (high attractor).
    _, points, losses = cliff_loss_slice((8.0, -5.0), (8.0, -4.0), num=1001, steps=50)
    x_low = cliff_states(8.0, -5.0)[-1].item()
    x_high = cliff_states(8.0, -4.0)[-1].item()
    assert x_low < -4.5 and x_high > 3.5
    jumps = np.abs(np.diff(losses))
    assert jumps.max() > 10  # one grid step of 0.001 in b crosses the whole wall at T = 50
    assert np.sort(jumps)[-2] < 0.1  # and everywhere else the surface is gentle


def test_states_are_recorded_one_scope_per_step():
    states = cliff_states(2.0, 0.5, steps=3)
    assert len(states) == 4 and states[0].item() == 0.5
    assert [s.scope for s in states[1:]] == ["t=1", "t=2", "t=3"]


def test_steps_must_be_a_positive_whole_number():
    with pytest.raises(ValueError, match="steps"):
        cliff_loss(1.0, 0.0, steps=0)


def decimal_wall(w, steps, levels=("0.1", "0.9"), digits=60):
    """The wall's crossings by bisection in 60-digit decimals: attractors by iterating the map from
    x0 -+ 1 at b_inf = x0 - w sigmoid(x0), then each level of x_T bisected in b."""
    with localcontext() as context:
        context.prec = digits
        w, x0 = Decimal(str(w)), Decimal("0.5")

        def sigmoid(x):
            return 1 / (1 + (-x).exp())

        def last(b):
            x = x0
            for _ in range(steps):
                x = w * sigmoid(x) + b
            return x

        b_inf = x0 - w * sigmoid(x0)
        attractors = []
        for start in (x0 - 1, x0 + 1):
            x = start
            for _ in range(2000):
                x = w * sigmoid(x) + b_inf
            attractors.append(x)
        low, high = attractors
        crossings = []
        for fraction in map(Decimal, levels):
            level, a, b = low + fraction * (high - low), b_inf - (high - low) - 1, b_inf + (high - low) + 1
            for _ in range(220):
                middle = (a + b) / 2
                a, b = (middle, b) if last(middle) < level else (a, middle)
            crossings.append((a + b) / 2)
        return [float(c) for c in crossings], float(crossings[1] - crossings[0])


@pytest.mark.parametrize("w,steps", [(8.0, 10), (8.0, 15), (8.0, 50), (5.285, 15), (5.285, 50)])
def test_wall_width_is_the_60_digit_bisection(w, steps):
    wall = cliff_wall(w, steps)
    crossings, width = decimal_wall(w, steps)
    assert wall["b"] == pytest.approx(crossings, rel=1e-14, abs=1e-15)  # each end to about an ulp of b
    assert wall["width"] == pytest.approx(width, rel=1e-2)  # 1.3e-13 wide at w = 8, T = 50: ~150 ulps


def test_wall_at_the_papers_length_is_1_3e_13_wide_at_w_8():
    assert cliff_wall(8.0, 50)["width"] == pytest.approx(1.339e-13, rel=1e-2)


def test_wall_narrows_by_lambda_per_step_lambda_being_w_times_sigmoid_prime_of_x0():
    s = 1 / (1 + math.exp(-0.5))
    for w in (5.285, 8.0):
        wall = cliff_wall(w, 30)
        assert wall["lambda_"] == pytest.approx(w * s * (1 - s), rel=1e-15)
        assert wall["b_inf"] == pytest.approx(0.5 - w * s, rel=1e-15)
        ratio = cliff_wall(w, 30)["width"] / cliff_wall(w, 31)["width"]
        assert ratio == pytest.approx(wall["lambda_"], rel=1e-3)


def test_wall_crossings_are_where_x_T_reaches_the_levels_between_the_attractors():
    wall = cliff_wall(6.0, 20)
    low, high = wall["attractors"]
    for attractor in (low, high):  # fixed points of the map at b_inf
        assert 6.0 / (1 + math.exp(-attractor)) + wall["b_inf"] == pytest.approx(attractor, abs=1e-12)
    for b, fraction in zip(wall["b"], (0.1, 0.9)):
        x = 0.5
        for _ in range(20):
            x = 6.0 / (1 + math.exp(-x)) + b
        assert x == pytest.approx(low + fraction * (high - low), abs=1e-9)


def test_wall_needs_an_unstable_x0():
    with pytest.raises(ValueError, match="unstable fixed point"):
        cliff_wall(4.0, 50)  # lambda = 4 sigmoid'(0.5) = 0.94
