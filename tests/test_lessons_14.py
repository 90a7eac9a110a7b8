"""Lesson 14 (spectra): its singular values, Lyapunov exponents, gains and printed sentences, each
checked against an independent computation: the hand-derived Jacobian diag(1 - h_t^2) W_hh on a numpy
forward pass, the eigenvalues of a linear recurrence, the product of the Jacobians formed in float64,
and the determinant identity sum_i lambda_i = (1/T) sum_t log |det J_t|."""

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_rnn_cell

from tinygrad_rnn import diagnostics, nn

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("14_spectra")
LABELS = list(lesson.NETS)
DEFAULT, GAUSSIAN, TINY, UNIT = LABELS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick run, once: (its result, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = lesson.main(quick=True, out=tmp_path_factory.mktemp("lesson14"))
    return result, " ".join(printed.getvalue().split())


def numpy_states(run) -> np.ndarray:
    """h_0..h_T from the documented tanh cell in plain numpy, with the run's weights and inputs."""
    states = [np.zeros(run["weights"]["weight_hh"].shape[0])]
    for x in run["xs"][:, 0]:
        states.append(numpy_rnn_cell(run["weights"], x, states[-1]))
    return np.array(states)


def hand_jacobians(run) -> list:
    """J_t = diag(1 - h_t^2) W_hh, t = 1..T."""
    h, weight = numpy_states(run), run["weights"]["weight_hh"]
    return [(1 - h[t] ** 2)[:, None] * weight for t in range(1, len(h))]


def test_the_lesson_writes_a_png_and_an_svg_of_each_picture(quick):
    result, _ = quick
    names = {Path(p).name for p in result["paths"]}
    assert names == {f"14_spectra_{kind}.{suffix}" for kind in ("singular_values", "gains") for suffix in ("png", "svg")}
    assert all(Path(p).stat().st_size > 500 for p in result["paths"])


@pytest.mark.parametrize("label", LABELS)
def test_one_steps_singular_values_are_those_of_diag_tanh_prime_times_w_hh(quick, label):
    run = quick[0]["runs"][label]
    expected = np.array([np.linalg.svd(j, compute_uv=False) for j in hand_jacobians(run)])
    np.testing.assert_allclose(run["step_singular_values"], expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(run["bounds"], expected[:, 0], rtol=1e-9)  # the bound is the largest one


@pytest.mark.parametrize("label", LABELS)
def test_gains_multiply_to_the_gradient_that_numpy_backpropagation_carries_to_h_0(quick, label):
    run = quick[0]["runs"][label]
    delta = run["u"][0]
    for jacobian in reversed(hand_jacobians(run)):  # delta_{t-1} = J_t^T delta_t
        delta = jacobian.T @ delta
    assert run["factor"] == pytest.approx(np.linalg.norm(delta), rel=1e-9)
    assert np.prod(run["gains"]) == pytest.approx(np.linalg.norm(delta), rel=1e-9)


@pytest.mark.parametrize("label", LABELS)
def test_the_exponents_sum_to_the_mean_log_determinant(quick, label):
    """prod_t |det J_t| = |det P| = prod_i sigma_i(P), and the QR method keeps prod_i |R_ii| = |det|
    exactly, at any T."""
    run = quick[0]["runs"][label]
    log_dets = [np.linalg.slogdet(j)[1] for j in hand_jacobians(run)]
    assert np.sum(run["lyapunov"]) == pytest.approx(np.mean(log_dets), rel=1e-9)


@pytest.mark.parametrize("label", [DEFAULT, GAUSSIAN, UNIT])
def test_top_exponent_agrees_with_the_svd_of_the_product_formed_in_float64(quick, label):
    """For T = 40 the product has no overflow: log sigma_1(P) / T is an independent answer. Every QR
    exponent is at most that (prod_t |R_t[i, i]| is the part of ||P^T q_i|| outside the span of the
    other images, and ||P^T q_i|| <= sigma_1); it falls short by -log |cos| of the angle between the
    start vector and the top singular direction, over T: about log(sqrt(H)) / T for a random angle."""
    run = quick[0]["runs"][label]
    product = np.eye(run["jacobians"][0].shape[0])
    for jacobian in hand_jacobians(run):
        product = jacobian @ product
    top = np.log(np.linalg.svd(product, compute_uv=False)[0]) / len(run["gains"])
    steps, hidden = len(run["gains"]), len(run["lyapunov"])
    assert -1e-9 <= top - run["lyapunov"][0] <= np.log(hidden) / steps


def test_lyapunov_exponents_of_a_linear_recurrence_are_the_logs_of_its_eigenvalue_moduli():
    """h_t = W h_{t-1}: J_t = W at every step, and the exponents are log |eigenvalue| (a non-normal W,
    a complex pair of modulus 0.8 among them). J_t is read from the engine's graph of a linear RNN."""
    rng = np.random.default_rng(5)
    rotation = 0.8 * np.array([[np.cos(1.0), -np.sin(1.0)], [np.sin(1.0), np.cos(1.0)]])
    blocks = np.zeros((5, 5))
    blocks[:2, :2] = rotation
    blocks[2:, 2:] = np.diag([1.3, -0.5, 0.1])
    basis = rng.normal(size=(5, 5))
    weight = basis @ blocks @ np.linalg.inv(basis)
    cell = nn.RNNCell(2, 5, nonlinearity="identity", rng=rng)
    cell.weight_hh.data = weight
    _, states = nn.RNN(cell)(rng.normal(size=(6, 1, 2)), return_states=True)
    jacobian = diagnostics.step_jacobian(states[3], states[2])[0]
    np.testing.assert_allclose(jacobian, weight, atol=1e-12)
    exponents = lesson.lyapunov_exponents([jacobian] * 3000)
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(weight))))[::-1]
    np.testing.assert_allclose(exponents, expected, atol=5e-3)


