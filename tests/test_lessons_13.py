"""Lesson 13 (inside gated cells): its paths, gate gradients, per-step contributions and frozen GRU, each
checked against an independent computation: PyTorch's cell equations in plain numpy, central differences
in float64, and the hand-derived cell path dL/dc_0 = dL/dc_T * f_1 * ... * f_T."""

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy_cells import numpy_gru_cell, sigmoid

from tinygrad_rnn import diagnostics

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "examples" / "lessons"
sys.path.insert(0, str(LESSONS))

pytest.importorskip("matplotlib")
lesson = importlib.import_module("13_gated_cells")
ALL, CELL, HIDDEN = lesson.ROUTES
HEALTHY, FROZEN, OPEN_LSTM = ("GRU, update-gate bias 0", f"GRU, update-gate bias {lesson.FROZEN_BIAS:g} (z ≈ 1: frozen)",
                              f"LSTM, forget-gate bias {lesson.FROZEN_BIAS:g} (f ≈ 1)")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The quick run, once: (its result, what it printed, as one line)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = lesson.main(quick=True, out=tmp_path_factory.mktemp("lesson13"))
    return result, " ".join(printed.getvalue().split())


def weights(kind, bias):
    return {name: np.array(value) for name, value in lesson.gated_cell(kind, bias).state_dict().items()}


def lstm_gates(p, x, h):
    """PyTorch's LSTM gates i, f, g, o in numpy."""
    pre = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    i, f, g, o = np.split(pre, 4, axis=-1)
    return sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)


def lstm_forward(p, xs, h0, c0, held_h=None, held_c=None):
    """h_T, and every step's (gates, c_t); held_h / held_c: the gates read these recorded h_{t-1}, or
    f * c reads these recorded c_{t-1}, instead of the running ones (the paths cut)."""
    h, c, record = h0, c0, []
    for t, x in enumerate(xs):
        i, f, g, o = lstm_gates(p, x, h if held_h is None else held_h[t])
        c = f * (c if held_c is None else held_c[t]) + i * g
        h = o * np.tanh(c)
        record.append(((i, f, g, o), c, h))
    return h, record


def central_differences(loss, point, eps=1e-6):
    grad = np.zeros_like(point)
    for k in np.ndindex(point.shape):
        up, down = point.copy(), point.copy()
        up[k] += eps
        down[k] -= eps
        grad[k] = (loss(up) - loss(down)) / (2 * eps)
    return grad


@pytest.fixture(scope="module", params=[0.0, 2.0])
def lstm_case(request, quick):
    result, _ = quick
    bias = request.param
    p, xs, u = weights("LSTM", bias), result["xs"], result["u"]
    zeros = np.zeros_like(u)
    _, record = lstm_forward(p, xs, zeros, zeros)
    return {"bias": bias, "p": p, "xs": xs, "u": u, "zeros": zeros, "record": record,
            "routes": result["routes"][bias]}


def test_the_lesson_writes_a_png_and_an_svg_of_each_picture(quick):
    names = {Path(p).name for p in quick[0]["paths"]}
    kinds = ("paths", "gates", "frozen", "frozen_gru_op_view")
    assert names == {f"13_gated_cells_{kind}.{suffix}" for kind in kinds for suffix in ("png", "svg")}


