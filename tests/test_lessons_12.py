"""Lesson 12 (truncated BPTT): its printed numbers, its pictures' numbers and its sentences, each checked
against an independent computation: truncated backpropagation written out in numpy with the
hand-derived Jacobian diag(1 - h_t^2) W_hh and the gradient reset at every cut; the hand rule of which
losses reach which steps; the test errors and the readout of the untrained net recomputed with PyTorch's
cell equations in numpy (the readout by the normal equations); the memory a window holds measured by
tracemalloc."""

import contextlib
import gc
import importlib
import io
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_rnn_cell

import tinygrad_rnn as tg
from tinygrad_rnn import nn

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("12_truncated_bptt")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick run, once: (its result, what it printed, the folder of its pictures)."""
    out = tmp_path_factory.mktemp("lesson12")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = lesson.main(quick=True, out=out)
    return result, " ".join(printed.getvalue().split()), out


# ---- independent computations -------------------------------------------------------------------

def parameters(cell, head) -> dict:
    return {**{k: np.array(v.data, dtype=np.float64) for k, v in cell.named_parameters()},
            "weight": np.array(head.weight.data, dtype=np.float64), "bias": np.array(head.bias.data, np.float64)}


def numpy_truncated_bptt(p: dict, inputs: np.ndarray, targets: np.ndarray, delay: int, window: int | None):
    """The delayed copy's loss L = mean over t > d and the batch of (h_t w^T + b - x_{t-d})^2, and its
    truncated backward pass by hand: the loss term at step t sends dl_t/dh_t = 2 (out_t - y) w / N into
    h_t, and the gradient crosses step j + 1 back to h_j unless the state was detached after step j
    (j a multiple of the window, j >= 1). Returns (loss, deltas, grads): deltas[t][j] the gradient
    term t alone sends to h_j (None where none arrives), grads the summed weight gradients."""
    length, batch = inputs.shape[0], inputs.shape[1]
    hs = [np.zeros((batch, p["weight_hh"].shape[0]))]
    for x in inputs:
        hs.append(np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + hs[-1] @ p["weight_hh"].T + p["bias_hh"]))
    count = (length - delay) * batch
    outputs = {t: hs[t] @ p["weight"].T + p["bias"] for t in range(delay + 1, length + 1)}
    loss = sum(float(np.sum((outputs[t][:, 0] - targets[t - delay - 1]) ** 2)) for t in outputs) / count
    grads = {k: np.zeros_like(p[k]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    deltas = {}
    for t in outputs:
        deltas[t] = {t: 2.0 * (outputs[t][:, 0] - targets[t - delay - 1])[:, None] * p["weight"] / count}
        j = t
        while j >= 1:
            pre = deltas[t][j] * (1.0 - hs[j] ** 2)  # through tanh at step j
            grads["weight_hh"] += pre.T @ hs[j - 1]
            grads["weight_ih"] += pre.T @ inputs[j - 1]
            grads["bias_ih"] += pre.sum(axis=0)
            grads["bias_hh"] += pre.sum(axis=0)
            if window is not None and (j - 1) % window == 0 and j - 1 >= 1:
                break  # h_{j-1} was detached after step j - 1: the gradient stops here
            deltas[t][j - 1] = pre @ p["weight_hh"]
            j -= 1
    return loss, deltas, grads


def numpy_test_mse(state: dict, inputs: np.ndarray, targets: np.ndarray, delay: int) -> float:
    cell, head = state["cell"], state["head"]
    h = np.zeros((inputs.shape[1], cell["weight_hh"].shape[0]))
    errors = []
    for t, x in enumerate(inputs, start=1):
        h = numpy_rnn_cell(cell, x, h)
        if t > delay:
            errors.append((h @ head["weight"].T + head["bias"])[:, 0] - targets[t - delay - 1])
    return float(np.mean(np.square(errors)))


# ---- the run ------------------------------------------------------------------------------------

def test_lesson_12_writes_its_pictures_as_png_and_svg(quick):
    result, _, _ = quick
    names = sorted(Path(p).name for p in result["paths"])
    assert names == ["12_truncated_bptt.png", "12_truncated_bptt.svg", "12_truncated_bptt_reach.png",
                     "12_truncated_bptt_reach.svg"]
    assert all(Path(p).stat().st_size > 5000 for p in result["paths"])


def test_lesson_12_runs_from_another_directory_without_arguments(tmp_path):
    done = subprocess.run([sys.executable, str(LESSONS / "12_truncated_bptt.py"), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "lessons" / "12_truncated_bptt_reach.png").exists()


# ---- the reach ----------------------------------------------------------------------------------

def test_reach_matrices_equal_truncated_backpropagation_written_in_numpy(quick):
    result, _, _ = quick
    reach = result["reach"]
    p = parameters(reach["cell"], reach["head"])
    for window, matrix in reach["matrices"].items():
        _, deltas, _ = numpy_truncated_bptt(p, reach["inputs"], reach["targets"], reach["delay"], window)
        expected = np.zeros_like(matrix)
        for t, row in deltas.items():
            for j, delta in row.items():
                expected[t, j] = np.linalg.norm(delta)
        np.testing.assert_allclose(matrix, expected, rtol=1e-10, atol=1e-300)


def test_a_loss_reaches_its_input_only_from_a_position_past_the_delay(quick):
    """The hand rule: the loss at step t sits at position p = t - k floor((t - 1) / k) of its window; it
    reaches step t - d (where x_{t-d} enters) exactly when p > d."""
    result, printed, _ = quick
    reach = result["reach"]
    k, d, length = reach["window"], reach["delay"], reach["length"]
    expected = [t for t in range(d + 1, length + 1) if t - k * ((t - 1) // k) > d]
    assert result["seen"] == expected
    assert "t = " + ", ".join(map(str, expected)) in printed
    full = reach["matrices"][None]
    assert all(full[t, t - d] > 0 for t in range(d + 1, length + 1))  # without truncation every loss does


def test_the_lessons_hand_rule_says_which_steps_each_loss_reaches_as_numpy_bptt_does():
    rng = np.random.default_rng(5)
    cell, head = nn.RNNCell(1, 4, rng=rng), nn.Linear(4, 1, rng=rng)
    inputs, targets = lesson.copy_batch(3, 12, 4, rng)
    for window in (1, 2, 3, 4, 5, 8, None):
        _, deltas, _ = numpy_truncated_bptt(parameters(cell, head), inputs, targets, 4, window)
        for t, row in deltas.items():
            assert {j for j in row if j >= 1} == {j for j in range(1, t + 1) if lesson.reachable(t, j, window)}


def test_a_loss_never_reaches_its_input_when_the_delay_is_not_shorter_than_the_window():
    rng = np.random.default_rng(5)
    cell, head = nn.RNNCell(1, 4, rng=rng), nn.Linear(4, 1, rng=rng)
    inputs, targets = lesson.copy_batch(3, 12, 4, rng)
    for window in (1, 2, 3, 4):
        _, deltas, _ = numpy_truncated_bptt(parameters(cell, head), inputs, targets, 4, window)
        assert all(t - 4 not in row for t, row in deltas.items())
    _, deltas, _ = numpy_truncated_bptt(parameters(cell, head), inputs, targets, 4, 5)
    assert [t for t, row in deltas.items() if t - 4 in row] == [5, 10]  # position 5 > d = 4 in windows of 5


# ---- what is learnt -------------------------------------------------------------------------------

def test_truncated_weight_gradient_equals_numpy_truncated_bptt():
    rng = np.random.default_rng(2)
    cell, head = nn.RNNCell(1, 5, rng=rng), nn.Linear(5, 1, rng=rng)
    inputs, targets = lesson.copy_batch(4, 10, 2, rng)
    for window in (1, 3, 4, None):
        for param in (*cell.parameters(), *head.parameters()):
            param.grad = None
        loss = lesson.copy_loss(cell, head, inputs, targets, 2, window)
        loss.backward()
        expected_loss, _, grads = numpy_truncated_bptt(parameters(cell, head), inputs, targets, 2, window)
        assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
        for name, expected in grads.items():
            np.testing.assert_allclose(getattr(cell, name).grad, expected, rtol=1e-9, atol=1e-15)


def test_printed_test_mse_equals_the_trained_weights_run_in_numpy(quick):
    result, printed, _ = quick
    size = lesson.QUICK
    for (d, _, _), run in result["runs"].items():
        inputs, targets = lesson.copy_batch(size["test"], size["length"], d, np.random.default_rng(100 + d))
        assert np.mean(targets**2) == 1.0  # the baseline: predicting 0 scores E[x^2] = 1 for x = +-1
        assert run["test"] == pytest.approx(numpy_test_mse(run["state"], inputs, targets, d), rel=1e-10)
    for d in size["delays"]:
        row = "".join(f"{result['runs'][d, k, size['seeds'][0]]['test']:.2f}" for k in size["windows"])
        assert row in printed.replace(" ", "")


def test_readout_alone_equals_the_normal_equations_on_numpy_states(quick):
    result, _, _ = quick
    size, seed = lesson.QUICK, lesson.QUICK["seeds"][0]
    cell = nn.RNNCell(1, lesson.HIDDEN, rng=np.random.default_rng(seed))
    p = {k: np.array(v.data) for k, v in cell.named_parameters()}
    for d, measured in result["readout"].items():
        inputs, targets = lesson.copy_batch(2000, size["length"], d, np.random.default_rng(200 + d))
        h, states = np.zeros((2000, lesson.HIDDEN)), []
        for x in inputs:
            h = numpy_rnn_cell(p, x, h)
            states.append(h)
        features = np.concatenate([np.stack(states[d:]), np.ones((size["length"] - d, 2000, 1))], axis=-1)
        fit, score = features[:, :1000].reshape(-1, lesson.HIDDEN + 1), features[:, 1000:].reshape(-1, lesson.HIDDEN + 1)
        weights = np.linalg.solve(fit.T @ fit, fit.T @ targets[:, :1000].reshape(-1))
        expected = np.mean((score @ weights - targets[:, 1000:].reshape(-1)) ** 2)
        assert measured == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_sentences_count_the_runs_the_table_shows(quick):
    result, printed, _ = quick
    beyond = [r["test"] for (d, k, _), r in result["runs"].items() if k is not None and d >= k]
    inside = [r["test"] for (d, k, _), r in result["runs"].items() if k is None or d < k]
    learnt = sum(m < 0.1 for m in beyond)
    partly = sum(0.1 <= m < 0.5 for m in beyond)
    assert f"Of the {len(beyond)} runs with d >= k, {learnt} learnt it, {partly} partly" in printed
    if max(inside) < 0.1:
        assert f"Every run with d < k (or no truncation) learnt the copy: test MSE at most {max(inside):.3f}" in printed


# ---- the cost -----------------------------------------------------------------------------------

def test_a_windows_memory_grows_by_the_same_bytes_per_step(quick):
    result, printed, _ = quick
    cost = result["cost"]
    ks = list(cost)
    per_step = [(cost[b]["bytes"] - cost[a]["bytes"]) / (b - a) for a, b in zip(ks, ks[1:])]
    assert len(set(per_step)) == 1  # exactly linear in k
    batch, hidden = lesson.QUICK["batch"], lesson.HIDDEN
    assert per_step[0] >= 2 * batch * hidden * 8  # at least h_t and tanh's input per step, float64
    assert f"{per_step[0] / 1024:.1f} KB more per step of window" in printed


def test_memory_per_step_agrees_with_tracemalloc():
    """An independent measure of what a window's graph keeps alive: the memory traced between the start of
    the forward pass and the loss, per step of window; the graph's arrays are most of it (the rest is the
    Values and Python objects around them)."""
    rng = np.random.default_rng(0)
    cell, head = nn.RNNCell(1, lesson.HIDDEN, rng=rng), nn.Linear(lesson.HIDDEN, 1, rng=rng)
    measured = {}
    for window in (8, 32):
        inputs = rng.choice([-1.0, 1.0], size=(window + 2, 16, 1))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        hidden, _ = nn.RNN(cell)(inputs[2:], h0=cell.initial_state(16))
        loss = nn.mse_loss(head(tg.stack(hidden)).reshape(window, -1), inputs[:window, :, 0])
        measured[window] = (tracemalloc.get_traced_memory()[0] - before, lesson.graph_bytes(loss))
        tracemalloc.stop()
        del loss, hidden
    traced = (measured[32][0] - measured[8][0]) / 24
    counted = (measured[32][1] - measured[8][1]) / 24
    assert counted <= traced <= 1.5 * counted
