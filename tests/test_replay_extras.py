"""A replayed function may return more than its loss: ``loss, states`` or ``{"loss": loss, "h": h}``.
The replayed call returns the same structure, the loss a float and every other Value's data as an
array (a float for one number) equal to eager mode's to rounding, each a copy the caller keeps; what
is not a Value is refused, since a replay would hand back the first call's."""

import collections
import importlib

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def _model(dtype=np.float64, cell="lstm"):
    make = nn.LSTMCell if cell == "lstm" else nn.RNNCell
    return make(3, 4, rng=0, dtype=dtype), nn.Linear(4, 2, rng=1, dtype=dtype)


def _batches(count=4, dtype=np.float64, length=6, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(length, batch, 3)).astype(dtype), rng.integers(0, 2, (length, batch)))
            for _ in range(count)]


def _outputs_of(cell, head):
    """fn returning the loss, the states [(h, c), ...], the logits and a nested dict."""

    def fn(inputs, targets):
        hiddens, states = nn.RNN(cell)(inputs, return_states=True)
        logits = head(tg.stack(hiddens))
        loss = nn.cross_entropy(logits, targets)
        return loss, {"states": states, "out": logits, "last": (hiddens[-1], states[-1][1])}

    return fn


def _close(got, expected, dtype, where=""):
    """got (a replay's output) against expected (eager's, as Values), to rounding, structure included."""
    if isinstance(expected, tg.Value):
        data = expected.data
        if np.ndim(data) == 0:
            assert type(got) is float, where
            np.testing.assert_allclose(got, float(data), rtol=TOLERANCE[dtype], err_msg=where)
        else:
            assert type(got) is np.ndarray and got.dtype == data.dtype and got.shape == data.shape, where
            np.testing.assert_allclose(got, data, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype], err_msg=where)
    elif isinstance(expected, dict):
        assert type(got) is type(expected) and list(got) == list(expected), where
        for key in expected:
            _close(got[key], expected[key], dtype, f"{where}[{key!r}]")
    else:
        assert type(got) is type(expected) and len(got) == len(expected), where
        for k, (g, e) in enumerate(zip(got, expected)):
            _close(g, e, dtype, f"{where}[{k}]")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_states_outputs_and_nested_entries_equal_eagers_over_a_training_run(dtype):
    eager_model, replay_model = _model(dtype), _model(dtype)
    eager_params = [p for m in eager_model for p in m.parameters()]
    replay_params = [p for m in replay_model for p in m.parameters()]
    eager_opt, replay_opt = optim.Adam(eager_params, lr=0.05), optim.Adam(replay_params, lr=0.05)
    eager_fn, step = _outputs_of(*eager_model), tg.replay(_outputs_of(*replay_model))
    for inputs, targets in _batches(dtype=dtype):
        eager_opt.zero_grad()
        expected = eager_fn(inputs, targets)
        expected[0].backward()
        replay_opt.zero_grad()
        got = step(inputs, targets)
        assert type(got) is tuple and type(got[0]) is float
        _close(got, expected, dtype)
        for p, q in zip(eager_params, replay_params):
            np.testing.assert_allclose(q.grad, p.grad, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
        eager_opt.step()
        replay_opt.step()
    assert step.recordings == 1  # the later calls were replayed


def test_a_function_returning_only_its_loss_still_returns_a_float():
    cell, head = _model(cell="rnn")
    step = tg.replay(lambda x, y: nn.cross_entropy(head(tg.stack(nn.RNN(cell)(x)[0])), y))
    for inputs, targets in _batches(3):
        assert type(step(inputs, targets)) is float
    (tape,) = step.tapes.values()
    assert tape.extras == [] and tape.template is None


def test_returned_arrays_are_copies_the_next_call_leaves_alone():
    # The stacked states live in a buffer the compiled function writes at every call, W_hh^T in a
    # contiguous copy it remakes; a view of either would change under the caller.
    cell = nn.RNNCell(3, 4, rng=0)
    seen = {}

    def fn(x):
        hiddens, _ = nn.RNN(cell)(x)
        stacked = tg.stack(hiddens)
        seen["transposed"] = transposed = cell.weight_hh.T
        return (stacked * stacked).sum(), stacked, hiddens[-1], transposed, cell.weight_hh, x

    step = tg.replay(fn)
    first, second, third = _batches(3)
    step(first[0])  # recorded
    kept = step(second[0])  # replayed
    values = [np.array(k, copy=True) for k in kept[1:]]
    for a in kept[1:]:
        for b in kept[1:]:
            assert a is b or not np.shares_memory(a, b)
        assert not np.shares_memory(a, cell.weight_hh.data)
    again = step(third[0])
    assert not np.allclose(again[1], kept[1])  # the states did change: the test can tell
    for k, v in zip(kept[1:], values):
        np.testing.assert_array_equal(k, v)
    kept[1][:] = 0.0  # writing into what was handed out changes nothing the replay uses
    np.testing.assert_array_equal(step(third[0])[1], again[1])


def test_extras_the_loss_does_not_need_are_computed_on_replay_too():
    cell, head = _model(cell="rnn")

    def fn(inputs, targets):
        hiddens, _ = nn.RNN(cell)(inputs)
        logits = head(tg.stack(hiddens))
        with tg.no_grad():
            probabilities = tg.softmax(logits, axis=-1)  # for an accuracy, not for the loss
        return {"loss": nn.cross_entropy(logits, targets), "probabilities": probabilities}

    step = tg.replay(fn)
    for inputs, targets in _batches(3):
        got = step(inputs, targets)
        expected = fn(inputs, targets)["probabilities"].data
        np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-12)
        np.testing.assert_allclose(got["probabilities"].sum(-1), 1.0, rtol=1e-12)
    assert step.recordings == 1


