"""A replayed step gives eager mode's losses and gradients exactly (the same floats, not close ones),
over several optimiser steps with new data each time: for every cell, for random programs over every
primitive op, with hooks, truncation, integer arguments, and new shapes."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_table import OPS
from replay_helpers import op_methods_run

import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim, plan
from tinygrad_rnn.clip import clip_norm
from tinygrad_rnn.nn.batchnorm_rnn import BNRNNCell


def assert_same_gradients(eager_params, replay_params):
    for p, q in zip(eager_params, replay_params, strict=True):
        assert (p.grad is None) == (q.grad is None), p.name
        if p.grad is not None:
            assert np.array_equal(p.grad, q.grad, equal_nan=True), p.name
            assert np.result_type(p.grad) == np.result_type(q.grad), p.name


def train_side_by_side(make_model, loss_of, batches, optimizer=optim.Adam):
    """Two identical models, one trained eagerly and one through replay, on the same batches; every
    loss and every gradient must be equal. Returns the replay step for further checks."""
    eager_model, replay_model = make_model(), make_model()
    eager_params, replay_params = eager_model.parameters(), replay_model.parameters()
    eager_opt, replay_opt = optimizer(eager_params, lr=0.05), optimizer(replay_params, lr=0.05)
    step = tg.replay(lambda *arrays: loss_of(replay_model, *arrays))
    for arrays in batches:
        eager_opt.zero_grad()
        expected = loss_of(eager_model, *arrays)
        expected.backward()
        replay_opt.zero_grad()
        got = step(*arrays)
        assert type(got) is float
        assert got == expected.item()
        assert_same_gradients(eager_params, replay_params)
        eager_opt.step()
        replay_opt.step()
    for p, q in zip(eager_params, replay_params):
        assert np.array_equal(p.data, q.data)
    for (name, a), (_, b) in zip(eager_model.named_buffers(), replay_model.named_buffers(), strict=True):
        assert np.array_equal(a, b), f"buffer {name}"  # (BatchNorm's running statistics: updated as eagerly)
    return step


# ---- cells ------------------------------------------------------------------------------------


class MinimalGatedCell(nn.Module):
    """A custom cell (Zhou et al. 2016): f = sigmoid(x W_f^T + h U_f^T + b_f),
    n = tanh(x W_n^T + (f h) U_n^T + b_n), h' = (1 - f) h + f n."""

    def __init__(self, input_size, hidden_size, dtype):
        rng = np.random.default_rng(7)
        self.hidden_size = hidden_size
        for name, shape in [("weight_f", (hidden_size, input_size)), ("recurrent_f", (hidden_size, hidden_size)),
                            ("weight_n", (hidden_size, input_size)), ("recurrent_n", (hidden_size, hidden_size)),
                            ("bias_f", (hidden_size,)), ("bias_n", (hidden_size,))]:
            setattr(self, name, tg.Value(rng.uniform(-0.5, 0.5, shape).astype(dtype)))

    def initial_state(self, batch_size=None):
        shape = (self.hidden_size,) if batch_size is None else (batch_size, self.hidden_size)
        return tg.Value(np.zeros(shape, self.weight_f.dtype), requires_grad=False)

    def forward(self, x, h):
        f = (x @ self.weight_f.T + h @ self.recurrent_f.T + self.bias_f).sigmoid()
        n = (x @ self.weight_n.T + (f * h) @ self.recurrent_n.T + self.bias_n).tanh()
        return (1.0 - f) * h + f * n


CELLS = {
    "rnn_tanh": lambda i, h, dtype: nn.RNNCell(i, h, rng=1, dtype=dtype),
    "rnn_relu": lambda i, h, dtype: nn.RNNCell(i, h, nonlinearity="relu", rng=1, dtype=dtype),
    "rnn_leaky_relu": lambda i, h, dtype: nn.RNNCell(i, h, nonlinearity="leaky_relu", rng=1, dtype=dtype),
    # Batch statistics per step (its running averages are a side effect, not replayed).
    "batchnorm": lambda i, h, dtype: BNRNNCell(i, h, rng=1, dtype=dtype),
    "lstm": lambda i, h, dtype: nn.LSTMCell(i, h, rng=1, dtype=dtype),
    "gru": lambda i, h, dtype: nn.GRUCell(i, h, rng=1, dtype=dtype),
    "custom": lambda i, h, dtype: MinimalGatedCell(i, h, dtype),
}


