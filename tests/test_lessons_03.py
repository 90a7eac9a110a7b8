"""Lesson 3 (cells and initialisations over 100 steps): every number it prints and every number its
docs quote, against backpropagation through time written out by hand in numpy (the cells lend only
their parameters), itself checked against central differences."""

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
lesson = importlib.import_module("03_cells_and_inits")


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def parameters(cell) -> dict:
    return {name: np.asarray(value.data) for name, value in cell.state_dict().items()}


def rnn_forward(p, xs, nonlinearity):
    h, hidden = np.zeros((xs.shape[1], p["weight_hh"].shape[0])), []
    for x in xs:
        a = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        h = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "identity": lambda a: a}[nonlinearity](a)
        hidden.append(h)
    return hidden


def rnn_deltas(p, xs, target, nonlinearity) -> list:
    """[delta_0, ..., delta_T] for L = mean((h_T - target)^2): delta_{t-1} = (delta_t * f'(a_t)) W_hh."""
    hidden = rnn_forward(p, xs, nonlinearity)
    delta = 2 * (hidden[-1] - target) / target.size
    deltas = [delta]
    for h in hidden[::-1]:
        derivative = {"tanh": 1 - h**2, "relu": (h > 0) * 1.0, "identity": np.ones_like(h)}[nonlinearity]
        delta = (delta * derivative) @ p["weight_hh"]
        deltas.append(delta)
    return deltas[::-1]


def lstm_forward(p, xs):
    """[(h_t, c_t, i, f, g, o)] for t = 1..T, PyTorch's LSTM equations, from zeros."""
    H = p["weight_hh"].shape[1]
    h = c = np.zeros((xs.shape[1], H))
    steps = []
    for x in xs:
        a = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c_previous, c = c, f * c + i * g
        h = o * np.tanh(c)
        steps.append({"h": h, "c": c, "c_previous": c_previous, "i": i, "f": f, "g": g, "o": o})
    return steps


def lstm_deltas(p, xs, target) -> list:
    """[delta_0, ..., delta_T], delta_t = (dL/dh_t, dL/dc_t) from outside step t, by the LSTM's
    backward written out: dc' = dc'_out + dh' o (1 - tanh(c')^2), the gates' pre-activation gradients,
    then dh = their stack @ W_hh and dc = dc' f."""
    steps = lstm_forward(p, xs)
    dh = 2 * (steps[-1]["h"] - target) / target.size
    dc = np.zeros_like(dh)  # the loss reads h_T only
    deltas = [(dh, dc)]
    for s in steps[::-1]:
        dc_total = dc + dh * s["o"] * (1 - np.tanh(s["c"]) ** 2)
        gates = np.concatenate([dc_total * s["g"] * s["i"] * (1 - s["i"]),
                                dc_total * s["c_previous"] * s["f"] * (1 - s["f"]),
                                dc_total * s["i"] * (1 - s["g"] ** 2),
                                dh * np.tanh(s["c"]) * s["o"] * (1 - s["o"])], axis=1)
        dh, dc = gates @ p["weight_hh"], dc_total * s["f"]
        deltas.append((dh, dc))
    return deltas[::-1]


def norms(deltas) -> np.ndarray:
    return np.array([np.sqrt(sum(np.sum(part**2) for part in (d if isinstance(d, tuple) else (d,)))) for d in deltas])


KINDS = {lesson.TANH: "tanh", lesson.RELU: "relu", lesson.IRNN: "relu", lesson.ORTHOGONAL: "tanh"}


