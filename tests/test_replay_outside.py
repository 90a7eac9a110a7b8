"""What fn reads from outside its arguments is checked at every call first by identity (the very same
objects as when recorded), and only where an object differs by its fingerprint: a changed number,
parameter or submodule still records anew, an equal number in a new object does not, and what can
change in place (an array, a list) is still caught. Each case is checked against eager mode."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.guards import Outside

SCALE = 2.0  # a global fn reads
TABLE = np.array([1.0, 2.0])  # a global array fn reads


class Scaled(nn.Module):
    """y = scale * (W x): a number beside a parameter, as a Module holds its settings."""

    def __init__(self, scale: float):
        self.scale = scale
        self.weight = tg.Value(np.array([[1.0, -1.0], [0.5, 2.0]]), name="weight")

    def __call__(self, x):
        return (x @ self.weight.T) * self.scale


class Stack(nn.Module):
    def __init__(self, layers: list):
        self.layers = layers
        self.gates = {"first": Scaled(1.0)}

    def __call__(self, x):
        for layer in [*self.layers, *self.gates.values()]:
            x = layer(x)
        return x


def eager_loss(fn, x, params):
    tg.zero_grad(params)
    loss = fn(tg.Value(x, requires_grad=False))
    loss.backward()
    return loss.item(), [p.grad.copy() for p in params]


def replayed_loss(step, x, params):
    tg.zero_grad(params)
    return step(x), [p.grad.copy() for p in params]


def assert_as_eager(step, fn, x, params):
    expected, got = eager_loss(fn, x, params), replayed_loss(step, x, params)
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    for a, b in zip(got[1], expected[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_an_equal_number_in_a_new_object_does_not_record_again():
    model = Scaled(0.5)
    fn = lambda x: model(x).sum()  # noqa: E731
    step, x = tg.replay(fn), np.array([[1.0, 2.0]])
    step(x)
    for _ in range(3):
        model.scale = float("0.5")  # a new float object, the same number
        assert_as_eager(step, fn, x, [model.weight])
    assert step.recordings == 1


def test_a_number_changed_on_a_module_records_again():
    model = Scaled(0.5)
    fn = lambda x: model(x).sum()  # noqa: E731
    step, x = tg.replay(fn), np.array([[1.0, 2.0]])
    step(x)
    model.scale = 3.0
    assert_as_eager(step, fn, x, [model.weight])
    assert step.recordings == 2


def test_a_layer_replaced_in_a_list_or_a_dict_records_again():
    model = Stack([Scaled(1.0), Scaled(2.0)])
    params = lambda: [p for _, p in model.named_parameters()]  # noqa: E731
    fn = lambda x: model(x).sum()  # noqa: E731
    step, x = tg.replay(fn), np.array([[1.0, 2.0]])
    step(x)
    model.layers[1] = Scaled(-1.0)  # in place: the list is the same object
    assert_as_eager(step, fn, x, params())
    model.gates["first"] = Scaled(4.0)
    assert_as_eager(step, fn, x, params())
    model.layers[0].weight = tg.Value(np.eye(2), name="weight")
    assert_as_eager(step, fn, x, params())
    assert step.recordings == 4


def test_a_global_number_and_a_global_array_changed_in_place_are_read_again():
    global SCALE
    w = tg.Value(np.array([1.0, -3.0]), name="w")
    fn = lambda x: (w * x * SCALE * TABLE).sum()  # noqa: E731
    step, x = tg.replay(fn), np.array([2.0, 1.0])
    step(x)
    try:
        SCALE = 5.0
        assert_as_eager(step, fn, x, [w])
        TABLE[1] = -7.0  # the same array, other numbers
        assert_as_eager(step, fn, x, [w])
    finally:
        SCALE, TABLE[1] = 2.0, 2.0
    assert step.recordings == 3


def test_a_list_in_the_closure_changed_in_place_is_read_again():
    w = tg.Value(np.array([1.0, 2.0]), name="w")
    weights = [0.5]
    fn = lambda x: (w * x).sum() * weights[0]  # noqa: E731
    step, x = tg.replay(fn), np.array([1.0, 1.0])
    step(x)
    weights[0] = 0.25
    assert_as_eager(step, fn, x, [w])
    assert step.recordings == 2


def test_the_identity_check_is_taken_only_where_nothing_read_changes_in_place(monkeypatch):
    """When every place fn reads holds the very objects the recording saw, nothing is fingerprinted
    again but the arrays' contents; an array or a list changed in place is still seen."""
    model, weights, table = Scaled(1.0), [1.0], np.array([1.0, 2.0])
    outside = Outside(lambda x: model(x).sum() * weights[0] * table)
    monkeypatch.setattr("tinygrad_rnn.guards.outside_state", lambda fn: pytest.fail("fingerprinted everything"))
    assert outside.unchanged()  # the same objects, the same array contents
    table[0] = 5.0
    assert not outside.unchanged()  # an array changed in place: by its contents
    table[0] = 1.0
    monkeypatch.undo()
    weights[0] = 2.0
    assert not outside.unchanged()  # a list changed in place: another object in it


def test_a_replay_that_records_anew_at_every_call_says_why_once():
    """What changes at every call makes every call a recording, as slow as eager: the fifth in a row warns,
    naming the cause, and only once."""
    w, calls = tg.Value(np.array([1.0, 2.0]), name="w"), [0]

    def counted(x):
        calls[0] += 1  # read and changed by fn at every call
        return (w * x).sum() * calls[0]

    step = tg.replay(counted)
    with pytest.warns(RuntimeWarning, match=r"recorded anew at each of the last 5 calls.*reads from outside"):
        for _ in range(6):
            step(np.ones(2))
    assert step.recordings == 6 and step(np.ones(2)) == 3.0 * 7

    data_step = tg.replay(lambda x: (w * x).sum() * float(x.data[0]))
    with pytest.warns(RuntimeWarning, match=r"a read of a Value's data") as caught:
        for k in range(12):
            data_step(np.full(2, float(k)))
    assert len(caught) == 1
