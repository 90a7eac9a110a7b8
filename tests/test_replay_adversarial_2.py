"""Adversarial checks of replay's promise, round 2 (round 1: tests/test_replay_adversarial.py).

A replayed call gives eager mode's answer (the loss, what fn returned beside it, every parameter's
``.grad``, what hooks did), refuses with a message saying what the user did, or records again; it
never silently answers stale. New ground here: hooks registered inside fn, per-step clipping with
global clipping after it, what fn returns (aliased, mutated by the caller), the kinds and layouts of
the arguments, fn changing its arguments or parameters, exceptions, nested and interleaved replays,
threads, optimisers, frozen, added and tied parameters, repeated indices and ties, a sequence past
COMPILE_LIMIT, the recordings' cache.

Each scenario builds fresh state twice, once run eagerly and once through one replay, changes it the
same way around every call, and compares everything a call gives back; what a replay cannot repeat
must be refused with a message naming it. The 12 stale or unclear answers this file found are fixed."""

from __future__ import annotations

import threading
import types
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import autograd, nn, optim
from tinygrad_rnn.clip import clip_grad_norm_, clip_norm, clip_value, grad_norm, record
from tinygrad_rnn.replay import COMPILE_LIMIT, Replay
from tinygrad_rnn.value import Value

X = np.array([0.5, -1.0, 2.0])
SEQUENCE = np.random.default_rng(7).normal(size=(6, 2, 3))  # (T, B, I)


# ---- the harness -----------------------------------------------------------------------------------


def _float(value):
    """An argument as eager mode's fn gets it (what replay makes of it while recording)."""
    if isinstance(value, (float, np.floating)) or np.asarray(value).dtype.kind == "f":
        return Value(value, requires_grad=False)
    return value


def _loss_of(output):
    if isinstance(output, dict):
        return output["loss"]
    return output[0] if isinstance(output, (tuple, list)) else output


def _plain(output):
    """What fn returned, as numbers the caller keeps: Values' data copied, structures kept."""
    if isinstance(output, Value):
        output = output.data
    if isinstance(output, dict):
        return {k: _plain(v) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return [_plain(v) for v in output]
    if isinstance(output, np.ndarray):
        return output.item() if output.ndim == 0 else output.copy()
    return output


def _close(a, b, rtol, where):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], rtol, f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rtol, f"{where}[{k}]")
    elif a is None or isinstance(a, (str, type)):
        assert a == b, f"{where}: {a!r} != {b!r}"
    else:
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-300, err_msg=where)


def scenario(fn, params, calls, before=lambda i: None, after=lambda i, out: None, observe=lambda: None,
             zero=True, rtol=1e-12):
    """``before(i)`` changes the state before call ``i``; ``after(i, out)`` acts on what the call returned
    (clipping, an optimiser step, writing into the returned arrays); ``observe()`` is what hooks and
    side effects left, compared after each call; ``zero``: zero the gradients before each call."""
    return types.SimpleNamespace(fn=fn, params=params if callable(params) else lambda: params, calls=calls,
                                 before=before, after=after, observe=observe, zero=zero, rtol=rtol)


def run(make, replayed: bool) -> tuple[list, Replay | None]:
    """Per call: (what it returned, each parameter's grad, what observe() saw), or the exception's type."""
    s = make()
    step = tg.replay(s.fn) if replayed else None
    results = []
    for i, arrays in enumerate(s.calls):
        s.before(i)
        params = s.params()
        if s.zero:
            tg.zero_grad(params)
        try:
            if replayed:
                out = step(*arrays)
            else:
                out = s.fn(*[_float(a) for a in arrays])
                _loss_of(out).backward()
        except Exception as error:  # (a scenario may raise on purpose: both modes must)
            results.append(type(error))
            continue
        kept = _plain(out)
        s.after(i, out if replayed else _plain(out))  # (the caller's: eager's Values as the numbers they hold)
        results.append((kept, [None if p.grad is None else np.array(p.grad) for p in s.params()],
                        _plain(s.observe())))
    return results, step


def assert_as_eager(make) -> Replay:
    """The replay of ``make()``'s scenario answers as eager mode does, at every call."""
    rtol = make().rtol
    eager, _ = run(make, replayed=False)
    replayed, step = run(make, replayed=True)
    assert not all(isinstance(e, type) for e in eager), f"every eager call raised: {eager}"
    for call, (e, r) in enumerate(zip(eager, replayed, strict=True)):
        if isinstance(e, type) or isinstance(r, type):
            assert e is r, f"call {call}: eager gave {e}, the replay {r}"
            continue
        (out_e, grads_e, seen_e), (out_r, grads_r, seen_r) = e, r
        _close(out_e, out_r, rtol, f"call {call}: returned")
        for k, (a, b) in enumerate(zip(grads_e, grads_r, strict=True)):
            assert (a is None) == (b is None), f"call {call}: parameter {k} has a gradient in one mode only"
            if a is not None:
                np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-300, err_msg=f"call {call}, parameter {k}")
        _close(seen_e, seen_r, rtol, f"call {call}: observed")
    return step


