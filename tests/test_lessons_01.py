"""Lesson 1 (BPTT is a sum), run small: every number it prints and draws is recomputed here without
the framework, by a plain numpy RNN (forward pass, per-step copies of W_hh perturbed by central
differences, Jacobians multiplied out by hand)."""

import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

LESSONS = Path(__file__).resolve().parent.parent / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    import contextlib
    import io

    module = importlib.import_module("01_bptt_sum")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = module.main(quick=True, out=tmp_path_factory.mktemp("lesson01"))
    return result, " ".join(printed.getvalue().split())


def last_state(p, xs, h0, hh_per_step=None):
    """h_T of h_t = tanh(x_t W_ih^T + b_ih + h_t-1 W_hh^T + b_hh); step t may use its own W_hh."""
    h = h0
    for t, x in enumerate(xs):
        weight_hh = p["weight_hh"] if hh_per_step is None else hh_per_step[t]
        h = np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ weight_hh.T + p["bias_hh"])
    return h


def states(p, xs, h0):
    out = [h0]
    for x in xs:
        out.append(np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + out[-1] @ p["weight_hh"].T + p["bias_hh"]))
    return out


def mse(p, xs, h0, target, hh_per_step=None):
    return float(np.mean((last_state(p, xs, h0, hh_per_step) - target) ** 2))


def finite_difference_contributions(p, xs, h0, target, eps=1e-5):
    """C_t[i, j] = dL/dW_hh^(t)[i, j] by central differences, moving only step t's copy."""
    steps = len(xs)
    result = []
    for t in range(steps):
        c = np.zeros_like(p["weight_hh"])
        for i, j in np.ndindex(c.shape):
            copies = [p["weight_hh"].copy() for _ in range(steps)]
            copies[t][i, j] += eps
            up = mse(p, xs, h0, target, copies)
            copies[t][i, j] -= 2 * eps
            down = mse(p, xs, h0, target, copies)
            c[i, j] = (up - down) / (2 * eps)
        result.append(c)
    return result


def input_sensitivity(p, xs, h0):
    """||dh_T/dx_t||_F, root mean square over the batch, from the Jacobians multiplied out:
    dh_T/dx_t = D_T W_hh D_T-1 ... W_hh D_t W_ih, D_s = diag(1 - h_s^2)."""
    hs = states(p, xs, h0)
    steps, batch = len(xs), xs.shape[1]
    squares = np.zeros(steps)
    for b in range(batch):
        for t in range(steps):
            jacobian = np.diag(1 - hs[t + 1][b] ** 2) @ p["weight_ih"]
            for s in range(t + 1, steps):
                jacobian = np.diag(1 - hs[s + 1][b] ** 2) @ p["weight_hh"] @ jacobian
            squares[t] += np.sum(jacobian**2)
    return np.sqrt(squares / batch)


def rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def test_lesson_writes_both_pictures_as_png_and_svg(lesson):
    result, _ = lesson
    names = {Path(p).name for p in result["paths"]}
    assert names == {"01_bptt_sum.png", "01_bptt_sum.svg", "01_bptt_early_steps.png", "01_bptt_early_steps.svg"}
    assert all(Path(p).stat().st_size > 500 for p in result["paths"])


