"""Loop-invariant work inside nn.RNN (tinygrad_rnn/hoist.py): a cell written as its textbook equation
gets its transposes made once and its input projected once for all steps, with the numbers it would
compute step by step (to rounding) and the gradients eager mode computes without hoisting."""

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Value, nn
from tinygrad_rnn.graph import walk
from tinygrad_rnn.recurrence import time_step


class Elman(nn.Module):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), written as a cell author writes it."""

    def __init__(self, inputs, hidden, rng=0, dtype=np.float64):
        rng = np.random.default_rng(rng)
        self.weight_ih = Value(rng.uniform(-0.5, 0.5, (hidden, inputs)).astype(dtype))
        self.weight_hh = Value(rng.uniform(-0.5, 0.5, (hidden, hidden)).astype(dtype))
        self.bias_ih = Value(rng.uniform(-0.5, 0.5, hidden).astype(dtype))
        self.bias_hh = Value(rng.uniform(-0.5, 0.5, hidden).astype(dtype))
        self.hidden = hidden

    def forward(self, x, h):
        return (x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh).tanh()

    def initial_state(self, batch=None):
        shape = (batch, self.hidden) if batch is not None else (self.hidden,)
        return Value(np.zeros(shape, self.weight_hh.dtype), requires_grad=False)


class Gated(Elman):
    """A gate read from x alone (hoistable) and one from h: z = σ(x W_ih^T + b_ih), h' = z h + (1 - z) tanh(h W_hh^T)."""

    def forward(self, x, h):
        z = (x @ self.weight_ih.T + self.bias_ih).sigmoid()
        return z * h + (1.0 - z) * (h @ self.weight_hh.T + self.bias_hh).tanh()


def _loss_and_grads(cell, xs, hoist, loss_at_every_step=True):
    for p in cell.parameters():
        p.grad = None
    outputs, _ = nn.RNN(cell, hoist=hoist)(xs)
    loss = tg.stack(outputs).sum() if loss_at_every_step else outputs[-1].sum()
    loss.backward()
    return loss, outputs, {name: np.array(p.grad) for name, p in cell.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cell_class", [Elman, Gated])
@pytest.mark.parametrize("shape", [(7, 3, 4), (7, 4), (1, 2, 4)])
@pytest.mark.parametrize("every_step", [True, False])
def test_hoisted_unroll_gives_the_step_by_step_numbers_and_gradients(cell_class, shape, every_step):
    xs = np.random.default_rng(1).standard_normal(shape)
    cell = cell_class(shape[-1], 5)
    loss, outputs, grads = _loss_and_grads(cell, xs, True, every_step)
    plain_loss, plain_outputs, plain_grads = _loss_and_grads(cell, xs, False, every_step)
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    for a, b in zip(outputs, plain_outputs):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-14)
    for name in grads:
        np.testing.assert_allclose(grads[name], plain_grads[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_gradients_match_central_differences():
    xs = np.random.default_rng(2).standard_normal((5, 2, 3))
    cell = Elman(3, 4)
    _, _, grads = _loss_and_grads(cell, xs, True)
    eps = 1e-6
    w = cell.weight_hh.data
    for index in [(0, 0), (1, 3), (3, 2)]:
        w[index] += eps
        up = _loss_and_grads(cell, xs, False)[0].item()
        w[index] -= 2 * eps
        down = _loss_and_grads(cell, xs, False)[0].item()
        w[index] += eps
        assert grads["weight_hh"][index] == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_the_input_sequence_as_a_value_gets_its_gradient_too():
    rng = np.random.default_rng(3)
    cell = Elman(3, 4)
    grads = []
    for hoist in (True, False):
        xs = Value(rng.standard_normal((6, 2, 3)) if not grads else grads[0][1])
        outputs, _ = nn.RNN(cell, hoist=hoist)(xs)
        loss = tg.stack(outputs).sum()
        loss.backward()
        grads.append((xs.grad, xs.data))
        matmuls = [n for n in walk([loss]).nodes if n.op is not None and n.op.name == "matmul"]
        assert len(matmuls) == (6 + 1 if hoist else 2 * 6)  # hoisted: x_t W_ih^T for all steps at once
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-14)


def test_transposes_are_made_once_and_the_input_projected_once_outside_the_steps():
    steps = 6
    cell = Elman(3, 4)
    outputs, _ = nn.RNN(cell)(np.ones((steps, 2, 3)))
    nodes = walk([tg.stack(outputs).sum()]).nodes
    transposes = [n for n in nodes if n.op is not None and n.op.name == "transpose"]
    matmuls = [n for n in nodes if n.op is not None and n.op.name == "matmul"]
    assert len(transposes) == 2 and all(time_step(n) is None for n in transposes)
    outside = [n for n in matmuls if time_step(n) is None]
    assert len(outside) == 1 and outside[0].shape == (steps * 2, 4)  # x W_ih^T for all steps: one matmul
    assert len(matmuls) == steps + 1  # and h W_hh^T at each step
    reads = [n for n in nodes if n.op is not None and n.op.name == "getitem"]
    assert sorted(time_step(n).t for n in reads) == list(range(1, steps + 1))


def test_without_hoisting_every_step_computes_its_whole_equation():
    steps = 4
    outputs, _ = nn.RNN(Elman(3, 4), hoist=False)(np.ones((steps, 2, 3)))
    nodes = walk([tg.stack(outputs).sum()]).nodes
    assert sum(n.op is not None and n.op.name == "transpose" for n in nodes) == 2 * steps
    assert sum(n.op is not None and n.op.name == "matmul" for n in nodes) == 2 * steps


def test_float32_cells_stay_float32():
    cell = Elman(3, 4, dtype=np.float32)
    loss, outputs, grads = _loss_and_grads(cell, np.ones((4, 2, 3), np.float32), True)
    assert outputs[-1].dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


def test_per_step_data_and_python_numbers_are_not_shared_between_steps():
    """A mask made at each step (raw data) and a number that changes with the step are read afresh."""
    rng = np.random.default_rng(4)
    masks = rng.integers(0, 2, (5, 2, 4)).astype(float)
    scales = [0.5, 1.0, 1.5, 2.0, 2.5]

    class Masked(Elman):
        t = 0

        def forward(self, x, h):
            mask, scale = masks[self.t], scales[self.t]
            self.t += 1
            return ((x @ self.weight_ih.T) * scale * mask + h @ self.weight_hh.T).tanh()

    xs = rng.standard_normal((5, 2, 3))
    results = []
    for hoist in (True, False):
        cell = Masked(3, 4)
        results.append(_loss_and_grads(cell, xs, hoist))
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12)
    for name in results[0][2]:
        np.testing.assert_allclose(results[0][2][name], results[1][2][name], rtol=1e-12, atol=1e-14)