def _w(*values, dtype=float):
    return Value(np.array(values, dtype=dtype))


def _rnn_model(hidden_hook=None, truncate=None, cell=nn.RNNCell):
    c, head = cell(3, 4, rng=0), nn.Linear(4, 1, rng=1)
    return nn.RNN(c, truncate=truncate, hidden_hook=hidden_hook), head, [*c.parameters(), *head.parameters()]


CHANGING = [(X,), (X * -0.7,), (X + 1.5,)]
SEQUENCES = [(SEQUENCE,), (SEQUENCE * -0.5,), (SEQUENCE + 1.0,)]


# ---- hooks registered inside fn --------------------------------------------------------------------


def hook_on_intermediate_returns_replacement():
    """A hook fn registers on an intermediate node, returning a replaced gradient, runs at every call."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        a = w * x
        a.register_hook(lambda g: g * 3.0 - 0.5)
        return (a.tanh() * x).sum()

    return scenario(fn, [w], CHANGING)


def hook_with_state_counting_calls():
    """A hook with state (a count of its calls, scaling by it) runs once per call, as in eager mode."""
    w, seen = _w(1.0, -2.0, 3.0), []

    def hook(g):
        seen.append(grad_norm(g))
        return g * float(len(seen))

    def fn(x):
        a = (w * x).tanh()
        a.register_hook(hook)
        return (a * a).sum()

    return scenario(fn, [w], CHANGING, observe=lambda: list(seen))


def hook_on_its_own_node_reads_data():
    """A hook reading its own node's data (captured in fn) sees this call's value."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        a = (w * x).tanh()
        a.register_hook(lambda g: g * a.data)
        return (a * x).sum()

    return scenario(fn, [w], CHANGING)


def hook_reads_another_nodes_data():
    """A hook on b reading the data of a (an earlier node, without hooks) sees this call's value."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        a = w * x
        b = a.tanh()
        b.register_hook(lambda g: g * a.data)
        return (b * x).sum()

    return scenario(fn, [w], CHANGING)


def hook_reads_hook_node_parent():
    """A hook reading autograd.STATE.hook_node.parents[0].data (the input of its node) sees this call's value."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        b = (w * x).tanh()
        b.register_hook(lambda g: g * autograd.STATE.hook_node.parents[0].data)
        return (b * x).sum()

    return scenario(fn, [w], CHANGING)


def hook_on_intermediate_removed_by_caller():
    """A hook fn registers on a node, whose handle the caller removes after each step, runs at every call."""
    w, handles = _w(1.0, -2.0, 3.0), []

    def fn(x):
        a = w * x
        handles.append(a.register_hook(lambda g: g * 10.0))
        return a.tanh().sum()

    def after(i, out):
        while handles:
            handles.pop().remove()

    return scenario(fn, [w], CHANGING, after=after)


def hook_on_parameter_registered_in_fn_removed_by_caller():
    """A hook fn registers on a parameter, removed by the caller after each step, runs at every call."""
    w, handles = _w(1.0, -2.0, 3.0), []

    def fn(x):
        handles.append(w.register_hook(lambda g: g * 10.0))
        return (w * x).tanh().sum()

    def after(i, out):
        while handles:
            handles.pop().remove()

    return scenario(fn, [w], CHANGING, after=after)


def hook_raises_on_one_call_then_recovers():
    """A hook raising on the second call raises in both modes; the third call answers as eager mode."""
    w, calls = _w(1.0, -2.0, 3.0), [0]

    def hook(g):
        calls[0] += 1
        if calls[0] == 2:
            raise ArithmeticError("refused by the user's hook")
        return g * 2.0

    def fn(x):
        a = (w * x).tanh()
        a.register_hook(hook)
        return (a * x).sum()

    return scenario(fn, [w], CHANGING)


class LoggingClip:
    """A hidden_hook of the user's: clips by value and logs each norm it sees (stateful)."""

    def __init__(self, c):
        self.c, self.norms = c, []

    def __call__(self, g):
        self.norms.append(grad_norm(g))
        return np.clip(g, -self.c, self.c)


def rnn_clip_per_step_then_clip_grad_norm():
    """clip_norm on every h_t, then clip_grad_norm_ after backward: the clipped .grads and the hook's records."""
    hook = clip_norm(0.05)
    rnn, head, params = _rnn_model(hidden_hook=hook)

    def fn(x):
        hs, _ = rnn(x)
        return (head(tg.stack(hs)) ** 2).mean()

    return scenario(fn, params, SEQUENCES, after=lambda i, out: clip_grad_norm_(params, 0.1),
                    observe=lambda: dict(hook.last))


def rnn_truncate_with_logging_hidden_hook():
    """RNN(truncate=2) with a stateful hidden_hook: the same clipped gradients and the same log of norms."""
    hook = LoggingClip(0.02)
    rnn, head, params = _rnn_model(hidden_hook=hook, truncate=2)

    def fn(x):
        hs, _ = rnn(x)
        return (head(tg.stack(hs)) ** 2).mean()

    return scenario(fn, params, SEQUENCES, observe=lambda: list(hook.norms))