def test_per_step_contributions_add_up_to_the_shared_gradient(lesson):
    result, _ = lesson
    for run in result["runs"].values():
        np.testing.assert_allclose(sum(run["contributions"]), run["grad"], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("label", ["untrained", "trained"])
def test_each_contribution_is_the_central_difference_of_that_steps_own_copy_of_w_hh(lesson, label):
    result, _ = lesson
    run = result["runs"][label]
    expected = finite_difference_contributions(run["weights"], result["xs"], result["h0"], result["target"])
    for computed, reference in zip(run["contributions"], expected):
        np.testing.assert_allclose(computed, reference, rtol=1e-4, atol=1e-11)


def test_losses_are_the_numpy_rnns_mean_squared_error(lesson):
    result, _ = lesson
    for run in result["runs"].values():
        assert run["loss"] == pytest.approx(mse(run["weights"], result["xs"], result["h0"], result["target"]),
                                            rel=1e-12)


def test_target_is_the_teachers_last_state_from_the_same_h0(lesson):
    result, _ = lesson
    np.testing.assert_allclose(result["target"], last_state(result["teacher"], result["xs"], result["h0"]),
                               rtol=1e-12)


def test_sensitivities_are_the_hand_multiplied_jacobians(lesson):
    result, _ = lesson
    xs, h0 = result["xs"], result["h0"]
    np.testing.assert_allclose(result["sensitivity"], input_sensitivity(result["teacher"], xs, h0), rtol=1e-10)
    trained = result["runs"]["trained"]
    np.testing.assert_allclose(trained["sensitivity"], input_sensitivity(trained["weights"], xs, h0), rtol=1e-10)


def test_h0_is_as_large_as_the_untrained_students_later_states(lesson):
    result, _ = lesson
    sizes = [rms(h) for h in states(result["runs"]["untrained"]["weights"], result["xs"], result["h0"])]
    assert 0.9 * min(sizes[1:]) <= sizes[0] <= 1.1 * max(sizes[1:])
    assert result["runs"]["untrained"]["state_rms"] == pytest.approx(sizes, rel=1e-12)


def test_untrained_contributions_vanish_towards_the_early_steps_with_no_outlier_at_step_1(lesson):
    result, _ = lesson
    norms = result["runs"]["untrained"]["norms"]
    ratios = [a / b for a, b in zip(norms, norms[1:])]  # C_t / C_t+1
    assert norms[0] < 1e-4 * norms[-1]
    assert all(r < 1 for r in ratios)
    assert ratios[0] >= 0.8 * min(ratios[1:])  # the first step is not made small by h_0


def test_the_trained_student_is_near_the_minimum_and_has_learnt_the_early_dependence(lesson):
    result, _ = lesson
    untrained, trained = result["runs"]["untrained"], result["runs"]["trained"]
    assert trained["loss"] < 1e-3 * untrained["loss"]
    assert max(trained["norms"]) < 1e-2 * max(untrained["norms"])
    assert trained["norms"][0] > 0.1 * trained["norms"][-1]  # no longer vanishing towards step 1
    teacher = result["sensitivity"][0] / result["sensitivity"][-1]
    student = trained["sensitivity"][0] / trained["sensitivity"][-1]
    assert student == pytest.approx(teacher, rel=0.1)


def test_training_history_starts_at_the_untrained_numbers_and_ends_at_the_trained_ones(lesson):
    result, _ = lesson
    history, runs = result["history"], result["runs"]
    for row, run in ((history[0], runs["untrained"]), (history[-1], runs["trained"])):
        assert row["loss"] == pytest.approx(run["loss"], rel=1e-12)
        assert row["first"] == pytest.approx(run["norms"][0], rel=1e-12)
        assert row["last"] == pytest.approx(run["norms"][-1], rel=1e-12)
        assert row["memory"] == pytest.approx(run["sensitivity"][0] / run["sensitivity"][-1], rel=1e-12)


def test_printed_numbers_are_the_independently_computed_ones(lesson):
    result, text = lesson
    xs, h0, target = result["xs"], result["h0"], result["target"]
    untrained, trained = result["runs"]["untrained"], result["runs"]["trained"]
    steps = len(xs)
    teacher = input_sensitivity(result["teacher"], xs, h0)
    assert f"depends on the first input {teacher[0] / teacher[-1]:.2g} times as much as on the last" in text
    u = [np.linalg.norm(c) for c in finite_difference_contributions(untrained["weights"], xs, h0, target)]
    assert f"fall from {u[-1]:.3g} at step {steps} to {u[0]:.3g} at step 1" in text
    assert f"(C_1 / C_2 = {u[0] / u[1]:.2g})" in text
    loss = mse(trained["weights"], xs, h0, target)
    assert f"loss {loss:.2g}, every contribution small" in text
    student = input_sensitivity(trained["weights"], xs, h0)
    assert f"depends on the first input {student[0] / student[-1]:.2g} times" in text
    assert f"RMS {rms(h0):.2f}" in text
    middle = re.search(r"at iteration (\d+) the loss was ([0-9.e+-]+),", text)
    row = next(r for r in result["history"] if r["iteration"] == int(middle.group(1)))
    assert float(middle.group(2)) == pytest.approx(row["loss"], rel=0.05)
    assert row["loss"] > 10 * trained["loss"]  # the "plateau" sentence is about a loss well above the end
