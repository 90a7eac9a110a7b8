"""The engine at its edges: PyTorch's answer or a clear error, never a silently wrong one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import Value, concat, grad, nn, no_grad, ops, stack
from tinygrad_rnn.autograd import STATE

# ---- PyTorch's answers where the textbook formula breaks down ----------------------------------


def test_derivative_of_x_to_the_zero_at_zero_is_zero():
    x = Value(0.0)
    (x**0).backward()
    assert x.grad == 0.0
    xs = Value(np.array([0.0, 2.0]))
    (xs**0.0).sum().backward()
    np.testing.assert_array_equal(xs.grad, [0.0, 0.0])


def test_negative_base_to_an_integer_value_exponent_is_exact():
    a, b = Value([-2.0]), Value(2.0)
    y = (a**b).sum()
    y.backward()
    assert y.data == 4.0
    np.testing.assert_array_equal(a.grad, [-4.0])


def test_zero_to_the_zero_is_one_with_zero_gradients():
    z = Value(0.0)
    y = 0.0**z
    assert y.data == 1.0
    y.backward()
    assert z.grad == 0.0  # d(0^b)/db = 0 for b >= 0 (PyTorch's mask)


def test_value_exponent_gradient_is_y_log_a():
    a, b = Value(np.array([0.5, 2.0, 3.0])), Value(np.array([1.5, -0.5, 2.0]))
    (a**b).sum().backward()
    np.testing.assert_allclose(a.grad, b.data * a.data ** (b.data - 1), rtol=1e-15)
    np.testing.assert_allclose(b.grad, a.data**b.data * np.log(a.data), rtol=1e-15)


def test_mean_of_nothing_is_nan_and_so_are_empty_losses():
    assert np.isnan(Value(np.zeros((0,))).mean().data)
    np.testing.assert_array_equal(np.isnan(Value(np.zeros((0, 3))).mean(axis=0).data), [True] * 3)
    logits = Value(np.zeros((0, 4)))
    assert np.isnan(nn.cross_entropy(logits, np.zeros((0,), dtype=int)).data)
    assert np.isnan(nn.mse_loss(Value(np.zeros((0, 2))), np.zeros((0, 2))).data)


def test_mean_over_an_axis_divides_by_that_axis_length():
    x = Value(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.mean(axis=1).data, [1.0, 4.0])
    np.testing.assert_array_equal(x.mean(axis=(0, 1)).data, 2.5)
    x.mean(axis=-1).sum().backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), 1 / 3), rtol=1e-15)


# ---- float32 stays float32 -----------------------------------------------------------------------


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_float32_stays_float32_through_division_mean_and_layer_norm(shape, seed):
    data = np.random.default_rng(seed).standard_normal(shape + (3,)).astype(np.float32)
    x = Value(data)
    norm = nn.LayerNorm(3, dtype=np.float32)
    outputs = [x / 3.0, 3.0 / (x * x + 1.0), x.mean(), x.mean(axis=-1), norm(x), x**2, (x * x) ** 0.5, 2.0**x]
    for out in outputs:
        assert out.dtype == np.float32, out
    total = sum(out.sum() for out in outputs)
    total.backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in norm.parameters())


# ---- hooks must return a gradient ------------------------------------------------------------------


@pytest.mark.parametrize("returned", [1, 1 + 2j, object(), np.ones(3, dtype=np.float32), np.ones(3, dtype=int),
                                      np.ones(3, dtype=complex), "text"])
def test_hook_returning_something_other_than_a_gradient_is_an_error_naming_the_hook(returned):
    x = Value(np.ones(3))

    def sneaky_hook(g):
        return returned

    (x * 2.0).register_hook(sneaky_hook)
    y = x * 2.0
    y.register_hook(sneaky_hook)
    with pytest.raises(TypeError, match="sneaky_hook"):
        y.sum().backward()


@pytest.mark.parametrize("returned", [1, 1 + 2j, np.float32(1.0), "text"])
def test_scalar_hook_returning_a_non_float_is_an_error_naming_the_hook(returned):
    x = Value(1.0)
    y = x * 2.0
    y.register_hook(lambda g: returned)
    with pytest.raises(TypeError, match="hook <lambda>"):
        y.backward()


# ---- backward needs something to differentiate ----------------------------------------------------


def test_backward_from_a_value_that_needs_no_gradient_is_an_error():
    x = Value(2.0)
    with no_grad():
        y = x * 3.0
    for value in (y, x.detach() * 2.0, Value(1.0, requires_grad=False)):
        with pytest.raises(RuntimeError, match="does not require a gradient"):
            value.backward()


# ---- data changed after use -------------------------------------------------------------------------


def test_replacing_data_after_use_makes_backward_raise_naming_value_and_op():
    w = Value(np.array([1.0, 2.0]), name="w")
    y = (w.tanh()).sum()
    w.data = np.array([3.0, 4.0])
    with pytest.raises(RuntimeError, match=r"name='w'.*changed after tanh used it"):
        y.backward()


def test_changing_data_in_place_after_use_makes_backward_raise():
    w = Value(np.array([1.0, 2.0]), name="w")
    y = (w * w).sum()
    w.data -= 0.1  # the usual hand-written SGD step
    with pytest.raises(RuntimeError, match="changed after mul used it"):
        y.backward()


def test_an_optimiser_step_between_two_backward_passes_of_one_graph_is_caught():
    layer = nn.Linear(3, 2)
    optimiser = tg.optim.SGD(layer.parameters(), lr=0.1)
    loss = (layer(np.ones((1, 3))) ** 2).sum()
    loss.backward()
    optimiser.step()
    with pytest.raises(RuntimeError, match="changed after"):
        loss.backward()


def test_forward_again_after_an_optimiser_step_backpropagates_fine():
    layer = nn.Linear(3, 2)
    optimiser = tg.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(2):
        optimiser.zero_grad()
        (layer(np.ones((1, 3))) ** 2).sum().backward()
        optimiser.step()
    assert layer.weight.grad is not None


# ---- gradients never share memory ------------------------------------------------------------------


def test_gradients_of_a_sum_are_three_separate_arrays():
    a, b = Value(np.ones(3)), Value(np.ones(3))
    g = np.array([1.0, 2.0, 3.0])
    (a + b).backward(g)
    assert a.grad is not b.grad and a.grad is not g and b.grad is not g
    assert not np.shares_memory(a.grad, b.grad) and not np.shares_memory(a.grad, g)
    a.grad *= 2  # gradients may be scaled in place...
    np.testing.assert_array_equal(b.grad, g)  # ...without touching anyone else's
    np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])


def test_leaf_gradients_through_views_are_writable_and_intermediate_ones_read_only():
    x = Value(np.ones((2, 3)))
    y = x.reshape(6)
    s = (y + 0.0).sum()
    s.backward()
    assert x.grad.flags.writeable and x.grad.base is None and not np.shares_memory(x.grad, y.grad)
    x.grad *= 3.0  # a leaf's gradient is its own
    np.testing.assert_array_equal(y.grad, np.ones(6))
    with pytest.raises(ValueError, match="read-only"):
        y.grad *= 2.0  # an intermediate's may be shared with its neighbours: never silently changed


def test_value_keeps_its_own_copy_of_the_callers_array():
    array = np.array([1.0, 2.0])
    w = Value(array)
    optimiser = tg.optim.SGD([w], lr=0.5)
    (w * w).sum().backward()
    optimiser.step()
    np.testing.assert_array_equal(array, [1.0, 2.0])
    np.testing.assert_array_equal(w.data, [0.0, 0.0])


def test_grad_returns_unshared_arrays():
    a = Value(np.ones(3))
    g = np.array([1.0, 2.0, 3.0])
    (found,) = grad(a + 0.0, [a], g)
    assert not np.shares_memory(found, g)


# ---- truth values -------------------------------------------------------------------------------------


def test_truth_of_a_many_element_value_is_ambiguous():
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Value(np.array([1.0, 2.0])))
    assert bool(Value(np.array([0.5]))) and not bool(Value(0.0))


# ---- recording state is per thread -------------------------------------------------------------------


def test_no_grad_in_one_thread_does_not_stop_another_from_recording():
    inside, leave = threading.Event(), threading.Event()

    def sit_in_no_grad():
        with no_grad():
            inside.set()
            leave.wait(5)

    other = threading.Thread(target=sit_in_no_grad)
    other.start()
    inside.wait(5)
    try:
        x = Value(2.0)
        y = x * x
        assert y.requires_grad and y.op is not None
    finally:
        leave.set()
        other.join()
    assert STATE.grad_enabled


def test_threads_entering_and_leaving_no_grad_never_leave_grad_mode_off():
    barrier = threading.Barrier(4)

    def churn():
        barrier.wait()
        for _ in range(2000):
            with no_grad():
                pass

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert STATE.grad_enabled
    assert (Value(1.0) * 2.0).requires_grad


def test_scope_is_per_thread():
    seen = {}

    def record_in_thread():
        seen["scope"] = (Value(1.0) * 2.0).scope

    with tg.scope("main-thread"):
        worker = threading.Thread(target=record_in_thread)
        worker.start()
        worker.join()
    assert seen["scope"] == ""


def test_clip_records_land_on_their_own_nodes_in_two_threads():
    results = {}

    def run(name, scale):
        h = Value(np.full(4, scale))
        y = h * 1.0
        y.register_hook(tg.clip.clip_norm(1.0))
        (y * scale).sum().backward()  # dL/dy = scale in every entry
        results[name] = y.notes["clip"]

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("small", 0.01), ("big", 10.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["small"]["fired"] is False and results["big"]["fired"] is True
    assert STATE.hook_node is None


# ---- the op contract -------------------------------------------------------------------------------


def test_an_op_without_a_vjp_is_an_error_when_its_class_is_defined():
    with pytest.raises(TypeError, match="must define .*vjp"):

        class Forgetful(ops.Op):  # noqa: F841
            def forward(self, x):
                return x

            def jacobian_norm(self, k, out, inputs):
                return 1.0


def test_an_elementwise_op_needs_only_its_derivative():
    class Square(ops.Elementwise):
        name = "square"

        def forward(self, x):
            return x * x

        def derivative(self, k, out, x):
            return 2.0 * x

    x = Value(np.array([1.0, -3.0]))
    Square()(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -6.0])


def test_ops_do_not_import_value():
    import ast
    import inspect

    from tinygrad_rnn import lazy_sums, notation

    # The ops, and the two modules they lean on (lazy sums, how indices are written), know no Value.
    for module in (ops.base, ops.elementwise, ops.reduce, ops.movement, lazy_sums, notation):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ImportFrom):
                assert node.module.startswith(
                    ("tinygrad_rnn.ops", "tinygrad_rnn.lazy_sums", "tinygrad_rnn.notation", "__future__", "numpy")
                ), node.module
            elif isinstance(node, ast.Import):
                assert all(alias.name in ("functools", "math", "numpy") for alias in node.names)  # the standard library, numpy


# ---- many inputs -------------------------------------------------------------------------------------


def test_parents_are_the_inputs_in_order_for_any_number_of_them():
    x, y = Value(2.0), Value(3.0)
    parts = [Value(np.ones(2)) for _ in range(5)]
    assert x.parents == () and (x * x).parents == (x, x) and (x - y).parents == (x, y)
    assert x.tanh().parents == (x,) and stack(parts).parents == tuple(parts)
    assert (x * 2.0).parents[0] is x and (x * 2.0).parents[1].op is None  # the constant 2.0


def test_recording_a_node_leaves_one_object_for_the_garbage_collector():
    # A Value holds its parents in slots, not a tuple: one tracked object per node, not two.
    import gc

    x, y = Value(1.0), Value(2.0)
    gc.collect()
    before = len(gc.get_objects())
    nodes = [x * y for _ in range(1000)]
    assert len(gc.get_objects()) - before <= len(nodes) + 10


class _Counted(np.ndarray):
    """A gradient that counts the slices taken of it."""

    slices = 0

    def __getitem__(self, index):
        type(self).slices += 1
        return np.asarray(self)[index]


class _CountedInputs(list):
    """An op's inputs that note which of them a vjp reads."""

    def __init__(self, inputs, seen: list):
        super().__init__(inputs)
        self.seen = seen

    def __getitem__(self, i):
        self.seen.append(i)
        return list.__getitem__(self, i)

    def __iter__(self):
        self.seen.extend(range(len(self)))
        return list.__iter__(self)


