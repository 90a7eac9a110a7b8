"""The memory plan's bulk copies: the factors of a weight's gradient that are already rows of another
buffer (the stacked hidden states, the rows of an input read step by step) are copied into the
Products buffers in one slice each, not one row per step, and the gradients stay eager mode's, the
same floats. Where a gradient is not the array its row holds (a hook replaced it), the row is
written as before."""

import re

import numpy as np
import pytest

import tinygrad_rnn as tg


def unrolled(weight_ih, weight_hh, bias, length, hook=None):
    """A tanh RNN written out by hand: h_t = tanh(x_t W_ih^T + h_{t-1} W_hh^T + b), the loss the sum
    of the stacked states squared. ``hook`` goes on every pre-activation."""

    def loss_of(x):
        projected = x @ weight_ih.T + bias  # (T, B, H): step t reads its row
        h = tg.Value(np.zeros((x.shape[1], weight_hh.shape[0]), x.dtype), requires_grad=False, name="h0")
        recurrent, states = weight_hh.T, []  # one transpose, read at every step
        for t in range(length):
            pre = projected[t] + h @ recurrent
            if hook is not None:
                pre.register_hook(hook)
            h = pre.tanh()
            states.append(h)
        return (tg.stack(states) ** 2.0).sum()

    return loss_of


def parameters(dtype, inputs=3, hidden=4, seed=0):
    rng = np.random.default_rng(seed)
    return [tg.Value(rng.standard_normal(shape).astype(dtype) * 0.5, name=name)
            for name, shape in [("weight_ih", (hidden, inputs)), ("weight_hh", (hidden, hidden)), ("bias", (hidden,))]]


def eager_and_replayed(make_loss, dtype, length=6, batch=2, calls=3):
    """(eager gradients, replayed gradients) over several calls with new data, and the step."""
    eager_params, replay_params = parameters(dtype), parameters(dtype)
    step = tg.replay(make_loss(*replay_params, length))
    eager_loss = make_loss(*eager_params, length)
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(calls):
        x = rng.standard_normal((length, batch, 3)).astype(dtype)
        tg.zero_grad(eager_params)
        tg.zero_grad(replay_params)
        eager_loss(tg.Value(x, requires_grad=False)).backward()
        step(x)
        pairs.append(([p.grad.copy() for p in eager_params], [p.grad.copy() for p in replay_params]))
    return pairs, step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_rows_of_a_weights_gradient_are_copied_at_once_with_eager_modes_floats(dtype):
    pairs, step = eager_and_replayed(unrolled, dtype)
    for eager, replayed in pairs:
        for a, b in zip(eager, replayed, strict=True):
            np.testing.assert_array_equal(a, b)
    backward = step.source.split("# ---- backward")[1]
    # the states h_5 ... h_1 from the stacked buffer and the gradients at the pre-activations from
    # the rows of the projection's gradient, each in one slice, read from the last step back
    assert re.search(r"_a_rows_\d+\[0:5\] = _stacked_\d+\[4::-1\]", backward)
    assert re.search(r"_g_rows_\d+\[0:6\] = _rows_\d+\[5::-1\]", backward)
    assert not re.search(r"_g_rows_\d+\[\d+\] = ", backward)  # no row copied alone
    assert len(re.findall(r"_a_rows_\d+\[\d+\] = ", backward)) == 1  # h_0, which no buffer holds


def test_a_gradient_a_hook_replaced_is_copied_row_by_row_as_the_hook_made_it():
    def doubled(grad):
        return grad * 2.0

    pairs, step = eager_and_replayed(lambda *p: unrolled(*p, hook=doubled), np.float64)
    for eager, replayed in pairs:
        for a, b in zip(eager, replayed, strict=True):
            np.testing.assert_array_equal(a, b)
    backward = step.source.split("# ---- backward")[1]
    assert len(re.findall(r"_g_rows_\d+\[\d+\] = g", backward)) == 6  # each the hook's array, in its row
    assert re.search(r"_a_rows_\d+\[0:5\] = _stacked_\d+\[4::-1\]", backward)  # the states: still at once


def test_an_op_failing_on_a_replayed_call_is_named_with_numpys_reason():
    w = tg.Value(np.arange(4.0), name="w")
    step = tg.replay(lambda ids: (w[ids] * 2.0).sum())
    step(np.array([0, 3]))
    step(np.array([1, 2]))
    assert step.recordings == 1  # the next call is replayed, not recorded
    with pytest.raises(IndexError, match=r"replay: getitem, making v\d+ of the tape: .*out of bounds"):
        step(np.array([1, 9]))


def test_an_op_holding_an_integer_argument_gets_each_calls_array_and_the_recording_keeps_its_own():
    w = tg.Value(np.arange(5.0), name="w")
    step = tg.replay(lambda ids: (w[ids] * w[ids]).sum())
    first = np.array([0, 1])
    step(first)
    for ids in (np.array([4, 2]), np.array([3, 3])):  # (3 twice: the gradients add up)
        w.grad = None
        assert step(ids) == float((np.arange(5.0)[ids] ** 2).sum())
        expected = np.zeros(5)
        np.add.at(expected, ids, 2.0 * np.arange(5.0)[ids])
        np.testing.assert_array_equal(w.grad, expected)
    assert step.recordings == 1
    (tape,) = step.tapes.values()
    assert tape.bindings and all(np.array_equal(getattr(tape.ops[entry], attribute), first)
                                 for entry, attribute, _ in tape.bindings)  # the recorded ops are not changed
    assert re.search(r"_getitem_\d+\.index = arrays\[0\]", step.source)  # this call's array, handed to a copy
