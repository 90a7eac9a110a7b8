"""Backward hooks (Value.register_hook): when they run, what they see, what a replacement does."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value


def test_hooks_run_in_registration_order_each_seeing_the_previous_result():
    x = Value(np.array([1.0, 2.0]))
    y = x * 3.0
    seen = []

    def add_one(g):
        seen.append(("add_one", g.copy()))
        return g + 1.0

    def double(g):
        seen.append(("double", g.copy()))
        return g * 2.0

    y.register_hook(add_one)
    y.register_hook(double)
    y.sum().backward()
    assert [name for name, _ in seen] == ["add_one", "double"]
    np.testing.assert_array_equal(seen[0][1], [1.0, 1.0])
    np.testing.assert_array_equal(seen[1][1], [2.0, 2.0])
    np.testing.assert_array_equal(y.grad, [4.0, 4.0])
    np.testing.assert_array_equal(x.grad, [12.0, 12.0])  # the replacement is what flows on


def test_hook_sees_the_fully_accumulated_gradient_of_a_fan_out_node_once():
    x = Value(2.0)
    y = x * x
    calls = []
    y.register_hook(lambda g: calls.append(g))
    (y * 3.0 + y * 5.0).backward()
    assert calls == [8.0]


def test_hook_returning_none_leaves_the_gradient_unchanged():
    x = Value(np.array([1.0, -2.0]))
    y = x.tanh()
    y.register_hook(lambda g: None)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1 - np.tanh([1.0, -2.0]) ** 2, rtol=1e-15)


def test_removed_hook_no_longer_runs_and_removing_twice_is_harmless():
    x = Value(1.5)
    y = x * 2.0
    calls = []
    handle = y.register_hook(lambda g: calls.append(g))
    keep = y.register_hook(lambda g: g * 10.0)
    handle.remove()
    handle.remove()
    y.backward()
    assert calls == []
    assert x.grad == 20.0
    keep.remove()
    x.grad = None
    (x * 2.0).backward()
    assert x.grad == 2.0


def test_leaf_hook_runs_before_accumulation_into_grad():
    x = Value(np.array([1.0, 2.0]))
    (x * 1.0).sum().backward()  # x.grad = [1, 1]
    seen = []

    def scale(g):
        seen.append(g.copy())
        return g * 10.0

    x.register_hook(scale)
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, 2.0])  # this pass's gradient only, not the running sum
    np.testing.assert_array_equal(x.grad, [1.0 + 20.0, 1.0 + 20.0])


def test_interior_hook_runs_before_its_gradient_reaches_the_parents():
    x = Value(np.array([0.5, -0.5]))
    h = x.tanh()
    order = []
    h.register_hook(lambda g: order.append(("h", x.grad)))
    (h * 2.0).sum().backward()
    assert order == [("h", None)]


def test_wrong_shape_replacement_is_an_error_naming_the_hook_and_shapes():
    x = Value(np.ones(3))
    y = x * 2.0

    def bad_hook(g):
        return np.ones(4)

    y.register_hook(bad_hook)
    with pytest.raises(ValueError, match=r"bad_hook.*\(4,\).*\(3,\)"):
        y.sum().backward()


def test_non_gradient_replacement_is_an_error_naming_the_hook():
    x = Value(np.ones(3))
    y = x * 2.0

    def returns_text(g):
        return "not a gradient"

    y.register_hook(returns_text)
    with pytest.raises(TypeError, match="returns_text"):
        y.sum().backward()


def test_non_numeric_replacement_of_a_scalar_gradient_is_an_error_naming_the_hook():
    x = Value(2.0)
    y = x * 2.0

    def returns_text(g):
        return "oops"

    y.register_hook(returns_text)
    with pytest.raises(TypeError, match="returns_text"):
        y.backward()


def test_hooks_run_in_grad_too_and_leave_dot_grad_untouched():
    x = Value(np.array([1.0, 2.0]))
    y = x * 3.0
    y.register_hook(lambda g: g * 0.5)
    (gx,) = tg.grad(y.sum(), [x])
    np.testing.assert_array_equal(gx, [1.5, 1.5])
    assert x.grad is None and y.grad is None


def test_hook_under_create_graph_receives_a_value_and_its_replacement_is_differentiable():
    # z = 3 y, y = x^2; a hook doubling dz/dy makes dz/dx "= 12 x", whose derivative is 12.
    x = Value(np.array([0.7, -1.3]))
    y = x * x
    received = []

    def double(g):
        received.append(g)
        return g * 2.0

    y.register_hook(double)
    (y * 3.0).sum().backward(create_graph=True)
    assert isinstance(received[0], Value)
    assert isinstance(x.grad, Value)
    np.testing.assert_allclose(x.grad.data, 12.0 * x.data, rtol=1e-15)
    (second,) = tg.grad(x.grad.sum(), [x])
    np.testing.assert_allclose(second, [12.0, 12.0], rtol=1e-12)


def test_hook_on_a_hidden_state_sees_dL_dh_from_every_later_step():
    # h_t = tanh(w h_{t-1} + x_t): the hook on h_1 must see the gradient through h_2 and h_3.
    w = Value(0.8)
    h = Value(0.1, requires_grad=False)
    states, seen = [], []
    for x_t in (0.3, -0.2, 0.5):
        h = (w * h + x_t).tanh()
        states.append(h)
    states[0].register_hook(lambda g: seen.append(g))
    states[-1].backward()
    h1, h2, h3 = (s.data for s in states)
    expected = (1 - h3**2) * 0.8 * (1 - h2**2) * 0.8
    assert seen == [pytest.approx(expected, rel=1e-14)]


@pytest.mark.parametrize("mode", ["eager", "replayed"])
def test_a_hook_gets_its_gradient_read_only_and_a_leaf_keeps_a_writable_copy(mode):
    # a + b hands one array to both: a hook changing it in place would change b's gradient too.
    a, b = Value(np.array([1.0, 2.0])), Value(np.array([3.0, 4.0]))
    refused = []

    def scale_in_place(g):
        try:
            g *= 10.0
        except ValueError as error:
            refused.append(str(error))

    a.register_hook(scale_in_place)
    if mode == "eager":
        (a + b).sum().backward()
    else:
        step = tg.replay(lambda: (a + b).sum())
        step()
        a.grad = b.grad = None
        step()
    assert refused and "read-only" in refused[-1]
    np.testing.assert_array_equal(a.grad, [1.0, 1.0])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    a.grad *= 2.0  # a leaf's gradient is its own, even the one a hook was shown
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