def test_an_argument_a_parameter_and_a_constant_come_back_as_this_calls():
    w = tg.Value(np.array([1.0, 2.0, 3.0]), name="w")
    opt = optim.SGD([w], lr=0.1)

    def fn(x, ids):
        constant = tg.Value(np.eye(3), requires_grad=False)
        return (w * x[ids]).sum(), x, ids, w, constant

    step = tg.replay(fn)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, ids = rng.normal(size=(4, 3)), rng.integers(0, 4, 2)
        opt.zero_grad()
        loss, got_x, got_ids, got_w, got_constant = step(x, ids)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_ids, ids)
        assert got_ids.dtype == ids.dtype and not np.shares_memory(got_ids, ids) and not np.shares_memory(got_x, x)
        np.testing.assert_array_equal(got_w, w.data)  # read afresh: after the optimiser's update
        np.testing.assert_array_equal(got_constant, np.eye(3))
        assert loss == pytest.approx(float((w.data * x[ids]).sum()), rel=1e-12)
        opt.step()
    assert step.recordings == 1


def test_an_argument_returned_and_used_by_no_op_is_not_an_error():
    w = tg.Value(np.ones(3))
    step = tg.replay(lambda x, y: ((w * x).sum(), y))
    x = np.ones(3)
    for k in range(2):
        y = np.full(2, float(k))
        np.testing.assert_array_equal(step(x, y)[1], y)


def test_a_one_number_extra_is_a_float():
    w = tg.Value(np.array([0.5, -1.0]), name="w")
    step = tg.replay(lambda x: ((w * x).sum() ** 2, {"mean": (w * x).mean(), "vector": w * x}))
    for x in (np.array([1.0, 2.0]), np.array([3.0, -1.0])):
        loss, extras = step(x)
        assert type(loss) is float and type(extras["mean"]) is float and type(extras["vector"]) is np.ndarray
        assert extras["mean"] == pytest.approx(float(np.mean(w.data * x)), rel=1e-12)


def test_lists_tuples_dicts_and_namedtuples_keep_their_types():
    Pair = collections.namedtuple("Pair", "h c")
    w = tg.Value(np.ones((2, 2)))

    def fn(x):
        h = (w @ x).tanh()
        return [h.sum(), Pair(h, h * 2.0), {"nested": [(h,), {"again": h}]}]

    step = tg.replay(fn)
    for x in (np.eye(2), 2.0 * np.eye(2)):
        got = step(x)
        assert type(got) is list and type(got[1]) is Pair and type(got[2]["nested"][0]) is tuple
        np.testing.assert_allclose(got[1].c, 2.0 * np.tanh(w.data @ x), rtol=1e-12)
        np.testing.assert_allclose(got[2]["nested"][1]["again"], np.tanh(w.data @ x), rtol=1e-12)