def lstm_truncate_clip_value_and_returned_states():
    """LSTM with truncate=3 and clip_value on every h_t, returning its states: states and grads as eager."""
    rnn, head, params = _rnn_model(hidden_hook=clip_value(1e-3), truncate=3, cell=nn.LSTMCell)

    def fn(x):
        hs, states = rnn(x, return_states=True)
        return (head(tg.stack(hs)) ** 2).mean(), {"states": states[1:], "last": hs[-1]}

    return scenario(fn, params, SEQUENCES)


def hook_on_a_transposed_weight_read_at_every_step():
    """A hook on W.T (read by every step's matmul, its gradient a sum of products) replaces the whole sum."""
    w, u = Value(np.full((3, 4), 0.2)), Value(np.eye(4) * 0.7)

    def fn(x):
        wt = w.T
        wt.register_hook(lambda g: g * 0.5 + 0.01)
        h = Value(np.zeros((2, 4)), requires_grad=False)
        for t in range(x.shape[0]):
            h = (x[t] @ w + h @ u).tanh()
        return (h ** 2).sum() + (wt ** 2).sum() * 0.1

    return scenario(fn, [w, u], SEQUENCES)


def hook_on_the_loss_itself():
    """A hook fn registers on the loss (the root) scales the seed at every call."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        loss = (w * x).tanh().sum()
        loss.register_hook(lambda g: np.asarray(g * -4.0))  # (a 0-d array times a float is a numpy scalar)
        return loss

    return scenario(fn, [w], CHANGING)


def clip_hooks_run_inside_a_create_graph_penalty():
    """clip_norm on every h_t, with a penalty on dL/dh_1 taken inside fn (create_graph): the clip's factor follows."""
    hook = clip_norm(0.01)
    rnn, head, params = _rnn_model(hidden_hook=hook)

    def fn(x):
        hs, _ = rnn(x)
        loss = (head(tg.stack(hs)) ** 2).mean()
        (g,) = tg.grad(loss, [hs[0]], create_graph=True)
        return loss + (g * g).sum() * 100.0

    return scenario(fn, params, SEQUENCES, observe=lambda: dict(hook.last))


def embedding_index_out_of_range_on_one_call_then_recovers():
    """An id out of range on the second call raises IndexError in both modes; the third call is eager's."""
    emb = nn.Embedding(5, 3, rng=0)
    calls = [(np.array([0, 1, 2]),), (np.array([0, 9, 2]),), (np.array([4, 4, 1]),)]
    return scenario(lambda ids: (emb(ids).tanh() ** 2).sum(), emb.parameters, calls)


def rnn_over_a_list_of_steps_with_h0_argument_and_truncate():
    """RNN over a list of per-step Values, h0 passed as an argument, truncate=2 and a clip hook."""
    rnn, head, params = _rnn_model(hidden_hook=clip_norm(0.02), truncate=2)

    def fn(x, h0):
        hs, _ = rnn([x[t] for t in range(x.shape[0])], h0=h0)
        return (head(tg.stack(hs)) ** 2).mean()

    h0s = [np.zeros((2, 4)), np.full((2, 4), 0.3), np.full((2, 4), -0.8)]
    return scenario(fn, params, [(x, h) for (x,), h in zip(SEQUENCES, h0s)])


# ---- what fn returns beside its loss ---------------------------------------------------------------


def extras_same_value_twice_and_the_loss():
    """The same Value returned twice (and the loss again) comes back as equal, separate numbers."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        h = (w * x).tanh()
        loss = (h * h).sum()
        return loss, {"a": h, "b": h, "again": loss}

    def after(i, out):
        out[1]["a"][...] = 99.0  # the caller writes into one: the other must not change
        assert not np.any(out[1]["b"] == 99.0), "two returned entries share memory"

    return scenario(fn, [w], CHANGING, after=after)


def extras_argument_and_parameter_with_optimiser():
    """An argument and a parameter returned beside the loss are this call's, with SGD steps between calls."""
    w = _w(1.0, -2.0, 3.0)
    opt = optim.SGD([w], lr=0.1, momentum=0.9)

    def fn(x):
        return (w * x).tanh().sum(), (x, w)

    return scenario(fn, [w], CHANGING, after=lambda i, out: opt.step())


def extras_mutated_by_the_caller_between_calls():
    """States and a stacked output written into by the caller do not change the next call's answer."""
    rnn, head, params = _rnn_model()

    def fn(x):
        hs, states = rnn(x, return_states=True)
        out = tg.stack(hs)
        return (head(out) ** 2).mean(), states, out, out[1]

    def after(i, out):
        for s in out[1][1:]:
            s[...] = 7.0
        out[2][...] *= -3.0
        out[3][...] = 0.0

    return scenario(fn, params, SEQUENCES, after=after)


