"""The memory plan's factors of a weight's gradient: those already rows of another buffer (the stacked
hidden states, the rows of an input read step by step) are read there in place, block by block as
Products.total sums them, or copied into the Products buffers in one slice each, not one row per
step; the gradients stay eager mode's, the same floats. Where a gradient is not the array its row
holds (a hook replaced it), the row is written as before. The forward pass drops each array the rest
of the function does not read, one ``del`` a step, so the next step reuses its memory."""

import re

import numpy as np
import pytest
from replay_helpers import op_methods_run

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


@pytest.mark.parametrize("block_rows", [512, 4], ids=["one block", "blocks of two steps"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_weights_gradient_reads_its_factors_where_they_are_with_eager_modes_floats(dtype, block_rows, monkeypatch):
    # Products.total sums first step first, in blocks; a block whose factors are consecutive rows
    # of a buffer (the stacked states, the rows of the projection's gradient) reads them in place.
    monkeypatch.setattr(tg.ops.Products, "BLOCK_ROWS", block_rows)  # batch 2: a block of two steps
    pairs, step = eager_and_replayed(unrolled, dtype)
    for eager, replayed in pairs:
        for a, b in zip(eager, replayed, strict=True):
            np.testing.assert_array_equal(a, b)
    backward = step.source.split("# ---- backward")[1]
    assert not re.search(r"_g_rows_\d+\[", backward)  # every delta_t read in its row of the projection's
    blocks = re.findall(r"(_\w+_\d+)\[(\d+):(\d+)\]\.reshape\(-1, 4\)\.T @ _rows_\d+\[(\d+):(\d+)\]", backward)
    expected = [(0, 6)] if block_rows == 512 else [(0, 2), (2, 4), (4, 6)]
    assert [(int(s), int(e)) for _, _, _, s, e in blocks] == expected  # first step first
    # the first block holds h_0, which no buffer holds, so its states are copied; the others' are
    # the stacked states h_{t-1}, read in place
    assert blocks[0][0].startswith("_a_rows_") and all(b[0].startswith("_stacked_") for b in blocks[1:])
    assert [(int(b[1]), int(b[2])) for b in blocks[1:]] == [(1, 3), (3, 5)][:len(blocks) - 1]
    assert len(re.findall(r"_a_rows_\d+\[\d+\] = ", backward)) == (1 if block_rows == 512 else 2)


def test_a_gradient_a_hook_replaced_is_copied_row_by_row_as_the_hook_made_it():
    def doubled(grad):
        return grad * 2.0

    pairs, step = eager_and_replayed(lambda *p: unrolled(*p, hook=doubled), np.float64)
    for eager, replayed in pairs:
        for a, b in zip(eager, replayed, strict=True):
            np.testing.assert_array_equal(a, b)
    backward = step.source.split("# ---- backward")[1]
    assert len(re.findall(r"_g_rows_\d+\[\d+\] = g", backward)) == 6  # each the hook's array, in its row
    assert re.search(r"_a_rows_\d+\[1:6\] = _stacked_\d+\[0:5\]", backward)  # the states: still at once


def test_the_forward_pass_drops_each_array_nothing_reads_again_at_the_end_of_its_step():
    cell = tg.nn.RNNCell(3, 4, rng=np.random.default_rng(0), dtype=np.float64)

    def loss_of(x):
        states, _ = tg.nn.RNN(cell)(x)
        states[1].register_hook(lambda grad: grad)  # (the backward pass shows it this call's h_2)
        return (tg.stack(states) ** 2.0).sum()

    step = tg.replay(loss_of)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((4, 2, 3))
        tg.zero_grad(cell.parameters())
        step(x)
        replayed = [p.grad.copy() for p in cell.parameters()]
        tg.zero_grad(cell.parameters())
        loss_of(tg.Value(x, requires_grad=False)).backward()
        for a, b in zip([p.grad for p in cell.parameters()], replayed, strict=True):
            np.testing.assert_array_equal(a, b)
    forward, backward = step.source.split("# ---- backward")
    lines = [line.strip() for line in forward.splitlines()]
    read_after = {name: "\n".join(lines[i + 1:]) + backward for i, line in enumerate(lines)
                  if line.startswith("del ") for name in line[4:].split(", ")}
    assert all(not re.search(rf"\b{name}\b", text) for name, text in read_after.items())  # never read again
    # each step's h_{t-1} W^T goes at the end of its step, in the step's one del
    products = re.findall(r"^\s*(v\d+) = v\d+\w* @ v\d+  # t=\d$", forward, re.M)
    assert len(products) == 4 and all(name in read_after for name in products)
    notes = [line.partition("  # ")[2] for line in lines]
    dels = [i for i, line in enumerate(lines) if line.startswith("del ")]
    assert not any(notes[i - 1] and notes[i - 1] == notes[i + 1] for i in dels)  # none inside a step
    assert [notes[i - 1] for i in dels if notes[i - 1].startswith("t=")] == ["t=1", "t=2", "t=3", "t=4"]
    # what the backward pass reads is kept: the state the hook is shown
    assert re.search(r"_data = (v\d+)", backward).group(1) not in read_after


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


# ---- the pick of the targets: its gradient added where it was picked ------------------------------

def _picked(index_of):
    """A loss reading m twice: at the entries ``index_of(ids)`` picks, and whole (m * m)."""
    m = tg.Value(np.linspace(-1.0, 1.0, 12).reshape(3, 4), name="m")
    return m, lambda ids: (m[index_of(ids)] * 3.0).sum() + (m * m).sum()  # (m * m comes back first)


@pytest.mark.parametrize("index_of, in_place", [
    (lambda ids: (np.arange(3), ids), True),  # each row picked once, at whatever column ids says
    (lambda ids: (np.array([0, 0, 1]), ids), False),  # row 0 twice: ids could pick one entry twice
    (lambda ids: ids, False),  # an index that is only the argument
], ids=["rows-once", "a-row-twice", "argument-alone"])
def test_a_picks_gradient_is_added_in_place_only_where_no_entry_can_be_picked_twice(index_of, in_place, monkeypatch):
    m, fn = _picked(index_of)
    step = tg.replay(fn)
    run = None
    for ids in (np.array([0, 2, 1]), np.array([2, 2, 0]), np.array([1, 1, 1])):
        m.grad = None
        fn(ids).backward()
        expected = m.grad.copy()
        m.grad = None
        if run is not None:
            run.clear()
        step(ids)
        np.testing.assert_array_equal(m.grad, expected)
        run = op_methods_run(monkeypatch) if run is None else run  # (compiled by the first call)
    assert step.recordings == 1
    # added in place, the pick's vjp is written out; else the op's own vjp_term scatters it into zeros
    assert (("GetItem", "vjp_term") not in run) == in_place