class CharModel(nn.Module):
    """x (T, B, I) -> RNN(cell) -> Linear -> summed cross-entropy against targets (T, B)."""

    def __init__(self, cell_name, dtype, vocab=6, hidden=5, **rnn_options):
        self.cell = CELLS[cell_name](vocab, hidden, dtype)
        self.head = nn.Linear(hidden, vocab, rng=2, dtype=dtype)
        self.rnn_options = rnn_options

    def loss(self, inputs, targets):
        hiddens, _ = nn.RNN(self.cell, **self.rnn_options)(inputs)
        return nn.cross_entropy(self.head(tg.stack(hiddens)), targets, reduction="mean")


def char_batches(steps=4, length=7, batch=3, vocab=6, dtype=np.float32, seed=0):
    """New one-hot inputs and integer targets at every step, of one shape."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        ids = rng.integers(0, vocab, (length + 1, batch))
        batches.append((np.eye(vocab, dtype=dtype)[ids[:-1]], ids[1:]))
    return batches


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell_name", list(CELLS))
def test_replayed_training_equals_eager_for_every_cell(cell_name, dtype):
    batches = char_batches(dtype=dtype)
    step = train_side_by_side(lambda: CharModel(cell_name, dtype), CharModel.loss, batches)
    if cell_name == "batchnorm":  # fn replaces the running statistics, arrays it reads: each call records
        assert step.recordings == len(batches)
    else:
        assert step.recordings == 1  # the guards found nothing that changed: every later call was replayed


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru", "custom"])
def test_truncated_bptt_replays_its_cuts(cell_name):
    # After the first call the cut states hold data of later calls: a cut replayed as a frozen
    # constant would give different losses from step 2 on.
    train_side_by_side(lambda: CharModel(cell_name, np.float64, truncate=2), CharModel.loss,
                       char_batches(dtype=np.float64, length=7))


def test_hidden_hooks_run_on_replay_as_in_eager_mode():
    eager_clip, replay_clip = clip_norm(0.01), clip_norm(0.01)
    models = iter([eager_clip, replay_clip])

    def make_model():
        return CharModel("rnn_tanh", np.float64, hidden_hook=next(models))

    train_side_by_side(make_model, CharModel.loss, char_batches(dtype=np.float64))
    assert replay_clip.last["fired"]  # the clip did change the gradients being compared
    assert replay_clip.last == eager_clip.last


def test_a_hook_finds_its_node_holding_this_calls_value():
    def make_model(seen):
        def look(grad):
            seen.append(np.array(tg.autograd.STATE.hook_node.data))

        return lambda: CharModel("lstm", np.float64, hidden_hook=look)

    eager_seen, replay_seen = [], []
    makers = iter([make_model(eager_seen), make_model(replay_seen)])
    train_side_by_side(lambda: next(makers)(), CharModel.loss, char_batches(dtype=np.float64))
    assert len(replay_seen) == len(eager_seen) == 4 * 7
    assert all(np.array_equal(a, b) for a, b in zip(eager_seen, replay_seen))


def test_leaves_never_share_a_gradient_array():
    # b_ih and b_hh enter the cell as one sum: the backward pass hands both the same array.
    model = CharModel("rnn_tanh", np.float64)
    step = tg.replay(model.loss)
    for inputs, targets in char_batches(steps=2, dtype=np.float64):
        model.zero_grad()
        step(inputs, targets)
        assert not np.shares_memory(model.cell.bias_ih.grad, model.cell.bias_hh.grad)


def test_each_gradient_is_laid_out_as_in_eager_mode():
    # Eager mode hands a gradient that is a view (here the sum's broadcast one) on as it is, and
    # copies only into a leaf's .grad; numpy's matmul rounds a broadcast view and a contiguous copy
    # differently in the last bit, so a replay must copy exactly where eager mode does.
    rng = np.random.default_rng(0)
    batches = [(rng.uniform(-2, 2, (1, 2)), rng.uniform(-2, 2, (2, 4))) for _ in range(4)]

    def make_model():
        model, init = nn.Module(), np.random.default_rng(0)
        model.p, model.q = tg.Value(init.uniform(0.9, 1.1, (1, 2))), tg.Value(init.uniform(0.9, 1.1, (2, 4)))
        return model

    train_side_by_side(make_model, lambda m, a, b: 0.0 + ((a * m.p) @ (b * m.q)).sum(), batches,
                       optimizer=lambda params, lr: optim.SGD(params, lr=1e-3))


def test_a_hook_registered_on_a_parameter_after_recording_runs():
    def loss_of(model, inputs, targets):
        return model.loss(inputs, targets)

    eager_model, replay_model = CharModel("gru", np.float64), CharModel("gru", np.float64)
    step = tg.replay(lambda *arrays: loss_of(replay_model, *arrays))
    (inputs, targets), = char_batches(steps=1, dtype=np.float64)
    step(inputs, targets)
    for model in (eager_model, replay_model):
        model.cell.weight_hh.register_hook(lambda g: g * 3.0)
        for p in model.parameters():
            p.grad = None
    loss_of(eager_model, inputs, targets).backward()
    step(inputs, targets)
    assert_same_gradients(eager_model.parameters(), replay_model.parameters())
    without_hook = CharModel("gru", np.float64)
    loss_of(without_hook, inputs, targets).backward()
    assert np.array_equal(replay_model.cell.weight_hh.grad, 3.0 * without_hook.cell.weight_hh.grad)


def test_gradients_accumulate_across_calls_like_backward():
    model_e, model_r = CharModel("lstm", np.float64), CharModel("lstm", np.float64)
    step = tg.replay(model_r.loss)
    for inputs, targets in char_batches(steps=3, dtype=np.float64):  # no zero_grad in between
        model_e.loss(inputs, targets).backward()
        step(inputs, targets)
    assert_same_gradients(model_e.parameters(), model_r.parameters())


class EmbeddingModel(nn.Module):
    def __init__(self):
        self.embedding = nn.Embedding(6, 4, rng=3)
        self.cell = nn.RNNCell(4, 5, rng=4)
        self.head = nn.Linear(5, 6, rng=5)

    def loss(self, ids, targets):
        hiddens, _ = nn.RNN(self.cell)(self.embedding(ids))
        return nn.cross_entropy(self.head(tg.stack(hiddens)), targets)


def test_integer_arguments_reach_the_ops_that_index_with_them():
    # Both the embedding rows and the picked targets change at every call.
    rng = np.random.default_rng(4)
    batches = [(rng.integers(0, 6, (5, 2)), rng.integers(0, 6, (5, 2))) for _ in range(4)]
    train_side_by_side(EmbeddingModel, EmbeddingModel.loss, batches)


def test_one_integer_array_passed_in_two_places_is_two_arguments():
    table = tg.Value(np.arange(12.0).reshape(6, 2))
    step = tg.replay(lambda rows, picks: (table[rows] * table[picks]).sum())
    ids = np.array([1, 2])
    step(ids, ids)
    table.grad = None
    loss = step(np.array([0, 5]), np.array([3, 4]))  # now two different arrays
    replayed, table.grad = table.grad, None
    eager = (table[np.array([0, 5])] * table[np.array([3, 4])]).sum()
    eager.backward()
    assert loss == eager.item() and np.array_equal(replayed, table.grad)


def test_a_negative_target_on_replay_is_an_error_not_a_wrapped_index():
    model = EmbeddingModel()
    step = tg.replay(model.loss)
    ids, targets = np.zeros((5, 2), dtype=int), np.ones((5, 2), dtype=int)
    step(ids, targets)
    step(ids, targets)
    with pytest.raises(ValueError, match="argument 1 holds negative entries"):
        step(ids, -targets)
    with pytest.raises(IndexError, match="cross_entropy"):  # eager mode checks it itself
        model.loss(ids, -targets)


# ---- shapes, leaves and errors ----------------------------------------------------------------


def test_new_shapes_record_a_new_tape_and_old_shapes_reuse_theirs():
    batches = [char_batches(steps=1, length=n, dtype=np.float64, seed=n)[0] for n in (4, 6, 4, 6)]
    step = train_side_by_side(lambda: CharModel("rnn_tanh", np.float64), CharModel.loss, batches)
    assert len(step.tapes) == 2
    float32 = char_batches(steps=1, length=4, dtype=np.float32)[0]
    step(*float32)
    assert len(step.tapes) == 3  # a new dtype is a new recording too


def test_a_parameter_whose_shape_or_requires_grad_changed_is_recorded_again():
    w, b = tg.Value(np.ones(3)), tg.Value(2.0)
    step = tg.replay(lambda x: (w * x).sum() * b)
    x = np.arange(3.0)
    w.requires_grad = False
    step(x)
    w.requires_grad = True
    step(x)  # recorded without w's gradient, replayed with it: must record again
    assert np.array_equal(w.grad, x * 2.0)
    w.data, w.grad = np.ones((2, 3)), None  # broadcasts against x now: a different program
    assert step(x) == 12.0
    assert np.array_equal(w.grad, np.stack([x, x]) * 2.0)
    assert len(step.tapes) == 1  # the same arguments' shapes: each recording replaced the last


def test_an_argument_that_reaches_no_op_is_an_error():
    w = tg.Value(np.ones(3))
    with pytest.raises(ValueError, match="argument 1 .* reaches no recorded op"):
        tg.replay(lambda x, ids: (w * x).sum())(np.ones(3), np.array([0, 1]))
    step = tg.replay(lambda x: (w * np.asarray(x.data)).sum())  # x read through .data: seen, read again
    step(np.ones(3))
    assert step(np.full(3, 2.0)) == 6.0 and step.recordings == 2


def test_the_function_must_return_a_single_number_that_needs_a_gradient():
    w = tg.Value(np.ones(3))
    with pytest.raises(ValueError, match="single number"):
        tg.replay(lambda: w * 2.0)()
    with pytest.raises(RuntimeError, match="does not depend on anything that requires a gradient"):
        tg.replay(lambda x: x.sum())(np.ones(3))
    with pytest.raises(TypeError, match="argument 0 is a Value"):
        tg.replay(lambda x: (w * x).sum())(tg.Value(np.ones(3)))


def test_the_tape_reads_as_a_wengert_list():
    w = tg.Value(np.ones(3), name="w")
    step = tg.replay(lambda x: (w * x).tanh().sum())
    step(np.ones(3))
    (tape,) = step.tapes.values()
    assert str(tape).splitlines() == [
        "v1 = argument 0", "v0 = leaf w (3,)", "v2 = mul(v0, v1)", "v3 = tanh(v2)",
        "v4 = sum(v3)    axis=None, keepdims=False", "loss = v4",
    ]


# ---- random programs over every primitive ------------------------------------------------------


@st.composite
def programs(draw):
    """A chain of ops from the op table: op j gets (argument_j * parameter_j * s_j), where s_j is a
    number near 1 that depends on op j-1's output, so the ops form one program."""
    cases = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=5), label="ops")
    shapes = [draw(case.shapes) for case in cases]
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    return cases, shapes, seed