def extras_constant_detached_and_no_grad():
    """A constant made in fn, a detached node and probabilities under no_grad come back as this call's."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        logits = w * x
        with tg.no_grad():
            probs = tg.softmax(logits)
        return (logits.tanh() ** 2).sum(), [Value(np.ones(3), requires_grad=False), logits.detach(), probs]

    return scenario(fn, [w], CHANGING)


# ---- arguments: kinds, dtypes, layouts -------------------------------------------------------------


def python_float_and_0d_arguments_alternating():
    """A Python float, a 0-d float64, a numpy float64 and a 0-d float32 argument, alternating."""
    w = _w(1.0, -2.0, 3.0)
    calls = [(1.5,), (np.array(0.5),), (np.float64(-2.0),), (np.array(0.25, np.float32),), (3.0,),
             (np.array(-1.0, np.float32),)]
    return scenario(lambda s: (w * s).tanh().sum() * s, [w], calls)


def float32_and_float64_arguments_switching():
    """float32 and float64 arguments switching between calls, into float32 parameters (1e-5 relative)."""
    cell, head = nn.RNNCell(3, 4, rng=0, dtype=np.float32), nn.Linear(4, 1, rng=1, dtype=np.float32)
    params = [*cell.parameters(), *head.parameters()]

    def fn(x):
        hs, _ = nn.RNN(cell)(x)
        return (head(tg.stack(hs)) ** 2).mean()

    calls = [(SEQUENCE.astype(np.float32),), (SEQUENCE,), (SEQUENCE.astype(np.float32) * 2,), (SEQUENCE * -1,)]
    return scenario(fn, params, calls, rtol=1e-5)


def strided_and_broadcast_arguments():
    """Fortran-order, negative-stride, sliced and np.broadcast_to arguments give eager's answer."""
    rnn, head, params = _rnn_model()

    def fn(x, y):
        hs, _ = rnn(x)
        return ((head(tg.stack(hs)) - y) ** 2).mean()

    rng = np.random.default_rng(1)
    base, target = rng.normal(size=(12, 4, 6)), rng.normal(size=(6, 2, 1))
    calls = [
        (np.ascontiguousarray(base[:6, :2, :3]), target),
        (np.asfortranarray(base[:6, :2, :3]), np.asfortranarray(target)),
        (base[::-2, ::-2, ::2], target[::-1]),
        (np.broadcast_to(base[0, 0, :3], (6, 2, 3)), np.broadcast_to(np.float64(0.5), (6, 2, 1))),
        (base[6:, 2:, 3:].transpose(0, 1, 2), target),
    ]
    return scenario(fn, params, calls)


def argument_aliases_a_parameters_data():
    """An argument that is a parameter's own data (updated in place by SGD) gives eager's answer."""
    w = _w(1.0, -2.0, 3.0)
    opt = optim.SGD([w], lr=0.1)
    return scenario(lambda x: (w * x).tanh().sum(), [w], [(w.data,)] * 4, after=lambda i, out: opt.step())


def argument_written_in_place_inside_fn():
    """fn scaling its float argument in place through .data (x.data *= 2) computes from the scaled data."""
    w = _w(1.0, -2.0, 3.0)

    def fn(x):
        x.data[...] *= 2.0
        return (w * x).tanh().sum()

    return scenario(fn, [w], [(X.copy(),), (X.copy(),), (X.copy(),)])


def integer_argument_written_in_place_inside_fn():
    """fn changing its integer argument in place (ids += 1) picks the changed rows."""
    emb = nn.Embedding(6, 3, rng=0)

    def fn(ids):
        ids += 1
        return (emb(ids) ** 2).sum()

    return scenario(fn, emb.parameters, [(np.array([0, 1, 2]),), (np.array([0, 1, 2]),), (np.array([0, 1, 2]),)])


def parameter_constrained_in_place_inside_fn():
    """A max-norm constraint fn applies to a parameter in place (w.data[...] = clip) before using it."""
    w = _w(1.0, -2.0, 3.0)
    opt = optim.SGD([w], lr=0.5)

    def fn(x):
        w.data[...] = np.clip(w.data, -1.5, 1.5)
        return ((w * x).tanh() - 0.3).sum() ** 2

    return scenario(fn, [w], [(X,)] * 4, after=lambda i, out: opt.step())


# ---- exceptions, nesting, threads, modes -----------------------------------------------------------


def exception_inside_fn_on_a_later_recording():
    """fn raising inside an RNN cell on a later (re-recorded) call leaves the engine clean; the next call is eager's."""
    w_ih, w_hh = Value(np.full((4, 3), 0.3)), Value(np.eye(4) * 0.5)
    state = {"fail": False, "scale": 1.0}

    def cell(x, h):
        if state["fail"]:
            raise ValueError("the user's cell refuses")
        return (x @ w_ih.T + h @ w_hh.T).tanh() * state["scale"]

    rnn = nn.RNN(cell)

    def fn(x):
        hs, _ = rnn(x, h0=np.zeros((2, 4)))
        return (tg.stack(hs) ** 2).mean()

    def before(i):
        state["fail"], state["scale"] = i == 1, [1.0, 1.0, 1.0, 0.5][i]

    def observe():
        return [autograd.STATE.tape is None, autograd.STATE.hoist is None, autograd.STATE.grad_enabled]

    return scenario(fn, [w_ih, w_hh], [(SEQUENCE,)] * 4, before, observe=observe)


