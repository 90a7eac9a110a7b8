"""A replay never answers with a stale recording: what fn read from its Values' data (a branch, a
number), the numbers and parameters it reads from its closure, and a gradient computed inside fn are
guarded; each case is checked against eager mode, whose answer a replay must give."""

import threading
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn


def eager_and_replayed(fn, calls, params):
    """Run ``fn`` on each call's arguments eagerly and through one replay; return both lists of
    (loss, gradients) so a test can require them equal."""
    step = tg.replay(fn)
    eager, replayed = [], []
    for arrays in calls:
        tg.zero_grad(params)
        loss = fn(*[tg.Value(a, requires_grad=False) if a.dtype.kind == "f" else a for a in arrays])
        loss.backward()
        eager.append((loss.item(), [p.grad.copy() for p in params]))
        tg.zero_grad(params)
        replayed.append((step(*arrays), [p.grad.copy() for p in params]))
    return eager, replayed, step


def assert_equal(eager, replayed):
    for (loss_e, grads_e), (loss_r, grads_r) in zip(eager, replayed, strict=True):
        assert loss_e == loss_r
        for a, b in zip(grads_e, grads_r, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_branch_on_a_value_is_taken_again_when_the_data_says_otherwise():
    w = tg.Value(np.array([1.0, -2.0, 3.0]))

    def fn(x):
        s = (w * x).sum()
        return s * s if s > 0 else -s  # Python branches on the data

    calls = [(np.ones(3),), (np.ones(3) * 2,), (-np.ones(3) * 5,), (np.ones(3),)]
    eager, replayed, step = eager_and_replayed(fn, calls, [w])
    assert_equal(eager, replayed)
    assert step.recordings == 3  # the first call, and each time the branch flipped


def test_a_mask_made_by_comparing_a_value_follows_the_new_data():
    w = tg.Value(np.array([0.5, -1.0, 2.0, 0.1]))

    def fn(x):
        h = w * x
        return tg.where(h > 0, h, 0.1 * h).sum()  # the mask is read out of h's data

    calls = [(np.array([1.0, 1.0, 1.0, 1.0]),), (np.array([-1.0, 1.0, 1.0, -1.0]),), (np.array([2.0, 2.0, 2.0, 2.0]),)]
    eager, replayed, _ = eager_and_replayed(fn, calls, [w])
    assert_equal(eager, replayed)


def test_a_number_taken_out_of_a_value_is_read_again():
    w = tg.Value(np.array([1.0, 2.0]))

    def fn(x):
        scale = (w * x).sum().item()  # a plain float from the data: the tape would bake it in
        return (w * x * scale).sum()

    calls = [(np.array([1.0, 1.0]),), (np.array([3.0, -1.0]),)]
    eager, replayed, _ = eager_and_replayed(fn, calls, [w])
    assert_equal(eager, replayed)


def test_an_annealed_weight_in_the_closure_is_not_replayed_stale():
    w = tg.Value(np.array([1.0, 2.0]))
    beta = 1.0

    def fn(x):
        return (w * x).sum() + beta * (w * w).sum()

    step = tg.replay(fn)
    x = np.array([1.0, 1.0])
    for beta in (1.0, 0.5, 0.0):  # noqa: B007  (fn reads it)
        tg.zero_grad([w])
        loss = step(x)
        expected = (w.data * x).sum() + beta * (w.data**2).sum()
        assert loss == pytest.approx(expected, rel=1e-15)
        np.testing.assert_allclose(w.grad, x + 2 * beta * w.data, rtol=1e-15)
    assert step.recordings == 3


def test_a_parameter_replaced_by_a_new_value_is_the_one_that_gets_the_gradient():
    layer = nn.Linear(2, 1, rng=0)
    step = tg.replay(lambda x: layer(x).sum())
    x = np.ones((3, 2))
    step(x)
    old = layer.weight
    layer.weight = tg.Value(np.full((1, 2), 5.0))
    assert step(x) == pytest.approx(3 * (10.0 + layer.bias.data[0]))
    np.testing.assert_array_equal(layer.weight.grad, np.full((1, 2), 3.0))
    assert old.grad is not None and step.recordings == 2


def test_backward_inside_fn_is_refused():
    w = tg.Value(np.ones(3))

    def fn(x):
        loss = (w * x).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="replay: fn computes a gradient itself"):
        tg.replay(fn)(np.ones(3))
    with pytest.raises(RuntimeError, match="replay: fn computes a gradient itself"):
        tg.replay(lambda x: tg.grad((w * x).sum(), w)[0].sum() * w.sum())(np.ones(3))


def test_a_replay_shared_by_threads_gives_each_call_its_own_answer():
    w = tg.Value(np.array([1.0, -1.0, 0.5]))
    seen = []
    w.register_hook(lambda g: seen.append(float(g.sum())))
    step = tg.replay(lambda x: ((w * x).tanh() ** 2).sum())
    inputs = [np.full(3, k / 10) for k in range(1, 9)]
    expected = [float((np.tanh(w.data * x) ** 2).sum()) for x in inputs]
    results = {}

    def work(k):
        for _ in range(20):
            results.setdefault(k, set()).add(step(inputs[k]))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, losses in results.items():
        assert losses == {expected[k]}


def test_the_recordings_kept_are_bounded_and_a_dropped_one_is_said():
    w = tg.Value(np.ones(1))
    step = tg.replay(lambda x: (w * x).sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(1, tg.replay(lambda x: x).MAX_TAPES + 2):
            step(np.ones(n))
    assert len(step.tapes) == step.MAX_TAPES
    assert any("dropped the least recently used (float64 (1,))" in str(c.message) for c in caught)


def test_a_mean_over_a_boolean_mask_argument_divides_by_this_calls_count():
    w = tg.Value(np.arange(4.0))
    step = tg.replay(lambda x, m: (w * x)[m].mean())
    x = np.ones(4)
    for mask in ([True, True, False, False], [True, True, True, False], [False, True, True, True]):
        m = np.array(mask)
        tg.zero_grad([w])
        assert step(x, m) == (w.data * x)[m].mean()
        np.testing.assert_array_equal(w.grad, np.where(m, x / m.sum(), 0.0))


def test_an_index_computed_from_an_integer_argument_inside_fn_is_refused_not_frozen():
    w = tg.Value(np.arange(6.0))
    with pytest.raises(ValueError, match="replay: getitem holds as index an array computed with numpy"):
        tg.replay(lambda x, ids: (w[ids] * w[ids + 1] * x).sum())(np.ones(2), np.array([0, 2]))


def test_a_count_or_mask_computed_from_an_argument_and_used_as_data_is_refused():
    w = tg.Value(np.arange(4.0))
    with pytest.raises(ValueError, match="replay: div takes as data an integer or boolean argument of fn"):
        tg.replay(lambda x, m: (w * x)[m].sum() / m.sum())(np.ones(4), np.array([True, False, True, True]))