def test_all_paths_gradient_at_s_0_equals_central_differences(lstm_case):
    c = lstm_case
    loss_h = lambda h0: np.sum(c["u"] * lstm_forward(c["p"], c["xs"], h0, c["zeros"])[0])  # noqa: E731
    loss_c = lambda c0: np.sum(c["u"] * lstm_forward(c["p"], c["xs"], c["zeros"], c0)[0])  # noqa: E731
    dh, dc = c["routes"][ALL][0]
    np.testing.assert_allclose(dh, central_differences(loss_h, c["zeros"]), rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(dc, central_differences(loss_c, c["zeros"]), rtol=1e-5, atol=1e-10)


def test_cell_path_alone_is_the_product_of_the_forget_gates(lstm_case):
    c = lstm_case
    (_, _, _, o_last), c_last, _ = c["record"][-1]
    into_c_last = c["u"] * o_last * (1 - np.tanh(c_last) ** 2)  # h_T = o_T tanh(c_T)
    forget_product = np.prod([gates[1] for gates, _, _ in c["record"]], axis=0)
    dh, dc = c["routes"][CELL][0]
    np.testing.assert_allclose(dc, into_c_last * forget_product, rtol=1e-10, atol=1e-300)
    assert not dh.any()


def test_hidden_path_alone_equals_central_differences_with_every_c_held(lstm_case):
    """f * c reads the recorded c_{t-1} as a constant: then dL/dh_k by differences is the hidden path's
    alone. Five steps back, where differences still resolve it (at s_0 it is ~1e-18)."""
    c = lstm_case
    steps = len(c["xs"])
    held_c = [c["zeros"]] + [cell for _, cell, _ in c["record"][:-1]]
    k = steps - 5

    def loss(h_k):
        return np.sum(c["u"] * lstm_forward(c["p"], c["xs"][k:], h_k, c["zeros"], held_c=held_c[k:])[0])

    dh, dc = c["routes"][HIDDEN][k]
    expected = central_differences(loss, c["record"][k - 1][2])
    assert np.linalg.norm(dh - expected) < 1e-5 * np.linalg.norm(expected)  # differences' own error: ~1e-6
    assert not dc.any() and not c["routes"][HIDDEN][0][1].any()


def test_all_paths_norms_equal_the_delta_norms_of_diagnostics_steps(quick):
    result, _ = quick
    from tinygrad_rnn import nn

    for bias, by_route in result["routes"].items():
        cell = lesson.gated_cell("LSTM", bias)
        outputs, states = nn.RNN(cell)(result["xs"], return_states=True)
        loss = (outputs[-1] * result["u"]).sum()
        loss.backward()
        expected = [r.grad_norm for r in diagnostics.steps(loss, states)]
        np.testing.assert_allclose(lesson.norms(by_route[ALL]), expected, rtol=1e-9)


def test_printed_claims_about_the_paths_hold(quick):
    result, printed = quick
    for by_route in result["routes"].values():
        whole, cell, hidden = (lesson.norms(d) for d in by_route.values())
        assert whole[0] > cell[0] > hidden[0]  # both paths > the cell path alone > the hidden path alone
        assert hidden[-11] < 1e-6  # "ten steps back almost nothing is left"
        assert f"is {whole[0]:.2g} with all paths, {cell[0]:.2g} on the cell path alone" in printed


def test_per_step_contributions_add_up_to_the_shared_weights_gradient(quick):
    for run in quick[0]["frozen"].values():
        for name, tied in run["tied"].items():
            np.testing.assert_allclose(sum(c[name] for c in run["contributions"]), tied, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("t", [1, 10, 20])
def test_a_steps_contribution_equals_central_differences_on_that_steps_copy(quick, t):
    """C_t for b_ih of the GRU with bias 0: perturb the bias used at step t only, in numpy."""
    result, _ = quick
    p, xs, u = weights("GRU", 0.0), result["xs"], result["u"]

    def loss(bias_at_t):
        h = np.zeros_like(u)
        for k, x in enumerate(xs, 1):
            h = numpy_gru_cell({**p, "bias_ih": bias_at_t} if k == t else p, x, h)
        return np.sum(u * h)

    expected = central_differences(loss, p["bias_ih"], eps=1e-4)  # C_1 is ~1e-7: keep round-off below it
    measured = result["frozen"][HEALTHY]["contributions"][t - 1]["bias_ih"]
    assert np.linalg.norm(measured - expected) < 1e-5 * np.linalg.norm(expected)


def test_a_gru_with_its_update_gate_at_1_passes_the_gradient_whole_and_gives_the_weights_nothing(quick):
    result, printed = quick
    p, xs, u = weights("GRU", lesson.FROZEN_BIAS), result["xs"], result["u"]

    def run(params, h0):
        h = h0
        for x in xs:
            h = numpy_gru_cell(params, x, h)
        return np.sum(u * h)

    zeros = np.zeros_like(u)
    np.testing.assert_allclose(central_differences(lambda h0: run(p, h0), zeros), u, atol=1e-8)
    weight_grad = central_differences(lambda w: run({**p, "weight_hh": w}, zeros), p["weight_hh"])
    assert np.abs(weight_grad).max() < 1e-8
    frozen = result["frozen"][FROZEN]
    assert np.all(np.abs(frozen["gains"] - 1) < 1e-6)
    assert frozen["contribution_norms"].max() < 1e-6 * frozen["delta_norms"].min()  # diagnostics' FROZEN rule
    healthy, open_lstm = result["frozen"][HEALTHY], result["frozen"][OPEN_LSTM]
    assert healthy["contribution_norms"].max() > 0.1 and open_lstm["contribution_norms"][0] > 0.1
    assert f"no step gives the weights more than {frozen['contribution_norms'].max():.1g}" in printed


def test_the_frozen_gru_op_view_carries_the_gradient_whole_to_h_0(quick):
    op_view = quick[0]["op_view"]
    assert op_view["dL/dh_0"] == pytest.approx(1.0, abs=1e-7) and op_view["weight_hh_grad"] < 1e-7


def test_mean_gate_values_read_from_the_graph_equal_numpy_gates(quick):
    result, _ = quick
    xs, zeros = result["xs"], np.zeros_like(result["u"])
    for row in result["sweeps"]["LSTM"]["rows"]:
        _, record = lstm_forward(weights("LSTM", row["bias"]), xs, zeros, zeros)
        assert row["gate"] == pytest.approx(np.mean([gates[1] for gates, _, _ in record]), rel=1e-12)
    for row in result["sweeps"]["GRU"]["rows"]:
        p, h, update_gates = weights("GRU", row["bias"]), zeros, []
        for x in xs:
            pre = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
            update_gates.append(sigmoid(np.split(pre, 3, axis=-1)[1]))  # z: the second block
            h = numpy_gru_cell(p, x, h)
        assert row["gate"] == pytest.approx(np.mean(update_gates), rel=1e-12)


def test_forget_gate_gradient_at_bias_0_equals_central_differences_over_its_rows(quick):
    result, _ = quick
    p, xs, u = weights("LSTM", 0.0), result["xs"], result["u"]
    rows = slice(16, 32)
    zeros = np.zeros_like(u)
    total = 0.0
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        def loss(values, name=name):
            changed = p[name].copy()
            changed[rows] = values
            return np.sum(u * lstm_forward({**p, name: changed}, xs, zeros, zeros)[0])
        total += np.sum(central_differences(loss, p[name][rows].copy()) ** 2)
    measured = result["sweeps"]["LSTM"]["rows"][0]["gates"]["forget gate f"]
    assert measured == pytest.approx(np.sqrt(total), rel=1e-6)


def test_printed_claims_about_saturated_gates_hold(quick):
    result, printed = quick
    lstm, gru = result["sweeps"]["LSTM"]["rows"], result["sweeps"]["GRU"]["rows"]
    ratio = {g: lstm[-1]["gates"][g] / lstm[0]["gates"][g] for g in lesson.GATES["LSTM"]}
    assert ratio.pop("forget gate f") < 1e-5 and min(ratio.values()) > 1  # f stops learning, the rest learn more
    assert all(gru[-1]["gates"][g] / gru[0]["gates"][g] < 1e-5 for g in lesson.GATES["GRU"])
    assert gru[-1]["kept"] == pytest.approx(1, abs=1e-6) and gru[0]["kept"] < 1e-3
    assert lstm[-1]["slope"] < 1e-8 and lstm[0]["slope"] == pytest.approx(0.25, abs=0.01)
    assert f"its slope f(1 - f) from {lstm[0]['slope']:.2g} to {lstm[-1]['slope']:.2g}" in printed


def test_the_lesson_runs_from_another_directory_without_an_out_folder_in_quick_mode(tmp_path):
    result = subprocess.run([sys.executable, str(LESSONS / "13_gated_cells.py"), "--quick"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "lessons" / "13_gated_cells_frozen_gru_op_view.png").exists()
