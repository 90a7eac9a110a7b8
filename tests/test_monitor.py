"""Monitor keeps, per iteration, what a hand-kept log of the same training run says: the loss, the
gradient norms, the update ratios, the gradient per time step, and the first NaN or Inf with its op."""

import math
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import diagnostics, nn, optim
from tinygrad_rnn.diagnostics import Monitor


def _regression(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 3)), rng.normal(size=8)


def test_losses_grad_norms_and_update_ratios_match_a_hand_kept_log_of_sgd_with_momentum():
    x, y = _regression()
    w, b = tg.Value(np.array([0.5, -1.0, 2.0]), name="w"), tg.Value(0.3, name="b")
    monitor = Monitor({"w": w, "b": b})
    optimizer = optim.SGD([w, b], lr=0.05, momentum=0.9)
    for _ in range(6):
        loss = ((x @ w + b - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss)
        optimizer.step()
        monitor.after_step()

    # The same run by hand: L = mean((x w + b - y)^2), dL/dw = 2/n x^T r, dL/db = 2/n sum r,
    # PyTorch's momentum v <- mu v + g, theta <- theta - lr v.
    hw, hb = np.array([0.5, -1.0, 2.0]), 0.3
    vw, vb = np.zeros(3), 0.0
    log = {"loss": [], "grad_w": [], "grad_b": [], "ratio_w": [], "ratio_b": []}
    for _ in range(6):
        r = x @ hw + hb - y
        gw, gb = 2 / len(y) * x.T @ r, 2 / len(y) * r.sum()
        log["loss"].append(np.mean(r**2))
        log["grad_w"].append(np.linalg.norm(gw))
        log["grad_b"].append(abs(gb))
        vw, vb = 0.9 * vw + gw, 0.9 * vb + gb
        new_w, new_b = hw - 0.05 * vw, hb - 0.05 * vb
        log["ratio_w"].append(np.linalg.norm(new_w - hw) / np.linalg.norm(hw))
        log["ratio_b"].append(abs(new_b - hb) / abs(hb))
        hw, hb = new_w, new_b

    np.testing.assert_allclose(monitor.losses, log["loss"], rtol=1e-12)
    np.testing.assert_allclose(monitor.grad_norms["w"], log["grad_w"], rtol=1e-12)
    np.testing.assert_allclose(monitor.grad_norms["b"], log["grad_b"], rtol=1e-12)
    np.testing.assert_allclose(monitor.update_ratios["w"], log["ratio_w"], rtol=1e-10)
    np.testing.assert_allclose(monitor.update_ratios["b"], log["ratio_b"], rtol=1e-10)
    assert monitor.first_nonfinite is None and monitor.nonfinite_op is None
    assert monitor.iterations == 6


def test_first_nonfinite_is_the_iteration_whose_forward_first_made_nan_and_names_log():
    # L = log(a) and SGD with lr 1: a <- a - 1/a walks a down through 0, where log makes NaN.
    a = tg.Value(2.5, name="a")
    monitor, optimizer = Monitor([a]), optim.SGD([a], lr=1.0)
    for _ in range(8):
        optimizer.zero_grad()
        with np.errstate(all="ignore"):
            loss = a.log()
            loss.backward()
        monitor.after_backward(loss)
        optimizer.step()
        monitor.after_step()

    hand, first = 2.5, None
    for iteration in range(8):
        with np.errstate(all="ignore"):
            if first is None and not np.isfinite(np.log(hand)):
                first = iteration
            hand = hand - 1.0 / hand
    assert first is not None and first >= 2  # the run is finite for a while, then breaks
    assert monitor.first_nonfinite == first
    assert monitor.nonfinite_op == "log"
    assert monitor.nonfinite_report.forward is not None
    assert all(math.isfinite(v) for v in monitor.losses[:first])
    assert not math.isfinite(monitor.losses[first])


def test_first_nonfinite_catches_an_infinite_gradient_under_a_finite_loss_and_names_pow():
    # L = sqrt(a) + a at a = 0 is finite (0), but dL/da = 1/(2 sqrt(a)) + 1 is inf: born in pow's backward.
    a = tg.Value(1.0, name="a")
    monitor = Monitor({"a": a})
    for value in (1.0, 0.25, 0.0, 0.25):
        a.data = value
        a.grad = None
        loss = a**0.5 + a
        with np.errstate(all="ignore"):
            loss.backward()
        monitor.after_backward(loss)
    assert monitor.first_nonfinite == 2
    assert math.isfinite(monitor.losses[2]) and monitor.grad_norms["a"][2] == math.inf
    assert monitor.nonfinite_report.forward is None
    assert monitor.nonfinite_op == "pow"
    assert monitor.update_ratios["a"] == [None, None, None]  # no after_step: no update to measure


def test_first_nonfinite_keeps_the_first_iteration_not_the_latest():
    a = tg.Value(1.0)
    monitor = Monitor([a])
    for value in (1.0, -1.0, -2.0):
        a.data, a.grad = value, None
        with np.errstate(all="ignore"):
            loss = a.log()
            loss.backward()
        monitor.after_backward(loss)
    assert monitor.first_nonfinite == 1


def test_step_grad_norms_are_the_hand_derived_bptt_of_a_linear_scalar_rnn():
    # h_t = w h_{t-1} + x_t, L = h_T: dL/dh_t = w^(T - t), so the norms are w^T, ..., w, 1 (for the
    # constant h_0, what step 1 sends it).
    w, T = tg.Value(0.7, name="w"), 6
    monitor = Monitor([w])
    h = h0 = tg.Value(0.0, requires_grad=False)
    states = [h0]
    for t in range(1, T + 1):
        h = w * h + float(t)
        states.append(h)
    h.backward()
    monitor.after_backward(h, states)
    np.testing.assert_allclose(monitor.step_grad_norms[0], [0.7 ** (T - t) for t in range(T + 1)], rtol=1e-12)


def test_step_grad_norms_of_an_lstm_are_the_gradient_from_outside_each_step_over_h_and_c():
    cell = nn.LSTMCell(2, 3, rng=0)
    state = cell.initial_state(2)
    states = [state]
    for x in np.random.default_rng(1).normal(size=(4, 2, 2)):
        state = cell(x, state)
        states.append(state)
    loss = (state[0] ** 2).sum() + state[1].sum()
    loss.backward()
    monitor = Monitor(cell)
    monitor.after_backward(loss, states)
    for (h, c), norm in zip(states[1:], monitor.step_grad_norms[0][1:]):
        # Step t itself sends c_t the part h_t = o tanh(c_t) passes back: dL/dh_t o (1 - tanh^2 c_t).
        o = h.data / np.tanh(c.data)
        from_outside_c = c.grad - h.grad * o * (1 - np.tanh(c.data) ** 2)
        assert norm == pytest.approx(math.sqrt(np.sum(h.grad**2) + np.sum(from_outside_c**2)), rel=1e-9)


def test_monitor_names_a_modules_parameters_in_model_order():
    model = nn.Sequential(nn.Linear(2, 3, rng=0), nn.Tanh(), nn.Linear(3, 1, rng=1))
    assert list(Monitor(model).update_ratios) == [name for name, _ in model.named_parameters()]


def test_zero_parameter_that_moves_has_infinite_ratio_and_one_that_stays_has_zero():
    moving, still = tg.Value(np.zeros(2), name="moving"), tg.Value(np.zeros(2), name="still")
    monitor = Monitor([moving, still])
    loss = (moving * np.array([1.0, 2.0])).sum() + (still * 0.0).sum()
    loss.backward()
    monitor.after_backward(loss)
    optim.SGD([moving, still], lr=0.1).step()
    monitor.after_step()
    assert monitor.update_ratios == {"moving": [math.inf], "still": [0.0]}


def test_after_step_before_after_backward_is_an_error_a_learner_can_act_on():
    monitor = Monitor([tg.Value(1.0)])
    with pytest.raises(RuntimeError, match="after_backward"):
        monitor.after_step()


def test_monitor_refuses_a_model_without_parameters_and_a_non_scalar_loss():
    with pytest.raises(ValueError, match="no parameters"):
        Monitor([])
    monitor = Monitor([tg.Value(np.ones(2))])
    with pytest.raises(TypeError, match="one-number"):
        monitor.after_backward(tg.Value(np.ones(2)))


def test_monitor_is_exported_from_diagnostics():
    assert diagnostics.Monitor is Monitor and "Monitor" in diagnostics.__all__


def _exploding_run(iterations=6):
    rng = np.random.default_rng(0)
    cell, head = nn.RNNCell(2, 4, rng=0), nn.Linear(4, 1, rng=1)
    nn.init.orthogonal_(cell.weight_hh, gain=3.0, rng=rng)
    params = {**{f"cell.{k}": v for k, v in cell.named_parameters()},
              **{f"head.{k}": v for k, v in head.named_parameters()}}
    monitor, optimizer = Monitor(params), optim.SGD(list(params.values()), lr=0.5)
    for _ in range(iterations):
        xs = rng.normal(size=(12, 3, 2))
        h0 = cell.initial_state(3)
        outputs, _ = nn.RNN(cell)(xs, h0=h0)
        loss = nn.mse_loss(head(outputs[-1]), np.ones((3, 1)))
        optimizer.zero_grad()
        loss.backward()
        monitor.after_backward(loss, [h0, *outputs])
        optimizer.step()
        monitor.after_step()
    return monitor


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_picture_with_the_three_panels(tmp_path, suffix):
    pytest.importorskip("matplotlib")
    monitor = _exploding_run()
    figure = monitor.plot(tmp_path / f"monitor{suffix}", title="test run")
    assert (tmp_path / f"monitor{suffix}").stat().st_size > 1000
    titles = [axes.get_title() for axes in figure.axes]
    assert any("loss" in t for t in titles) and any("update ratio" in t for t in titles)
    assert any("time step" in t or "ds_t" in t for t in titles)


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monitor = Monitor([tg.Value(1.0)])
    with pytest.raises(ImportError, match=r"tinygrad-rnn\[plot\]"):
        monitor.plot()


def test_summary_names_the_first_nonfinite_iteration_and_op():
    a = tg.Value(-1.0)
    monitor = Monitor([a])
    with np.errstate(all="ignore"):
        loss = a.log()
        loss.backward()
    monitor.after_backward(loss)
    assert "iteration 0" in monitor.summary() and "'log'" in monitor.summary()


def test_plot_labels_the_heatmap_by_layer_when_the_states_are_layers(tmp_path):
    pytest.importorskip("matplotlib")
    layers = [nn.Linear(2, 2, rng=k) for k in range(3)]
    monitor = Monitor({f"layer{k}.weight": layer.weight for k, layer in enumerate(layers)}, state_axis="layer")
    a = tg.Value(np.ones((4, 2)))
    outputs = [a]
    for layer in layers:
        outputs.append(layer(outputs[-1]).sigmoid())
    loss = outputs[-1].sum()
    loss.backward()
    monitor.after_backward(loss, outputs)
    figure = monitor.plot(tmp_path / "layers.png")
    assert any("each layer" in axes.get_title() for axes in figure.axes)
    with pytest.raises(ValueError, match="state_axis"):
        Monitor([a], state_axis="depth")


def test_nonfinite_text_keeps_the_numbers_of_the_iteration_it_was_found_in():
    a = tg.Value(np.array([-1.0, 2.0]), name="a")
    monitor = Monitor([a])
    with np.errstate(all="ignore"):
        loss = a.log().sum()
        loss.backward()
    monitor.after_backward(loss)
    text = monitor.nonfinite_text
    assert "log" in text and "range [-1, 2]" in text
    a.data[:] = 5.0  # an optimiser writing in place afterwards
    assert monitor.nonfinite_text == text


@pytest.mark.parametrize("make_cell", [lambda: nn.RNNCell(2, 3, rng=0), lambda: nn.LSTMCell(2, 3, rng=0),
                                       lambda: nn.GRUCell(2, 3, rng=0)], ids=["rnn", "lstm", "gru"])
def test_step_grad_norms_are_the_grad_norms_of_diagnostics_steps(make_cell):
    cell = make_cell()
    xs = np.random.default_rng(2).normal(size=(5, 2, 2))
    outputs, states = nn.RNN(cell)(xs, return_states=True)
    loss = sum((h * h).sum() for h in outputs[2:])  # losses at several steps
    loss.backward()
    monitor = Monitor(cell)
    monitor.after_backward(loss, states)
    expected = [row.grad_norm for row in diagnostics.steps(loss, states)]
    np.testing.assert_allclose(monitor.step_grad_norms[0], expected, rtol=1e-12)


def test_the_monitor_says_once_when_gradients_turn_subnormal_with_the_fraction():
    from tinygrad_rnn.numerics import SubnormalWarning

    tiny = float(np.finfo(np.float32).tiny)
    w = tg.Value(np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32), name="w")
    monitor = Monitor({"w": w})
    scales = [1.0, tiny / 8, tiny / 8, 1.0]  # iterations 1 and 2: one entry in four is subnormal
    with pytest.warns(SubnormalWarning) as caught:
        for scale in scales:
            loss = (w * np.array([scale, 1.0, 1.0, 1.0], dtype=np.float32)).sum()
            w.grad = None
            loss.backward()
            monitor.after_backward(loss)
    assert monitor.subnormal_fractions == [0.0, 0.25, 0.25, 0.0] and monitor.first_subnormal == 1
    subnormal = [w for w in caught if issubclass(w.category, SubnormalWarning)]
    assert len(subnormal) == 1 and "at iteration 1, 25.0% of the gradient entries are subnormal" in str(
        subnormal[0].message)
    assert "subnormal gradients from iteration 1, at most 25.0% of the entries" in monitor.summary()


def test_the_monitor_counts_subnormal_gradients_of_the_states_too():
    cell = nn.RNNCell(2, 3, rng=0, dtype=np.float32)
    cell.weight_hh.data = np.eye(3, dtype=np.float32) * np.float32(1e-3)
    monitor = Monitor(cell)
    _, states = nn.RNN(cell)(np.full((30, 1, 2), 0.1, dtype=np.float32), return_states=True)
    loss = states[-1].sum()
    loss.backward()
    from tinygrad_rnn.numerics import SubnormalWarning, subnormal_fraction

    with pytest.warns(SubnormalWarning):
        monitor.after_backward(loss, states)
    state_grads = [s.grad for s in states[1:]]
    assert subnormal_fraction(state_grads) > 0
    expected = subnormal_fraction([p.grad for p in cell.parameters()] + state_grads)
    assert monitor.subnormal_fractions == [pytest.approx(expected)]
