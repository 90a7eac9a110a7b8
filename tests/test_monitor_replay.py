"""The Monitor takes replayed steps (their loss is a float) and numbers iterations as PyTorch's
SummaryWriter numbers its global_step: recorded every tenth iteration, its axis says 0, 10, 20. A
replayed loop can still be pictured: every N iterations one eager step keeps its graph
(``step.eager``), with the gradients the replayed step would give."""

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import diagnostics, nn, optim
from tinygrad_rnn.diagnostics import Monitor


def _model(seed=0):
    cell, head = nn.RNNCell(2, 5, rng=seed), nn.Linear(5, 1, rng=seed + 1)
    return cell, head, {**{f"cell.{k}": v for k, v in cell.named_parameters()},
                        **{f"head.{k}": v for k, v in head.named_parameters()}}


def _loss_and_states(cell, head):
    def fn(inputs, targets):
        outputs, states = nn.RNN(cell)(inputs, return_states=True)
        return nn.mse_loss(head(outputs[-1]), targets), states

    return fn


def _batches(count, seed=0, length=8, batch=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(length, batch, 2)), rng.normal(size=(batch, 1))) for _ in range(count)]


def _parts(state) -> list:
    """A state's parts: (h, c) for an LSTM, h alone otherwise."""
    return list(state) if isinstance(state, (tuple, list)) else [state]


def test_a_replayed_run_gives_the_monitor_the_numbers_of_the_same_run_eagerly():
    eager_cell, eager_head, eager_params = _model()
    replay_cell, replay_head, replay_params = _model()
    eager_fn, step = _loss_and_states(eager_cell, eager_head), tg.replay(_loss_and_states(replay_cell, replay_head))
    eager_monitor, replay_monitor = Monitor(eager_params), Monitor(replay_params)
    eager_opt = optim.SGD(list(eager_params.values()), lr=0.1, momentum=0.9)
    replay_opt = optim.SGD(list(replay_params.values()), lr=0.1, momentum=0.9)
    for inputs, targets in _batches(6):
        eager_opt.zero_grad()
        loss, _ = eager_fn(inputs, targets)
        loss.backward()
        eager_monitor.after_backward(loss)
        eager_opt.step()
        eager_monitor.after_step()

        replay_opt.zero_grad()
        loss, states = step(inputs, targets)
        assert type(loss) is float and type(states[0]) is np.ndarray
        replay_monitor.after_backward(loss)
        replay_opt.step()
        replay_monitor.after_step()
    np.testing.assert_allclose(replay_monitor.losses, eager_monitor.losses, rtol=1e-12)
    for name in eager_params:
        np.testing.assert_allclose(replay_monitor.grad_norms[name], eager_monitor.grad_norms[name], rtol=1e-12)
        np.testing.assert_allclose(replay_monitor.update_ratios[name], eager_monitor.update_ratios[name], rtol=1e-9)
    assert replay_monitor.iteration_numbers == eager_monitor.iteration_numbers == list(range(6))
    assert step.recordings == 1


def test_iterations_are_numbered_by_the_iteration_argument_else_one_past_the_last():
    w = tg.Value(np.array([1.0, -2.0]), name="w")
    monitor = Monitor([w])
    for i in range(0, 50, 10):
        w.grad = np.array([0.1, 0.2]) * (i + 1)
        monitor.after_backward(float(i), iteration=i)
    monitor.after_backward(3.0)  # the next one
    assert monitor.iteration_numbers == [0, 10, 20, 30, 40, 41]
    assert monitor.iterations == 6 and monitor.losses == [0.0, 10.0, 20.0, 30.0, 40.0, 3.0]
    np.testing.assert_allclose(monitor.grad_norms["w"][:2], [math.hypot(0.1, 0.2), 11 * math.hypot(0.1, 0.2)])
    assert monitor.summary().startswith("6 iterations recorded, 0 to 41;")
    with pytest.raises(ValueError, match="iteration 41 comes after iteration 41"):
        monitor.after_backward(1.0, iteration=41)
    for bad in (-1, 2.5, True):
        with pytest.raises(TypeError, match="whole number"):
            Monitor([w]).after_backward(1.0, iteration=bad)


def test_a_loss_that_is_neither_a_value_nor_a_number_is_refused():
    monitor = Monitor([tg.Value(np.ones(2))])
    for bad in ("0.5", (0.5, []), np.ones(3), None):
        with pytest.raises(TypeError, match="float a replayed step returns"):
            monitor.after_backward(bad)
    monitor.after_backward(np.float32(0.5))
    monitor.after_backward(np.array(0.25))
    assert monitor.losses == [0.5, 0.25]


def test_states_as_a_replays_arrays_are_refused_with_what_to_do():
    cell, head, params = _model()
    step = tg.replay(_loss_and_states(cell, head))
    (inputs, targets), = _batches(1)
    loss, states = step(inputs, targets)
    with pytest.raises(TypeError, match=r"without gradients.*step\.eager"):
        Monitor(params).after_backward(loss, states)


def test_a_nan_in_a_replayed_step_is_found_at_its_iteration_number_and_says_it_has_no_graph():
    a = tg.Value(2.5, name="a")
    step = tg.replay(lambda x: (a * x).log())
    monitor, optimizer = Monitor([a]), optim.SGD([a], lr=1.0)
    first = None
    for i in range(0, 80, 10):
        optimizer.zero_grad()
        with np.errstate(all="ignore"):
            loss = step(1.0)
        if first is None and not math.isfinite(loss):
            first = i
        monitor.after_backward(loss, iteration=i)
        optimizer.step()
        monitor.after_step()
    assert first is not None and first >= 20  # finite for a while, then NaN
    assert monitor.first_nonfinite == first and monitor.nonfinite_report is None and monitor.nonfinite_op is None
    assert f"iteration {first} was replayed" in monitor.nonfinite_text and "step.eager" in monitor.nonfinite_text
    assert f"first NaN/Inf at iteration {first}, a replayed one" in monitor.summary()