def test_qr_method_stays_finite_where_the_product_underflows():
    """A diagonal step with factors 1e-3 and 1e-30: the product underflows to 0 after 11 steps, the
    exponents stay exact."""
    step = np.diag([1e-3, 1e-30])
    exponents = lesson.lyapunov_exponents([step] * 1000)
    np.testing.assert_allclose(exponents, np.log([1e-3, 1e-30]), rtol=1e-12)
    assert lesson.product_singular_values([step] * 1000)[0] == 0.0


def test_the_product_svd_in_float64_cannot_see_directions_below_rounding(quick):
    run = quick[0]["runs"][DEFAULT]
    steps = len(run["gains"])
    spread_qr = np.exp(steps * (run["lyapunov"][-1] - run["lyapunov"][0]))
    direct = run["product_singular_values"]
    assert spread_qr < 1e-40  # what the directions really span ...
    assert direct[-1] / direct[0] > 1e-20  # ... and what the product's SVD reports: rounding


def test_printed_claims_about_the_bounds_hold_for_the_numbers(quick):
    result, printed = quick
    runs, steps = result["runs"], result["steps"]
    default, gaussian, tiny, unit = (runs[k] for k in LABELS)
    # PyTorch's init: bounds above 1 that multiply to more than 1, a gradient that vanishes.
    assert np.median(default["bounds"]) > 1 and np.prod(default["bounds"]) > 1
    assert default["factor"] < 1e-6 and default["lyapunov"][0] < 0
    assert f"the gradient becomes {default['factor']:.2g} of itself" in printed
    # Gaussian gain 2: explodes through time with every |h_t| <= 1, its bounds promising far more.
    assert gaussian["lyapunov"][0] > 0 and gaussian["factor"] > 1 and gaussian["max_abs_h"] <= 1
    assert np.prod(gaussian["bounds"]) > 1e6 * gaussian["factor"]
    # Orthogonal, unit inputs: every bound at most 1 (tanh' <= 1 on an isometry), and still it vanishes.
    assert np.all(unit["bounds"] <= 1 + 1e-12) and unit["factor"] < 0.1
    # Orthogonal, tiny inputs: an isometry, every exponent near 0.
    assert np.all(np.abs(tiny["lyapunov"]) < 1e-4) and tiny["factor"] == pytest.approx(1, abs=1e-3)
    assert f"over {steps} steps" in printed


def test_printed_claims_about_lyapunov_factors_hold_for_the_numbers(quick):
    result, printed = quick
    worst = 0.0
    for label, run in result["runs"].items():
        factor = np.exp(run["lyapunov"][0])
        worst = max(worst, abs(np.median(run["gains"]) / factor - 1))
        if label != TINY:  # the product's leading singular values sit below one step's
            assert np.all(np.exp(run["lyapunov"][:5]) < np.median(run["step_singular_values"][:, :5], axis=0))
    assert worst < 0.05
    assert f"within {worst:.0%} of it for all four nets" in printed


def test_the_lesson_runs_from_another_directory_without_arguments_in_quick_mode(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "14_spectra.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lessons" / "14_spectra_gains.png").exists()
