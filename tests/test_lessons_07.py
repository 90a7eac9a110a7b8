"""Lesson 7 (recurrent batch norm): its step numbers and its sweep of the ratio gamma_hh / gamma_ih
against BPTT written out by hand in numpy, with batch norm's textbook backward
dz = (gamma / std) (dy - mean(dy) - n mean(dy n)), n = (z - mean) / std, itself checked against central
differences; and the sentences its docs quote against those numbers."""

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
lesson = importlib.import_module("07_batch_norm")
EPS = 1e-5  # BNRNNCell's default
PAPER, LARGE = lesson.SIZES


def parameters(cell) -> dict:
    return {name: np.asarray(value.data) for name, value in cell.state_dict().items()}


def normalise(z, gamma):
    std = np.sqrt(z.var(axis=0) + EPS)
    n = (z - z.mean(axis=0)) / std
    return gamma * n, (n, std)


def normalise_backward(dy, gamma, saved):
    n, std = saved
    return gamma / std * (dy - dy.mean(axis=0) - n * (dy * n).mean(axis=0))


def forward(p, xs, h0, batch_norm: bool):
    """[(h_t, what the backward needs)] for t = 1..T: the plain tanh cell, or the batch-norm cell in training."""
    h, steps = h0, []
    for x in xs:
        z = h @ p["weight_hh"].T
        if batch_norm:
            from_input, _ = normalise(x @ p["weight_ih"].T, p["gamma_ih"])
            from_hidden, saved = normalise(z, p["gamma_hh"])
            h = np.tanh(from_input + from_hidden + p["bias_ih"] + p["bias_hh"])
        else:
            saved = None
            h = np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + z + p["bias_hh"])
        steps.append((h, saved))
    return steps


def deltas(p, xs, target, h0, batch_norm: bool) -> np.ndarray:
    """||delta_t|| for t = 0..T, L = mean((h_T - target)^2), over the whole batch."""
    steps = forward(p, xs, h0, batch_norm)
    delta = 2 * (steps[-1][0] - target) / target.size
    sizes = [np.linalg.norm(delta)]
    for h, saved in steps[::-1]:
        pre = delta * (1 - h**2)
        if batch_norm:
            pre = normalise_backward(pre, p["gamma_hh"], saved)
        delta = pre @ p["weight_hh"]
        sizes.append(np.linalg.norm(delta))
    return np.array(sizes[::-1])


def lesson_runs(steps: int) -> dict:
    """{(kind, scale): ||delta_t|| for t = 0..T} for the lesson's six nets, from numpy."""
    rng = np.random.default_rng(0)
    xs, target = rng.normal(size=(steps, lesson.BATCH, lesson.INPUTS)), rng.normal(size=(lesson.BATCH, lesson.HIDDEN))
    h0 = 0.5 * rng.normal(size=(lesson.BATCH, lesson.HIDDEN))
    runs = {}
    for scale in lesson.SCALES:
        plain, batch_norm = lesson.pair(scale)
        runs[("plain", scale)] = deltas(parameters(plain), xs, target, h0, batch_norm=False)
        runs[("batch norm", scale)] = deltas(parameters(batch_norm), xs, target, h0, batch_norm=True)
    return runs


def sweep_gains(gamma_ih, gamma_hh, steps, batch, seed) -> tuple:
    """(every step's gain, mean tanh') of one sweep run, from numpy."""
    _, cell = lesson.pair(1.0)
    p = {**parameters(cell), "gamma_ih": np.full(lesson.HIDDEN, gamma_ih), "gamma_hh": np.full(lesson.HIDDEN, gamma_hh)}
    xs, target, h0 = lesson.sequence(steps, batch, 100 + seed)
    sizes = deltas(p, xs, target, h0, batch_norm=True)
    hidden = np.array([h for h, _ in forward(p, xs, h0, batch_norm=True)])
    return sizes[:-1] / sizes[1:], np.mean(1 - hidden**2)


def numpy_sweep(ratios, steps, seeds) -> dict:
    results = {}
    for label, size in lesson.SIZES.items():
        for batch in lesson.SWEEP_BATCHES:
            runs = [[sweep_gains(*lesson.gammas(r, size), steps, batch, s) for s in range(seeds)] for r in ratios]
            results[(label, batch)] = {"gain": np.array([np.median(np.concatenate([g for g, _ in row])) for row in runs]),
                                       "mean_derivative": np.array([np.mean([d for _, d in row]) for row in runs])}
    return results


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return lesson.main(quick=True, out=tmp_path_factory.mktemp("lesson7"))


@pytest.fixture(scope="module")
def full_sweep():
    return numpy_sweep(np.logspace(-1, 1, 9), steps=30, seeds=3)


def test_lesson_7_writes_its_pictures_as_png_and_svg(quick):
    names = {Path(p).name for p in quick["paths"]}
    assert names == {f"07_batch_norm{kind}.{suffix}" for kind in ("", "_steps") for suffix in ("png", "svg")}
    assert all(Path(p).stat().st_size > 500 for p in quick["paths"])