@settings(max_examples=40, deadline=None)
@given(program=programs())
def test_random_programs_replay_exactly(program):
    cases, shapes, seed = program
    rng = np.random.default_rng(seed)

    def make_model():
        model = nn.Module()
        init = np.random.default_rng(seed)
        for j, case_shapes in enumerate(shapes):
            for i, shape in enumerate(case_shapes):
                setattr(model, f"p{j}_{i}", tg.Value(init.uniform(0.9, 1.1, shape)))
        return model

    def loss_of(model, *arrays):
        arrays, total, carry = iter(arrays), 0.0, 0.0
        for j, (case, case_shapes) in enumerate(zip(cases, shapes)):
            scale = (carry * 0.1).sigmoid() * 0.2 + 0.9 if j else 1.0
            inputs = [next(arrays) * getattr(model, f"p{j}_{i}") * scale for i in range(len(case_shapes))]
            out = case.call(*inputs)
            carry = out.sum()
            total = total + carry
        return total

    def batch():
        return [a for case, s in zip(cases, shapes) for a in case.make_inputs(rng, s)]

    with np.errstate(all="ignore"):
        train_side_by_side(make_model, loss_of, [batch() for _ in range(3)],
                           optimizer=lambda params, lr: optim.SGD(params, lr=1e-3))