@pytest.mark.parametrize("join", ["stack", "concat"])
def test_backward_through_twenty_thousand_inputs_touches_each_input_once(join, monkeypatch):
    n = 20_000
    values = [Value(np.array([float(i)])) for i in range(n)]
    out = stack(values) if join == "stack" else concat(values)
    op_class = type(out.op)
    reads = []
    original = op_class.vjp

    def counting_vjp(self, k, grad, out, inputs):
        reads.append([])
        return original(self, k, grad.view(_Counted), out, _CountedInputs(inputs, reads[-1]))

    monkeypatch.setattr(op_class, "vjp", counting_vjp)
    monkeypatch.setattr(op_class, "vjp_term", counting_vjp)
    _Counted.slices = 0
    (out * out).sum().backward()
    assert len(reads) == n and _Counted.slices == n  # one slice of the gradient per input
    assert max(len(seen) for seen in reads) <= 1  # and no walk over the other inputs
    assert values[123].grad[0] == 246.0


@st.composite
def joined_programs(draw):
    """A random program: values of one shape, some used several times, joined by stack or concat
    (perhaps nested), then squashed and summed."""
    count = draw(st.integers(1, 6))
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple))
    picks = draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=8))
    kind = draw(st.sampled_from(["stack", "concat", "nested"]))
    axis = draw(st.integers(-1, 0))
    return count, shape, picks, kind, axis