@pytest.mark.parametrize("extra, named", [
    (3, r"int 3 as result\[1\]"),
    ("hidden", r"str 'hidden' as result\[1\]"),
    (np.ones(2), r"ndarray array of shape \(2,\) as result\[1\]"),
    ([1.5], r"float 1.5 as result\[1\]\[0\]"),
])
def test_an_extra_that_is_not_a_value_is_refused_naming_it(extra, named):
    w = tg.Value(np.ones(2))
    step = tg.replay(lambda x: ((w * x).sum(), extra))
    with pytest.raises(TypeError, match=named + r".*not a Value.*first call's"):
        step(np.ones(2))
    with pytest.raises(TypeError, match=named):
        step.eager(np.ones(2))


def test_a_dict_must_name_its_loss_and_the_loss_must_be_one_number():
    w = tg.Value(np.ones(2))
    with pytest.raises(ValueError, match="without a 'loss' entry"):
        tg.replay(lambda x: {"cost": (w * x).sum()})(np.ones(2))
    with pytest.raises(ValueError, match="single number"):
        tg.replay(lambda x: (w * x, (w * x).sum()))(np.ones(2))


def test_an_integer_array_computed_inside_fn_is_refused():
    w = tg.Value(np.ones(3))
    step = tg.replay(lambda x, ids: ((w * x[ids]).sum(), ids + 1))  # ids + 1 would be the first call's
    with pytest.raises(TypeError, match=r"result\[1\].*not a Value"):
        step(np.ones((4, 3)), np.array([0, 1]))


def test_a_new_recording_returns_the_structure_too():
    w = tg.Value(np.ones(3))
    step = tg.replay(lambda x: ((w * x).sum(), {"y": w * x}))
    for length in (3, 3, 1, 3):  # another shape records anew, then the first recording replays
        x = np.arange(length, dtype=float)
        loss, extras = step(x)
        np.testing.assert_array_equal(extras["y"], np.ones(3) * x)
    assert step.recordings == 2


def test_a_recording_too_long_to_compile_returns_eagers_extras(monkeypatch):
    monkeypatch.setattr(importlib.import_module("tinygrad_rnn.replay"), "COMPILE_LIMIT", 5)
    cell = nn.RNNCell(3, 4, rng=0)

    def fn(x):
        hiddens, _ = nn.RNN(cell)(x)
        return hiddens[-1].sum(), hiddens

    step = tg.replay(fn)
    for inputs, _ in _batches(3):
        loss, hiddens = step(inputs)
        expected = fn(inputs)
        assert step.source is None and loss == expected[0].item()
        for got, h in zip(hiddens, expected[1], strict=True):
            np.testing.assert_array_equal(got, h.data)
            assert not np.shares_memory(got, h.data)


def test_a_long_scalar_graph_with_extras_runs_eagerly_with_the_right_numbers(monkeypatch):
    monkeypatch.setattr(importlib.import_module("tinygrad_rnn.replay"), "COMPILE_LIMIT", 5)
    a, b = tg.Value(0.5), tg.Value(-0.25)

    def fn(x):
        h = (a * x + b).tanh()
        for _ in range(4):
            h = (a * h + b).tanh()
        return h * h, h

    step = tg.replay(fn)
    for x in (0.3, 0.7):
        loss, h = step(x)
        assert type(h) is float and h == fn(x)[1].item() and loss == h * h


def test_the_wengert_list_names_the_extras():
    w = tg.Value(np.ones(3), name="w")
    step = tg.replay(lambda x: ((w * x).tanh().sum(), (w * x).tanh()))
    step(np.ones(3))
    (tape,) = step.tapes.values()
    lines = str(tape).splitlines()
    assert lines[-2:] == [f"loss = v{tape.root}", f"extras = v{tape.extras[0]}"]
    assert f"return v{tape.root}, [v{tape.extras[0]}]" in step.source


def test_step_eager_returns_fns_values_with_the_graph_kept_and_records_nothing():
    cell, head = _model(cell="rnn")
    step = tg.replay(_outputs_of(cell, head))
    (inputs, targets), = _batches(1)
    loss, extras = step.eager(inputs, targets)
    assert isinstance(loss, tg.Value) and loss.grad is not None
    h, c = extras["last"]
    assert isinstance(h, tg.Value) and h.grad is not None  # backpropagated: the states hold their gradients
    assert step.recordings == 0 and not step.tapes