def nested_replay_inside_fn():
    """fn calling another replayed step (recorded before) inside it, v updated between calls: eager's answer."""
    w, v = _w(1.0, -2.0, 3.0), _w(0.5, 0.5, -1.0)
    inner = tg.replay(lambda x: (v * x).tanh().sum())
    inner(X)

    def fn(x):
        aux = inner(x.numpy())  # a float, and v's gradient
        return (w * x).tanh().sum() * aux

    def before(i):
        v.data = v.data + 0.25 * i

    return scenario(fn, [w, v], [(X,)] * 3, before)


def grads_accumulate_without_zero_grad():
    """An LSTM's gradients accumulated over calls without zero_grad equal eager's sums."""
    rnn, head, params = _rnn_model(cell=nn.LSTMCell)

    def fn(x):
        hs, _ = rnn(x)
        return (head(tg.stack(hs)) ** 2).mean()

    return scenario(fn, params, SEQUENCES * 2, zero=False)


# ---- optimisers and parameters ---------------------------------------------------------------------


def sgd_momentum_and_adam_on_two_groups():
    """SGD with momentum and weight decay on the cell, Adam on the head, stepped between calls."""
    rnn, head, params = _rnn_model(cell=nn.GRUCell)
    sgd = optim.SGD(rnn.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)
    adam = optim.Adam(head.parameters(), lr=0.05)

    def fn(x):
        hs, _ = rnn(x)
        return (head(tg.stack(hs)) ** 2).mean()

    def after(i, out):
        sgd.step()
        adam.step()

    return scenario(fn, params, SEQUENCES * 2, after=after)


def parameter_frozen_mid_training():
    """A parameter frozen (requires_grad = False) after two Adam steps gets no gradient, the rest eager's."""
    rnn, head, params = _rnn_model()
    opt = optim.Adam(params, lr=0.05)

    def fn(x):
        hs, _ = rnn(x)
        return (head(tg.stack(hs)) ** 2).mean()

    def before(i):
        if i == 2:
            rnn.cell.weight_hh.requires_grad = False
            rnn.cell.weight_hh.grad = None

    return scenario(fn, params, SEQUENCES * 2, before, after=lambda i, out: opt.step())


class Gated(nn.Module):
    """A layer whose forward uses an optional parameter, added after construction."""

    def __init__(self):
        super().__init__()
        self.weight = _w(1.0, -2.0, 3.0)

    def forward(self, x):
        y = self.weight * x
        if hasattr(self, "gate"):
            y = y * self.gate.sigmoid()
        return y.tanh().sum()


def parameter_added_to_a_module_between_calls():
    """A parameter added to a Module between calls (model.gate = Value) is used from then on."""
    model = Gated()

    def before(i):
        if i == 1:
            model.gate = _w(0.1, 0.2, 0.3)

    return scenario(lambda x: model(x), model.parameters, CHANGING, before)


def tied_weights_with_adam():
    """One weight tied in two layers (embedding and output) trained by Adam gives eager's answer."""
    emb, cell = nn.Embedding(5, 4, rng=0), nn.RNNCell(4, 4, rng=1)
    params = [*emb.parameters(), *cell.parameters()]
    opt = optim.Adam(params, lr=0.05)

    def fn(ids, targets):
        hs, _ = nn.RNN(cell)(emb(ids))
        logits = tg.stack(hs) @ emb.weight.T
        return nn.cross_entropy(logits.reshape(-1, 5), targets)

    rng = np.random.default_rng(2)
    ids = rng.integers(0, 5, size=(4, 2))
    calls = [(ids, rng.integers(0, 5, size=8)) for _ in range(4)]
    return scenario(fn, params, calls, after=lambda i, out: opt.step())


def leaf_data_replaced_by_a_view_of_another():
    """A leaf whose data becomes a view of another leaf's data follows that leaf's in-place updates."""
    a, b = _w(1.0, -2.0, 3.0), _w(0.5, 0.5, 0.5)
    opt = optim.SGD([a, b], lr=0.1)

    def before(i):
        if i == 1:
            b.data = a.data[::-1]

    return scenario(lambda x: ((a * x).tanh() * b).sum(), [a, b], [(X,)] * 4, before,
                    after=lambda i, out: opt.step() if i else None)


# ---- ops: masks, repeated indices, ties ------------------------------------------------------------


def cross_entropy_with_a_float_mask():
    """cross_entropy(reduction='none') times a float mask argument, divided by its sum (an ignore index)."""
    head = nn.Linear(3, 4, rng=0)

    def fn(x, targets, mask):
        losses = nn.cross_entropy(head(x), targets, reduction="none")
        return (losses * mask).sum() / mask.sum()

    x = np.random.default_rng(3).normal(size=(5, 3))
    calls = [(x, np.array([0, 1, 2, 3, 0]), np.array([1.0, 1, 0, 1, 0])),
             (x * 2, np.array([3, 3, 3, 3, 3]), np.array([0.0, 0, 0, 1, 1])),
             (x, np.array([0, 0, 1, 1, 2]), np.array([1.0, 1, 1, 1, 1]))]
    return scenario(fn, head.parameters, calls)