def test_a_hook_on_a_hoisted_node_is_refused_with_a_way_out():
    class Hooked(Elman):
        def forward(self, x, h):
            w = self.weight_hh.T
            w.register_hook(lambda g: None)
            return (x @ self.weight_ih.T + h @ w).tanh()

    with pytest.raises(RuntimeError, match="hoisted.*hoist=False"):
        nn.RNN(Hooked(3, 4))(np.ones((3, 2, 3)))
    outputs, _ = nn.RNN(Hooked(3, 4), hoist=False)(np.ones((3, 2, 3)))
    assert len(outputs) == 3


def test_a_replayed_hoisted_cell_gives_eager_gradients():
    cell = Gated(3, 4)
    rnn = nn.RNN(cell)

    def loss_of(xs):
        outputs, _ = rnn(xs)
        return tg.stack(outputs).sum()

    xs = np.random.default_rng(5).standard_normal((6, 2, 3))
    step = tg.replay(loss_of)
    for _ in range(3):  # record, then compiled calls
        for p in cell.parameters():
            p.grad = None
        loss = step(xs)
    replayed = {name: np.array(p.grad) for name, p in cell.named_parameters()}
    eager_loss, _, eager = _loss_and_grads(cell, xs, True)
    assert loss == pytest.approx(eager_loss.item(), rel=1e-12)
    for name in eager:
        np.testing.assert_allclose(replayed[name], eager[name], rtol=1e-12, atol=1e-14)


def test_an_rnn_cell_subclass_with_its_own_forward_is_hoisted_with_the_same_numbers():
    class Doubled(nn.RNNCell):
        def forward(self, x, h=None):
            return super().forward(x, h) * 2.0

    cell = Doubled(2, 3, rng=0)
    xs = np.random.default_rng(6).standard_normal((4, 2, 2))
    hoisted, _ = nn.RNN(cell)(xs)
    plain, _ = nn.RNN(cell, hoist=False)(xs)
    for a, b in zip(hoisted, plain):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12)


