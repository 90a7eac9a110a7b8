"""tinygrad_rnn.to_torch: a cell carried to PyTorch computes the same step and the same gradients,
with the same parameter names; what a recording cannot carry is refused by name."""

import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.ops import Elementwise

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from cells import ZOO, chrono_init  # noqa: E402

CELLS = {
    "RNNCell": lambda: nn.RNNCell(3, 4, rng=0),
    "RNNCell-relu": lambda: nn.RNNCell(3, 4, nonlinearity="relu", rng=0),
    "RNNCell-no-bias": lambda: nn.RNNCell(3, 4, bias=False, rng=0),
    "LSTMCell": lambda: nn.LSTMCell(3, 4, rng=0),
    "LSTMCell-chrono": lambda: chrono_init(nn.LSTMCell(3, 4, rng=0), t_max=20, rng=1),
    "GRUCell": lambda: nn.GRUCell(3, 4, rng=0),
    **{name: (lambda make=make: make(3, 4, rng=0)) for name, make in ZOO.items()},
}


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


def engine_step(cell, x, state, weights):
    """Outputs and gradients (x, state parts, parameters by name) of sum_k (out_k * weights_k) in this engine."""
    x_value = tg.Value(x)
    state_values = [tg.Value(s) for s in state]
    out = parts(cell(x_value, tuple(state_values) if len(state_values) > 1 else state_values[0]))
    cell.zero_grad()
    sum((o * w).sum() for o, w in zip(out, weights)).backward()
    grads = {"x": x_value.grad, **{f"state{k}": s.grad for k, s in enumerate(state_values)},
             **{name: p.grad for name, p in cell.named_parameters()}}
    return [o.data for o in out], grads


def torch_step(module, x, state, weights):
    x_tensor = torch.tensor(x, requires_grad=True)
    state_tensors = [torch.tensor(s, requires_grad=True) for s in state]
    out = parts(module(x_tensor, tuple(state_tensors) if len(state_tensors) > 1 else state_tensors[0]))
    sum((o * torch.tensor(w)).sum() for o, w in zip(out, weights)).backward()
    grads = {"x": x_tensor.grad, **{f"state{k}": s.grad for k, s in enumerate(state_tensors)},
             **{name: p.grad for name, p in module.named_parameters()}}
    return [o.detach().numpy() for o in out], {k: None if g is None else g.numpy() for k, g in grads.items()}


@pytest.mark.parametrize("name", CELLS)
def test_torch_module_has_the_same_parameters_by_name_and_value(name):
    cell = CELLS[name]()
    module = tg.to_torch(cell)
    assert isinstance(module, torch.nn.Module)
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in cell.named_parameters()]
    for (_, p), (_, q) in zip(module.named_parameters(), cell.named_parameters()):
        assert isinstance(p, torch.nn.Parameter) and p.dtype == torch.float64
        np.testing.assert_array_equal(p.detach().numpy(), q.data)
        assert not np.shares_memory(p.detach().numpy(), q.data)  # a copy: training one leaves the other


@pytest.mark.parametrize("batch", [1, 5])  # neither is a batch size the recording used (2 and 3)
@pytest.mark.parametrize("name", CELLS)
def test_forward_and_gradients_equal_the_engines_in_float64(name, batch):
    cell = CELLS[name]()
    module = tg.to_torch(cell)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(batch, 3))
    state = [rng.normal(size=(batch, 4)) * 0.5 for _ in parts(cell.initial_state(1))]
    weights = [rng.normal(size=(batch, 4)) for _ in state]
    out, grads = engine_step(cell, x, state, weights)
    torch_out, torch_grads = torch_step(module, x, state, weights)
    for a, b in zip(out, torch_out):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    assert grads.keys() == torch_grads.keys()
    for key, g in grads.items():
        np.testing.assert_allclose(torch_grads[key], g, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", ["LSTMCell", "JANET", "peephole LSTM"])
def test_an_unrolled_sequence_from_zeros_matches_through_time(name):
    # state=None starts from the cell's zeros, as nn.RNN does; 6 steps compound any difference.
    cell = CELLS[name]()
    module = tg.to_torch(cell)
    x = np.random.default_rng(3).normal(size=(6, 4, 3))
    outputs, _ = nn.RNN(cell)(x)
    state, xs = None, torch.tensor(x)
    for t in range(6):
        state = module(xs[t], state)
        hidden = state[0] if isinstance(state, tuple) else state
        np.testing.assert_allclose(hidden.detach().numpy(), outputs[t].data, rtol=0, atol=1e-12)


def test_float32_cell_gives_a_float32_module():
    cell = nn.LSTMCell(3, 4, rng=0).to(np.float32)
    module = tg.to_torch(cell)
    h, c = module(torch.zeros(2, 3, dtype=torch.float32))
    assert h.dtype == torch.float32 and all(p.dtype == torch.float32 for p in module.parameters())


def test_source_lists_one_torch_call_per_recorded_op():
    module = tg.to_torch(nn.RNNCell(2, 3, rng=0))
    assert "torch.tanh(" in module.source and module.source.splitlines()[-1].startswith("return v")


def test_nested_modules_keep_their_dotted_names():
    class Stacked(nn.Module):
        def __init__(self):
            self.first, self.second = nn.RNNCell(2, 3, rng=0), nn.RNNCell(3, 3, rng=1)
            self.input_size, self.scale = 2, tg.Value(0.5)

        def initial_state(self, batch_size):
            return self.first.initial_state(batch_size)

        def forward(self, x, h):
            return self.second(self.first(x, h), h) * self.scale

    cell = Stacked()
    module = tg.to_torch(cell)
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in cell.named_parameters()]
    assert "first.weight_hh" in dict(module.named_parameters())
    x, h = np.ones((4, 2)), np.full((4, 3), 0.1)
    expected = cell(tg.Value(x), tg.Value(h)).data
    np.testing.assert_allclose(module(torch.tensor(x), torch.tensor(h)).detach().numpy(), expected, atol=1e-12)


