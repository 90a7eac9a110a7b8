"""Lesson 11 (long lags): its printed numbers and its sentences, each checked against an independent
computation: the baselines against their closed forms (Var(X1 + X2) = 1/6, chance 3/4) and against the
test targets in numpy; the test errors against the trained weights run through PyTorch's cell
equations written in numpy; the reach ||delta_0|| / ||delta_T|| against central differences of the loss
with respect to the initial state, in float64."""

import contextlib
import importlib
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_gru_cell, numpy_lstm_cell, numpy_rnn_cell

from tinygrad_rnn import data

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("11_long_lags")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick run, once: (its result, what it printed, the folder of its pictures)."""
    out = tmp_path_factory.mktemp("lesson11")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = lesson.main(quick=True, out=out)
    return result, " ".join(printed.getvalue().split()), out


# ---- independent computations -------------------------------------------------------------------

def numpy_forward(name: str, state: dict, inputs: np.ndarray, start=None):
    """The trained net's last hidden state and its head's output, in float64 numpy (PyTorch's cell
    equations); ``start``: the initial state as one flat vector (h, or h then c), zeros if None."""
    cell = {k: v.astype(np.float64) for k, v in state["cell"].items()}
    head = {k: v.astype(np.float64) for k, v in state["head"].items()}
    batch, hidden = inputs.shape[1], cell["weight_hh"].shape[1]
    start = np.zeros(batch * hidden * (2 if name.startswith("LSTM") else 1)) if start is None else start
    h = start[: batch * hidden].reshape(batch, hidden)
    c = start[batch * hidden:].reshape(batch, hidden) if name.startswith("LSTM") else None
    for x in inputs.astype(np.float64):
        if name.startswith("LSTM"):
            h, c = numpy_lstm_cell(cell, x, h, c)
        elif name == "GRU":
            h = numpy_gru_cell(cell, x, h)
        else:
            h = numpy_rnn_cell(cell, x, h, "relu" if name.startswith("IRNN") else "tanh")
    return h, h @ head["weight"].T + head["bias"]


def numpy_loss(task_name: str, output: np.ndarray, targets: np.ndarray) -> float:
    if task_name == "adding":
        return float(np.mean((output[:, 0] - targets) ** 2))
    shifted = output - output.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(targets)), targets]))


def reach_by_differences(task_name: str, name: str, state: dict, probe: tuple, eps: float = 1e-6) -> float:
    """||dL/ds_0|| / ||dL/dh_T||, the numerator by central differences of the whole forward pass with
    respect to the initial state (h_0, and c_0 for an LSTM), the denominator by hand: the loss reads
    h_T through the head only, dL/dh_T = dL/d(output) W (the LSTM's c_T is read by nothing outside
    step T, so its part of delta_T is 0)."""
    inputs, targets = probe
    batch, hidden = inputs.shape[1], state["cell"]["weight_hh"].shape[1]
    size = batch * hidden * (2 if name.startswith("LSTM") else 1)
    gradient = np.zeros(size)
    for k in range(size):
        up, down = np.zeros(size), np.zeros(size)
        up[k], down[k] = eps, -eps
        gradient[k] = (numpy_loss(task_name, numpy_forward(name, state, inputs, up)[1], targets)
                       - numpy_loss(task_name, numpy_forward(name, state, inputs, down)[1], targets)) / (2 * eps)
    _, output = numpy_forward(name, state, inputs)
    if task_name == "adding":
        d_output = 2.0 * (output[:, 0] - targets)[:, None] / batch
    else:
        softmax = np.exp(output - output.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        d_output = (softmax - np.eye(output.shape[1])[targets]) / batch
    d_last = d_output @ state["head"]["weight"].astype(np.float64)
    return float(np.linalg.norm(gradient) / np.linalg.norm(d_last))


# ---- the run ------------------------------------------------------------------------------------

def test_lesson_11_writes_its_picture_as_png_and_svg(quick):
    result, _, out = quick
    names = sorted(Path(p).name for p in result["paths"])
    assert names == ["11_long_lags.png", "11_long_lags.svg"]
    assert all(Path(p).stat().st_size > 5000 for p in result["paths"])


def test_lesson_11_runs_from_another_directory_without_arguments(tmp_path):
    """The command line a reader types, from a fresh folder: it makes out/lessons there."""
    done = subprocess.run([sys.executable, str(LESSONS / "11_long_lags.py"), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "lessons" / "11_long_lags.png").exists()


# ---- the baselines ------------------------------------------------------------------------------

def test_adding_baseline_is_the_variance_of_the_test_targets_and_near_one_sixth(quick):
    result, printed, _ = quick
    r = result["results"]["adding"]
    for length in r["lengths"]:
        run = r["runs"]["GRU"][length]
        targets = run["test"][1].astype(np.float64)
        assert run["baseline"] == pytest.approx(np.mean((targets - targets.mean()) ** 2), rel=1e-12)
        assert f"{run['baseline']:.3f}" in printed


def test_adding_problem_targets_have_variance_one_sixth_as_the_docstring_says():
    """Y = X1 + X2, X uniform on [0, 1]: Var Y = 2/12; its fourth central moment is 1/15 (triangular),
    so the sample variance of n targets has standard error sqrt((1/15 - 1/36) / n)."""
    n = 100_000
    _, targets = data.adding_problem(n, 20, np.random.default_rng(3), variant="le2015")
    assert np.var(targets) == pytest.approx(1 / 6, abs=4 * math.sqrt((1 / 15 - 1 / 36) / n))
    assert lesson.Task("adding").loss_baseline() == pytest.approx(1 / 6)


def test_temporal_order_baseline_is_one_minus_the_commonest_class_and_near_three_quarters(quick):
    result, _, _ = quick
    r = result["results"]["order"]
    for length in r["lengths"]:
        run = r["runs"]["GRU"][length]
        _, counts = np.unique(run["test"][1], return_counts=True)
        assert run["baseline"] == pytest.approx(1 - counts.max() / counts.sum(), rel=1e-12)
    _, labels = data.temporal_order(100_000, 40, np.random.default_rng(3))
    shares = np.bincount(labels, minlength=4) / len(labels)
    assert shares == pytest.approx([0.25] * 4, abs=0.01)  # four classes, equally likely: guessing errs 3/4
    assert lesson.Task("order").loss_baseline() == pytest.approx(math.log(4))


# ---- the test errors and the reach ----------------------------------------------------------------

def test_printed_test_errors_equal_the_trained_weights_run_in_numpy(quick):
    result, printed, _ = quick
    for task_name, r in result["results"].items():
        for name in lesson.CELLS:
            for length in r["lengths"]:
                run = r["runs"][name][length]
                inputs, targets = run["test"]
                _, output = numpy_forward(name, run["state"], inputs)
                if task_name == "adding":
                    expected = np.mean((output[:, 0] - targets) ** 2)
                    assert run["error"] == pytest.approx(expected, rel=1e-4)  # float32 against float64
                else:
                    wrong = np.mean(output.argmax(axis=1) != targets)
                    assert abs(run["error"] - wrong) <= 1.0 / len(targets)  # at most one near-tie apart
                assert f"{run['error']:.3f}" in printed


def test_reach_after_training_equals_central_differences_of_the_loss(quick):
    result, _, _ = quick
    for task_name, r in result["results"].items():
        longest = r["lengths"][-1]
        for name in lesson.CELLS:
            run = r["runs"][name][longest]
            measured = run["reaches"][-1][1]
            expected = reach_by_differences(task_name, name, run["state"], r["probe"])
            if expected < 1e-9:  # a silent ReLU net: nothing gets back
                assert measured < 1e-6
            else:
                assert measured == pytest.approx(expected, rel=2e-3), (task_name, name)


def test_reach_is_measured_before_training_and_every_few_steps(quick):
    result, _, _ = quick
    size = lesson.QUICK
    run = result["results"]["adding"]["runs"]["GRU"][size["lengths"]["adding"][-1]]
    iterations = [i for i, _ in run["reaches"]]
    assert iterations == [*range(0, size["iterations"], size["probe_every"]), size["iterations"]]


# ---- the sentences ------------------------------------------------------------------------------

def test_verdicts_follow_the_thresholds_of_the_baseline():
    assert lesson.verdict(0.009, 0.1) == "learnt"
    assert lesson.verdict(0.011, 0.1) == "partly"
    assert lesson.verdict(0.049, 0.1) == "partly"
    assert lesson.verdict(0.051, 0.1) == "not learnt"


def test_printed_verdicts_are_the_thresholds_applied_to_the_printed_errors(quick):
    result, printed, _ = quick
    for (task_name, name), verdicts in result["verdicts"].items():
        for length, said in verdicts.items():
            error = result["errors"][task_name, name][length]
            assert said == lesson.verdict(error, result["baselines"][task_name][length])


def synthetic(errors: dict, reaches: dict, active: dict | None = None) -> tuple:
    """(results, numbers) for _sentences, one task (adding) at lengths 10 and 60."""
    lengths = (10, 60)
    baselines = {t: 0.16 for t in lengths}
    numbers = {"errors": {}, "baselines": {"adding": baselines}, "verdicts": {}, "reach": {}, "active": {}}
    for name in lesson.CELLS:
        numbers["errors"]["adding", name] = dict(zip(lengths, errors[name]))
        numbers["verdicts"]["adding", name] = {t: lesson.verdict(e, 0.16) for t, e in zip(lengths, errors[name])}
        numbers["reach"]["adding", name] = reaches[name]
        numbers["active"]["adding", name] = (active or {}).get(name, 1.0)
    return {"adding": {"lengths": lengths, "task": lesson.Task("adding")}}, numbers


def test_sentences_say_what_the_numbers_show():
    tanh, irnn, lstm0, lstm2, gru = lesson.CELLS
    errors = {tanh: (0.001, 0.16), irnn: (0.001, 0.16), lstm0: (0.001, 0.16), lstm2: (0.05, 0.16),
              gru: (0.001, 0.002)}
    reaches = {tanh: (1e-16, 1e-16), irnn: (0.6, 0.05), lstm0: (1e-13, 1e-10), lstm2: (3e-3, 1e-6),
               gru: (5e-12, 0.4)}
    text = " ".join(lesson._sentences(*synthetic(errors, reaches)))
    assert "tanh RNN learnt at T = 10;" in text
    assert "LSTM, forget bias 2 partly at T = 10;" in text
    assert "GRU learnt at T = 10, 60." in text
    assert "At T = 10, 4 of the 5 nets learnt it; at T = 60, 1." in text
    assert "reach of at least 0.4, every other net with at most 0.05" in text
    assert "the GRU's reach went from 5e-12 to 0.4" in text


def test_sentences_round_no_bound_past_the_number_it_bounds():
    """0.37 is not "at least 0.4", and 0.053 is not "at most 0.05": two significant digits."""
    tanh, irnn, lstm0, lstm2, gru = lesson.CELLS
    errors = {name: (0.001, 0.16) for name in lesson.CELLS} | {gru: (0.001, 0.002)}
    reaches = {tanh: (1e-16, 1e-16), irnn: (0.6, 0.053), lstm0: (1e-13, 1e-10), lstm2: (3e-3, 1e-6),
               gru: (4.8e-12, 0.37)}
    text = " ".join(lesson._sentences(*synthetic(errors, reaches)))
    assert "reach of at least 0.37, every other net with at most 0.053" in text
    assert "the IRNN (ReLU, W_hh = I) started with a reach above 0.1" in text


def test_sentences_say_nothing_the_numbers_do_not_show():
    tanh, irnn, lstm0, lstm2, gru = lesson.CELLS
    errors = {name: (0.16, 0.16) for name in lesson.CELLS} | {gru: (0.001, 0.001)}
    reaches = {tanh: (1e-16, 0.9), irnn: (0.6, 0.0), lstm0: (1e-13, 1e-10), lstm2: (3e-3, 1e-6), gru: (0.3, 0.4)}
    text = " ".join(lesson._sentences(*synthetic(errors, reaches, active={irnn: 0.0})))
    assert "of the 5 nets learnt it" not in text  # as many learnt at T = 10 as at T = 60
    assert "every other net" not in text  # the tanh RNN's reach (0.9) beats the GRU's (0.4)
    assert "can come to reach" not in text  # the GRU's reach did not grow 100 times
    assert "The IRNN (ReLU, W_hh = I) did not vanish, it died" in text
    assert "A gradient that reaches is not enough" not in text  # the IRNN died; no other started above 0.1