class Watched(np.ndarray):
    """An array that notes each numpy ufunc run on it (``calls``: the ufunc's name, whether it takes
    one array twice as in h * h, and that array's shape); what it computes is a plain array."""

    calls: list = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        Watched.calls.append((ufunc.__name__, len(inputs) == 2 and inputs[0] is inputs[1], np.shape(inputs[0])))
        plain = [x.view(np.ndarray) if isinstance(x, Watched) else x for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Watched) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        return out[0] if out is not None and len(out) == 1 else result  # (a row written stays watched)


def squares_of_the_stacked_states(monkeypatch) -> list:
    """The shapes of the products h * h computed on the stacked states (each row h_t of the buffer
    they are written into) while a step is compiled and replayed: the plan's buffers are watched."""
    stacks = plan.stacks

    def watched(tape, examples):
        stacked, found = stacks(tape, examples)
        views = {id(b): b.view(Watched) for b in found.values()}
        return {s: (views[id(b)], row) for s, (b, row) in stacked.items()}, {s: views[id(b)] for s, b in found.items()}

    monkeypatch.setattr(plan, "stacks", watched)
    monkeypatch.setattr(Watched, "calls", [])
    return Watched.calls


def test_the_compiled_source_is_bptt_written_out_as_numpy_one_line_per_op(monkeypatch):
    squares = squares_of_the_stacked_states(monkeypatch)
    model = CharModel("rnn_tanh", np.float64)
    step = tg.replay(model.loss)
    assert step.source is None
    inputs, targets = char_batches(steps=1, length=3, dtype=np.float64)[0]
    step(inputs, targets)
    source = step.source
    tape = next(iter(step.tapes.values()))
    assert source.startswith("def replayed(arrays):")
    forward, backward = source.split("# ---- backward")
    assigned = [re.match(r"\s+(v\d+)\w* = ", line) for line in forward.splitlines()]
    slots = [m.group(1) for m in assigned if m]
    assert all(slots.count(f"v{out}") == 1 for _, _, out in tape.forward)  # one line per op
    assert all(f"# t={t}" in forward for t in (1, 2, 3))  # each time step marked where its ops run
    tanh_ops = sum(op.name == "tanh" for op, _, _ in tape.forward)
    assert forward.count("np.tanh(") == tanh_ops == 3  # the ops' own definitions, written out as numpy
    # tanh's derivative, 1 - y^2 from Tanh.derivative, computed once over the rows of the stacked
    # states: h * h runs once, on the whole buffer, and never on one step's h_t
    slope = re.search(r"(_hoisted_\d+) = 1.0 - (_stacked_\d+) \* \2", backward)
    squares.clear()
    step(inputs, targets)  # (the first call ran eagerly, recording)
    assert slope and [shape[0] for name, twice, shape in squares if name == "multiply" and twice] == [3]
    assert re.search(f"v\\d+ = {slope.group(2)}  # stack", forward)  # the stack is the rows, written in place
    assert re.search(r"g\d+ = g\d+ @ v\d+\.T", backward)  # matmul's vjp: g W
    assert re.search(r"g\d+ = _a_rows_\d+\[0:3\]\.reshape\(-1, \d+\)\.T @ _\w*rows_\d+\[0:3\]", backward)  # dW_hh
    # Called, not written out: only the pick of the targets' forward, which holds this call's integer
    # argument; every vjp is written out, the pick's too (its gradient added where it was picked)
    run = op_methods_run(monkeypatch)
    step(inputs, targets)
    assert run == [("GetItem", "forward")]
    assert "_weight_hh" in backward and "v5_weight_hh" in forward  # named after the Values
    compile(source, "<test>", "exec")  # it is Python a reader can run