# ---- refusals ----------------------------------------------------------------------------------------

class Cube(Elementwise):
    """cube: y = x^3;  dy/dx = 3 x^2 (a primitive of the user's own, with no PyTorch translation)"""

    name = "cube"

    def forward(self, x):
        return x**3

    def derivative(self, k, out, x):
        return 3.0 * x * x


class Cell(nn.Module):
    def __init__(self, step):
        self.input_size, self.hidden_size, self.step = 2, 2, step
        self.weight = tg.Value(np.eye(2))

    def initial_state(self, batch_size):
        return tg.Value(np.zeros((batch_size, 2)), requires_grad=False)

    def forward(self, x, h):
        return self.step(self, x, h)


def test_an_op_without_translation_is_refused_by_name():
    cell = Cell(lambda self, x, h: Cube()(x @ self.weight + h))
    with pytest.raises(tg.ExportError, match="op 'cube'.*no PyTorch translation"):
        tg.to_torch(cell)


def test_a_branch_on_the_data_is_refused():
    cell = Cell(lambda self, x, h: (x @ self.weight).tanh() if (h.sum() > 0) else h)
    with pytest.raises(tg.ExportError, match="reads a Value's data"):
        tg.to_torch(cell)


def test_a_constant_computed_from_the_data_is_refused():
    cell = Cell(lambda self, x, h: x @ self.weight + tg.Value(np.sign(x.data)))
    with pytest.raises(tg.ExportError, match=r"reads a Value's data in Python \(\.data"):
        tg.to_torch(cell)


def test_a_constant_of_the_batchs_shape_differing_from_entry_to_entry_is_refused():
    cell = Cell(lambda self, x, h: x @ self.weight + tg.Value(np.arange(float(h.size)).reshape(h.shape)))
    with pytest.raises(tg.ExportError, match="batch's shape"):
        tg.to_torch(cell)


def test_a_constant_of_the_batchs_shape_holding_one_number_follows_the_batch():
    cell = Cell(lambda self, x, h: x @ self.weight + tg.Value(np.full(h.shape, 0.25)))
    module = tg.to_torch(cell)
    out = module(torch.ones(7, 2, dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), np.full((7, 2), 1.25))


def test_a_value_needing_a_gradient_read_from_outside_the_module_is_refused_by_shape():
    """A Value the cell reads from a closure is trained here (it gets a gradient); exported as a constant,
    PyTorch would never train it: refused, where a Value made inside the call stays a constant."""
    outside = tg.Value(np.full(2, 0.5), name="scale")
    cell = Cell(lambda self, x, h: (x @ self.weight) * outside + h)
    with pytest.raises(tg.ExportError, match="'scale' of shape \\(2,\\).*not one of its parameters"):
        tg.to_torch(cell)
    frozen = tg.Value(np.full(2, 0.5), requires_grad=False)
    module = tg.to_torch(Cell(lambda self, x, h: (x @ self.weight) * frozen + h))
    assert [name for name, _ in module.named_parameters()] == ["weight"]


def test_a_module_without_initial_state_is_refused():
    with pytest.raises(TypeError, match="initial_state"):
        tg.to_torch(nn.Linear(2, 3))


def test_every_translated_op_agrees_in_a_cell_that_uses_them_all():
    mask = np.array([True, False, True])

    def step(self, x, h):
        a = x @ self.weight + h
        parts = tg.split(a, 3, axis=-1)
        b = tg.concat([tg.minimum(parts[0], parts[1]), tg.maximum(parts[1], parts[2]), parts[2].abs()], axis=-1)
        c = tg.where(mask, b.softplus(), (b * b + 1.0).sqrt().log1p()) + a.clip(-0.5, 0.5)
        d = tg.stack([c.exp().log(), c.leaky_relu(0.1), c.relu(), c ** 3, (-c).sigmoid()]).sum(axis=0)
        e = d - d.max(axis=-1, keepdims=True) + d.mean(axis=-1, keepdims=True) / 2.0
        return e.reshape(e.shape[0], 3, 1).transpose(0, 2, 1).reshape(e.shape[0], 3).tanh()

    cell = Cell(step)
    cell.hidden_size, cell.input_size = 3, 3
    cell.weight = tg.Value(np.random.default_rng(0).normal(size=(3, 3)))
    cell.initial_state = lambda batch_size: tg.Value(np.zeros((batch_size, 3)), requires_grad=False)
    module = tg.to_torch(cell)
    rng = np.random.default_rng(1)
    x, h, w = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    out, grads = engine_step(cell, x, [h], [w])
    torch_out, torch_grads = torch_step(module, x, [h], [w])
    np.testing.assert_allclose(torch_out[0], out[0], rtol=0, atol=1e-12)
    for key, g in grads.items():
        np.testing.assert_allclose(torch_grads[key], g, rtol=0, atol=1e-12, err_msg=key)