def gather_with_repeated_indices_later():
    """W[ids] where ids repeat only on later calls (W also used before it) adds each pick, as eager mode."""
    weight = Value(np.random.default_rng(4).normal(size=(4, 3)))

    def fn(ids):
        return (weight * weight).sum() * 0.1 + (weight[ids].tanh() ** 2).sum()

    calls = [(np.array([0, 1, 2]),), (np.array([1, 1, 1]),), (np.array([3, 0, 3]),)]
    return scenario(fn, [weight], calls)


def pick_rows_and_columns_with_repeats_later():
    """W[rows, ids] with a fixed rows part and ids that repeat pairs only on later calls."""
    weight = Value(np.random.default_rng(4).normal(size=(4, 3)))
    rows = np.array([0, 1, 0])

    def fn(ids):
        return (weight.tanh() * 0.5).sum() + (weight[rows, ids] ** 3).sum()

    calls = [(np.array([0, 1, 2]),), (np.array([1, 1, 1]),), (np.array([2, 2, 2]),)]
    return scenario(fn, [weight], calls)


def ties_appearing_only_on_later_calls():
    """max along an axis, minimum and where over a boolean argument, tying only on later calls."""
    w = Value(np.array([[1.0, 2.0, 0.5], [0.5, 0.5, 1.0]]))

    def fn(x, cond):
        y = w * x
        return (y.max(axis=1).sum() + tg.minimum(y, w * w).sum() + tg.where(cond, y, y * y).sum()
                + y.relu().sum())

    calls = [(np.array([[1.0, 0.3, 0.1], [2.0, 1.0, 0.2]]), np.array([[True, False, True], [False, False, True]])),
             (np.array([[2.0, 1.0, 4.0], [0.0, 0.0, 0.5]]), np.array([[False, False, True], [True, True, True]])),
             (np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), np.array([[True, True, True], [False, False, False]]))]
    return scenario(fn, [w], calls)


# ---- modes, graphs, the loss's kind ----------------------------------------------------------------


def penalty_on_a_hidden_state_gradient_with_create_graph():
    """A penalty on dL/dh_T (grad with create_graph=True wrt an intermediate) follows this call's data."""
    rnn, head, params = _rnn_model()

    def fn(x):
        hs, _ = rnn(x)
        loss = (head(tg.stack(hs)) ** 2).mean()
        (g,) = tg.grad(loss, [hs[-1]], create_graph=True)
        return loss + (g * g).sum() * 10.0

    return scenario(fn, params, SEQUENCES)


def detach_mid_sequence_at_a_step_from_the_closure():
    """A manual unroll detaching h at a step the closure sets (changed between calls) records anew."""
    cell, head = nn.RNNCell(3, 4, rng=0), nn.Linear(4, 1, rng=1)
    where = {"cut": 2}

    def fn(x):
        h, total = Value(np.zeros((2, 4)), requires_grad=False), 0.0
        for t in range(x.shape[0]):
            h = cell(x[t], h)
            if t == where["cut"]:
                h = h.detach()
            total = total + (head(h) ** 2).mean()
        return total

    def before(i):
        where["cut"] = [2, 2, 4, 0][i]

    return scenario(fn, [*cell.parameters(), *head.parameters()], SEQUENCES + SEQUENCES[:1], before)


def _mixed(fn):
    w32, s = _w(1.0, -2.0, 3.0, dtype=np.float32), Value(0.7)
    calls = [(X.astype(np.float32), 0.3), (X.astype(np.float32) * 2, -1.2), (X.astype(np.float32), 2.0)]
    return scenario(lambda x, y: fn((w32 * x).tanh().sum(), (s * y).tanh() * s), [w32, s], calls, rtol=1e-5)


def float32_0d_loss():
    """A float32 0-d loss, returned with a Python-float extra from a scalar graph, is eager's."""
    return _mixed(lambda array_loss, float_loss: (array_loss, float_loss))


def python_float_loss():
    """A Python-float loss from a scalar graph, returned with a float32 0-d extra, is eager's."""
    return _mixed(lambda array_loss, float_loss: (float_loss, array_loss))


# ---- the table -------------------------------------------------------------------------------------