def test_a_long_tensor_tape_is_not_compiled_and_runs_eagerly_with_the_same_floats(monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("tinygrad_rnn.replay"), "COMPILE_LIMIT", 10)
    batches = char_batches(steps=3, length=4, dtype=np.float64)
    step = train_side_by_side(lambda: CharModel("lstm", np.float64), CharModel.loss, batches)
    assert step.source is None and step.recordings == 1  # recorded once, then eager mode (checked above)


def scalar_program(weights, x, a_hook=None):
    """A scalar graph touching what running by level must get right: a slot read twice (x * x),
    ops of one kind with other parameters (x^2, x^3; where on two conditions), a detach, a branch on
    data, a long chain, and a hook on a leaf."""
    w0, w1, w2 = weights
    h = (w0 * x + w1).tanh()
    total = h * h + (w2 ** 2.0) * (w1 ** 3.0) - h.detach() * w0
    total = total + tg.where(True, w0, w1) + tg.where(False, w0, w2)
    total = total + (total.sigmoid() if x * w0 > 0 else (-total).exp())
    for _ in range(40):
        total = total * 0.9 + (total * w2).relu() - w0.abs() / (1.0 + w1 * w1)
    return total.log() if total > 0 else (total * total + 1.0).log()


@pytest.mark.parametrize("x", [0.7, -2.0])
def test_a_long_scalar_tape_runs_by_level_and_agrees_with_eager_to_rounding(monkeypatch, x):
    import importlib

    monkeypatch.setattr(importlib.import_module("tinygrad_rnn.replay"), "COMPILE_LIMIT", 10)
    seen = []
    weights = [tg.Value(v, name=f"w{i}") for i, v in enumerate([0.3, -0.8, 0.5])]
    weights[2].register_hook(lambda g: seen.append(g) or 2.0 * g)
    reference = [tg.Value(w.data) for w in weights]
    reference[2].register_hook(lambda g: 2.0 * g)
    step = tg.replay(lambda x: scalar_program(weights, x))
    for value in [x, x, -x, x]:
        tg.zero_grad(weights)
        tg.zero_grad(reference)
        got = step(np.float64(value))
        expected = scalar_program(reference, tg.Value(value, requires_grad=False))
        expected.backward()
        assert "level" in step.source and ".vjp(" in step.source
        assert got == pytest.approx(expected.item(), rel=1e-12)
        for w, r in zip(weights, reference):
            assert type(w.grad) is float and w.grad == pytest.approx(r.grad, rel=1e-12, abs=1e-300)
    assert len(seen) == 4 and all(type(g) is float for g in seen)  # the leaf's hook ran at every call
    assert step.recordings == 3  # -x took the other branch, and x then took the first again: recorded anew