def test_lesson_7_hand_written_batch_norm_step_backward_agrees_with_central_differences():
    _, cell = lesson.pair(1.0)
    p = {**parameters(cell), "gamma_ih": np.full(lesson.HIDDEN, 0.3), "gamma_hh": np.full(lesson.HIDDEN, 0.7)}
    rng = np.random.default_rng(3)
    xs, target, h0 = rng.normal(size=(3, 5, lesson.INPUTS)), rng.normal(size=(5, lesson.HIDDEN)), rng.normal(size=(5, 8))

    def loss(h):
        return np.mean((forward(p, xs, h, batch_norm=True)[-1][0] - target) ** 2)

    numeric = np.zeros_like(h0)
    for index in np.ndindex(h0.shape):
        up, down = h0.copy(), h0.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric[index] = (loss(up) - loss(down)) / 2e-6
    assert deltas(p, xs, target, h0, batch_norm=True)[0] == pytest.approx(np.linalg.norm(numeric), rel=1e-7)


def test_lesson_7_step_numbers_equal_hand_written_bptt(quick):
    expected = lesson_runs(quick["steps"])
    for key, n in quick["numbers"].items():
        sizes = expected[key]
        assert n["factor"] == pytest.approx(sizes[0] / sizes[-1], rel=1e-8), key
        assert n["gain"] == pytest.approx(np.median(sizes[:-1] / sizes[1:]), rel=1e-8), key


def test_lesson_7_sweep_equals_hand_written_bptt(quick):
    expected = numpy_sweep(quick["ratios"], steps=quick["steps"], seeds=1)
    for key, result in quick["sweep"].items():
        np.testing.assert_allclose(result["gain"], expected[key]["gain"], rtol=1e-8, err_msg=str(key))
        np.testing.assert_allclose(result["mean_derivative"], expected[key]["mean_derivative"], rtol=1e-10)


def test_lesson_7_batch_norm_gains_do_not_depend_on_the_scale_of_w_hh(quick):
    numbers = quick["numbers"]
    bn = [n for (kind, _), n in numbers.items() if kind == "batch norm"]
    assert max(n["gain"] for n in bn) - min(n["gain"] for n in bn) < 0.02
    assert all(n["gain"] < 1 for n in bn)  # "still loses the gradient at every step"
    assert all(n["methods"] == (["full"] if kind == "batch norm" else ["rows"]) for (kind, _), n in numbers.items())


def test_lesson_7_full_size_step_numbers_as_the_docs_quote():
    runs = lesson_runs(30)
    quoted = {("plain", 0.3): (0.22, 1.6e-20), ("plain", 1.0): (0.70, 1.4e-5), ("plain", 3.0): (1.1, 37),
              ("batch norm", 0.3): (0.78, 1.7e-4), ("batch norm", 1.0): (0.78, 2.1e-4),
              ("batch norm", 3.0): (0.78, 2.1e-4)}
    for key, (gain, factor) in quoted.items():
        sizes = runs[key]
        assert np.median(sizes[:-1] / sizes[1:]) == pytest.approx(gain, abs=0.006), key
        assert sizes[0] / sizes[-1] == pytest.approx(factor, rel=0.03), key
    assert 1e-3 < runs[("plain", 3.0)][0] / runs[("plain", 3.0)][-1] < 1e3  # growing, yet "stable" by the verdict
    assert all(runs[("batch norm", s)][0] / runs[("batch norm", s)][-1] < 1e-3 for s in lesson.SCALES)  # vanishing


def test_lesson_7_full_size_ratio_sets_the_gain_near_the_estimate(full_sweep):
    ratios = np.logspace(-1, 1, 9)
    paper8, paper64 = full_sweep[(PAPER, 8)]["gain"], full_sweep[(PAPER, 64)]["gain"]
    assert paper8[0] == pytest.approx(0.13, abs=0.005) and paper8[-1] == pytest.approx(0.99, abs=0.005)
    assert paper8[4] == pytest.approx(0.78, abs=0.005) and paper64[4] == pytest.approx(0.75, abs=0.006)
    assert lesson.estimate(1.0) == pytest.approx(1 / np.sqrt(2))
    for gains in (paper8, paper64):
        assert np.all(np.diff(gains) > -0.01)  # rises with the ratio (flat within noise at the top)
        assert np.max(np.abs(gains - lesson.estimate(ratios))) < 0.09
    assert full_sweep[(PAPER, 8)]["mean_derivative"][4] == pytest.approx(0.95, abs=0.005)


def test_lesson_7_full_size_larger_gammas_saturate_tanh_and_give_larger_gains(full_sweep):
    ratios = np.logspace(-1, 1, 9)
    for batch in lesson.SWEEP_BATCHES:
        assert np.all(full_sweep[(LARGE, batch)]["gain"] > full_sweep[(PAPER, batch)]["gain"])
    large = full_sweep[(LARGE, 8)]
    assert large["mean_derivative"][4] == pytest.approx(0.46, abs=0.005)
    assert large["gain"][4] == pytest.approx(0.84, abs=0.005)
    assert ratios[large["gain"] > 1][0] == pytest.approx(1.78, abs=0.005)


def test_lesson_7_runs_as_a_script_from_another_directory_without_out(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "07_batch_norm.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lessons" / "07_batch_norm.png").exists()