SCENARIOS = [
    hook_on_intermediate_returns_replacement,
    hook_with_state_counting_calls,
    hook_on_its_own_node_reads_data,
    hook_reads_another_nodes_data,
    hook_reads_hook_node_parent,
    hook_on_intermediate_removed_by_caller,
    hook_raises_on_one_call_then_recovers,
    rnn_clip_per_step_then_clip_grad_norm,
    rnn_truncate_with_logging_hidden_hook,
    lstm_truncate_clip_value_and_returned_states,
    hook_on_a_transposed_weight_read_at_every_step,
    hook_on_the_loss_itself,
    embedding_index_out_of_range_on_one_call_then_recovers,
    rnn_over_a_list_of_steps_with_h0_argument_and_truncate,
    extras_same_value_twice_and_the_loss,
    extras_argument_and_parameter_with_optimiser,
    extras_mutated_by_the_caller_between_calls,
    extras_constant_detached_and_no_grad,
    python_float_and_0d_arguments_alternating,
    float32_and_float64_arguments_switching,
    strided_and_broadcast_arguments,
    argument_aliases_a_parameters_data,
    parameter_constrained_in_place_inside_fn,
    exception_inside_fn_on_a_later_recording,
    grads_accumulate_without_zero_grad,
    sgd_momentum_and_adam_on_two_groups,
    parameter_frozen_mid_training,
    parameter_added_to_a_module_between_calls,
    tied_weights_with_adam,
    leaf_data_replaced_by_a_view_of_another,
    cross_entropy_with_a_float_mask,
    gather_with_repeated_indices_later,
    pick_rows_and_columns_with_repeats_later,
    ties_appearing_only_on_later_calls,
    penalty_on_a_hidden_state_gradient_with_create_graph,
    detach_mid_sequence_at_a_step_from_the_closure,
    float32_0d_loss,
    python_float_loss,
]


def _name(make) -> str:
    return getattr(make, "__name__", "scenario")


@pytest.mark.parametrize("make", SCENARIOS, ids=_name)
def test_replay_answers_as_eager_mode(make):
    """Each scenario's replay equals eager mode at every call (the scenario's docstring says what changes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_as_eager(make)


# ---- integer arguments derived inside fn -----------------------------------------------------------


def next_token_targets_sliced_from_the_ids():
    """Char-RNN's next-token loss: inputs emb(ids), targets ids[1:] sliced inside fn, ids of other values."""
    emb, cell = nn.Embedding(5, 3, rng=0), nn.RNNCell(3, 5, rng=1)

    def fn(ids):
        hs, _ = nn.RNN(cell)(emb(ids))
        return nn.cross_entropy(tg.stack(hs[:-1]), ids[1:])

    rng = np.random.default_rng(5)
    calls = [(rng.integers(0, 5, size=(6, 2)),) for _ in range(3)]
    return scenario(fn, [*emb.parameters(), *cell.parameters()], calls)


def embedding_of_shifted_ids_beside_the_ids():
    """emb(ids) and emb(ids + 1) (computed inside fn) with ids of other values: eager's answer or a refusal."""
    emb = nn.Embedding(6, 3, rng=0)

    def fn(ids):
        return (emb(ids) * emb(ids + 1)).sum()

    calls = [(np.array([0, 1, 2]),), (np.array([4, 3, 0]),), (np.array([2, 2, 1]),)]
    return scenario(fn, emb.parameters, calls)


# ---- replays side by side: interleaved, threads, the cache, past the limit -------------------------


def test_two_replays_sharing_parameters_interleaved_with_sgd():
    """Two replayed steps on shared parameters, called in turn with SGD steps between, give eager's answers."""
    def train(replayed: bool) -> list:
        cell, head = nn.RNNCell(3, 4, rng=0), nn.Linear(4, 1, rng=1)
        params = [*cell.parameters(), *head.parameters()]
        opt = optim.SGD(params, lr=0.1, momentum=0.5)

        def regress(x):
            hs, _ = nn.RNN(cell)(x)
            return (head(tg.stack(hs)) ** 2).mean()

        def last_only(x):
            hs, _ = nn.RNN(cell, truncate=2)(x)
            return head(hs[-1]).tanh().sum()

        steps = [tg.replay(f) if replayed else f for f in (regress, last_only)]
        seen = []
        for i in range(6):
            x = SEQUENCES[i % 3][0]
            opt.zero_grad()
            step = steps[i % 2]
            if replayed:
                loss = step(x)
            else:
                value = step(_float(x))
                value.backward()
                loss = value.item()
            seen.append((loss, [p.grad.copy() for p in params]))
            opt.step()
        return seen

    for (le, ge), (lr, gr) in zip(train(False), train(True), strict=True):
        assert lr == pytest.approx(le, rel=1e-12)
        for a, b in zip(ge, gr, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-12)


def test_one_replay_from_two_threads_answers_each_call_as_eager():
    """Two threads calling one replay (extras returned, a hook logging) each get their own call's answer."""
    w = _w(1.0, -2.0, 3.0)
    norms = []
    log = record(norms)  # (the library's hook: its list is not read as fn's input, so the calls replay)

    def fn(x):
        a = (w * x).tanh()
        a.register_hook(log)
        return (a * x).sum(), a

    inputs = [X * (1.0 + 0.1 * k) for k in range(40)]
    expected = []
    for x in inputs:
        loss, a = fn(_float(x))
        expected.append((loss.item(), a.data.copy()))
    w.grad = None
    step = tg.replay(fn)
    step(X)
    got, errors = {}, []

    def worker(ks):
        try:
            for k in ks:
                got[k] = step(inputs[k])
        except Exception as error:  # (reported below)
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(range(j, 40, 2),)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, (loss, a) in enumerate(expected):
        assert got[k][0] == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(got[k][1], a, rtol=1e-12)
    assert len(norms) == 41 and step.recordings == 1


