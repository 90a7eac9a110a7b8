"""Lesson 6 (the spectral radius of W_hh): its numbers and sentences against an independent numpy
computation, a forward pass and the hand-derived backward dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hh,
and its crossings against a bisection."""

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("06_spectral_radius")
TINY, UNIT = lesson.INPUT_SCALES


def numpy_run(cell, xs, u) -> dict:
    """The lesson's numbers for one net, from numpy alone (the cell only lends its parameters)."""
    p = {name: np.asarray(value.data) for name, value in cell.state_dict().items()}
    h, hidden = np.zeros((xs.shape[1], p["weight_hh"].shape[0])), []
    for x in xs:
        h = np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])
        hidden.append(h)
    hidden = np.array(hidden)
    delta = u  # dL/dh_T for L = <u, h_T>
    for h in hidden[::-1]:
        delta = (delta * (1 - h**2)) @ p["weight_hh"]
    linear = u
    for _ in xs:  # tanh removed: dL/dh_{t-1} = dL/dh_t W_hh
        linear = linear @ p["weight_hh"]
    return {"grad": np.linalg.norm(delta), "linear": np.linalg.norm(linear), "max_h": np.abs(hidden).max(),
            "mean_derivative": np.mean(1 - hidden**2)}


def numpy_sweep(radii, steps, seeds) -> dict:
    """{input label: {quantity: array (radius, seed)}} as the lesson's results, from numpy."""
    sweep = {}
    for label, scale in lesson.INPUT_SCALES.items():
        runs = [[numpy_run(*lesson.make_net(lesson.gaussian_with_radius(r), steps, scale, s)) for s in range(seeds)]
                for r in radii]
        sweep[label] = {key: np.array([[run[key] for run in row] for row in runs]) for key in runs[0][0]}
    return sweep


def numpy_median(radius, scale, steps=50, seeds=5, quantity="grad") -> float:
    return float(np.median([numpy_run(*lesson.make_net(lesson.gaussian_with_radius(radius), steps, scale, s))[quantity]
                            for s in range(seeds)]))


def bisect_crossing(scale, low, high) -> float:
    """The radius where the median ||dL/dh_0|| over the five Gaussian W_hh crosses 1, by bisection."""
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if numpy_median(middle, scale) < 1 else (low, middle)
    return (low + high) / 2


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return lesson.main(quick=True, out=tmp_path_factory.mktemp("lesson6"))


def test_lesson_6_writes_its_picture_as_png_and_svg(quick):
    assert {Path(p).suffix for p in quick["paths"]} == {".png", ".svg"}
    assert all(Path(p).stat().st_size > 500 for p in quick["paths"])


def test_lesson_6_every_number_equals_a_numpy_forward_and_hand_derived_backward(quick):
    expected = numpy_sweep(quick["radii"], steps=20, seeds=2)
    for label, runs in quick["results"].items():
        for quantity, values in runs.items():
            np.testing.assert_allclose(values, expected[label][quantity], rtol=1e-9, err_msg=f"{label}: {quantity}")


def test_lesson_6_linear_value_equals_an_identity_rnn_backpropagated_by_the_engine():
    from tinygrad_rnn import Value, nn

    for radius in (0.7, 1.3):
        cell, xs, u = lesson.make_net(lesson.gaussian_with_radius(radius), 30, 1.0, seed=3)
        linear_cell = nn.RNNCell(lesson.INPUTS, lesson.HIDDEN, nonlinearity="identity")
        linear_cell.load_state_dict(cell.state_dict())
        h0 = Value(np.zeros((lesson.BATCH, lesson.HIDDEN)))
        outputs, _ = nn.RNN(linear_cell)(xs, h0=h0)
        (outputs[-1] * u).sum().backward()
        assert lesson.measure(cell, xs, u)["linear"] == pytest.approx(np.linalg.norm(h0.grad), rel=1e-10)


