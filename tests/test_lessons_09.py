"""Lesson 9 (the Monitor): what each run shows, recomputed independently: the first iteration of each
adding-problem run by a hand-written numpy forward pass and BPTT from the same weights and batch, the
per-step terms of W_hh's gradient summed by hand, the two baselines by formula against sampling, and
the clipping bound on a step. Also the Monitor heatmap's axis (whole iterations, ending at the last).

The RNN of the lesson, a linear read-out of the last state and a mean squared error:

    h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  h_0 = 0,   L = mean((h_T w^T + b - y)^2)
    dL/dh_T = (2 / B) (h_T w^T + b - y) w,   dL/dh_{t-1} = (dL/dh_t * f'(a_t)) W_hh
"""

import contextlib
import importlib
import io
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import adding_problem
from tinygrad_rnn.diagnostics import Monitor

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    """The quick run, from a fresh folder with the default --out (it must make out/lessons itself)."""
    module = importlib.import_module("09_monitor")
    folder, printed, before = tmp_path_factory.mktemp("lesson09"), io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            result = module.main(quick=True)
    finally:
        os.chdir(before)
    result["folder"], result["printed"] = folder, " ".join(printed.getvalue().split())
    return module, result


def first_iteration_deltas(record):
    """(||dL/dh_t|| for t = 0..T, [h_1..h_T]) of the first iteration, in numpy from its weights and batch."""
    w = {name.split(".", 1)[1] if name.startswith("rnn.") else name: v for name, v in record["initial"].items()}
    xs, y = record["first_batch"]
    hs = [np.zeros((xs.shape[1], w["weight_hh"].shape[0]))]
    for x in xs:
        hs.append(np.tanh(x @ w["weight_ih"].T + w["bias_ih"] + hs[-1] @ w["weight_hh"].T + w["bias_hh"]))
    z = hs[-1] @ w["head.weight"].T + w["head.bias"]
    delta = (2.0 / len(y)) * (z - y[:, None]) @ w["head.weight"]
    norms = [np.linalg.norm(delta)]
    for t in range(len(hs) - 1, 0, -1):
        delta = (delta * (1.0 - hs[t] ** 2)) @ w["weight_hh"]
        norms.append(np.linalg.norm(delta))
    return norms[::-1], hs[1:]


def test_lesson_9_writes_its_pictures_into_out_lessons_of_the_current_folder(lesson):
    _, result = lesson
    for path in result["paths"]:
        assert (result["folder"] / path).stat().st_size > 1000, path
    names = {Path(p).name for p in result["paths"]}
    assert {f"09_monitor_{kind}.{suffix}" for kind in ("vanishing", "rnn_stuck", "exploding", "blow_up")
            for suffix in ("png", "svg")} == names


def test_update_ratios_reveal_vanishing_across_layers_with_their_own_weights(lesson):
    module, result = lesson
    numbers = result["numbers"]
    assert numbers["first_layer_ratio"] < 1e-3 * numbers["last_layer_ratio"]
    feedforward = result["feedforward"]
    assert np.mean(feedforward.losses[-20:]) == pytest.approx(module.regression_variance(), rel=0.25)


def test_the_regression_variance_formula_matches_sampling():
    module = importlib.import_module("09_monitor")
    x = np.random.default_rng(5).uniform(-2, 2, size=(1_000_000, 2))
    assert module.regression_variance() == pytest.approx(np.var(np.sin(x[:, 0]) * np.cos(x[:, 1])), abs=2e-3)


@pytest.mark.parametrize("steps", [12, 80])
def test_the_adding_problems_variance_formula_matches_sampling(steps):
    module = importlib.import_module("09_monitor")
    _, targets = adding_problem(100_000, steps, np.random.default_rng(7))
    assert module.predicting_the_mean(steps) == pytest.approx(targets.var(), abs=0.01)


def test_the_stuck_rnn_looks_healthy_by_update_ratio_while_its_loss_stays_at_the_mean(lesson):
    _, result = lesson
    numbers = result["numbers"]
    assert 3e-4 < numbers["stuck_ratios"]["rnn.weight_hh"] < 3e-3  # about the plot's healthy 1e-3
    assert all(ratio > 3e-4 for ratio in numbers["stuck_ratios"].values())
    assert numbers["stuck_loss"] > 0.85 * result["baseline"]


def test_the_stuck_rnns_gradient_never_reaches_the_marked_steps(lesson):
    module, result = lesson
    stuck = result["stuck"]
    norms, _ = first_iteration_deltas(stuck)
    np.testing.assert_allclose(stuck["monitor"].step_grad_norms[0], norms, rtol=1e-8)
    half = module.STEPS // 2
    assert norms[half] < 1e-6 * norms[-1] and norms[1] < 1e-12 * norms[-1]
    last = stuck["monitor"].step_grad_norms[-1]
    assert last[half] < 1e-6 * last[-1]