def test_a_shape_evicted_from_the_cache_comes_back_with_a_changed_closure():
    """More shapes than MAX_TAPES evict the first; coming back after a closure change gives eager's answer."""
    w, scale = _w(1.0, -2.0, 3.0), [1.0]

    def fn(x):
        return ((w * x).tanh() * scale[0]).sum()

    step = tg.replay(fn)
    shapes = [np.ones((k, 3)) * 0.1 * k for k in range(1, Replay.MAX_TAPES + 2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x in shapes:
            step(x)
    assert len(step.tapes) == Replay.MAX_TAPES and any("dropped" in str(c.message) for c in caught)
    for x, factor in [(shapes[0], 0.5), (shapes[-1], 0.25), (shapes[1], 2.0)]:
        scale[0] = factor
        w.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (each comeback drops another)
            loss = step(x)
        got = w.grad.copy()
        w.grad = None
        value = fn(_float(x))
        value.backward()
        assert loss == pytest.approx(value.item(), rel=1e-12)
        np.testing.assert_allclose(got, w.grad, rtol=1e-12)


def long_sequence_past_the_compile_limit():
    """An RNN whose tape is past COMPILE_LIMIT runs eagerly as recorded: extras, hooks and closure changes as eager."""
    cell = nn.RNNCell(2, 3, rng=0)
    hook, scale = LoggingClip(1e-3), [1.0]
    rnn = nn.RNN(cell, hidden_hook=hook, hoist=False)
    steps = COMPILE_LIMIT // 3  # (4 ops a step without hoisting)

    def fn(x):
        hs, _ = rnn(x)
        return (hs[-1] ** 2).sum() * scale[0], hs[-1]

    def before(i):
        scale[0] = [1.0, 1.0, 0.5][i]

    rng = np.random.default_rng(6)
    calls = [(rng.normal(size=(steps, 1, 2)),) for _ in range(3)]
    return scenario(fn, cell.parameters, calls, before, observe=lambda: [len(hook.norms), hook.norms[-1]])


def test_a_long_sequence_past_the_compile_limit_runs_eagerly_as_eager_mode():
    """The long RNN past COMPILE_LIMIT is not compiled, and answers as eager mode at every call."""
    step = assert_as_eager(long_sequence_past_the_compile_limit)
    (tape,) = step.tapes.values()
    assert len(tape) > COMPILE_LIMIT and tape.source is None


# ---- the caller's grad mode, a replay recorded inside fn -------------------------------------------


def test_a_replay_called_under_no_grad_after_recording():
    """Called under no_grad (an evaluation pass), a replay refuses as eager backward does, or leaves .grad alone."""
    w = _w(1.0, -2.0, 3.0)
    step = tg.replay(lambda x: (w * x).tanh().sum())
    step(X)
    w.grad = None
    with tg.no_grad():
        try:
            step(X * 2.0)
        except RuntimeError:
            return
    assert w.grad is None, "a replay under no_grad wrote .grad, where eager mode's backward refuses"


def test_a_replay_first_called_inside_another_replays_fn():
    """A replayed step recorded for the first time inside another replay's fn: an error naming the nesting."""
    w = _w(1.0, -2.0, 3.0)
    inner = tg.replay(lambda x: (w * x).tanh().sum())
    outer = tg.replay(lambda x: (w * x).sum() * inner(x.numpy()))
    with pytest.raises(RuntimeError, match="(?i)replay.*(inside|nested|within)|(inside|nested|within).*replay"):
        outer(X)


# ---- what a replay cannot repeat is refused, naming it ---------------------------------------------


@pytest.mark.parametrize(("make", "message"), [
    (hook_on_parameter_registered_in_fn_removed_by_caller, "registers a hook on .* made before fn ran"),
    (argument_written_in_place_inside_fn, "writes into its argument 0"),
    (integer_argument_written_in_place_inside_fn, "writes into its argument 0"),
    (nested_replay_inside_fn, "inside another replay's fn"),
    (clip_hooks_run_inside_a_create_graph_penalty, "hook on .* runs in a backward pass fn records"),
    (next_token_targets_sliced_from_the_ids, "computed with numpy from an integer argument inside fn"),
    (embedding_of_shifted_ids_beside_the_ids, "computed with numpy from an integer argument inside fn"),
], ids=_name)
def test_what_a_replay_cannot_repeat_is_refused_by_name(make, message):
    """What fn does that a replay would not repeat (a hook on a parameter, a write into an argument, an inner replay, a hook's
    answer inside a recorded backward pass, an integer array computed from an argument and handed to a
    library op: cross_entropy's targets ids[1:], Embedding's ids + 1) is an error naming it, not a stale
    answer."""
    s = make()
    step = tg.replay(s.fn)
    with warnings.catch_warnings(), pytest.raises((ValueError, RuntimeError), match=message):
        warnings.simplefilter("ignore")
        for i, arrays in enumerate(s.calls):
            s.before(i)
            step(*arrays)