def test_lesson_6_quick_sentences_hold_for_its_numbers(quick):
    tiny = quick["results"][TINY]
    ratios = np.median(tiny["grad"] / tiny["linear"], axis=1)
    inside = quick["radii"] <= quick["linear_until"] + 1e-12
    assert np.all(np.abs(ratios[inside] - 1) <= lesson.LINEAR_TOLERANCE)
    assert abs(ratios[~inside][0] - 1) > lesson.LINEAR_TOLERANCE  # where the shading starts, it has left
    unit = quick["results"][UNIT]
    assert np.all(unit["grad"] < unit["linear"])  # unit inputs: below the dashed line at every radius
    assert np.all(np.median(unit["mean_derivative"], axis=1) < 1)


def test_lesson_6_full_size_linear_story_ends_between_radius_1_10_and_1_15():
    radii = np.linspace(0.5, 1.5, 21)
    sweep = numpy_sweep(radii, steps=50, seeds=5)
    assert radii[lesson.linear_until(radii, sweep[TINY]) - 1] == pytest.approx(1.10)
    medians = {key: np.median(values, axis=1) for key, values in sweep[TINY].items()}
    at = {round(float(r), 2): k for k, r in enumerate(radii)}
    assert medians["max_h"][at[1.10]] == pytest.approx(0.082, abs=0.001)
    assert medians["max_h"][at[1.15]] == pytest.approx(0.52, abs=0.005)
    assert medians["max_h"][at[1.2]] == pytest.approx(0.90, abs=0.005)
    assert medians["max_h"][at[1.5]] == pytest.approx(0.99, abs=0.005)
    assert medians["mean_derivative"][at[1.5]] == pytest.approx(0.80, abs=0.005)
    assert medians["grad"][at[1.5]] == pytest.approx(5.0e3, rel=0.01)
    assert medians["linear"][at[1.5]] == pytest.approx(2.8e8, rel=0.01)
    unit = sweep[UNIT]
    ratio = np.median(unit["grad"][0] / unit["linear"][0])
    derivative = np.median(unit["mean_derivative"][0])
    assert ratio == pytest.approx(0.12, abs=0.005) and derivative**50 == pytest.approx(0.10, abs=0.005)


def test_lesson_6_full_size_crossings_agree_with_a_bisection():
    radii = np.linspace(0.5, 1.5, 21)
    sweep = numpy_sweep(radii, steps=50, seeds=5)
    for label, scale, low, high, printed in ((TINY, 1e-3, 1.0, 1.05, 1.017), (UNIT, 1.0, 1.30, 1.35, 1.330)):
        interpolated = lesson.crossing(radii, np.median(sweep[label]["grad"], axis=1))
        assert interpolated == pytest.approx(printed, abs=5e-4)
        assert bisect_crossing(scale, low, high) == pytest.approx(interpolated, abs=1e-3)


def test_lesson_6_full_size_orthogonal_and_identity_marks():
    marks = {(label, name): numpy_run(*lesson.make_net(init, 50, scale, 0))["grad"] if name == "identity" else
             float(np.median([numpy_run(*lesson.make_net(init, 50, scale, s))["grad"] for s in range(5)]))
             for label, scale in lesson.INPUT_SCALES.items()
             for name, init in (("orthogonal", lesson.orthogonal), ("identity", lesson.identity))}
    assert marks[(TINY, "orthogonal")] == pytest.approx(1.0, abs=0.01)
    assert marks[(TINY, "identity")] == pytest.approx(1.0, abs=0.01)
    assert marks[(UNIT, "orthogonal")] == pytest.approx(0.00219, rel=0.01)
    assert marks[(UNIT, "identity")] == pytest.approx(0.00775, rel=0.01)


def test_lesson_6_runs_as_a_script_from_another_directory_without_out(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "06_spectral_radius.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lessons" / "06_spectral_radius.png").exists()


def test_lesson_6_crossing_interpolates_in_log_space():
    assert lesson.crossing(np.array([1.0, 2.0]), np.array([0.1, 10.0])) == pytest.approx(1.5)
    assert lesson.crossing(np.array([1.0, 2.0]), np.array([2.0, 10.0])) is None