@pytest.mark.parametrize("name", ["add", "leaf", "tanh", "1st", "np", "FAILED", "handed_out", "arrays", "g", "σ"])
def test_any_value_name_compiles_and_replays_eager_modes_floats(name):
    w, b = tg.Value(np.array([0.5, -1.0]), name=name), tg.Value(np.array([0.1, 0.2]), name="add")

    def fn(x):
        h = (w * x + b).tanh()
        h.name = name
        return (h * h).sum()

    step = tg.replay(fn)
    x = np.array([1.0, 2.0])
    for _ in range(2):
        tg.zero_grad([w, b])
        got = step(x)
    tg.zero_grad([w, b])
    expected = fn(tg.Value(x, requires_grad=False))
    expected.backward()
    assert got == expected.item() and step.source is not None
    grads = [w.grad.copy(), b.grad.copy()]
    tg.zero_grad([w, b])
    step(x)
    assert np.array_equal(w.grad, grads[0]) and np.array_equal(b.grad, grads[1])


# ---- the memory plan -------------------------------------------------------------------------------


def test_buffers_the_compiled_code_writes_into_never_reach_a_leaf_or_a_hook():
    # x read row by row: its gradient would be the filled rows; w at every step: a^T g over the rows.
    x = tg.Value(np.arange(12.0).reshape(3, 4) / 10, name="x")
    w = tg.Value(np.eye(4) * 0.5, name="w")
    shown = []
    x.register_hook(lambda g: shown.append(g.copy()))

    def fn(scale):
        h = tg.Value(np.zeros((1, 4)), requires_grad=False)
        for t in range(3):
            h = (x[t] * scale + h @ w).tanh()
        return (h * h).sum()

    step = tg.replay(fn)
    scale = np.ones((1, 4))
    got = []
    for _ in range(3):
        tg.zero_grad([x, w])
        step(scale)
        got.append((x.grad.copy(), w.grad.copy()))
        x.grad *= 0.0  # the caller's to change in place: no later call may see it
        w.grad *= 0.0
    tg.zero_grad([x, w])
    fn(tg.Value(scale, requires_grad=False)).backward()
    for x_grad, w_grad in got:
        np.testing.assert_array_equal(x_grad, x.grad)
        np.testing.assert_array_equal(w_grad, w.grad)
    assert len(shown) == 4 and all(np.array_equal(g, x.grad) for g in shown)