def test_w_hh_gradient_is_the_sum_of_per_step_terms_that_the_last_steps_dominate(lesson):
    module, result = lesson
    stuck = result["stuck"]
    hs, deltas = stuck["last_states"], stuck["last_deltas"]
    terms = [(deltas[t] * (1.0 - hs[t] ** 2)).T @ hs[t - 1] for t in range(1, len(hs))]
    np.testing.assert_allclose(sum(terms), stuck["last_w_hh_grad"], rtol=1e-9, atol=1e-15)
    numbers = result["numbers"]
    assert numbers["late_share"] > 0.99 and numbers["early_share"] < 1e-6
    assert (numbers["early_share"], numbers["late_share"]) == pytest.approx(module.step_shares(stuck))


def test_the_exploding_run_explodes_through_time_with_every_state_below_one(lesson):
    _, result = lesson
    exploding = result["exploding"]
    norms, hs = first_iteration_deltas(exploding)
    factor = norms[0] / norms[-1]
    assert factor > 1e3 and exploding["first_factor"] == pytest.approx(factor, rel=1e-8)
    assert exploding["first_verdict"] == "exploding"
    assert exploding["max_abs_h"][0] == pytest.approx(max(np.abs(h).max() for h in hs)) and exploding["max_abs_h"][0] < 1
    assert exploding["mean_derivative"][0] == pytest.approx(np.mean([(1 - h**2).mean() for h in hs]))


def test_one_unclipped_step_rewrites_w_hh_and_the_net_then_vanishes(lesson):
    _, result = lesson
    exploding = result["exploding"]
    assert exploding["monitor"].update_ratios["rnn.weight_hh"][0] > 1.0
    assert max(exploding["mean_derivative"][1:]) < 0.05  # saturated: tanh' near 0
    assert max(result["numbers"]["later_factors"]) < 1e-3


def test_with_clipping_it_still_explodes_every_iteration_but_each_step_is_bounded(lesson):
    module, result = lesson
    clipped = result["exploding_clipped"]
    assert min(result["numbers"]["clipped_factors"]) > 1e3
    assert max(clipped["max_abs_h"]) < 1.0
    ratios = clipped["monitor"].update_ratios["rnn.weight_hh"]
    # clip_grad_norm_ caps the whole step at lr * max_norm, so W_hh's share of it at most that.
    assert ratios[0] <= module.LEARNING_RATE * 1.0 / np.linalg.norm(clipped["initial"]["rnn.weight_hh"]) * (1 + 1e-9)
    assert 5e-4 < np.median(ratios) < 3e-3


def test_the_leaky_relu_run_blows_up_forward_and_the_monitor_names_the_op(lesson):
    _, result = lesson
    blow_up = result["blow_up"]
    monitor = blow_up["monitor"]
    nan_at = monitor.first_nonfinite
    assert nan_at is not None and monitor.nonfinite_op == "matmul"
    assert monitor.iterations == nan_at + 1  # training stopped there
    assert all(math.isfinite(x) for x in monitor.losses[:nan_at])
    assert blow_up["max_abs_h"][nan_at - 1] > 100 * blow_up["max_abs_h"][0]  # the states themselves grew
    assert result["blow_up_clipped"]["monitor"].first_nonfinite is None
    assert "the first NaN or Inf is made by the op 'matmul'" in result["printed"]


def test_the_lesson_says_which_signal_reveals_rnn_vanishing(lesson):
    text = lesson[1]["printed"]
    assert "The update ratio cannot see this" in text and "The heatmap shows it" in text
    assert "diagnostics.verdict says 'exploding'" in text


def _heatmap_of_a_run(iterations: int):
    rng = np.random.default_rng(0)
    cell = nn.RNNCell(2, 4, rng=rng)
    monitor = Monitor(cell)
    optimizer = optim.SGD(cell.parameters(), lr=0.1)
    for _ in range(iterations):
        outputs, states = nn.RNN(cell)(rng.normal(size=(6, 3, 2)), return_states=True)
        loss = (outputs[-1] ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss, states)
        optimizer.step()
        monitor.after_step()
    figure = monitor.plot()
    figure.canvas.draw()
    return next(axes for axes in figure.axes if "per iteration" in axes.get_title() and axes.images)


@pytest.mark.parametrize("iterations", [1, 3, 12])
def test_the_monitor_heatmaps_iteration_axis_shows_whole_iterations_and_stops_at_the_last(iterations):
    heat = _heatmap_of_a_run(iterations)
    low, high = heat.get_ylim()
    assert (low, high) == (-0.5, iterations - 0.5)  # the rows' edges: the last row ends the axis
    shown = [t for t in heat.get_yticks() if low <= t <= high]
    assert shown and all(float(t).is_integer() for t in shown)
    assert 0 in shown and max(shown) <= iterations - 1
    states = [t for t in heat.get_xticks() if heat.get_xlim()[0] <= t <= heat.get_xlim()[1]]
    assert all(float(t).is_integer() for t in states)
