"""recurrence.bptt: every per-step part of backpropagation through time from one call, the one
recursion delta_k = d_k + J_{k+1}^T delta_{k+1} (carry_back) agreeing with what the backward pass
left, and the names that moved from diagnostics still working, with a warning that says where to."""

import importlib

import numpy as np
import pytest

from tinygrad_rnn import nn, recurrence
from tinygrad_rnn.diagnostics import split

steps_module = importlib.import_module("tinygrad_rnn.diagnostics.steps")  # (the package exports the function)


def _run(cell="lstm", T=6, B=2, seed=0, every_step=False):
    make = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[cell]
    rng = np.random.default_rng(seed)
    outputs, states = nn.RNN(make(3, 4, rng=seed))(rng.normal(size=(T, B, 3)), return_states=True)
    picked = outputs if every_step else outputs[-1:]
    loss = sum((o * o).sum() for o in picked)
    loss.backward()
    return loss, states


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("every_step", [False, True], ids=["loss-at-end", "loss-every-step"])
def test_carrying_back_what_the_loss_reads_gives_the_deltas_the_backward_pass_left(cell, every_step):
    loss, states = _run(cell, every_step=every_step)
    parts = recurrence.bptt(states, loss)
    carried = recurrence.carry_back(parts.reads, parts.steps)
    for t in range(1, len(states)):  # s_0 is a constant: its delta is what step 1 sent (also carried)
        for arrived, computed in zip(parts.deltas[t], carried[t]):
            np.testing.assert_allclose(arrived, computed, rtol=1e-10, atol=1e-14)


def test_one_call_gives_every_part_per_state():
    loss, states = _run("lstm", T=5)
    parts = recurrence.bptt(states, loss, jacobians=True, weights=True)
    T = len(states) - 1
    assert len(parts.steps) == T and len(parts.deltas) == len(parts.sent) == len(parts.clips) == T + 1
    assert parts.sent[0] is None and parts.jacobians[0] is None and parts.cuts == (False,) * (T + 1)
    for t in range(1, T + 1):
        jacobian, method = parts.jacobians[t]
        assert method == "rows" and jacobian.shape == (2, 8, 8)  # (h, c) of 4 units each, per batch row
        sent = parts.steps[t - 1].vjp(parts.deltas[t])
        for a, b in zip(sent, parts.sent[t]):
            np.testing.assert_array_equal(a, b)
    assert len(parts.weights) == T and len(parts.weights[0]) == len(parts.params)


def test_without_jacobians_or_loss_the_parts_are_left_out():
    _, states = _run("rnn", T=3)
    parts = recurrence.bptt(states)
    assert parts.jacobians is None and parts.reads is None and parts.weights is None
    assert parts.deltas[-1] is not None  # the gradient the last backward pass left is read all the same


def test_errors_name_who_asked():
    with pytest.raises(ValueError, match="^steps: needs the states"):
        recurrence.bptt([], caller="steps")
    with pytest.raises(TypeError, match=r"^lags: states\[1\]"):
        recurrence.bptt([_run("rnn", T=1)[1][0], 3.0], caller="lags")


def test_moved_names_still_work_and_say_where_they_went():
    loss, states = _run("gru", T=4, every_step=True)
    step_list = recurrence.step_graphs(states)
    with pytest.warns(DeprecationWarning, match="recurrence.read_gradients"):
        (read,) = split.read_gradients([loss], states, step_list)
    with pytest.warns(DeprecationWarning, match="recurrence.carry_back"):
        norms = split.carry_back(read, step_list, None)
    assert norms == [recurrence.delta_norm(d) for d in recurrence.carry_back(read, step_list)]
    with pytest.warns(DeprecationWarning, match="recurrence.step_contributions"):
        params, per_step = split.step_contributions(states, None, step_list)
    assert len(per_step) == 4 and params
    with pytest.warns(DeprecationWarning, match=r"step\.jacobian\(\)"):
        jacobian, method = steps_module.step_jacobian_matrix(step_list[0])
    np.testing.assert_array_equal(jacobian, step_list[0].jacobian()[0])


def test_carry_back_stops_at_max_lag_and_is_zero_after_the_last_read():
    loss, states = _run("rnn", T=6, every_step=False)
    parts = recurrence.bptt(states, loss)
    carried = recurrence.carry_back(parts.reads, parts.steps, max_lag=2)
    assert [d is None for d in carried] == [True] * 4 + [False] * 3
    nothing = [[np.zeros_like(p) for p in d] for d in parts.reads]
    assert all(recurrence.delta_norm(d) == 0.0 for d in recurrence.carry_back(nothing, parts.steps))


# ---- diagnostics.reuse_numbers: the numbers of several views of one run, computed once ------------

def _counting(monkeypatch):
    calls = []
    real = recurrence.bptt
    monkeypatch.setattr(recurrence, "bptt", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_inside_reuse_numbers_the_same_question_is_answered_once(monkeypatch):
    from tinygrad_rnn import diagnostics

    loss, states = _run("lstm", T=4, every_step=True)
    calls = _counting(monkeypatch)
    with diagnostics.reuse_numbers():
        first = diagnostics.steps(loss, states)
        again = diagnostics.steps(loss, states)
        power = diagnostics.steps(loss, states, bound="power")  # another question: computed
        matrix = diagnostics.lags(loss, states)
        matrix[0, 0] = -1.0  # the caller's copy: what is kept stays as computed
        assert diagnostics.lags(loss, states)[0, 0] != -1.0
        assert diagnostics.lags([loss], states).shape == (1, 5)  # one row, not split by read: computed
    assert again == first and power != first and len(calls) == 2
    diagnostics.steps(loss, states)  # outside the block nothing is kept
    assert len(calls) == 3


def test_a_backward_pass_in_between_is_noticed(monkeypatch):
    from tinygrad_rnn import diagnostics

    loss, states = _run("rnn", T=3)
    calls = _counting(monkeypatch)
    with diagnostics.reuse_numbers():
        first = diagnostics.steps(loss, states)
        loss.backward()  # every gradient doubles: new arrays on the states
        second = diagnostics.steps(loss, states)
    assert len(calls) == 2
    assert second[-1].grad_norm == pytest.approx(2 * first[-1].grad_norm)


def test_scopes_and_notes_live_in_notes_and_are_handed_on_from_recurrence():
    from tinygrad_rnn import notes

    for name in notes.__all__:
        assert getattr(recurrence, name) is getattr(notes, name) and name in recurrence.__all__