@given(joined_programs(), st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_stack_and_concat_programs_match_central_differences(program, seed):
    count, shape, picks, kind, axis = program
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) for _ in range(count)]

    def run(xs, backend):
        chosen = [xs[i] for i in picks]
        if kind == "stack":
            joined = backend["stack"](chosen, axis)
        elif kind == "concat":
            joined = backend["concat"](chosen, axis)
        else:
            joined = backend["concat"]([backend["stack"](chosen, 0), backend["stack"](chosen[::-1], 0)], 0)
        return joined

    weights = rng.standard_normal(run(arrays, {"stack": np.stack, "concat": np.concatenate}).shape)
    values = [Value(a) for a in arrays]
    out = run(values, {"stack": lambda v, a: stack(v, axis=a), "concat": lambda v, a: concat(v, axis=a)})
    (out.tanh() * weights).sum().backward()
    eps = 1e-6
    for i, a in enumerate(arrays):
        numeric = np.zeros_like(a)
        for j in range(a.size):
            shifted = [x.copy() for x in arrays]
            shifted[i].flat[j] += eps
            plus = np.sum(np.tanh(run(shifted, {"stack": np.stack, "concat": np.concatenate})) * weights)
            shifted[i].flat[j] -= 2 * eps
            minus = np.sum(np.tanh(run(shifted, {"stack": np.stack, "concat": np.concatenate})) * weights)
            numeric.flat[j] = (plus - minus) / (2 * eps)
        got = values[i].grad if values[i].grad is not None else np.zeros_like(a)
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)


def test_an_array_a_hook_returns_stays_the_hooks_own():
    mine_inner, mine_leaf = np.full(3, 2.0), np.full(3, 5.0)
    x = Value(np.ones(3))
    y = x * 3.0
    y.register_hook(lambda g: mine_inner)
    x.register_hook(lambda g: mine_leaf)
    y.sum().backward()
    assert mine_inner.flags.writeable and mine_leaf.flags.writeable
    assert x.grad is not mine_leaf
    x.grad *= 0.0
    np.testing.assert_array_equal(mine_leaf, [5.0, 5.0, 5.0])


def test_concat_and_stack_take_numbers_and_lists_as_constants():
    a = Value(np.ones(2))
    joined = concat([a, [1.0, 2.0]])
    np.testing.assert_array_equal(joined.data, [1.0, 1.0, 1.0, 2.0])
    stacked = stack([a, [3.0, 4.0]])
    (joined.sum() + stacked.sum()).backward()
    np.testing.assert_array_equal(a.grad, [2.0, 2.0])


def test_mean_over_an_axis_out_of_range_names_the_axis():
    with pytest.raises(Exception, match="axis 2"):
        Value(np.ones((2, 3))).mean(axis=2)