def numpy_numbers(steps: int) -> dict:
    """Per net: the norms ||delta_t||, the factor and the median gain, and what the sentences quote."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(steps, lesson.BATCH, lesson.INPUTS))
    target = rng.normal(size=(lesson.BATCH, lesson.HIDDEN))
    nets = lesson.cells(np.random.default_rng(1))
    numbers = {}
    for label, cell in nets.items():
        p = parameters(cell)
        deltas = lstm_deltas(p, xs, target) if "LSTM" in label else rnn_deltas(p, xs, target, KINDS[label])
        size = norms(deltas)
        numbers[label] = {"norms": size, "deltas": deltas, "factor": size[0] / size[-1],
                          "gains": size[:-1] / size[1:], "gain": np.median(size[:-1] / size[1:]), "p": p}
    numbers["xs"], numbers["target"] = xs, target
    return numbers


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return lesson.main(quick=True, out=tmp_path_factory.mktemp("lesson3"))


@pytest.fixture(scope="module")
def full():
    return numpy_numbers(100)


def test_lesson_3_writes_its_pictures_as_png_and_svg(quick):
    names = {Path(p).name for p in quick["paths"]}
    assert names == {f"03_cells_and_inits{kind}.{suffix}" for kind in ("", "_steps") for suffix in ("png", "svg")}
    assert all(Path(p).stat().st_size > 500 for p in quick["paths"])


def test_lesson_3_hand_written_lstm_backward_agrees_with_central_differences():
    rng = np.random.default_rng(5)
    cell = lesson.nn.LSTMCell(3, 4, rng=rng)
    p = parameters(cell)
    xs, target = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 4))
    last_step_from = lambda h0, c0: _lstm_loss(p, xs, target, h0, c0)  # noqa: E731
    eps, h0, c0 = 1e-6, np.zeros((2, 4)), np.zeros((2, 4))
    numeric = [np.zeros((2, 4)), np.zeros((2, 4))]
    for part, base in enumerate((h0, c0)):
        for index in np.ndindex(base.shape):
            up, down = [h0.copy(), c0.copy()], [h0.copy(), c0.copy()]
            up[part][index] += eps
            down[part][index] -= eps
            numeric[part][index] = (last_step_from(*up) - last_step_from(*down)) / (2 * eps)
    dh, dc = lstm_deltas(p, xs, target)[0]
    np.testing.assert_allclose(dh, numeric[0], rtol=1e-6, atol=1e-9)  # central differences of a loss near 1: roundoff ~1e-10
    np.testing.assert_allclose(dc, numeric[1], rtol=1e-6, atol=1e-9)  # central differences of a loss near 1: roundoff ~1e-10


def _lstm_loss(p, xs, target, h, c):
    H = h.shape[1]
    for x in xs:
        a = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return np.mean((h - target) ** 2)


def test_lesson_3_every_net_s_step_numbers_equal_hand_written_bptt(quick):
    expected = numpy_numbers(20)
    for label, (_, _, rows) in quick["runs"].items():
        np.testing.assert_allclose([r.grad_norm for r in rows], expected[label]["norms"], rtol=1e-9, err_msg=label)
        np.testing.assert_allclose([r.gain for r in rows[1:]], expected[label]["gains"], rtol=1e-9, err_msg=label)
        assert quick["numbers"][label]["factor"] == pytest.approx(expected[label]["factor"], rel=1e-8)


def test_lesson_3_orthogonal_gain_is_exactly_what_tanh_derivative_does(quick):
    expected = numpy_numbers(20)[lesson.ORTHOGONAL]
    hidden = rnn_forward(expected["p"], numpy_numbers(20)["xs"], "tanh")
    shrink = [np.linalg.norm((1 - h**2) * d) / np.linalg.norm(d) for h, d in zip(hidden, expected["deltas"][1:])]
    np.testing.assert_allclose(quick["tanh_share"]["shrink"], shrink, rtol=1e-10)
    np.testing.assert_allclose(expected["gains"], shrink, rtol=1e-10)  # W_hh^T keeps lengths: nothing else acts
    assert quick["linear_factor"] == pytest.approx(1.0, abs=1e-12)


def test_lesson_3_irnn_sentence_what_arrives_is_what_the_always_active_pairs_hold(quick):
    paths = quick["irnn_paths"]
    assert paths["share"] == pytest.approx(quick["factors"][lesson.IRNN], rel=1e-12)
    assert 0 < paths["always_active"] < paths["pairs"] == lesson.BATCH * lesson.HIDDEN


def test_lesson_3_full_size_factors_and_gains_as_the_docs_quote(full):
    quoted = {lesson.TANH: (4.2e-31, 0.505), lesson.RELU: (1.5e-40, 0.409), lesson.IRNN: (0.35, 1.0),
              lesson.ORTHOGONAL: (1.6e-8, 0.837), lesson.LSTM: (1.6e-22, 0.609), lesson.OPEN_LSTM: (2.5e-3, 0.95)}
    for label, (factor, gain) in quoted.items():
        assert full[label]["factor"] == pytest.approx(factor, rel=0.03), label
        assert full[label]["gain"] == pytest.approx(gain, abs=0.005), label
    verdicts = {label: "vanishing" if full[label]["factor"] < 1e-3 else "stable" for label in quoted}
    assert [label for label, v in verdicts.items() if v == "stable"] == [lesson.IRNN, lesson.OPEN_LSTM]
    assert 1 / full[lesson.OPEN_LSTM]["factor"] == pytest.approx(401, abs=1)


def test_lesson_3_full_size_orthogonal_tanh_and_linear_numbers(full):
    p = full[lesson.ORTHOGONAL]["p"]
    np.testing.assert_allclose(p["weight_hh"] @ p["weight_hh"].T, np.eye(lesson.HIDDEN), atol=1e-12)
    hidden = np.array(rnn_forward(p, full["xs"], "tanh"))
    assert np.mean(1 - hidden**2) == pytest.approx(0.82, abs=0.005)
    linear = norms(rnn_deltas(p, full["xs"], full["target"], "identity"))
    assert linear[0] / linear[-1] == pytest.approx(1.0, abs=1e-9)


def test_lesson_3_full_size_irnn_keeps_what_the_always_active_pairs_hold(full):
    p, deltas = full[lesson.IRNN]["p"], full[lesson.IRNN]["deltas"]
    active = np.all([h > 0 for h in rnn_forward(p, full["xs"], "relu")], axis=0)
    assert active.sum() == 4 and active.size == 64
    share = np.linalg.norm(deltas[-1] * active) / np.linalg.norm(deltas[-1])
    assert share == pytest.approx(full[lesson.IRNN]["factor"], rel=1e-12)
    assert share == pytest.approx(0.35, abs=0.005)


def test_lesson_3_full_size_default_init_radius_and_lstm_forget_gates(full):
    radius = {label: max(abs(np.linalg.eigvals(full[label]["p"]["weight_hh"]))) for label in (lesson.TANH, lesson.RELU)}
    assert radius[lesson.TANH] == pytest.approx(0.59, abs=0.005)
    assert radius[lesson.RELU] == pytest.approx(0.51, abs=0.005)
    assert abs(radius[lesson.TANH] - 1 / np.sqrt(3)) < 0.1 and abs(radius[lesson.RELU] - 1 / np.sqrt(3)) < 0.1
    gates = {label: np.mean([s["f"] for s in lstm_forward(full[label]["p"], full["xs"])])
             for label in (lesson.LSTM, lesson.OPEN_LSTM)}
    assert gates[lesson.LSTM] == pytest.approx(0.5, abs=0.05)  # "near sigmoid(0) = 0.5"
    assert gates[lesson.OPEN_LSTM] == pytest.approx(sigmoid(2.0), abs=0.05)  # "sigmoid(2) = 0.88"


def test_lesson_3_runs_as_a_script_from_another_directory_without_out(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "03_cells_and_inits.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lessons" / "03_cells_and_inits.png").exists()