def test_the_plots_axis_is_the_iteration_numbers_and_the_heatmap_rows_are_labelled_by_them(tmp_path):
    pytest.importorskip("matplotlib")
    cell, head, params = _model()
    step = tg.replay(_loss_and_states(cell, head))
    monitor, optimizer = Monitor(params), optim.SGD(list(params.values()), lr=0.05)
    batches = _batches(6)
    for i in range(0, 60, 10):
        optimizer.zero_grad()
        if i % 20 == 0:
            loss, states = step.eager(*batches[i // 10])
            monitor.after_backward(loss, states, iteration=i)
        else:
            loss, _ = step(*batches[i // 10])
            monitor.after_backward(loss, iteration=i)
        optimizer.step()
        monitor.after_step()
    figure = monitor.plot(tmp_path / "monitor.png")
    assert (tmp_path / "monitor.png").stat().st_size > 1000
    loss_axes, ratio_axes, heat_axes = figure.axes[:3]
    (loss_line,) = [line for line in loss_axes.get_lines() if line.get_label() == "loss"]
    assert list(loss_line.get_xdata()) == [0, 10, 20, 30, 40, 50]
    np.testing.assert_allclose(loss_line.get_ydata(), monitor.losses)
    for line in ratio_axes.get_lines():
        if line.get_label() in params:
            assert list(line.get_xdata()) == [0, 10, 20, 30, 40, 50]
    assert loss_axes.get_xlim()[1] >= 50
    rows = monitor.step_grad_norms
    assert [row is not None for row in rows] == [True, False, True, False, True, False]
    # The heatmap: a row per eager iteration, the ones with states, each labelled by its number.
    (image,) = heat_axes.images
    assert image.get_array().shape == (3, len(rows[0]))
    for k, i in enumerate((0, 2, 4)):
        np.testing.assert_allclose(image.get_array()[k], np.log10(rows[i]), rtol=1e-12)
    formatter = heat_axes.yaxis.get_major_formatter()
    assert [formatter(row, None) for row in range(3)] == ["0", "20", "40"]


def test_the_plot_of_iterations_zero_to_n_is_unchanged():
    pytest.importorskip("matplotlib")
    w = tg.Value(np.array([1.0, 2.0]))
    monitor = Monitor([w])
    for k in range(3):
        w.grad = np.ones(2)
        monitor.after_backward(1.0 + k)
    (loss_line,) = [line for line in monitor.plot().axes[0].get_lines() if line.get_label() == "loss"]
    assert list(loss_line.get_xdata()) == [0, 1, 2]


@pytest.mark.parametrize("make_cell", [lambda: nn.RNNCell(2, 5, rng=0), lambda: nn.LSTMCell(2, 5, rng=0),
                                       lambda: nn.GRUCell(2, 5, rng=0)], ids=["rnn", "lstm", "gru"])
def test_an_eager_step_every_n_iterations_gives_the_replayed_steps_gradients(make_cell):
    # Two identical models trained on the same batches: one replayed at every iteration, the other
    # eager (its graph kept) every third. Their gradients agree at every iteration to rounding, so
    # the pictures of the eager steps are pictures of the replayed run.
    models = [(make_cell(), nn.Linear(5, 1, rng=1)) for _ in range(2)]
    params = [[*cell.parameters(), *head.parameters()] for cell, head in models]
    steps = [tg.replay(_loss_and_states(*model)) for model in models]
    optimizers = [optim.Adam(p, lr=0.05) for p in params]
    monitor = Monitor({f"p{k}": p for k, p in enumerate(params[1])})
    pictured = []
    for i, (inputs, targets) in enumerate(_batches(7, seed=3)):
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss, states = steps[0](inputs, targets)
        if i % 3 == 0:
            eager_loss, eager_states = steps[1].eager(inputs, targets)
            pictured.append(diagnostics.steps(eager_loss, eager_states))
            monitor.after_backward(eager_loss, eager_states, iteration=i)
            assert eager_loss.item() == pytest.approx(loss, rel=1e-12)
            for state, data in zip(eager_states, states, strict=True):
                for part, array in zip(_parts(state), _parts(data), strict=True):
                    np.testing.assert_allclose(part.data, array, rtol=1e-12, atol=1e-15)
        else:
            monitor.after_backward(steps[1](inputs, targets)[0], iteration=i)
        for p, q in zip(params[0], params[1], strict=True):
            scale = np.max(np.abs(p.grad))
            np.testing.assert_allclose(q.grad, p.grad, rtol=1e-12, atol=1e-12 * scale)
        for optimizer in optimizers:
            optimizer.step()
        monitor.after_step()
    assert steps[0].recordings == steps[1].recordings == 1  # the eager steps did not record
    assert len(pictured) == 3 and all(row.grad_norm is not None for row in pictured[0][1:])
    assert [row is not None for row in monitor.step_grad_norms] == [i % 3 == 0 for i in range(7)]


def test_the_example_draws_its_eager_steps_and_the_monitors_page(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "replay_pictures.py"
    spec = importlib.util.spec_from_file_location("replay_pictures", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(example, "ITERATIONS", 21)
    monkeypatch.setattr(example, "PICTURE_EVERY", 10)
    example.main(tmp_path)
    drawn = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("steps_"))
    assert [name.split(".")[0] for name in drawn] == ["steps_00000", "steps_00010", "steps_00020"]
    assert (tmp_path / "monitor.png").stat().st_size > 1000