@pytest.mark.parametrize("cell_class", [Elman, Gated])
def test_the_step_numbers_and_each_steps_share_of_a_weight_do_not_depend_on_hoisting(cell_class):
    """The pictures' numbers: a step's gain and bound, and what each step gives W_ih and W_hh, whether
    the projection is made once before step 1 or inside every step."""
    from tinygrad_rnn import diagnostics

    xs = np.random.default_rng(7).standard_normal((6, 2, 3))
    found = {}
    for hoist in (True, False):
        cell = cell_class(3, 4)
        outputs, states = nn.RNN(cell, hoist=hoist)(xs, return_states=True)
        loss = tg.stack(outputs).sum()
        loss.backward()
        rows = diagnostics.steps(loss, states)
        found[hoist] = ([(r.gain, r.bound, r.grad_norm) for r in rows],
                        [diagnostics.contributions(loss, states, w) for w in (cell.weight_ih, cell.weight_hh)])
    for a, b in zip(found[True][0], found[False][0]):  # (None where a number has no meaning: step 0's gain)
        assert [x is None for x in a] == [x is None for x in b]
        assert [x for x in a if x is not None] == pytest.approx([x for x in b if x is not None], rel=1e-10)
    for hoisted, plain in zip(found[True][1], found[False][1]):
        for x, y in zip(hoisted, plain):
            np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=1e-10, atol=1e-13)


# ---- any cell: random equations over x_t, h and parameters give the same numbers hoisted or not -----

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LEAVES = st.sampled_from(["x", "h", "b", "c"])


def _expressions():
    """Random equations of a step, as nested tuples: every value (B, 3), parameters W (3, 3), b and c (3,)."""
    def extend(inner):
        unary = st.tuples(st.sampled_from(["tanh", "sigmoid", "relu", "@W.T", "@W", "@V.T", "*2.0"]), inner)
        binary = st.tuples(st.sampled_from(["+", "-", "*"]), inner, inner)
        return unary | binary
    return st.recursive(_LEAVES, extend, max_leaves=8)


def _evaluate(expression, values):
    if isinstance(expression, str):
        return values[expression]
    op, *args = expression
    args = [_evaluate(a, values) for a in args]
    if op == "*2.0":
        return args[0] * 2.0  # a number given as such
    if op in ("tanh", "sigmoid", "relu"):
        return getattr(args[0] if isinstance(args[0], Value) else Value(args[0], requires_grad=False), op)()
    if op.startswith("@"):
        weight = values[op[1]]
        return args[0] @ (weight.T if op.endswith(".T") else weight)
    return {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}[op](*args)


class RandomCell(nn.Module):
    def __init__(self, expression, rng):
        self.expression = expression
        self.W, self.V = (Value(rng.uniform(-0.6, 0.6, (3, 3))) for _ in range(2))
        self.b, self.c = (Value(rng.uniform(-0.5, 0.5, 3)) for _ in range(2))

    def forward(self, x, h):
        values = {"x": x, "h": h, "W": self.W, "V": self.V, "b": self.b, "c": self.c}
        out = _evaluate(self.expression, values)
        return (h @ self.V * 0.5 + out).tanh()  # (the state always reads h and a parameter: a recurrence)

    def initial_state(self, batch=None):
        return Value(np.zeros((batch, 3)), requires_grad=False)


@settings(max_examples=60, deadline=None)
@given(_expressions(), st.integers(0, 2**16))
def test_any_equation_gives_the_same_numbers_and_gradients_hoisted_or_not(expression, seed):
    rng = np.random.default_rng(seed)
    xs = Value(rng.standard_normal((4, 2, 3)))
    found = []
    for hoist in (True, False):
        cell = RandomCell(expression, np.random.default_rng(seed))
        xs.grad = None
        outputs, _ = nn.RNN(cell, hoist=hoist)(xs)
        loss = (tg.stack(outputs) * np.linspace(0.5, 1.5, 3)).sum()
        loss.backward()
        found.append((loss.item(), [o.data for o in outputs],
                      [np.zeros(3) if p.grad is None else p.grad for p in (cell.W, cell.V, cell.b, cell.c)],
                      np.zeros(xs.shape) if xs.grad is None else xs.grad))
    (loss_a, out_a, grads_a, x_a), (loss_b, out_b, grads_b, x_b) = found
    assert loss_a == pytest.approx(loss_b, rel=1e-10, abs=1e-12)
    for a, b in zip(out_a + grads_a + [x_a], out_b + grads_b + [x_b]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_hoist_must_be_true_or_false():
    with pytest.raises(TypeError, match="hoist must be True or False, got 'no'"):
        nn.RNN(Elman(3, 4), hoist="no")