def test_the_plan_writes_a_weights_gradient_as_one_matmul_over_rows_and_hoists_tanhs_derivative(monkeypatch):
    squares = squares_of_the_stacked_states(monkeypatch)
    model = CharModel("rnn_tanh", np.float64)
    step = tg.replay(model.loss)
    inputs, targets = char_batches(steps=1, length=5, dtype=np.float64)[0]
    step(inputs, targets)
    backward = step.source.split("# ---- backward")[1]
    assert "Products(" not in backward and "Scattered(" not in backward  # no lazy sums left at run time
    squares.clear()
    step(inputs, targets)
    # tanh's derivative 1 - h_t^2: h * h once over the five stacked states (5, batch, hidden), never
    # for one step's h_t (batch, hidden)
    assert [shape[0] for name, twice, shape in squares if name == "multiply" and twice] == [5]
    assert "np.ascontiguousarray(v5_weight_hh.transpose((1, 0)))" in step.source  # W_hh^T, once per call
    assert "@ v5_weight_hh" in backward  # (W_hh^T)^T is W_hh itself in the backward pass


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm"])
def test_at_benchmark_size_the_plan_agrees_with_eager_to_rounding(cell_name, dtype, tolerance):
    # W^T made contiguous takes BLAS's other path, which may round the last bit otherwise (issue 18's
    # bar: 1e-5 relative in float32, 1e-12 in float64), over several optimiser steps.
    eager_model, replay_model = (CharModel(cell_name, dtype, vocab=65, hidden=100) for _ in range(2))
    eager_params, replay_params = eager_model.parameters(), replay_model.parameters()
    eager_opt, replay_opt = optim.SGD(eager_params, lr=0.05), optim.SGD(replay_params, lr=0.05)
    step = tg.replay(replay_model.loss)
    for inputs, targets in char_batches(steps=3, length=25, batch=1, vocab=65, dtype=dtype):
        eager_opt.zero_grad()
        expected = eager_model.loss(inputs, targets)
        expected.backward()
        replay_opt.zero_grad()
        assert step(inputs, targets) == pytest.approx(expected.item(), rel=tolerance)
        for p, q in zip(eager_params, replay_params):
            scale = float(np.max(np.abs(p.grad)))
            np.testing.assert_allclose(q.grad, p.grad, rtol=tolerance, atol=tolerance * scale)
            assert q.grad.dtype == p.grad.dtype
        eager_opt.step()
        replay_opt.step()
    assert "np.ascontiguousarray(" in step.source


@pytest.mark.parametrize("loss_of", [lambda w: w.sum(), lambda w: w.reshape(6).sum(), lambda w: w.T.sum(axis=0).sum(),
                                     lambda w: tg.stack([w[0], w[1]]).sum()])
def test_a_gradient_known_when_compiling_is_never_shared_with_a_leaf(loss_of):
    w = tg.Value(np.arange(6.0).reshape(2, 3), name="w")
    step = tg.replay(lambda: loss_of(w))
    for _ in range(3):
        w.grad = None
        step()
        np.testing.assert_array_equal(w.grad, np.ones((2, 3)))
        w.grad *= 7.0  # in place: the next call must not see it
